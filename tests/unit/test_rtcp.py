"""RTCP compound packets: build, parse, and survive garbage (RFC 3550 §6)."""

from __future__ import annotations

import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tonebridge.media.rtcp import (
    Goodbye,
    ReceiverReport,
    ReportBlock,
    RtcpError,
    SdesChunk,
    SenderReport,
    SourceDescription,
    build_report,
    ntp_timestamp,
    parse_compound,
)
from tonebridge.media.rtp import RtpPacket, RtpReceiveStats, RtpStream

BLOCK = ReportBlock(
    ssrc=0xCAFE,
    fraction_lost=25,
    cumulative_lost=-3,
    highest_seq=70000,
    jitter=42,
    lsr=0x12345678,
    dlsr=65536,
)


def test_each_packet_type_round_trips() -> None:
    packets = [
        SenderReport(1, 0xE000000180000000, 1234, 10, 1600, (BLOCK,)),
        ReceiverReport(2, (BLOCK, ReportBlock(7, 255, 0x7FFFFF, 1, 2))),
        SourceDescription((SdesChunk(3, ((1, b"alice@example"), (2, b"Alice"))), SdesChunk(4, ()))),
        Goodbye((5, 6), "call ended"),
        Goodbye((9,)),
    ]
    data = b"".join(p.serialize() for p in packets)
    assert len(data) % 4 == 0
    assert parse_compound(data) == packets


def test_sdes_cname_padding_for_every_length() -> None:
    for n in range(1, 12):
        sdes = SourceDescription.for_cname(77, "x" * n)
        data = sdes.serialize()
        assert len(data) % 4 == 0
        (parsed,) = parse_compound(data)
        assert isinstance(parsed, SourceDescription)
        assert parsed.chunks[0].cname == "x" * n


def test_cumulative_lost_is_clamped_to_24_bits() -> None:
    block = ReportBlock(1, 0, -10_000_000, 0, 0)
    (rr,) = parse_compound(ReceiverReport(2, (block,)).serialize())
    assert isinstance(rr, ReceiverReport)
    assert rr.reports[0].cumulative_lost == -0x800000


def test_build_report_sends_sr_after_sending_and_rr_before() -> None:
    stream = RtpStream(0, ssrc=0xAAAA)
    stats = RtpReceiveStats()
    for seq in range(10):
        if seq != 3:
            stats.update(RtpPacket(0, seq, seq * 160, 0xBBBB, b""), seq * 160 + (seq % 2) * 8)

    rr, sdes = parse_compound(build_report(stream, stats, cname="leg-1"))
    assert isinstance(rr, ReceiverReport) and rr.ssrc == 0xAAAA
    assert isinstance(sdes, SourceDescription) and sdes.chunks[0].cname == "leg-1"
    (block,) = rr.reports
    assert (block.ssrc, block.cumulative_lost, block.highest_seq) == (0xBBBB, 1, 9)
    assert block.fraction_lost == 256 // 10
    assert block.jitter == round(stats.jitter) and block.jitter > 0

    for _ in range(5):
        stream.next_packet(b"\xff" * 160, 160)
    sr, _, bye = parse_compound(
        build_report(
            stream,
            stats,
            wallclock=1_700_000_000.5,
            last_sr=0x11112222,
            last_sr_age=0.25,
            bye=True,
            reason="bye",
        )
    )
    assert isinstance(sr, SenderReport)
    assert (sr.packet_count, sr.octet_count, sr.rtp_timestamp) == (5, 800, stream.timestamp)
    assert sr.ntp_timestamp == ntp_timestamp(1_700_000_000.5)
    assert sr.ntp_timestamp >> 32 == 1_700_000_000 + 2_208_988_800
    assert sr.reports[0].fraction_lost == 0  # the interval was closed by the previous report
    assert (sr.reports[0].lsr, sr.reports[0].dlsr) == (0x11112222, 16384)
    assert bye == Goodbye((0xAAAA,), "bye")


def test_build_report_without_a_source_has_no_blocks() -> None:
    stream = RtpStream(0)
    (rr, _) = parse_compound(build_report(stream, None))
    assert isinstance(rr, ReceiverReport) and rr.reports == ()
    (rr, _) = parse_compound(build_report(stream, RtpReceiveStats()))
    assert isinstance(rr, ReceiverReport) and rr.reports == ()


def test_ntp_middle_is_what_lsr_echoes() -> None:
    sr = SenderReport(1, 0x0123456789ABCDEF, 0, 0, 0)
    assert sr.ntp_middle == 0x456789AB


def test_unknown_packet_types_are_skipped() -> None:
    app = struct.pack("!BBH", 0x80, 204, 2) + b"\x00\x00\x00\x01name"
    data = ReceiverReport(1).serialize() + app + Goodbye((1,)).serialize()
    assert parse_compound(data) == [ReceiverReport(1), Goodbye((1,))]


def test_padding_on_the_last_packet() -> None:
    bye = Goodbye((1,)).serialize()
    padded = bytes([bye[0] | 0x20, bye[1]]) + struct.pack("!H", 2) + bye[4:] + b"\x00\x00\x00\x04"
    assert parse_compound(ReceiverReport(3).serialize() + padded) == [ReceiverReport(3), Goodbye((1,))]
    with pytest.raises(RtcpError, match="not the last"):
        parse_compound(padded + ReceiverReport(3).serialize())


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"", "too short"),
        (b"\x80\xc9\x00", "too short"),
        (b"\x80\xc9\x00\x01\x00\x00", "multiple of 4"),
        (b"\x40\xc9\x00\x01" + bytes(4), "version 1"),
        (b"\x80\xc9\x00\x05" + bytes(4), "claims 20 octets"),
        (b"\x81\xc9\x00\x01" + bytes(4), "announces 1 report blocks"),
        (b"\x80\xc8\x00\x01" + bytes(4), "SR too short"),
        (b"\x81\xca\x00\x01" + bytes(4), "not terminated"),
        (b"\x82\xcb\x00\x01" + bytes(4), "BYE announces 2"),
    ],
)
def test_malformed_compounds_raise(data: bytes, message: str) -> None:
    with pytest.raises(RtcpError, match=message):
        parse_compound(data)


@given(st.binary(max_size=120))
def test_garbage_raises_only_rtcp_error(data: bytes) -> None:
    try:
        parse_compound(data)
    except RtcpError:
        pass


@given(st.binary(max_size=80))
def test_garbage_after_a_valid_header_raises_only_rtcp_error(tail: bytes) -> None:
    tail = tail[: len(tail) // 4 * 4]
    for packet_type in (200, 201, 202, 203):
        for count in (0, 1, 3):
            data = struct.pack("!BBH", 0x80 | count, packet_type, len(tail) // 4) + tail
            try:
                parse_compound(data)
            except RtcpError:
                pass
