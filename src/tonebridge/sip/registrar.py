"""Registrar bindings (RFC 3261 §10.3): which contact each configured user is reachable at, until when.

Pure: the call engine feeds it authenticated REGISTER requests with `now` and asks it where a user is.
"""

from __future__ import annotations

from dataclasses import dataclass

from tonebridge.sip.message import NameAddress, Request

DEFAULT_EXPIRES = 3600
MIN_EXPIRES = 60
MAX_EXPIRES = 7200


@dataclass
class Binding:
    user: str
    contact: str  # the Contact URI as registered
    expires_at: float
    call_id: str
    cseq: int
    source: tuple[str, str, int]  # transport, host, port the REGISTER came from (for NAT)


class IntervalTooBrief(Exception):
    pass


class Registrar:
    def __init__(self) -> None:
        self._bindings: dict[str, dict[str, Binding]] = {}

    def register(
        self, user: str, request: Request, source: tuple[str, str, int], now: float
    ) -> list[Binding]:
        """Apply a REGISTER's Contact headers; returns the user's current bindings (for the 200's Contact)."""
        bindings = self._bindings.setdefault(user, {})
        default_expires = _int(request.headers.get("Expires"), DEFAULT_EXPIRES)
        cseq = request.cseq.number
        contacts = request.headers.values("Contact")
        if contacts == ["*"]:
            if default_expires != 0:
                raise ValueError("Contact: * requires Expires: 0")
            bindings.clear()
            return []
        for value in contacts:
            address = NameAddress.parse(value)
            expires = _int(address.params.get("expires"), default_expires)
            key = str(address.uri)
            existing = bindings.get(key)
            # §10.3 step 7: an older CSeq in the same Call-ID is out of order; ignore it.
            if existing and existing.call_id == request.call_id and cseq <= existing.cseq:
                continue
            if expires == 0:
                bindings.pop(key, None)
                continue
            if expires < MIN_EXPIRES:
                raise IntervalTooBrief()
            expires = min(expires, MAX_EXPIRES)
            bindings[key] = Binding(user, key, now + expires, request.call_id, cseq, source)
        return self.bindings(user, now)

    def bindings(self, user: str, now: float) -> list[Binding]:
        bindings = self._bindings.get(user, {})
        for key in [k for k, b in bindings.items() if b.expires_at <= now]:
            del bindings[key]
        return sorted(bindings.values(), key=lambda b: -b.expires_at)

    def lookup(self, user: str, now: float) -> Binding | None:
        current = self.bindings(user, now)
        return current[0] if current else None


def _int(text: str | None, default: int) -> int:
    if text is None:
        return default
    text = text.strip()
    return int(text) if text.isdigit() else default
