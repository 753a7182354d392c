"""One call leg's media as the call layer sees it: its RTP and RTCP ports, what it sends besides the room's
audio (its own source, digits), and the key presses found on it.

The audio itself never passes through this object. The leg's RTP socket is a row of the native media plane
(media/clock.py): receiving, latching, jitter buffering, G.711 and RFC 4733 parsing happen there, a tick
at a time, for every leg at once. What stays here is per leg and rare: the negotiated media, digits being
sent (RFC 4733 events built by `TelephoneEventSender`, or in-band tones), the RTCP socket and its
reports, and the counters a call's end reports. Methods called from the call layer take the media lock,
because the tick reads the same state on the media thread.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from tonebridge.keys import PressSource
from tonebridge.media import rfc4733, rtcp
from tonebridge.media.players import AudioSource
from tonebridge.media.ports import PortPool, PortsExhausted
from tonebridge.media.rtp import RtpPacket
from tonebridge.media.tones import DtmfToneRenderer
from tonebridge.sip.sdp import NegotiatedMedia

if TYPE_CHECKING:
    from tonebridge.media.clock import MediaClock

log = logging.getLogger("tonebridge.media")

FRAME_SAMPLES = 160
FRAME_SECONDS = 0.020
RTCP_INTERVAL = 5.0
SILENCE = np.zeros(FRAME_SAMPLES, dtype=np.int16)
SILENCE.flags.writeable = False


@dataclass(frozen=True)
class Press:
    """A key press found on a leg."""

    digit: str
    source: PressSource
    started: bool  # True when the press begins, False when it ends
    time: float


PressHandler = Callable[[Press], None]


@dataclass
class LegStats:
    packets_received: int = 0
    packets_sent: int = 0
    packets_dropped: int = 0  # unparseable or of an unexpected payload type
    latched: bool = False
    rtcp_received: int = 0
    remote_fraction_lost: float = 0.0
    remote_jitter: int = 0


class _RtcpProtocol(asyncio.DatagramProtocol):
    def __init__(self, leg: MediaLeg) -> None:
        self.leg = leg

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:  # type: ignore[override]
        self.leg._rtcp_received(data)


class _PlaneStream:
    """The leg's outgoing RTP stream as `TelephoneEventSender` sees it; its state lives in the plane, so
    event packets and audio packets share one sequence and one media clock."""

    def __init__(self, clock: MediaClock, row: int) -> None:
        self._plane = clock.plane
        self._row = row

    @property
    def timestamp(self) -> int:
        return self._plane.timestamp(self._row)

    def event_packet(
        self, payload_type: int, payload: bytes, timestamp: int, marker: bool = False
    ) -> RtpPacket:
        sequence, ssrc = self._plane.next_sequence(self._row, len(payload), timestamp & 0xFFFFFFFF)
        return RtpPacket(payload_type, sequence, timestamp & 0xFFFFFFFF, ssrc, payload, marker)

    def advance(self, samples: int) -> None:
        self._plane.advance(self._row, samples)


class _ReportBlockSource:
    """What `rtcp.build_report` reads of the receive statistics, from the plane's report block."""

    def __init__(self, block: tuple[int, int, int, int, int]) -> None:
        self.ssrc, self._fraction, self.lost, self.extended_max_seq, self.jitter = block

    def close_interval(self) -> int:
        return self._fraction


@dataclass
class _StreamCounters:
    ssrc: int
    timestamp: int
    packets_sent: int
    octets_sent: int


class MediaLeg:
    """One leg's RTP session. Create, `open()` (a port pair, a row of the plane), `configure` with the
    negotiated SDP (again on re-INVITE), `close()` at the end."""

    def __init__(
        self,
        host: str,
        pool: PortPool,
        *,
        call_id: str,
        on_press: PressHandler | None = None,
        inband_detection: bool | None = None,
        record: bool = False,
        clock: MediaClock | None = None,
    ) -> None:
        self.host = host
        self.pool = pool
        self.call_id = call_id
        self.on_press = on_press or (lambda press: None)
        self.inband_override = inband_detection
        self.clock = clock
        self.port = 0
        self.row: int | None = None
        self.media: NegotiatedMedia | None = None
        self.source: AudioSource | None = None
        # What the leg hears, frame by frame, for a softphone's recording; listeners run on the loop.
        self.recording: list[np.ndarray] | None = [] if record else None
        self.heard_listeners: list[Callable[[np.ndarray], None]] = []
        self._rtp_socket: socket.socket | None = None
        self._rtcp: asyncio.DatagramTransport | None = None
        self._stream: _PlaneStream | None = None
        self._events_out: rfc4733.TelephoneEventSender | None = None
        self._tones_out = DtmfToneRenderer()
        self._held: list[tuple[str, str]] = []  # digits started by hold_digit, oldest first, and their method
        self._on_digits_sent: list[Callable[[], None]] = []
        self._inband = False
        self._rtcp_received_count = 0
        self._remote_fraction_lost = 0.0
        self._remote_jitter = 0
        self._last_rtcp = 0.0
        # When the peer's latest valid RTCP arrived (time.monotonic()), None before any: a peer that reports
        # is alive even while it sends no RTP (the engine's media timeout).
        self.last_rtcp_received: float | None = None
        self._final_stats: dict[str, object] | None = None

    def _locked(self) -> contextlib.AbstractContextManager[object]:
        return self.clock.lock if self.clock is not None else contextlib.nullcontext()

    async def open(self) -> None:
        loop = asyncio.get_running_loop()
        for _ in range(64):
            port = self.pool.allocate()
            rtp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            rtp.setblocking(False)
            try:
                rtp.bind((self.host, port))
                self._rtcp, _ = await loop.create_datagram_endpoint(
                    lambda: _RtcpProtocol(self), local_addr=(self.host, port + 1)
                )
            except OSError:
                rtp.close()
                self.pool.release(port)
                continue
            self._rtp_socket = rtp
            self.port = port
            # The first report within one interval, at a random point (RFC 3550 §6.2): legs opened together
            # do not all report in the same sweep.
            self._last_rtcp = time.monotonic() - RTCP_INTERVAL * secrets.randbelow(1000) / 1000
            if self.clock is not None:
                self.row = self.clock.attach(self, rtp.fileno())
                self._stream = _PlaneStream(self.clock, self.row)
                self.clock.plane.set_stream(
                    self.row, secrets.randbits(32), secrets.randbelow(1 << 16), secrets.randbits(32)
                )
            return
        raise PortsExhausted("no bindable RTP port pair in the configured range")

    def configure(self, media: NegotiatedMedia) -> None:
        """Apply a negotiated offer/answer; called again on re-INVITE (hold, resume, new address)."""
        with self._locked():
            self.media = media
            self._events_out = (
                rfc4733.TelephoneEventSender(media.telephone_event_pt)
                if media.telephone_event_pt is not None
                else None
            )
            inband = self.inband_override
            if inband is None:
                # conference-dtmf.md §2: a leg that negotiated telephone-event is not also detected in-band.
                inband = media.telephone_event_pt is None
            changed = inband != self._inband
            self._inband = inband
            if self.clock is None or self.row is None:
                return
            plane = self.clock.plane
            current = plane.leg_stats(self.row)
            remote = current["remote"]
            # Symmetric RTP keeps the address packets come from; a new address in the SDP starts over.
            relatch = not current["latched"] or (remote is not None and remote[0] != media.remote_address)
            plane.configure(
                self.row,
                media.remote_address,
                media.remote_port,
                relatch,
                media.payload_type,
                media.telephone_event_pt if media.telephone_event_pt is not None else -1,
                media.local_sends,
            )
            if changed:
                self.clock.inband_changed(self)

    @property
    def sending(self) -> bool:
        return self.media is not None and self.media.local_sends

    @property
    def inband_detection(self) -> bool:
        return self._inband

    # Digits out ----------------------------------------------------------------------------------------

    def send_digit(self, digit: str, duration_ms: int = 160, method: str = "auto") -> str:
        """Send a digit as RFC 4733 when negotiated (or asked), else as an in-band tone; returns the method."""
        with self._locked():
            if method in ("auto", "rfc4733") and self._events_out is not None:
                self._events_out.press(digit, duration_ms=duration_ms)
                self._digits_queued()
                return "rfc4733"
            if method == "rfc4733":
                raise ValueError("the peer did not negotiate telephone-event")
            self._tones_out.press(digit, duration_ms=duration_ms)
            self._digits_queued()
            return "inband"

    def hold_digit(self, digit: str, min_ms: int = 120) -> str:
        """Start sending a digit that lasts until `release_digit` (at least `min_ms`): RFC 4733 when
        negotiated, else an in-band tone; returns the method."""
        with self._locked():
            if self._events_out is not None:
                self._events_out.hold(digit, min_ms=min_ms)
                method = "rfc4733"
            else:
                self._tones_out.hold(digit, min_ms=min_ms)
                method = "inband"
            self._held.append((digit, method))
            self._digits_queued()
            return method

    def release_digit(self, digit: str) -> None:
        """End the oldest held `digit` by the method it was started with (a re-INVITE may have changed
        what is negotiated since)."""
        with self._locked():
            for index, (held, method) in enumerate(self._held):
                if held == digit:
                    del self._held[index]
                    if method == "rfc4733":
                        if self._events_out is not None:
                            self._events_out.release(digit)
                    else:
                        self._tones_out.release(digit)
                    return

    def release_held_digits(self) -> None:
        """End every held digit (the leg leaves the room whose presses held them)."""
        with self._locked():
            for digit, _ in list(self._held):
                self.release_digit(digit)

    @property
    def digits_pending(self) -> bool:
        events = self._events_out is not None and (self._events_out.active or self._events_out.pending)
        return bool(events or self._tones_out.pending)

    def when_digits_sent(self, callback: Callable[[], None]) -> None:
        """Call `callback` once, on the loop, after the tick that sent the last digit queued so far: the
        sender of a digit string is told when the next may go, instead of asking each tick."""
        with self._locked():
            self._on_digits_sent.append(callback)
            self._digits_queued()

    def _digits_queued(self) -> None:
        if self.clock is not None and self.row is not None:
            self.clock.digits_queued(self)

    def send_digits_tick(self, out: np.ndarray, mask: np.ndarray) -> bool:
        """The media thread's turn for this leg's digits (only while it has some): RFC 4733 packets go out
        now instead of its audio, or the tone is mixed into its audio. Returns whether digits remain."""
        row = self.row
        assert row is not None and self._stream is not None and self.clock is not None
        if mask[row] and self.sending:
            events = self._events_out
            sent_event = False
            if events is not None and (events.active or events.pending):
                packets = events.tick(self._stream)
                for packet in packets:
                    self.clock.plane.send_raw(row, packet.serialize())
                if packets:
                    mask[row] = 0  # §2.5: no audio while an event is sent
                    sent_event = True
            if not sent_event:
                tone = self._tones_out.frame()
                if tone is not None:
                    out[row] = np.clip(out[row].astype(np.int32) + tone, -32768, 32767)
        if self._on_digits_sent and not self.digits_pending:
            callbacks, self._on_digits_sent = self._on_digits_sent, []
            for callback in callbacks:
                self.clock.post(callback)
        return bool(self._on_digits_sent) or self.digits_pending

    # Presses found by the plane ----------------------------------------------------------------------

    def inband_press(self, digit: str, now: float) -> None:
        """The tick's detector found a press on this leg (reported once, when the tone ends)."""
        self.on_press(Press(digit, PressSource.INBAND, True, now))
        self.on_press(Press(digit, PressSource.INBAND, False, now))

    def event_press(self, digit: str, started: bool, now: float) -> None:
        self.on_press(Press(digit, PressSource.RFC4733, started, now))

    # RTCP ----------------------------------------------------------------------------------------------

    def _rtcp_received(self, data: bytes) -> None:
        try:
            packets = rtcp.parse_compound(data)
        except rtcp.RtcpError:
            return
        self._rtcp_received_count += 1
        self.last_rtcp_received = time.monotonic()
        for packet in packets:
            if not isinstance(packet, rtcp.SenderReport | rtcp.ReceiverReport):
                continue
            for block in packet.reports:
                self._remote_fraction_lost = block.fraction_lost / 256
                self._remote_jitter = block.jitter

    def send_rtcp(self, now: float) -> None:
        """A report to the peer's RTCP port (RTP port + 1), when one is due (every RTCP_INTERVAL)."""
        if now - self._last_rtcp < RTCP_INTERVAL or self._rtcp is None:
            return
        if self.clock is None or self.row is None or self.media is None:
            return
        self._last_rtcp = now
        with self._locked():
            plane = self.clock.plane
            stats = plane.leg_stats(self.row)
            block = plane.report_block(self.row)
        remote = stats["remote"]
        if remote is None:
            return
        stream = _StreamCounters(
            stats["ssrc"], stats["timestamp"], stats["packets_sent"], stats["octets_sent"]
        )
        try:
            data = rtcp.build_report(
                stream,  # type: ignore[arg-type]
                _ReportBlockSource(block) if block is not None else None,  # type: ignore[arg-type]
            )
        except Exception:  # a report we cannot build is skipped, never fatal to the call
            log.exception("event=rtcp_build_failed call_id=%s", self.call_id)
            return
        self._rtcp.sendto(data, (remote[0], remote[1] + 1))

    # Counters ------------------------------------------------------------------------------------------

    def _plane_stats(self) -> dict[str, object]:
        if self._final_stats is not None:
            return self._final_stats
        if self.clock is None or self.row is None:
            return {}
        with self._locked():
            return dict(self.clock.plane.leg_stats(self.row))

    @property
    def stats(self) -> LegStats:
        s = self._plane_stats()
        return LegStats(
            packets_received=int(s.get("packets_received", 0)),  # type: ignore[call-overload]
            packets_sent=int(s.get("packets_sent", 0)),  # type: ignore[call-overload]
            packets_dropped=int(s.get("packets_dropped", 0)),  # type: ignore[call-overload]
            latched=bool(s.get("latched", False)),
            rtcp_received=self._rtcp_received_count,
            remote_fraction_lost=self._remote_fraction_lost,
            remote_jitter=self._remote_jitter,
        )

    @property
    def remote(self) -> tuple[str, int] | None:
        remote = self._plane_stats().get("remote")
        return remote  # type: ignore[return-value]

    @property
    def ssrc_changes(self) -> int:
        """How often the peer's RTP source changed mid-call (SIPp's pcaps do; each is followed at once)."""
        return int(self._plane_stats().get("ssrc_changes", 0))  # type: ignore[call-overload]

    @property
    def loss_and_jitter(self) -> tuple[int, float]:
        s = self._plane_stats()
        return int(s.get("lost", 0)), float(s.get("jitter", 0.0)) / 8.0  # type: ignore[call-overload,arg-type]

    def close(self) -> None:
        with self._locked():
            if self.clock is not None and self.row is not None:
                self._final_stats = dict(self.clock.plane.leg_stats(self.row))
                self.clock.detach(self)
                self.row = None
                self._stream = None
            self._inband = False
            if self._rtp_socket is not None:
                self._rtp_socket.close()
                self._rtp_socket = None
        if self._rtcp:
            self._rtcp.close()
            self._rtcp = None
        if self.port:
            self.pool.release(self.port)
            self.port = 0
