"""The native Plane over real UDP sockets on loopback: frames after the jitter delay, latching, key presses,
drops, sending, RTP stream continuity, report blocks, many legs, row reuse and argument checks.

Time is the tests' `now`; the only waiting is for the kernel to deliver loopback datagrams (poll with a
deadline) before the tick that must read them.
"""

from __future__ import annotations

import select
import socket
import time
from collections.abc import Iterator

import numpy as np
import pytest

from tonebridge._mediaplane import Plane
from tonebridge.media import g711, rfc4733
from tonebridge.media.rfc4733 import TelephoneEvent
from tonebridge.media.rtp import RtpPacket, RtpReceiveStats

FRAME = 160
TICK = 0.02
EVENT_PT = 101
MASK = 0xFFFFFFFF


class Sockets:
    """UDP sockets on 127.0.0.1 (ephemeral ports), closed at the end of the test."""

    def __init__(self) -> None:
        self.open: list[socket.socket] = []

    def new(self) -> socket.socket:
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sock.bind(("127.0.0.1", 0))
        sock.setblocking(False)
        self.open.append(sock)
        return sock

    def close(self) -> None:
        for sock in self.open:
            sock.close()


@pytest.fixture
def sockets() -> Iterator[Sockets]:
    made = Sockets()
    yield made
    made.close()


@pytest.fixture
def plane() -> Iterator[Plane]:
    made = Plane(512)
    yield made
    made.close()


def delivered(*socks: socket.socket, timeout: float = 5.0) -> None:
    """Wait until every socket has a datagram queued (each was sent one since its last read)."""
    poller = select.poll()
    waiting = {sock.fileno() for sock in socks}
    for fd in waiting:
        poller.register(fd, select.POLLIN)
    deadline = time.monotonic() + timeout
    while waiting:
        remaining = deadline - time.monotonic()
        assert remaining > 0, f"{len(waiting)} datagrams not delivered over loopback"
        for fd, _ in poller.poll(remaining * 1000):
            waiting.discard(fd)
            poller.unregister(fd)


def recv_packet(sock: socket.socket, timeout: float = 5.0) -> RtpPacket:
    ready, _, _ = select.select([sock], [], [], timeout)
    assert ready, "no packet arrived"
    return RtpPacket.parse(sock.recv(4096))


def nothing_queued(sock: socket.socket) -> bool:
    try:
        sock.recv(4096, socket.MSG_PEEK)
    except BlockingIOError:
        return True
    return False


def frames_for(plane: Plane) -> np.ndarray:
    return np.zeros((max(plane.rows, 1), FRAME), dtype=np.int16)


def tone(seed: int) -> np.ndarray:
    return (6000 * np.sin(np.arange(FRAME) * (0.05 + seed * 0.01)) + seed).astype(np.int16)


def leg(
    plane: Plane, sockets: Sockets, event_pt: int = EVENT_PT, send_pt: int = 0
) -> tuple[int, socket.socket]:
    """A configured row and its socket, its remote a placeholder until the peer's packets latch it."""
    sock = sockets.new()
    row = plane.add(sock.fileno())
    plane.configure(row, "127.0.0.1", 9, False, send_pt, event_pt, True)
    return row, sock


def address(sock: socket.socket) -> tuple[str, int]:
    return sock.getsockname()


# Receiving audio ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("codec", ["PCMU", "PCMA"])
def test_audio_comes_out_in_the_legs_row_after_the_jitter_delay(
    plane: Plane, sockets: Sockets, codec: str
) -> None:
    other_row, _ = leg(plane, sockets)
    row, sock = leg(plane, sockets)
    peer = sockets.new()
    payloads = [g711.encode(codec, tone(i)) for i in range(5)]
    frames = frames_for(plane)
    got = []
    for tick in range(7):
        if tick < len(payloads):
            packet = RtpPacket(
                g711.PAYLOAD_TYPES[codec], 100 + tick, MASK - 200 + tick * FRAME, 42, payloads[tick]
            )
            peer.sendto(packet.serialize(), address(sock))
            delivered(sock)
        assert plane.receive(tick * TICK, frames) == []
        got.append(frames[row].copy())
        assert not frames[other_row].any()
    # Two frames of delay (the timestamps wrapped meanwhile), then every packet in order, then silence.
    assert not got[0].any() and not got[1].any()
    for tick in range(5):
        np.testing.assert_array_equal(got[tick + 2], g711.decode(codec, payloads[tick]))
    stats = plane.leg_stats(row)
    assert stats["packets_received"] == 5 and stats["packets_dropped"] == 0
    assert stats["rx_ssrc"] == 42 and stats["jitter_popped"] == 5
    assert plane.totals()["packets_in"] == 5


def test_the_codec_is_the_packets_not_the_negotiated_one(plane: Plane, sockets: Sockets) -> None:
    row, sock = leg(plane, sockets, send_pt=0)
    peer = sockets.new()
    payload = g711.encode("PCMA", tone(3))
    frames = frames_for(plane)
    peer.sendto(RtpPacket(8, 1, 0, 5, payload).serialize(), address(sock))
    delivered(sock)
    for tick in range(3):
        plane.receive(tick * TICK, frames)
    np.testing.assert_array_equal(frames[row], g711.alaw_decode(payload))


def test_latching_follows_the_peers_real_address(plane: Plane, sockets: Sockets) -> None:
    row, sock = leg(plane, sockets)
    stats = plane.leg_stats(row)
    assert stats["remote"] == ("127.0.0.1", 9) and stats["latched"] is False
    frames = frames_for(plane)
    for peer in (sockets.new(), sockets.new()):
        peer.sendto(RtpPacket(0, 1, 0, 5, b"\xff" * FRAME).serialize(), address(sock))
        delivered(sock)
        plane.receive(0.0, frames)
        stats = plane.leg_stats(row)
        assert stats["remote"] == address(peer) and stats["latched"] is True
        assert plane.send(frames, np.ones(plane.rows, dtype=np.uint8)) == 1
        assert recv_packet(peer).payload_type == 0
    # A re-INVITE that does not move the media keeps the latch; one that does goes back to the SDP address.
    plane.configure(row, "127.0.0.2", 4000, False, 0, EVENT_PT, True)
    assert plane.leg_stats(row)["latched"] is True and plane.leg_stats(row)["remote"] == address(peer)
    plane.configure(row, "127.0.0.2", 4000, True, 0, EVENT_PT, True)
    assert plane.leg_stats(row)["remote"] == ("127.0.0.2", 4000) and plane.leg_stats(row)["latched"] is False


def test_malformed_unconfigured_and_unknown_packets_are_dropped(plane: Plane, sockets: Sockets) -> None:
    sock = sockets.new()
    row = plane.add(sock.fileno())
    peer = sockets.new()
    frames = frames_for(plane)
    good = RtpPacket(0, 1, 0, 5, b"\xff" * FRAME).serialize()
    peer.sendto(good, address(sock))  # before configure
    delivered(sock)
    plane.receive(0.0, frames)
    stats = plane.leg_stats(row)
    assert stats["packets_dropped"] == 1 and stats["latched"] is False and stats["remote"] is None
    plane.configure(row, "127.0.0.1", 9, False, 0, EVENT_PT, True)
    bad = [
        b"\x80\x00\x00",  # shorter than the fixed header
        bytes([0x40]) + good[1:],  # version 1
        bytes([0x8F]) + good[1:20],  # 15 CSRCs announced, not there
        bytes([0x90]) + good[1:12] + b"\x00\x00\x00\x09",  # an extension running past the end
        bytes([0xA0]) + good[1:] + b"\x00",  # padding count 0
        bytes([0xA0]) + good[1:12] + b"\x02\x00\xff",  # padding longer than the payload
        RtpPacket(18, 2, 160, 5, b"\x00" * 20).serialize(),  # G.729: neither audio we decode nor an event
        b"\x80" * 3000,  # longer than any RTP packet we take
    ]
    for tick, data in enumerate(bad, start=1):
        peer.sendto(data, address(sock))
        delivered(sock)
        plane.receive(tick * TICK, frames)
    stats = plane.leg_stats(row)
    assert stats["packets_dropped"] == 1 + len(bad)
    assert stats["packets_received"] == 1  # the unknown payload type is received, then dropped
    totals = plane.totals()
    assert totals["packets_in"] == 1 + len(bad) and totals["packets_dropped"] == 1 + len(bad)
    # An extension and padding are stripped from a good packet.
    padded = RtpPacket(0, 3, 320, 5, b"\x00" * FRAME, extension_profile=0xBEDE, extension=b"abcd", padding=4)
    peer.sendto(padded.serialize(), address(sock))
    delivered(sock)
    plane.receive(0.5, frames)
    assert plane.leg_stats(row)["jitter_pushed"] == 1


# Key presses --------------------------------------------------------------------------------------------


def event_packet(
    event: int, ts: int, duration: int, seq: int, end: bool = False, ssrc: int = 77
) -> RtpPacket:
    return RtpPacket(EVENT_PT, seq, ts, ssrc, TelephoneEvent(event, end, 10, duration).serialize())


def test_telephone_events_come_out_as_presses(plane: Plane, sockets: Sockets) -> None:
    row, sock = leg(plane, sockets)
    peer = sockets.new()
    packets = [event_packet(5, 8000, 160 * (i + 1), i) for i in range(4)]
    packets += [event_packet(5, 8000, 800, 4 + i, end=True) for i in range(3)]
    reference = rfc4733.TelephoneEventReceiver()
    frames = frames_for(plane)
    events, expected = [], []
    for tick, packet in enumerate(packets):
        peer.sendto(packet.serialize(), address(sock))
        delivered(sock)
        events += plane.receive(tick * TICK, frames)
        expected += reference.receive(packet, tick * TICK)
    assert events == [(row, "started", "5", 8000, 77, 0, False), (row, "ended", "5", 8000, 77, 800, False)]
    assert [(e.digit, e.timestamp, e.ssrc) for e in expected] == [("5", 8000, 77)] * 2
    assert plane.leg_stats(row)["events_ignored"] == 2  # the repeated end packets


def test_a_press_whose_end_packets_are_lost_ends_by_the_timer(plane: Plane, sockets: Sockets) -> None:
    row, sock = leg(plane, sockets)
    peer = sockets.new()
    frames = frames_for(plane)
    events = []
    for tick in range(3):
        peer.sendto(event_packet(11, 1234, 160 * (tick + 1), tick).serialize(), address(sock))
        delivered(sock)
        events += plane.receive(tick * TICK, frames)
    assert events == [(row, "started", "#", 1234, 77, 0, False)]
    last_seen = 2 * TICK
    assert plane.receive(last_seen + 0.49, frames) == []
    assert plane.receive(last_seen + 0.5, frames) == [(row, "ended", "#", 1234, 77, 480, True)]
    assert plane.receive(last_seen + 0.6, frames) == []


def test_events_are_only_read_on_the_negotiated_payload_type(plane: Plane, sockets: Sockets) -> None:
    row, sock = leg(plane, sockets, event_pt=-1)
    peer = sockets.new()
    frames = frames_for(plane)
    peer.sendto(event_packet(1, 0, 160, 0, end=True).serialize(), address(sock))
    delivered(sock)
    assert plane.receive(0.0, frames) == []
    assert plane.leg_stats(row)["packets_dropped"] == 1


# Sending ------------------------------------------------------------------------------------------------


def latch(plane: Plane, row: int, sock: socket.socket, peer: socket.socket, frames: np.ndarray) -> None:
    peer.sendto(RtpPacket(0, 0, 0, 1, b"").serialize(), address(sock))
    delivered(sock)
    plane.receive(0.0, frames)
    assert plane.leg_stats(row)["remote"] == address(peer)


def test_send_encodes_each_row_and_keeps_the_streams_continuous(plane: Plane, sockets: Sockets) -> None:
    frames = np.zeros((3, FRAME), dtype=np.int16)
    legs = [leg(plane, sockets, send_pt=pt) for pt in (0, 8, 0)]
    peers = [sockets.new() for _ in legs]
    for (row, sock), peer in zip(legs, peers, strict=True):
        latch(plane, row, sock, peer, frames)
    plane.configure(legs[2][0], "127.0.0.1", 9, False, 0, EVENT_PT, False)  # recvonly: nothing goes out
    plane.set_stream(legs[0][0], 0xDEADBEEF, 0xFFFF, MASK - 100)
    plane.set_stream(legs[1][0], 7, 10, 1000)
    mask = np.array([1, 0, 1], dtype=bool)
    received: list[list[RtpPacket]] = [[], [], []]
    for tick in range(3):
        out = np.stack([tone(tick), tone(tick + 10), tone(tick + 20)])
        if tick == 2:
            mask[1] = True
        assert plane.send(out, mask) == (2 if tick == 2 else 1)
        for i, peer in enumerate(peers):
            if mask[i] and i != 2:
                packet = recv_packet(peer)
                assert packet.payload == g711.encode(("PCMU", "PCMA")[i], out[i])
                received[i].append(packet)
    first = received[0]
    assert [p.sequence for p in first] == [0xFFFF, 0, 1]
    assert [p.timestamp for p in first] == [MASK - 100, (MASK - 100 + 160) & MASK, (MASK - 100 + 320) & MASK]
    assert {(p.ssrc, p.payload_type, p.marker, p.csrcs) for p in first} == {(0xDEADBEEF, 0, False, ())}
    # The masked-off row did not advance: its first packet carries the stream's initial state.
    assert [(p.sequence, p.timestamp, p.ssrc, p.payload_type) for p in received[1]] == [(10, 1000, 7, 8)]
    assert nothing_queued(peers[2])
    stats = plane.leg_stats(legs[0][0])
    assert (stats["packets_sent"], stats["octets_sent"], stats["sequence"]) == (3, 480, 2)
    assert stats["last_timestamp"] == (MASK - 100 + 320) & MASK
    assert plane.totals()["packets_out"] == 4 and plane.totals()["bytes_out"] == 4 * (12 + FRAME)


def test_event_packets_built_in_python_interleave_with_audio(plane: Plane, sockets: Sockets) -> None:
    frames = frames_for(plane)
    row, sock = leg(plane, sockets)
    peer = sockets.new()
    latch(plane, row, sock, peer, frames)
    plane.set_stream(row, 99, 500, 16000)
    mask = np.ones(1, dtype=np.uint8)
    plane.send(frames, mask)
    start = plane.timestamp(row)
    sequence, ssrc = plane.next_sequence(row, 4, start)
    assert (sequence, ssrc) == (501, 99)
    event = RtpPacket(EVENT_PT, sequence, start, ssrc, TelephoneEvent(1, False, 10, 160).serialize(), True)
    assert plane.send_raw(row, event.serialize()) is True
    plane.advance(row, FRAME)  # the event's packet interval
    plane.send(frames, mask)
    packets = [recv_packet(peer) for _ in range(3)]
    assert [(p.payload_type, p.sequence, p.timestamp) for p in packets] == [
        (0, 500, 16000),
        (EVENT_PT, 501, 16160),
        (0, 502, 16320),
    ]
    stats = plane.leg_stats(row)
    assert (stats["packets_sent"], stats["octets_sent"], stats["last_timestamp"]) == (3, 324, 16320)


def test_nothing_is_sent_without_a_remote(plane: Plane, sockets: Sockets) -> None:
    sock = sockets.new()
    row = plane.add(sock.fileno())
    frames = frames_for(plane)
    assert plane.send(frames, np.ones(1, dtype=np.uint8)) == 0
    assert plane.send_raw(row, b"\x80" * 12) is False
    assert plane.leg_stats(row)["packets_sent"] == 0


# Statistics ---------------------------------------------------------------------------------------------


def test_report_block_matches_the_python_statistics(plane: Plane, sockets: Sockets) -> None:
    row, sock = leg(plane, sockets)
    peer = sockets.new()
    frames = frames_for(plane)
    assert plane.report_block(row) is None
    reference = RtpReceiveStats()
    # Losses, a reordered pair, a duplicate, uneven arrival times and an event's repeated timestamp.
    sequences = [10, 11, 13, 12, 12, 16, 17, 20, 21, 22]
    nows = [1000.0 + i * TICK + (0.003 if i % 3 == 0 else 0.0) for i in range(len(sequences))]
    for seq, now in zip(sequences, nows, strict=True):
        packet = RtpPacket(0, seq, 5000 + (seq - 10) * FRAME, 0xCAFE, b"\xff" * FRAME)
        peer.sendto(packet.serialize(), address(sock))
        delivered(sock)
        plane.receive(now, frames)
        reference.update(packet, int(now * 8000) & MASK)
        if seq == 16:
            expected = (0xCAFE, reference.close_interval(), reference.lost, reference.extended_max_seq)
            assert plane.report_block(row) == (*expected, int(round(reference.jitter)))
    expected = (0xCAFE, reference.close_interval(), reference.lost, reference.extended_max_seq)
    assert plane.report_block(row) == (*expected, int(round(reference.jitter)))
    stats = plane.leg_stats(row)
    assert stats["lost"] == reference.lost and stats["jitter"] == reference.jitter
    assert stats["ssrc_changes"] == 0 and stats["rx_ssrc"] == 0xCAFE


# Many legs, rows, arguments -----------------------------------------------------------------------------


def test_many_legs_each_get_their_own_audio_in_one_receive(plane: Plane, sockets: Sockets) -> None:
    legs = [leg(plane, sockets) for _ in range(200)]
    assert plane.rows == 200
    peer = sockets.new()
    frames = frames_for(plane)
    for row, sock in legs:
        pcm = np.full(FRAME, row * 100 - 10000, dtype=np.int16)
        peer.sendto(RtpPacket(0, 1, 0, row + 1, g711.ulaw_encode(pcm).tobytes()).serialize(), address(sock))
    delivered(*[sock for _, sock in legs])
    for tick in range(3):
        plane.receive(tick * TICK, frames)
    for row, _ in legs:
        expected = g711.ulaw_decode(g711.ulaw_encode(np.full(FRAME, row * 100 - 10000, dtype=np.int16)))
        np.testing.assert_array_equal(frames[row], expected)
        assert plane.leg_stats(row)["rx_ssrc"] == row + 1


def test_a_removed_row_is_reused_with_fresh_state(plane: Plane, sockets: Sockets) -> None:
    legs = [leg(plane, sockets) for _ in range(3)]
    peer = sockets.new()
    frames = frames_for(plane)
    latch(plane, legs[1][0], legs[1][1], peer, frames)
    legs[1][1].close()  # Python closes the socket before removing the row: the plane copes
    plane.remove(1)
    plane.remove(1)  # a free row: no-op
    assert plane.rows == 3
    for method, args in (("leg_stats", (1,)), ("report_block", (1,)), ("set_stream", (1, 1, 1, 1))):
        with pytest.raises(KeyError):
            getattr(plane, method)(*args)
    with pytest.raises(KeyError):
        plane.configure(1, "127.0.0.1", 9, False, 0, -1, True)
    sock = sockets.new()
    assert plane.add(sock.fileno()) == 1
    stats = plane.leg_stats(1)
    assert (stats["packets_received"], stats["latched"], stats["remote"], stats["rx_ssrc"]) == (
        0,
        False,
        None,
        None,
    )
    plane.receive(1.0, frames)
    assert not frames[1].any()
    plane.remove(2)
    assert plane.rows == 2
    plane.remove(0)
    plane.remove(1)
    assert plane.rows == 0
    assert plane.receive(2.0, np.zeros(0, dtype=np.int16)) == []


def test_bad_arguments_raise(plane: Plane, sockets: Sockets) -> None:
    row, _ = leg(plane, sockets)
    leg(plane, sockets)
    mask = np.ones(2, dtype=np.uint8)
    with pytest.raises(ValueError, match="at least 320"):
        plane.receive(0.0, np.zeros(319, dtype=np.int16))
    with pytest.raises(ValueError, match="at least 320"):
        plane.send(np.zeros((1, FRAME), dtype=np.int16), mask)
    with pytest.raises(ValueError, match="mask"):
        plane.send(np.zeros((2, FRAME), dtype=np.int16), mask[:1])
    with pytest.raises(TypeError, match="int16"):
        plane.receive(0.0, np.zeros((2, FRAME), dtype=np.float32))
    with pytest.raises(ValueError, match="contiguous"):
        plane.receive(0.0, np.zeros((2, 2 * FRAME), dtype=np.int16)[:, ::2])
    frozen = np.zeros((2, FRAME), dtype=np.int16)
    frozen.flags.writeable = False
    with pytest.raises(ValueError, match="writable"):
        plane.receive(0.0, frozen)
    with pytest.raises(ValueError, match="finite"):
        plane.receive(float("nan"), np.zeros((2, FRAME), dtype=np.int16))
    with pytest.raises(ValueError, match="IPv4"):
        plane.configure(row, "::1", 4000, True, 0, -1, True)
    with pytest.raises(ValueError, match="send_pt"):
        plane.configure(row, "127.0.0.1", 4000, True, 3, -1, True)
    with pytest.raises(ValueError, match="event_pt"):
        plane.configure(row, "127.0.0.1", 4000, True, 0, 128, True)
    with pytest.raises(ValueError, match="port"):
        plane.configure(row, "127.0.0.1", 70000, True, 0, -1, True)
    with pytest.raises(ValueError, match="sequence"):
        plane.set_stream(row, 1, 1 << 16, 0)
    with pytest.raises(OSError):
        plane.add(10**6)  # not an open descriptor
    with pytest.raises(ValueError, match="capacity"):
        Plane(0)
    full = Plane(1)
    sock = sockets.new()
    full.add(sock.fileno())
    with pytest.raises(RuntimeError, match="full"):
        full.add(sock.fileno())
    full.close()
    with pytest.raises(ValueError, match="closed"):
        full.receive(0.0, np.zeros(FRAME, dtype=np.int16))


def test_sleep_until(plane: Plane) -> None:
    start = time.monotonic()
    plane.sleep_until(start - 1.0)
    assert time.monotonic() - start < 0.05
    deadline = time.monotonic() + 0.005
    plane.sleep_until(deadline)
    assert time.monotonic() >= deadline


# Liveness -----------------------------------------------------------------------------------------------


def test_silent_rows_are_those_without_rtp_since_the_cutoff(plane: Plane, sockets: Sockets) -> None:
    unconfigured = plane.add(sockets.new().fileno())
    quiet, _ = leg(plane, sockets)
    talking, sock = leg(plane, sockets)
    plane.configure(quiet, "127.0.0.1", 9, False, 0, EVENT_PT, True, now=100.0)
    plane.configure(talking, "127.0.0.1", 9, False, 0, EVENT_PT, True, now=100.0)
    peer = sockets.new()
    frames = frames_for(plane)
    assert plane.leg_stats(talking)["last_received"] is None
    # Comfort noise (PT 13) is not decoded, but it is the peer's RTP: it counts as a sign of life.
    peer.sendto(RtpPacket(13, 1, 0, 5, b"\x40").serialize(), address(sock))
    delivered(sock)
    plane.receive(103.0, frames)
    assert plane.leg_stats(talking)["last_received"] == 103.0
    # Without a packet, a row counts from its configure; a row never configured is never silent.
    assert plane.silent_rows(104.0, 5.0) == []
    assert plane.silent_rows(106.0, 5.0) == [quiet]
    assert plane.silent_rows(109.0, 5.0) == [quiet, talking]
    assert unconfigured not in plane.silent_rows(1000.0, 0.0)


def test_a_new_configure_restarts_the_wait_for_rtp(plane: Plane, sockets: Sockets) -> None:
    row, sock = leg(plane, sockets)
    plane.configure(row, "127.0.0.1", 9, False, 0, EVENT_PT, True, now=10.0)
    assert plane.silent_rows(20.0, 5.0) == [row]
    plane.configure(row, "127.0.0.1", 9, False, 0, EVENT_PT, True, now=20.0)  # a re-INVITE (resume)
    assert plane.silent_rows(24.0, 5.0) == []
    plane.remove(row)
    assert plane.silent_rows(100.0, 5.0) == []


def test_configure_defaults_to_the_monotonic_clock(plane: Plane, sockets: Sockets) -> None:
    row, _ = leg(plane, sockets)
    now = time.monotonic()
    assert plane.silent_rows(now, 60.0) == []
    assert plane.silent_rows(now + 61.0, 60.0) == [row]


def test_silent_rows_checks_its_arguments(plane: Plane, sockets: Sockets) -> None:
    row, _ = leg(plane, sockets)
    with pytest.raises(ValueError, match="older_than"):
        plane.silent_rows(0.0, -1.0)
    with pytest.raises(ValueError, match="now"):
        plane.silent_rows(float("nan"), 1.0)
    with pytest.raises(ValueError, match="now"):
        plane.configure(row, "127.0.0.1", 9, False, 0, -1, True, now=float("inf"))
