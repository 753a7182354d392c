"""Digits a leg sends (media/endpoint.py): whoever sends a digit string is told when the digits queued so
far have gone out, by the tick that sent the last of them, for RFC 4733 events and in-band tones alike."""

from __future__ import annotations

from typing import Any, cast

import pytest

from tonebridge.media.endpoint import MediaLeg
from tonebridge.media.ports import PortPool
from tonebridge.sip.sdp import NegotiatedMedia


class Wire:
    def __init__(self) -> None:
        self.packets = 0

    def sendto(self, data: bytes, addr: tuple[str, int]) -> None:
        self.packets += 1


@pytest.mark.parametrize("telephone_event", [101, None])
def test_a_leg_tells_once_when_its_queued_digits_have_gone_out(telephone_event: int | None) -> None:
    leg = MediaLeg("127.0.0.1", PortPool(40000, 40100), call_id="c")
    leg.configure(NegotiatedMedia("192.0.2.1", 4000, "PCMU", 0, telephone_event, 20, "sendrecv"))
    wire = Wire()
    leg._rtp = cast(Any, wire)  # the socket, as far as sending goes
    told: list[int] = []
    leg.when_digits_sent(lambda: told.append(0))
    leg.tick(0.0)
    assert told == [0]  # nothing was queued: the next tick tells
    told.clear()
    leg.send_digit("5", duration_ms=100)
    leg.send_digit("7", duration_ms=100)
    pending_after: list[bool] = []  # digits_pending after each tick from the first
    leg.when_digits_sent(lambda: told.append(len(pending_after) + 1))  # the number of the telling tick
    for tick in range(1, 60):
        leg.tick(tick * 0.02)
        pending_after.append(leg.digits_pending)
    (at,) = told
    # Told by the very tick that sent the last of them, and only once.
    assert pending_after[at - 2] and not pending_after[at - 1] and at > 10
    assert wire.packets == 60
