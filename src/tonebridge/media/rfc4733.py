"""DTMF as RTP telephone-events (RFC 4733): the payload, a receiver that turns packets into key presses,
and a sender that turns key presses into packets, tick by tick.

Sans-IO: the receiver is fed packets and `now`, and asks for a timer (`next_timer`/`handle_timer`) to end a
press whose end packets were all lost; the sender is ticked once per packet interval.
"""

from __future__ import annotations

import struct
from collections import OrderedDict, deque
from dataclasses import dataclass

from tonebridge.keys import DTMF_KEYS
from tonebridge.media.rtp import RtpPacket, RtpStream, ts_diff

# RFC 4733 §3.2, Table 3: events 0-15 are the DTMF keys.
DIGITS = DTMF_KEYS
DIGIT_TO_EVENT: dict[str, int] = {digit: code for code, digit in enumerate(DIGITS)}
EVENT_TO_DIGIT: dict[int, str] = dict(enumerate(DIGITS))
MAX_DURATION = 0xFFFF  # §2.3.5: the duration field is 16 bits of timestamp units

_PAYLOAD = struct.Struct("!BBH")


class TelephoneEventError(ValueError):
    """A telephone-event payload that cannot be parsed or built."""


def digit_to_event(digit: str) -> int:
    """The event code of a key ("0"-"9", "*", "#", "A"-"D", case-insensitive)."""
    try:
        return DIGIT_TO_EVENT[digit.upper()]
    except KeyError:
        raise ValueError(f"not a DTMF key: {digit!r} (expected one of {DIGITS})") from None


def event_to_digit(event: int) -> str | None:
    """The key of a DTMF event code, None for other events (flash, modem tones...)."""
    return EVENT_TO_DIGIT.get(event)


@dataclass(frozen=True)
class TelephoneEvent:
    """The payload of one telephone-event packet (RFC 4733 §2.3)."""

    event: int
    end: bool
    volume: int  # power level as -dBm0, 0-63 (§2.3.4)
    duration: int  # timestamp units since the event's start (§2.3.5)

    @classmethod
    def parse(cls, payload: bytes) -> TelephoneEvent:
        if len(payload) < _PAYLOAD.size:
            raise TelephoneEventError(
                f"telephone-event payload of {len(payload)} octets, expected at least 4"
            )
        # §2.3: several events may be packed in one payload (redundancy); the first is the current one.
        event, flags, duration = _PAYLOAD.unpack_from(payload)
        return cls(event, bool(flags & 0x80), flags & 0x3F, duration)

    def serialize(self) -> bytes:
        if not 0 <= self.event <= 255:
            raise TelephoneEventError(f"event code {self.event} out of range 0-255")
        if not 0 <= self.volume <= 63:
            raise TelephoneEventError(f"volume {self.volume} out of range 0-63")
        if not 0 <= self.duration <= MAX_DURATION:
            raise TelephoneEventError(f"duration {self.duration} out of range 0-{MAX_DURATION}")
        return _PAYLOAD.pack(self.event, (0x80 if self.end else 0) | self.volume, self.duration)


@dataclass(frozen=True)
class PressStarted:
    digit: str
    timestamp: int  # the RTP timestamp of the event: what identifies the press
    ssrc: int


@dataclass(frozen=True)
class PressEnded:
    digit: str
    timestamp: int
    ssrc: int
    duration: int  # timestamp units
    timed_out: bool = False  # True when no end packet arrived and the timer ended the press


@dataclass
class _Press:
    event: int
    digit: str
    timestamp: int
    ssrc: int
    duration: int
    last_seen: float


# A packet older than the newest press by less than this is a late one of an older event; a bigger jump
# back is a sender that restarted its clock (SIPp replays each DTMF pcap with its own recorded timestamps
# under one SSRC), and its event is a new press.
LATE_WINDOW_SECONDS = 1.0

# How long after a press's last end packet its (event, timestamp) still means that press. §2.5.1.4 has the
# sender repeat the end packet three times at its update interval, which §2.5.1.2 lets it set to its audio
# packet time or 50 ms: the repeats span two intervals (100 ms at 50 ms). 300 ms covers them with 200 ms to
# spare for lateness in the network. Beyond it the same event and timestamp come from a sender that replays
# recorded packets (SIPp plays the same DTMF pcap for each press of a repeated digit), so they are a new
# press; a real sender's next press has a later timestamp and never depends on this window.
RETRANSMIT_WINDOW_SECONDS = 0.3


class TelephoneEventReceiver:
    """Turns incoming telephone-event packets into exactly one PressStarted and one PressEnded per press.

    A press is known by its event code and RTP timestamp (§2.5.2.1: all packets of one event share the
    timestamp of its start), not by SSRC: retransmitted start and update packets, the repeated end packets
    (§2.5.1.4) and the same event resent under a new SSRC are all one press. Once a press's end packet has
    come, its key means that press for `RETRANSMIT_WINDOW_SECONDS` after the last one, and a new press after.
    """

    def __init__(self, clock_rate: int = 8000, timeout: float = 0.5, remembered: int = 32) -> None:
        self.clock_rate = clock_rate
        self.timeout = timeout
        self.malformed = 0
        self.ignored = 0  # events that are not DTMF keys, and packets of presses already over
        self._current: _Press | None = None
        self.remembered = remembered
        # Ended presses by (event, timestamp), oldest first: when their last end packet came, or None for a
        # press ended by the timer or by a newer event, whose own end packets may still straggle in.
        self._ended: OrderedDict[tuple[int, int], float | None] = OrderedDict()
        self._last_ssrc: int | None = None
        self._last_timestamp: int | None = None  # of the newest press, to drop late packets of older ones

    def receive(self, packet: RtpPacket, now: float) -> list[PressStarted | PressEnded]:
        try:
            payload = TelephoneEvent.parse(packet.payload)
        except TelephoneEventError:
            self.malformed += 1
            return []
        digit = event_to_digit(payload.event)
        if digit is None:
            self.ignored += 1
            return []
        key = (payload.event, packet.timestamp)
        if key in self._ended:
            last_end = self._ended[key]
            if last_end is None or now - last_end <= RETRANSMIT_WINDOW_SECONDS:
                # A retransmitted end packet, or a late update of a finished press.
                if payload.end:
                    self._ended[key] = now
                self.ignored += 1
                return []
            del self._ended[key]  # the sender replays the same packets: a new press
        same_source = packet.ssrc == self._last_ssrc
        self._last_ssrc = packet.ssrc
        if (
            same_source
            and self._last_timestamp is not None
            and -self.clock_rate * LATE_WINDOW_SECONDS < ts_diff(packet.timestamp, self._last_timestamp) < 0
        ):
            # A packet of an older event arriving after a newer one began: that press is lost or over.
            self.ignored += 1
            return []
        out: list[PressStarted | PressEnded] = []
        current = self._current
        if current is not None and (current.event, current.timestamp) != key:
            # A new event began while the previous one's end packets were all lost: §2.5.2.1 lets a new
            # timestamp end the previous event.
            out.append(self._finish(current, current.duration, timed_out=True))
            current = None
        if current is None:
            current = _Press(payload.event, digit, packet.timestamp, packet.ssrc, payload.duration, now)
            self._current = current
            self._last_timestamp = packet.timestamp
            out.append(PressStarted(digit, packet.timestamp, packet.ssrc))
        else:
            current.duration = max(current.duration, payload.duration)
            current.last_seen = now
        if payload.end:
            out.append(self._finish(current, current.duration, timed_out=False, end_seen=now))
        return out

    def _finish(
        self, press: _Press, duration: int, timed_out: bool, end_seen: float | None = None
    ) -> PressEnded:
        self._ended[(press.event, press.timestamp)] = end_seen
        while len(self._ended) > self.remembered:
            self._ended.popitem(last=False)
        self._current = None
        return PressEnded(press.digit, press.timestamp, press.ssrc, duration, timed_out)

    def next_timer(self) -> float | None:
        """When `handle_timer` must be called next (None while no press is in progress)."""
        if self._current is None:
            return None
        return self._current.last_seen + self.timeout

    def handle_timer(self, now: float) -> list[PressEnded]:
        """End a press that has heard nothing for `timeout` seconds (all its end packets were lost)."""
        current = self._current
        if current is None or now < current.last_seen + self.timeout:
            return []
        return [self._finish(current, current.duration, timed_out=True)]


@dataclass
class _Queued:
    event: int
    samples: int
    volume: int
    held: bool = False  # its end waits for release(); `samples` is then the cap
    min_samples: int = 0


class TelephoneEventSender:
    """Renders queued key presses as telephone-event packets, one tick (packet interval) at a time.

    Each press: a first packet with the marker bit (§2.5.1.1), an update per tick with the duration so far
    (§2.5.1.2), and the end packet sent three times, one per tick (§2.5.1.4), all with the timestamp of the
    press's start. Between presses at least `gap_ms` of the media clock pass with no event packets. The media clock of the
    stream advances by one packet interval on every tick that sends, since the caller sends no audio then.
    """

    END_REPEATS = 3

    def __init__(
        self, payload_type: int, clock_rate: int = 8000, ptime_ms: int = 20, gap_ms: int = 60
    ) -> None:
        self.payload_type = payload_type
        self.clock_rate = clock_rate
        self.tick_samples = clock_rate * ptime_ms // 1000
        self.gap_samples = clock_rate * gap_ms // 1000
        self._queue: deque[_Queued] = deque()
        self._current: _Queued | None = None
        self._start_ts = 0
        self._elapsed = 0  # samples of the current press already reported
        self._ends_sent = 0
        # The gap is kept on the stream's media clock, so it holds however often `tick` is called meanwhile.
        self._next_start_ts: int | None = None

    def press(self, digit: str, duration_ms: int = 160, volume: int = 10) -> None:
        """Queue a key press lasting `duration_ms`; `volume` is its level in -dBm0."""
        samples = self.clock_rate * duration_ms // 1000
        if samples < self.tick_samples:
            raise ValueError(f"a press must last at least one packet interval, got {duration_ms} ms")
        if samples > MAX_DURATION:
            raise ValueError(f"a press of {duration_ms} ms exceeds the {MAX_DURATION}-sample duration field")
        if not 0 <= volume <= 63:
            raise ValueError(f"volume {volume} out of range 0-63 (-dBm0)")
        self._queue.append(_Queued(digit_to_event(digit), samples, volume))

    def hold(self, digit: str, min_ms: int = 120, volume: int = 10) -> None:
        """Queue a press that lasts until `release(digit)`: at least `min_ms`, at most what one event's
        duration field carries (§2.5.1.3 segments are not sent; a lost release ends it there)."""
        min_samples = self.clock_rate * min_ms // 1000
        if not self.tick_samples <= min_samples <= MAX_DURATION:
            raise ValueError(f"a held press must last at least one packet interval, got {min_ms} ms")
        cap = MAX_DURATION - MAX_DURATION % self.tick_samples
        self._queue.append(_Queued(digit_to_event(digit), cap, volume, held=True, min_samples=min_samples))

    def release(self, digit: str) -> None:
        """End the oldest held press of `digit` (now, or once its minimum is sent); no-op when none."""
        event = digit_to_event(digit)
        current = self._current
        if current is not None and current.held and current.event == event:
            current.held = False
            current.samples = max(current.min_samples, self._elapsed)
            return
        for queued in self._queue:
            if queued.held and queued.event == event:
                queued.held = False
                queued.samples = queued.min_samples
                return

    @property
    def active(self) -> bool:
        """True while an event is being sent: the caller sends no audio packets then (§2.5)."""
        return self._current is not None

    @property
    def pending(self) -> bool:
        """True while presses wait in the queue (possibly behind the gap after the previous one)."""
        return bool(self._queue)

    def tick(self, stream: RtpStream) -> list[RtpPacket]:
        """The packets to send in this packet interval (empty when idle or in the gap between presses)."""
        if self._current is None:
            if not self._queue:
                return []
            if (
                self._next_start_ts is not None
                and -self.gap_samples <= ts_diff(stream.timestamp, self._next_start_ts) < 0
            ):
                return []  # still in the gap (a wait beyond the gap means a new stream: start at once)
            self._current = self._queue.popleft()
            self._start_ts = stream.timestamp
            self._elapsed = 0
            self._ends_sent = 0
        press = self._current
        first = self._elapsed == 0
        self._elapsed = min(press.samples, self._elapsed + self.tick_samples)
        end = self._elapsed >= press.samples
        if end:
            self._ends_sent += 1
        payload = TelephoneEvent(press.event, end, press.volume, self._elapsed).serialize()
        packet = stream.event_packet(self.payload_type, payload, self._start_ts, marker=first)
        stream.advance(self.tick_samples)
        if self._ends_sent >= self.END_REPEATS:
            self._current = None
            self._next_start_ts = (stream.timestamp + self.gap_samples) & 0xFFFFFFFF
        return [packet]
