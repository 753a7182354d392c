"""RTCP compound packets (RFC 3550 §6): SR, RR, SDES and BYE, built from a stream's counters and parsed.

Sans-IO: the wall clock for the NTP timestamp of a sender report is passed in (or read once when omitted).
Packet types this module does not model (APP, XR, feedback) are skipped when parsing, so a peer's extra
reports never make its whole compound packet unreadable.
"""

from __future__ import annotations

import struct
import time
from dataclasses import dataclass

from tonebridge.media.rtp import RtpReceiveStats, RtpStream

RTCP_VERSION = 2
PT_SR = 200
PT_RR = 201
PT_SDES = 202
PT_BYE = 203
SDES_END = 0
SDES_CNAME = 1
NTP_EPOCH_OFFSET = 2_208_988_800  # seconds from 1900-01-01 (NTP) to 1970-01-01 (Unix)

_COMMON = struct.Struct("!BBH")
_REPORT_BLOCK = struct.Struct("!IIIIII")
_SENDER_INFO = struct.Struct("!IQIII")


class RtcpError(ValueError):
    """Data that is not a valid RTCP compound packet."""


@dataclass(frozen=True)
class ReportBlock:
    """Reception report about one source (RFC 3550 §6.4.1)."""

    ssrc: int
    fraction_lost: int  # 8-bit fixed point: lost / expected * 256 over the last interval
    cumulative_lost: int  # signed 24 bits
    highest_seq: int  # extended highest sequence number received
    jitter: int  # timestamp units
    lsr: int = 0  # middle 32 bits of the NTP timestamp of the last SR heard from this source
    dlsr: int = 0  # delay since that SR, in 1/65536 s

    def serialize(self) -> bytes:
        lost = max(-0x800000, min(0x7FFFFF, self.cumulative_lost)) & 0xFFFFFF
        return _REPORT_BLOCK.pack(
            self.ssrc,
            ((self.fraction_lost & 0xFF) << 24) | lost,
            self.highest_seq & 0xFFFFFFFF,
            self.jitter & 0xFFFFFFFF,
            self.lsr & 0xFFFFFFFF,
            self.dlsr & 0xFFFFFFFF,
        )

    @classmethod
    def parse(cls, data: bytes, offset: int) -> ReportBlock:
        ssrc, lost_word, highest, jitter, lsr, dlsr = _REPORT_BLOCK.unpack_from(data, offset)
        lost = lost_word & 0xFFFFFF
        if lost & 0x800000:
            lost -= 0x1000000
        return cls(ssrc, lost_word >> 24, lost, highest, jitter, lsr, dlsr)


@dataclass(frozen=True)
class SenderReport:
    """SR (RFC 3550 §6.4.1)."""

    ssrc: int
    ntp_timestamp: int  # 64-bit NTP format: seconds since 1900 in the high 32 bits
    rtp_timestamp: int
    packet_count: int
    octet_count: int
    reports: tuple[ReportBlock, ...] = ()

    @property
    def ntp_middle(self) -> int:
        """The middle 32 bits of the NTP timestamp: what a receiver echoes as LSR."""
        return (self.ntp_timestamp >> 16) & 0xFFFFFFFF

    def serialize(self) -> bytes:
        body = _SENDER_INFO.pack(
            self.ssrc,
            self.ntp_timestamp & 0xFFFFFFFFFFFFFFFF,
            self.rtp_timestamp & 0xFFFFFFFF,
            self.packet_count & 0xFFFFFFFF,
            self.octet_count & 0xFFFFFFFF,
        )
        return _packet(PT_SR, len(self.reports), body + b"".join(r.serialize() for r in self.reports))


@dataclass(frozen=True)
class ReceiverReport:
    """RR (RFC 3550 §6.4.2)."""

    ssrc: int
    reports: tuple[ReportBlock, ...] = ()

    def serialize(self) -> bytes:
        body = struct.pack("!I", self.ssrc) + b"".join(r.serialize() for r in self.reports)
        return _packet(PT_RR, len(self.reports), body)


@dataclass(frozen=True)
class SdesChunk:
    ssrc: int
    items: tuple[tuple[int, bytes], ...]  # (item type, value) pairs, RFC 3550 §6.5

    @property
    def cname(self) -> str | None:
        for kind, value in self.items:
            if kind == SDES_CNAME:
                return value.decode("utf-8", "replace")
        return None


@dataclass(frozen=True)
class SourceDescription:
    """SDES (RFC 3550 §6.5)."""

    chunks: tuple[SdesChunk, ...]

    @classmethod
    def for_cname(cls, ssrc: int, cname: str) -> SourceDescription:
        return cls((SdesChunk(ssrc, ((SDES_CNAME, cname.encode("utf-8")),)),))

    def serialize(self) -> bytes:
        body = bytearray()
        for chunk in self.chunks:
            body += struct.pack("!I", chunk.ssrc)
            for kind, value in chunk.items:
                if len(value) > 255:
                    raise RtcpError(f"SDES item of {len(value)} octets, at most 255 fit")
                body += bytes([kind, len(value)]) + value
            # §6.5: the item list ends with at least one null octet, then pads to a 32-bit boundary.
            body += bytes(4 - len(body) % 4)
        return _packet(PT_SDES, len(self.chunks), bytes(body))


@dataclass(frozen=True)
class Goodbye:
    """BYE (RFC 3550 §6.6)."""

    ssrcs: tuple[int, ...]
    reason: str = ""

    def serialize(self) -> bytes:
        body = b"".join(struct.pack("!I", s) for s in self.ssrcs)
        if self.reason:
            text = self.reason.encode("utf-8")[:255]
            body += bytes([len(text)]) + text
            body += bytes(-len(body) % 4)
        return _packet(PT_BYE, len(self.ssrcs), body)


RtcpPacket = SenderReport | ReceiverReport | SourceDescription | Goodbye


def _packet(packet_type: int, count: int, body: bytes) -> bytes:
    if count > 31:
        raise RtcpError(f"{count} items in one RTCP packet, at most 31 fit in the count field")
    if len(body) % 4:
        raise RtcpError("RTCP packet body is not a multiple of 4 octets")
    return _COMMON.pack((RTCP_VERSION << 6) | count, packet_type, len(body) // 4) + body


def ntp_timestamp(unix_time: float) -> int:
    """A Unix time as a 64-bit NTP timestamp (RFC 3550 §4)."""
    seconds = int(unix_time)
    fraction = int((unix_time - seconds) * (1 << 32)) & 0xFFFFFFFF
    return (((seconds + NTP_EPOCH_OFFSET) & 0xFFFFFFFF) << 32) | fraction


def parse_compound(data: bytes) -> list[RtcpPacket]:
    """Parse a compound RTCP packet (RFC 3550 §6.1); raises `RtcpError` on anything malformed."""
    if len(data) < 4:
        raise RtcpError(f"RTCP packet too short: {len(data)} octets")
    if len(data) % 4:
        raise RtcpError(f"RTCP compound length {len(data)} is not a multiple of 4 octets")
    packets: list[RtcpPacket] = []
    offset = 0
    while offset < len(data):
        if len(data) - offset < 4:
            raise RtcpError(f"truncated RTCP header at octet {offset}")
        first, packet_type, words = _COMMON.unpack_from(data, offset)
        if first >> 6 != RTCP_VERSION:
            raise RtcpError(f"RTCP version {first >> 6} at octet {offset}, expected {RTCP_VERSION}")
        count = first & 0x1F
        end = offset + 4 + 4 * words
        if end > len(data):
            raise RtcpError(
                f"RTCP packet at octet {offset} claims {4 * words} octets, only {len(data) - offset - 4} remain"
            )
        body_end = end
        if first & 0x20:
            # A.2: only the last packet of a compound may be padded; the last octet counts the padding.
            if end != len(data):
                raise RtcpError("padding on an RTCP packet that is not the last of its compound")
            pad = data[end - 1]
            if pad == 0 or end - pad < offset + 4:
                raise RtcpError(f"invalid RTCP padding count {pad}")
            body_end = end - pad
        body = bytes(data[offset + 4 : body_end])
        parsed = _parse_one(packet_type, count, body)
        if parsed is not None:
            packets.append(parsed)
        offset = end
    return packets


def _report_blocks(body: bytes, start: int, count: int, kind: str) -> tuple[ReportBlock, ...]:
    if len(body) < start + count * _REPORT_BLOCK.size:
        raise RtcpError(f"{kind} announces {count} report blocks but holds {len(body)} octets")
    return tuple(ReportBlock.parse(body, start + i * _REPORT_BLOCK.size) for i in range(count))


def _parse_one(packet_type: int, count: int, body: bytes) -> RtcpPacket | None:
    if packet_type == PT_SR:
        if len(body) < _SENDER_INFO.size:
            raise RtcpError(f"SR too short: {len(body)} octets")
        ssrc, ntp, rtp_ts, packets, octets = _SENDER_INFO.unpack_from(body)
        return SenderReport(
            ssrc, ntp, rtp_ts, packets, octets, _report_blocks(body, _SENDER_INFO.size, count, "SR")
        )
    if packet_type == PT_RR:
        if len(body) < 4:
            raise RtcpError(f"RR too short: {len(body)} octets")
        (ssrc,) = struct.unpack_from("!I", body)
        return ReceiverReport(ssrc, _report_blocks(body, 4, count, "RR"))
    if packet_type == PT_SDES:
        return SourceDescription(_parse_sdes_chunks(body, count))
    if packet_type == PT_BYE:
        if len(body) < 4 * count:
            raise RtcpError(f"BYE announces {count} sources but holds {len(body)} octets")
        ssrcs = struct.unpack_from(f"!{count}I", body)
        reason = ""
        rest = body[4 * count :]
        if rest:
            length = rest[0]
            if len(rest) < 1 + length:
                raise RtcpError("BYE reason runs past the end of the packet")
            reason = rest[1 : 1 + length].decode("utf-8", "replace")
        return Goodbye(tuple(ssrcs), reason)
    return None  # APP, XR, feedback and others: not ours to read


def _parse_sdes_chunks(body: bytes, count: int) -> tuple[SdesChunk, ...]:
    chunks = []
    offset = 0
    for _ in range(count):
        if len(body) < offset + 4:
            raise RtcpError("SDES chunk truncated before its SSRC")
        (ssrc,) = struct.unpack_from("!I", body, offset)
        offset += 4
        items = []
        while True:
            if offset >= len(body):
                raise RtcpError("SDES item list not terminated")
            kind = body[offset]
            if kind == SDES_END:
                # Skip the terminating null and the padding to the next 32-bit boundary.
                offset = (offset // 4 + 1) * 4
                break
            if offset + 2 > len(body) or offset + 2 + body[offset + 1] > len(body):
                raise RtcpError("SDES item runs past the end of the packet")
            length = body[offset + 1]
            items.append((kind, bytes(body[offset + 2 : offset + 2 + length])))
            offset += 2 + length
        chunks.append(SdesChunk(ssrc, tuple(items)))
    return tuple(chunks)


def build_report(
    stream: RtpStream,
    stats: RtpReceiveStats | None = None,
    *,
    cname: str | None = None,
    wallclock: float | None = None,
    last_sr: int = 0,
    last_sr_age: float = 0.0,
    bye: bool = False,
    reason: str = "",
) -> bytes:
    """A compound packet: SR (once we have sent) or RR, then SDES CNAME, then BYE when `bye`.

    `stats` adds a report block about the source we hear, and closes its loss interval (A.3). `last_sr`
    is `SenderReport.ntp_middle` of the last SR heard from that source and `last_sr_age` the seconds since
    it arrived (0 and 0.0 when none arrived: LSR and DLSR then stay 0, §6.4.1). `wallclock` is the Unix time
    of the report (read from the clock when omitted).
    """
    assert stream.ssrc is not None
    blocks: tuple[ReportBlock, ...] = ()
    if stats is not None and stats.ssrc is not None:
        blocks = (
            ReportBlock(
                ssrc=stats.ssrc,
                fraction_lost=stats.close_interval(),
                cumulative_lost=stats.lost,
                highest_seq=stats.extended_max_seq,
                jitter=int(round(stats.jitter)),
                lsr=last_sr,
                dlsr=int(last_sr_age * 65536) if last_sr else 0,
            ),
        )
    first: SenderReport | ReceiverReport
    if stream.packets_sent:
        now = time.time() if wallclock is None else wallclock
        first = SenderReport(
            stream.ssrc, ntp_timestamp(now), stream.timestamp, stream.packets_sent, stream.octets_sent, blocks
        )
    else:
        first = ReceiverReport(stream.ssrc, blocks)
    parts = [
        first.serialize(),
        SourceDescription.for_cname(stream.ssrc, cname or f"{stream.ssrc:08x}@tonebridge").serialize(),
    ]
    if bye:
        parts.append(Goodbye((stream.ssrc,), reason).serialize())
    return b"".join(parts)
