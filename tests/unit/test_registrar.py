"""Registrar bindings: add, refresh, expire, remove, and out-of-order CSeq."""

from __future__ import annotations

import pytest

from tonebridge.sip.message import Headers, Request
from tonebridge.sip.registrar import IntervalTooBrief, Registrar


def register(contact: str, cseq: int = 1, expires: str | None = None, call_id: str = "reg1") -> Request:
    headers = Headers(
        [
            ("Via", "SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bKr"),
            ("From", "<sip:alice@h>;tag=a"),
            ("To", "<sip:alice@h>"),
            ("Call-ID", call_id),
            ("CSeq", f"{cseq} REGISTER"),
            ("Contact", contact),
        ]
    )
    if expires is not None:
        headers.add("Expires", expires)
    return Request("REGISTER", "sip:h", headers)


SOURCE = ("UDP", "127.0.0.1", 5070)


def test_binding_lives_until_expiry() -> None:
    registrar = Registrar()
    registrar.register("alice", register("<sip:alice@127.0.0.1:5070>;expires=120"), SOURCE, now=0.0)
    assert registrar.lookup("alice", 119.0).contact == "sip:alice@127.0.0.1:5070"
    assert registrar.lookup("alice", 120.0) is None


def test_expires_zero_removes_and_old_cseq_is_ignored() -> None:
    registrar = Registrar()
    registrar.register("alice", register("<sip:alice@127.0.0.1:5070>", cseq=2), SOURCE, now=0.0)
    registrar.register("alice", register("<sip:alice@127.0.0.1:5070>;expires=0", cseq=1), SOURCE, now=1.0)
    assert registrar.lookup("alice", 2.0) is not None
    registrar.register("alice", register("<sip:alice@127.0.0.1:5070>;expires=0", cseq=3), SOURCE, now=3.0)
    assert registrar.lookup("alice", 4.0) is None


def test_star_clears_all_and_short_interval_is_refused() -> None:
    registrar = Registrar()
    registrar.register("alice", register("<sip:alice@127.0.0.1:5070>"), SOURCE, now=0.0)
    registrar.register("alice", register("*", cseq=2, expires="0"), SOURCE, now=1.0)
    assert registrar.bindings("alice", 1.0) == []
    with pytest.raises(IntervalTooBrief):
        registrar.register(
            "alice", register("<sip:alice@127.0.0.1:5070>;expires=10", cseq=3), SOURCE, now=2.0
        )
