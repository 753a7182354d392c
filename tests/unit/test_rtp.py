"""RTP packets, sequence arithmetic, receive statistics (RFC 3550 A.1/A.3/A.8) and outgoing streams."""

from __future__ import annotations

import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tonebridge.media.rtp import RtpError, RtpPacket, RtpReceiveStats, RtpStream, seq_diff, ts_diff


def _packet(
    payload_type: int,
    sequence: int,
    timestamp: int,
    ssrc: int,
    payload: bytes,
    marker: bool,
    csrcs: list[int],
    extension: tuple[int, int] | None,
    padding: int,
) -> RtpPacket:
    profile, words = extension if extension is not None else (None, 0)
    return RtpPacket(
        payload_type,
        sequence,
        timestamp,
        ssrc,
        payload,
        marker,
        tuple(csrcs),
        profile,
        bytes(range(4 * words)),
        padding,
    )


packets = st.builds(
    _packet,
    st.integers(0, 127),
    st.integers(0, 0xFFFF),
    st.integers(0, 0xFFFFFFFF),
    st.integers(0, 0xFFFFFFFF),
    st.binary(max_size=200),
    st.booleans(),
    st.lists(st.integers(0, 0xFFFFFFFF), max_size=15),
    st.one_of(st.none(), st.tuples(st.integers(0, 0xFFFF), st.integers(0, 5))),
    st.integers(0, 255),
)


@given(packets)
def test_serialize_then_parse_is_identity(packet: RtpPacket) -> None:
    assert RtpPacket.parse(packet.serialize()) == packet


def test_parse_known_packet() -> None:
    data = bytes([0x80, 0x80 | 8, 0x12, 0x34, 0, 0, 0x01, 0x00, 0xDE, 0xAD, 0xBE, 0xEF]) + b"\xd5" * 160
    packet = RtpPacket.parse(data)
    assert (packet.payload_type, packet.marker, packet.sequence, packet.timestamp, packet.ssrc) == (
        8,
        True,
        0x1234,
        256,
        0xDEADBEEF,
    )
    assert packet.payload == b"\xd5" * 160
    assert packet.serialize() == data


def test_parse_csrcs_extension_and_padding() -> None:
    header = bytes([0x80 | 0x20 | 0x10 | 2, 0, 0, 1]) + struct.pack("!II", 160, 7)
    csrcs = struct.pack("!II", 11, 22)
    extension = struct.pack("!HH", 0xBEDE, 1) + b"\x10\xaa\x00\x00"
    data = header + csrcs + extension + b"abc" + b"\x00\x00\x03"
    packet = RtpPacket.parse(data)
    assert packet.csrcs == (11, 22)
    assert packet.extension_profile == 0xBEDE and packet.extension == b"\x10\xaa\x00\x00"
    assert packet.payload == b"abc" and packet.padding == 3


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"", "too short"),
        (bytes(11), "too short"),
        (bytes([0x40]) + bytes(11), "version 1"),
        (bytes([0x82]) + bytes(11) + bytes(4), "CSRCs"),
        (bytes([0x90]) + bytes(11) + b"\x00\x00", "extension header is missing"),
        (bytes([0x90]) + bytes(11) + b"\x00\x00\x00\x02" + bytes(4), "runs past"),
        (bytes([0xA0]) + bytes(11) + b"\x00", "padding count 0"),
        (bytes([0xA0]) + bytes(11) + b"\x00\x09", "padding count 9"),
    ],
)
def test_invalid_packets_raise_clear_errors(data: bytes, message: str) -> None:
    with pytest.raises(RtpError, match=message):
        RtpPacket.parse(data)


@given(st.binary(max_size=64))
def test_garbage_raises_only_rtp_error(data: bytes) -> None:
    try:
        RtpPacket.parse(data)
    except RtpError:
        pass


def test_serialize_rejects_out_of_range_fields() -> None:
    with pytest.raises(RtpError, match="payload type"):
        RtpPacket(128, 0, 0, 0, b"").serialize()
    with pytest.raises(RtpError, match="multiple of 4"):
        RtpPacket(0, 0, 0, 0, b"", extension_profile=1, extension=b"abc").serialize()


def test_wrapping_differences() -> None:
    assert seq_diff(1, 0) == 1
    assert seq_diff(0, 65535) == 1
    assert seq_diff(65535, 0) == -1
    assert seq_diff(0x8000, 0) == -32768
    assert seq_diff(0x7FFF, 0) == 32767
    assert ts_diff(5, 0xFFFFFFFF) == 6
    assert ts_diff(0xFFFFFFFF, 5) == -6
    assert ts_diff(160, 0) == 160


def _pkt(seq: int, ts: int, ssrc: int = 1) -> RtpPacket:
    return RtpPacket(0, seq & 0xFFFF, ts & 0xFFFFFFFF, ssrc, b"")


def test_stats_count_losses_across_sequence_wrap() -> None:
    stats = RtpReceiveStats()
    first = 65530
    for i in range(20):
        if i in (3, 4, 10):
            continue  # lost
        stats.update(_pkt(first + i, i * 160), i * 160)
    assert stats.received == 17
    assert stats.expected == 20
    assert stats.lost == 3
    assert stats.extended_max_seq == 65536 + (first + 19) % 65536
    assert stats.fraction_lost == (3 * 256) // 20


def test_stats_reordering_and_duplicates() -> None:
    stats = RtpReceiveStats()
    for seq in (100, 102, 101, 103, 103):
        stats.update(_pkt(seq, seq * 160), seq * 160)
    assert stats.expected == 4
    assert stats.received == 5
    assert stats.lost == -1  # A.3: duplicates make the count negative
    assert stats.extended_max_seq == 103
    assert stats.fraction_lost == 0


def test_fraction_lost_is_per_interval() -> None:
    stats = RtpReceiveStats()
    for seq in range(10):
        if seq != 5:
            stats.update(_pkt(seq, seq * 160), seq * 160)
    assert stats.close_interval() == 256 // 10
    for seq in range(10, 20):
        stats.update(_pkt(seq, seq * 160), seq * 160)
    assert stats.fraction_lost == 0
    assert stats.lost == 1  # cumulative


def test_jitter_zero_for_steady_arrivals_and_estimated_for_alternating_delay() -> None:
    steady = RtpReceiveStats()
    for i in range(50):
        steady.update(_pkt(i, 1000 + i * 160), 77 + i * 160)
    assert steady.jitter == 0

    wobbly = RtpReceiveStats()
    for i in range(2000):
        delay = 40 if i % 2 else 0  # transit alternates by 40 units: D = 40 every packet
        wobbly.update(_pkt(i, i * 160), i * 160 + delay)
    # A.8: J converges to the mean |D| = 40.
    assert wobbly.jitter == pytest.approx(40, abs=0.5)


def test_jitter_ignores_repeated_timestamps() -> None:
    stats = RtpReceiveStats()
    for i in range(10):
        stats.update(_pkt(i, 5000), 5000 + i * 160)  # the packets of one telephone-event
    assert stats.jitter == 0
    assert stats.received == 10


def test_new_ssrc_restarts_at_once() -> None:
    stats = RtpReceiveStats()
    for seq in range(10):
        if seq != 4:
            stats.update(_pkt(seq, seq * 160, ssrc=1), seq * 160)
    assert stats.lost == 1
    assert stats.update(_pkt(40000, 123456, ssrc=2), 9999)
    assert (stats.ssrc, stats.ssrc_changes) == (2, 1)
    assert (stats.received, stats.expected, stats.lost) == (1, 1, 0)
    stats.update(_pkt(40001, 123456 + 160, ssrc=2), 9999 + 160)
    assert (stats.received, stats.expected, stats.lost, stats.extended_max_seq) == (2, 2, 0, 40001)
    assert stats.fraction_lost == 0


def test_large_sequence_jump_needs_a_second_packet() -> None:
    stats = RtpReceiveStats()
    for seq in range(5):
        stats.update(_pkt(seq, seq * 160), seq * 160)
    assert stats.update(_pkt(20000, 0), 0) is False  # A.1: judged invalid until confirmed
    assert stats.extended_max_seq == 4
    assert stats.update(_pkt(20001, 160), 160) is True  # the sender restarted: follow it
    assert stats.extended_max_seq == 20001
    assert stats.lost == 0


def test_stream_builds_consecutive_packets() -> None:
    stream = RtpStream(8, ssrc=0x1234)
    stream.sequence, stream.timestamp = 65535, 0xFFFFFF00
    a = stream.next_packet(b"x" * 160, 160, marker=True)
    b = stream.next_packet(b"y" * 160, 160)
    assert (a.payload_type, a.ssrc, a.sequence, a.timestamp, a.marker) == (8, 0x1234, 65535, 0xFFFFFF00, True)
    assert (b.sequence, b.timestamp, b.marker) == (0, (0xFFFFFF00 + 160) & 0xFFFFFFFF, False)
    assert (stream.packets_sent, stream.octets_sent) == (2, 320)


def test_event_packets_do_not_move_the_clock() -> None:
    stream = RtpStream(0)
    ts = stream.timestamp
    seq = stream.sequence
    event = stream.event_packet(101, b"\x01\x0a\x00\xa0", ts, marker=True)
    assert (event.payload_type, event.timestamp, event.sequence, event.marker) == (101, ts, seq, True)
    assert stream.timestamp == ts and stream.sequence == (seq + 1) & 0xFFFF
    stream.advance(160)
    assert stream.next_packet(b"", 160).timestamp == (ts + 160) & 0xFFFFFFFF
    assert stream.packets_sent == 2 and stream.octets_sent == 4


def test_streams_start_at_random() -> None:
    streams = [RtpStream(0) for _ in range(8)]
    assert len({s.ssrc for s in streams}) == 8
    assert len({s.timestamp for s in streams}) > 1
    assert len({s.sequence for s in streams}) > 1
    assert RtpStream(0, ssrc=42).ssrc == 42
