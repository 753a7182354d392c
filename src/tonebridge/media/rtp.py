"""RTP packets and their arithmetic (RFC 3550): parse and serialise, receive statistics, outgoing streams.

Sans-IO: nothing here owns a socket or reads a clock; arrival times are passed in by the caller.
"""

from __future__ import annotations

import secrets
import struct
from dataclasses import dataclass, field

RTP_VERSION = 2
HEADER_SIZE = 12
_HEADER = struct.Struct("!BBHII")

# RFC 3550 A.1: the limits of the sequence number validation.
MAX_DROPOUT = 3000
MAX_MISORDER = 100
SEQ_MOD = 1 << 16


class RtpError(ValueError):
    """A datagram that is not a valid RTP packet, or a packet that cannot be serialised."""


def seq_diff(a: int, b: int) -> int:
    """a - b for 16-bit sequence numbers, as a signed value in [-32768, 32767]."""
    return ((a - b + 0x8000) & 0xFFFF) - 0x8000


def ts_diff(a: int, b: int) -> int:
    """a - b for 32-bit RTP timestamps, as a signed value in [-2^31, 2^31 - 1]."""
    return ((a - b + 0x80000000) & 0xFFFFFFFF) - 0x80000000


@dataclass
class RtpPacket:
    """One RTP packet (RFC 3550 §5.1). `padding` is the number of padding octets (0 for none)."""

    payload_type: int
    sequence: int
    timestamp: int
    ssrc: int
    payload: bytes
    marker: bool = False
    csrcs: tuple[int, ...] = ()
    extension_profile: int | None = None  # set when the header carries an extension (RFC 3550 §5.3.1)
    extension: bytes = b""
    padding: int = 0

    @classmethod
    def parse(cls, data: bytes) -> RtpPacket:
        """Parse a datagram; raises `RtpError` saying what is wrong with it."""
        if len(data) < HEADER_SIZE:
            raise RtpError(
                f"RTP packet too short: {len(data)} octets, the fixed header alone is {HEADER_SIZE}"
            )
        first, second, sequence, timestamp, ssrc = _HEADER.unpack_from(data)
        version = first >> 6
        if version != RTP_VERSION:
            raise RtpError(f"RTP version {version}, expected {RTP_VERSION}")
        has_padding = bool(first & 0x20)
        has_extension = bool(first & 0x10)
        csrc_count = first & 0x0F
        offset = HEADER_SIZE + 4 * csrc_count
        if len(data) < offset:
            raise RtpError(f"RTP packet too short for its {csrc_count} CSRCs: {len(data)} octets")
        csrcs = struct.unpack_from(f"!{csrc_count}I", data, HEADER_SIZE) if csrc_count else ()
        extension_profile: int | None = None
        extension = b""
        if has_extension:
            if len(data) < offset + 4:
                raise RtpError("RTP header extension flag set but the extension header is missing")
            extension_profile, words = struct.unpack_from("!HH", data, offset)
            offset += 4
            if len(data) < offset + 4 * words:
                raise RtpError(f"RTP header extension of {words} words runs past the end of the packet")
            extension = bytes(data[offset : offset + 4 * words])
            offset += 4 * words
        end = len(data)
        padding = 0
        if has_padding:
            # RFC 3550 §5.1: the last octet counts the padding octets, itself included.
            padding = data[-1]
            if padding == 0 or end - padding < offset:
                raise RtpError(f"RTP padding count {padding} is invalid for a packet of {len(data)} octets")
            end -= padding
        return cls(
            payload_type=second & 0x7F,
            sequence=sequence,
            timestamp=timestamp,
            ssrc=ssrc,
            payload=bytes(data[offset:end]),
            marker=bool(second & 0x80),
            csrcs=tuple(csrcs),
            extension_profile=extension_profile,
            extension=extension,
            padding=padding,
        )

    def serialize(self) -> bytes:
        """The packet on the wire; raises `RtpError` when a field is out of range."""
        if not 0 <= self.payload_type <= 127:
            raise RtpError(f"payload type {self.payload_type} out of range 0-127")
        if len(self.csrcs) > 15:
            raise RtpError(f"{len(self.csrcs)} CSRCs, at most 15 fit in the header")
        if len(self.extension) % 4:
            raise RtpError("RTP header extension length must be a multiple of 4 octets")
        if not 0 <= self.padding <= 255:
            raise RtpError(f"padding of {self.padding} octets out of range 0-255")
        has_extension = self.extension_profile is not None
        first = (
            (RTP_VERSION << 6)
            | (0x20 if self.padding else 0)
            | (0x10 if has_extension else 0)
            | len(self.csrcs)
        )
        second = (0x80 if self.marker else 0) | self.payload_type
        parts = [
            _HEADER.pack(
                first, second, self.sequence & 0xFFFF, self.timestamp & 0xFFFFFFFF, self.ssrc & 0xFFFFFFFF
            )
        ]
        if self.csrcs:
            parts.append(struct.pack(f"!{len(self.csrcs)}I", *self.csrcs))
        if has_extension:
            parts.append(struct.pack("!HH", self.extension_profile, len(self.extension) // 4))
            parts.append(self.extension)
        parts.append(self.payload)
        if self.padding:
            parts.append(bytes(self.padding - 1) + bytes([self.padding]))
        return b"".join(parts)


class RtpReceiveStats:
    """Reception statistics of one incoming source (RFC 3550 A.1, A.3, A.8).

    `update` takes each packet with its arrival time in RTP timestamp units. A new SSRC restarts the
    statistics at once with that packet: a leg hears one peer, and peers (SIPp's pcap play among them)
    switch SSRC mid-call, so the probation of A.1 (meant for new members of a multi-party session) would
    only lose their first packets.
    """

    def __init__(self) -> None:
        self.ssrc: int | None = None
        self.ssrc_changes = 0
        self._reset()

    def _reset(self) -> None:
        self.max_seq = 0
        self.cycles = 0
        self.base_seq = 0
        self.bad_seq = SEQ_MOD + 1  # A.1: no candidate for a restart yet
        self.received = 0
        self._expected_prior = 0
        self._received_prior = 0
        self._transit: int | None = None
        self._last_timestamp: int | None = None
        self._jitter = 0.0

    def _init_seq(self, seq: int) -> None:
        self.base_seq = seq
        self.max_seq = seq
        self.bad_seq = SEQ_MOD + 1
        self.cycles = 0
        self.received = 0
        self._expected_prior = 0
        self._received_prior = 0

    def update(self, packet: RtpPacket, arrival_ts: int) -> bool:
        """Account for one packet; returns False when A.1 judged it invalid (a wild sequence jump)."""
        if packet.ssrc != self.ssrc:
            if self.ssrc is not None:
                self.ssrc_changes += 1
            self.ssrc = packet.ssrc
            self._reset()
            self._init_seq(packet.sequence)
            self.received = 1
            self._update_jitter(packet, arrival_ts)
            return True
        seq = packet.sequence
        udelta = (seq - self.max_seq) & 0xFFFF
        if udelta < MAX_DROPOUT:
            # In order, with a permissible gap.
            if seq < self.max_seq:
                self.cycles += SEQ_MOD
            self.max_seq = seq
        elif udelta <= SEQ_MOD - MAX_MISORDER:
            # A very large jump: accept it only when the next packet follows it (the sender restarted).
            if seq == self.bad_seq:
                self._init_seq(seq)
            else:
                self.bad_seq = (seq + 1) & 0xFFFF
                return False
        # Otherwise a duplicate or a reordered packet: counted as received, as in A.1.
        self.received += 1
        self._update_jitter(packet, arrival_ts)
        return True

    def _update_jitter(self, packet: RtpPacket, arrival_ts: int) -> None:
        # A.8. Packets repeating the previous timestamp (the updates and end packets of an RFC 4733 event)
        # say nothing new about transit time and would read as jitter, so they are left out.
        if packet.timestamp == self._last_timestamp:
            return
        self._last_timestamp = packet.timestamp
        transit = ts_diff(arrival_ts, packet.timestamp)
        if self._transit is not None:
            d = abs(transit - self._transit)
            self._jitter += (d - self._jitter) / 16.0
        self._transit = transit

    @property
    def extended_max_seq(self) -> int:
        return self.cycles + self.max_seq

    @property
    def expected(self) -> int:
        return 0 if self.ssrc is None else self.extended_max_seq - self.base_seq + 1

    @property
    def lost(self) -> int:
        """Cumulative packets lost (A.3); negative when duplicates outnumber losses."""
        return self.expected - self.received

    @property
    def jitter(self) -> float:
        """Interarrival jitter (A.8), in timestamp units."""
        return self._jitter

    @property
    def fraction_lost(self) -> int:
        """Fraction lost since the last `close_interval`, as the 8-bit fixed point of RFC 3550 §6.4.1."""
        expected_interval = self.expected - self._expected_prior
        lost_interval = expected_interval - (self.received - self._received_prior)
        if expected_interval <= 0 or lost_interval <= 0:
            return 0
        return min(255, (lost_interval << 8) // expected_interval)

    def close_interval(self) -> int:
        """Return `fraction_lost` and start a new reporting interval (call once per report sent)."""
        fraction = self.fraction_lost
        self._expected_prior = self.expected
        self._received_prior = self.received
        return fraction


@dataclass
class RtpStream:
    """An outgoing RTP stream: random initial sequence, timestamp and SSRC (RFC 3550 §5.1), counters."""

    payload_type: int
    ssrc: int | None = None
    clock_rate: int = 8000
    sequence: int = field(default_factory=lambda: secrets.randbelow(1 << 16))
    timestamp: int = field(default_factory=lambda: secrets.randbits(32))
    packets_sent: int = 0
    octets_sent: int = 0
    last_timestamp: int | None = None  # the timestamp of the last packet built (for the RTCP SR)

    def __post_init__(self) -> None:
        if self.ssrc is None:
            self.ssrc = secrets.randbits(32)

    def _build(self, payload_type: int, payload: bytes, timestamp: int, marker: bool) -> RtpPacket:
        assert self.ssrc is not None
        packet = RtpPacket(payload_type, self.sequence, timestamp & 0xFFFFFFFF, self.ssrc, payload, marker)
        self.sequence = (self.sequence + 1) & 0xFFFF
        self.packets_sent += 1
        self.octets_sent += len(payload)  # RFC 3550 §6.4.1: payload octets only
        self.last_timestamp = packet.timestamp
        return packet

    def next_packet(self, payload: bytes, samples: int, marker: bool = False) -> RtpPacket:
        """The next media packet, stamped now; the timestamp then advances by `samples`."""
        packet = self._build(self.payload_type, payload, self.timestamp, marker)
        self.advance(samples)
        return packet

    def event_packet(
        self, payload_type: int, payload: bytes, timestamp: int, marker: bool = False
    ) -> RtpPacket:
        """A packet of another payload type (an RFC 4733 event) at `timestamp`; the timestamp does not move."""
        return self._build(payload_type, payload, timestamp, marker)

    def advance(self, samples: int) -> None:
        """Move the media clock on by `samples` without sending (time spent sending events or silent)."""
        self.timestamp = (self.timestamp + samples) & 0xFFFFFFFF
