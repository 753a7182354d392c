"""Digits a leg sends (media/endpoint.py): whoever sends a digit string is told when the digits queued so
far have gone out, by the tick that sent the last of them, for RFC 4733 events and in-band tones alike.
The leg is a real row of the media plane; the test runs the clock's ticks itself."""

from __future__ import annotations

import asyncio
import socket

import pytest

from tonebridge.media.clock import MediaClock
from tonebridge.media.endpoint import MediaLeg
from tonebridge.media.ports import PortPool
from tonebridge.media.rtp import RtpPacket
from tonebridge.sip.sdp import NegotiatedMedia


def _drain(peer: socket.socket) -> list[RtpPacket]:
    packets = []
    while True:
        try:
            packets.append(RtpPacket.parse(peer.recv(2048)))
        except BlockingIOError:
            return packets


@pytest.mark.parametrize("telephone_event", [101, None])
def test_a_leg_tells_once_when_its_queued_digits_have_gone_out(telephone_event: int | None) -> None:
    asyncio.run(_tells_once(telephone_event))


async def _tells_once(telephone_event: int | None) -> None:
    clock = MediaClock(capacity=4)
    peer = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    peer.bind(("127.0.0.1", 0))
    peer.setblocking(False)
    leg = MediaLeg("127.0.0.1", PortPool(41000, 41100), call_id="c", clock=clock)
    await leg.open()
    try:
        leg.configure(
            NegotiatedMedia("127.0.0.1", peer.getsockname()[1], "PCMU", 0, telephone_event, 20, "sendrecv")
        )
        clock.add_leg(leg)
        told: list[int] = []
        leg.when_digits_sent(lambda: told.append(0))
        clock.tick(0.0)
        clock.run_posted()
        assert told == [0]  # nothing was queued: the next tick tells
        told.clear()
        leg.send_digit("5", duration_ms=100)
        leg.send_digit("7", duration_ms=100)
        pending_after: list[bool] = []  # digits_pending after each tick from the first
        leg.when_digits_sent(lambda: told.append(len(pending_after)))  # the number of the telling tick
        for tick in range(1, 60):
            clock.tick(tick * 0.02)
            pending_after.append(leg.digits_pending)
            clock.run_posted()
        (at,) = told
        # Told by the very tick that sent the last of them, and only once.
        assert pending_after[at - 2] and not pending_after[at - 1] and at > 10
        packets = _drain(peer)
        assert len(packets) == 60  # one packet a tick, digits or audio
        sequences = [p.sequence for p in packets]
        assert all((b - a) & 0xFFFF == 1 for a, b in zip(sequences, sequences[1:], strict=False))
        if telephone_event is not None:
            events = [p for p in packets if p.payload_type == telephone_event]
            assert len(events) > 10 and events[0].marker
    finally:
        leg.close()
        peer.close()
