"""The socket glue of one call leg's media: its RTP and RTCP sockets, what it hears and what it sends.

Receiving: RTP packets are parsed, latched onto (symmetric RTP: replies go to where the peer's packets
come from, for NAT), split into telephone-events (RFC 4733) and audio (decoded G.711 into a jitter buffer).
Sending: once per 20 ms media tick, the leg takes a frame from its source, or the packets of a digit being
sent, and transmits them. Key presses found on the leg, from RFC 4733 or by the in-band detector, are
reported through `on_press`.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from tonebridge.keys import PressSource
from tonebridge.media import g711, rfc4733, rtcp
from tonebridge.media.dtmf import DtmfDetectorBank
from tonebridge.media.jitter import JitterBuffer
from tonebridge.media.players import AudioSource
from tonebridge.media.ports import PortPool, PortsExhausted
from tonebridge.media.rtp import RtpError, RtpPacket, RtpReceiveStats, RtpStream
from tonebridge.media.tones import DtmfToneRenderer
from tonebridge.sip.sdp import NegotiatedMedia

log = logging.getLogger("tonebridge.media")

FRAME_SAMPLES = 160
FRAME_SECONDS = 0.020
RTCP_INTERVAL = 5.0
SILENCE = np.zeros(FRAME_SAMPLES, dtype=np.int16)


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


class _RtpProtocol(asyncio.DatagramProtocol):
    def __init__(self, leg: MediaLeg, rtcp_socket: bool) -> None:
        self.leg = leg
        self.rtcp = rtcp_socket

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:  # type: ignore[override]
        if self.rtcp:
            self.leg._rtcp_received(data)
        else:
            self.leg._rtp_received(data, addr)


class MediaLeg:
    """One leg's RTP session. Create with `open()`, configure with negotiated SDP, tick every 20 ms."""

    def __init__(
        self,
        host: str,
        pool: PortPool,
        *,
        call_id: str,
        on_press: PressHandler | None = None,
        inband_detection: bool | None = None,
        record: bool = False,
        detection: InbandDetection | None = None,
    ) -> None:
        self.host = host
        self.pool = pool
        self.call_id = call_id
        self.on_press = on_press or (lambda press: None)
        self.inband_override = inband_detection
        self.port = 0
        self.media: NegotiatedMedia | None = None
        self.remote: tuple[str, int] | None = None
        self.source: AudioSource | None = None
        self.stats = LegStats()
        self.recording: list[np.ndarray] | None = [] if record else None
        self.heard_listeners: list[Callable[[np.ndarray], None]] = []
        self._rtp: asyncio.DatagramTransport | None = None
        self._rtcp: asyncio.DatagramTransport | None = None
        self._stream: RtpStream | None = None
        self._receive_stats = RtpReceiveStats()
        self._jitter = JitterBuffer()
        self._events_in = rfc4733.TelephoneEventReceiver()
        self._events_out: rfc4733.TelephoneEventSender | None = None
        self._tones_out = DtmfToneRenderer()
        self._held: list[tuple[str, str]] = []  # digits started by hold_digit, oldest first, and their method
        self._on_digits_sent: list[Callable[[], None]] = []
        self.detection = detection or InbandDetection()
        self._inband = False
        self._last_rtcp = 0.0

    async def open(self) -> None:
        loop = asyncio.get_running_loop()
        for _ in range(64):
            port = self.pool.allocate()
            try:
                self._rtp, _ = await loop.create_datagram_endpoint(
                    lambda: _RtpProtocol(self, False), local_addr=(self.host, port)
                )
                self._rtcp, _ = await loop.create_datagram_endpoint(
                    lambda: _RtpProtocol(self, True), local_addr=(self.host, port + 1)
                )
            except OSError:
                if self._rtp:
                    self._rtp.close()
                    self._rtp = None
                self.pool.release(port)
                continue
            self.port = port
            return
        raise PortsExhausted("no bindable RTP port pair in the configured range")

    def configure(self, media: NegotiatedMedia) -> None:
        """Apply a negotiated offer/answer; called again on re-INVITE (hold, resume, new address)."""
        first = self.media is None
        self.media = media
        if not self.stats.latched or (self.remote and self.remote[0] != media.remote_address):
            self.remote = (media.remote_address, media.remote_port)
            self.stats.latched = False
        if first or self._stream is None or self._stream.payload_type != media.payload_type:
            self._stream = RtpStream(media.payload_type, ssrc=self._stream.ssrc if self._stream else None)
        self._events_out = (
            rfc4733.TelephoneEventSender(media.telephone_event_pt)
            if media.telephone_event_pt is not None
            else None
        )
        inband = self.inband_override
        if inband is None:
            # conference-dtmf.md §2: a leg that negotiated telephone-event is not also detected in-band.
            inband = media.telephone_event_pt is None
        if self._inband and not inband:
            self.detection.forget(self)
        self._inband = inband

    @property
    def sending(self) -> bool:
        return self.media is not None and self.media.local_sends and self.remote is not None

    def send_digit(self, digit: str, duration_ms: int = 160, method: str = "auto") -> str:
        """Send a digit as RFC 4733 when negotiated (or asked), else as an in-band tone; returns the method."""
        if method in ("auto", "rfc4733") and self._events_out is not None:
            self._events_out.press(digit, duration_ms=duration_ms)
            return "rfc4733"
        if method == "rfc4733":
            raise ValueError("the peer did not negotiate telephone-event")
        self._tones_out.press(digit, duration_ms=duration_ms)
        return "inband"

    def hold_digit(self, digit: str, min_ms: int = 120) -> str:
        """Start sending a digit that lasts until `release_digit` (at least `min_ms`): RFC 4733 when
        negotiated, else an in-band tone; returns the method."""
        if self._events_out is not None:
            self._events_out.hold(digit, min_ms=min_ms)
            method = "rfc4733"
        else:
            self._tones_out.hold(digit, min_ms=min_ms)
            method = "inband"
        self._held.append((digit, method))
        return method

    def release_digit(self, digit: str) -> None:
        """End the oldest held `digit` by the method it was started with (a re-INVITE may have changed
        what is negotiated since)."""
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
        for digit, _ in list(self._held):
            self.release_digit(digit)

    @property
    def digits_pending(self) -> bool:
        events = self._events_out is not None and (self._events_out.active or self._events_out.pending)
        return bool(events or self._tones_out.pending)

    def when_digits_sent(self, callback: Callable[[], None]) -> None:
        """Call `callback` once, from the tick after which every digit queued so far has gone out: the
        sender of a digit string is told when the next may go, instead of asking each tick."""
        self._on_digits_sent.append(callback)

    # Ticks ---------------------------------------------------------------------------------------------

    def receive_frame(self) -> np.ndarray:
        """The frame this leg heard in the last 20 ms (silence when nothing arrived)."""
        frame = self._jitter.pop()
        if frame is None:
            frame = SILENCE
        if self._inband:
            self.detection.submit(self, frame)
        if self.recording is not None:
            self.recording.append(frame)
        for listener in self.heard_listeners:
            listener(frame)
        return frame

    def send_frame(self, frame: np.ndarray | None) -> None:
        """Transmit one 20 ms tick: digit events when sending one, else the audio frame (plus any tone)."""
        if not self.sending or self._stream is None or self._rtp is None or self.media is None:
            return
        assert self.remote is not None
        if self._events_out is not None and (self._events_out.active or self._events_out.pending):
            packets = self._events_out.tick(self._stream)
            if packets:
                for packet in packets:
                    self._rtp.sendto(packet.serialize(), self.remote)
                    self.stats.packets_sent += 1
                return
        tone = self._tones_out.frame()
        if tone is not None:
            frame = tone if frame is None else _saturating_add(frame, tone)
        if frame is None:
            frame = SILENCE
        payload = g711.encode(self.media.codec, frame)
        packet = self._stream.next_packet(payload, FRAME_SAMPLES)
        self._rtp.sendto(packet.serialize(), self.remote)
        self.stats.packets_sent += 1

    def tick(self, now: float) -> None:
        """Receive and send one frame; the leg's own source decides what it sends."""
        self.receive_frame()
        self.send_frame(self.source.frame(FRAME_SAMPLES) if self.source is not None else None)
        self.housekeeping(now)

    def housekeeping(self, now: float) -> None:
        """Per-tick duties besides audio: end presses whose end packets were lost, send RTCP reports, tell
        who waits for digits to go out that they have."""
        if self._on_digits_sent and not self.digits_pending:
            callbacks, self._on_digits_sent = self._on_digits_sent, []
            for callback in callbacks:
                callback()
        deadline = self._events_in.next_timer()
        if deadline is not None and deadline <= now:
            for event in self._events_in.handle_timer(now):
                self._report_event(event, now)
        if now - self._last_rtcp >= RTCP_INTERVAL:
            self._last_rtcp = now
            self._send_rtcp()

    @property
    def inband_detection(self) -> bool:
        return self._inband

    def inband_press(self, digit: str, now: float) -> None:
        """The tick's detector found a press on this leg (reported once, when the tone ends)."""
        self.on_press(Press(digit, PressSource.INBAND, True, now))
        self.on_press(Press(digit, PressSource.INBAND, False, now))

    # Receiving -----------------------------------------------------------------------------------------

    def _rtp_received(self, data: bytes, addr: tuple[str, int]) -> None:
        try:
            packet = RtpPacket.parse(data)
        except RtpError:
            self.stats.packets_dropped += 1
            return
        media = self.media
        if media is None:
            self.stats.packets_dropped += 1
            return
        if not self.stats.latched or self.remote != addr:
            # Symmetric RTP: send to where the peer really is (RFC 4961), once its packets arrive.
            self.remote = addr
            self.stats.latched = True
        self.stats.packets_received += 1
        self._receive_stats.update(packet, int(time.monotonic() * 8000) & 0xFFFFFFFF)
        now = time.monotonic()
        if media.telephone_event_pt is not None and packet.payload_type == media.telephone_event_pt:
            for event in self._events_in.receive(packet, now):
                self._report_event(event, now)
            return
        codec = g711.CODEC_OF_PAYLOAD_TYPE.get(packet.payload_type)
        if codec is not None:
            self._jitter.push(packet, g711.decode(codec, packet.payload))
            return
        self.stats.packets_dropped += 1

    def _report_event(self, event: rfc4733.PressStarted | rfc4733.PressEnded, now: float) -> None:
        started = isinstance(event, rfc4733.PressStarted)
        self.on_press(Press(event.digit, PressSource.RFC4733, started, now))

    def _rtcp_received(self, data: bytes) -> None:
        try:
            packets = rtcp.parse_compound(data)
        except rtcp.RtcpError:
            return
        self.stats.rtcp_received += 1
        for packet in packets:
            if not isinstance(packet, rtcp.SenderReport | rtcp.ReceiverReport):
                continue
            for block in packet.reports:
                self.stats.remote_fraction_lost = block.fraction_lost / 256
                self.stats.remote_jitter = block.jitter

    def _send_rtcp(self) -> None:
        if self._rtcp is None or self._stream is None or self.remote is None:
            return
        try:
            data = rtcp.build_report(
                self._stream, self._receive_stats if self._receive_stats.ssrc is not None else None
            )
        except Exception:  # a report we cannot build is skipped, never fatal to the call
            log.exception("event=rtcp_build_failed call_id=%s", self.call_id)
            return
        self._rtcp.sendto(data, (self.remote[0], self.remote[1] + 1))

    @property
    def ssrc_changes(self) -> int:
        """How often the peer's RTP source changed mid-call (SIPp's pcaps do; each is followed at once)."""
        return self._receive_stats.ssrc_changes

    @property
    def loss_and_jitter(self) -> tuple[int, float]:
        return self._receive_stats.lost, self._receive_stats.jitter / 8.0

    def close(self) -> None:
        self.detection.forget(self)
        self._inband = False
        if self._rtp:
            self._rtp.close()
            self._rtp = None
        if self._rtcp:
            self._rtcp.close()
            self._rtcp = None
        if self.port:
            self.pool.release(self.port)
            self.port = 0


def _saturating_add(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.clip(a.astype(np.int32) + b.astype(np.int32), -32768, 32767).astype(np.int16)


class InbandDetection:
    """In-band DTMF detection for every leg that needs it, run once per tick as one vectorised pass.

    Legs submit the frame they heard during the tick; `run` feeds them all to one `DtmfDetectorBank`
    (docs/dtmf.md) and reports each press to its leg.
    """

    def __init__(self) -> None:
        self.bank = DtmfDetectorBank()
        self._legs: list[MediaLeg] = []
        self._frames: list[np.ndarray] = []

    def submit(self, leg: MediaLeg, frame: np.ndarray) -> None:
        self._legs.append(leg)
        self._frames.append(frame)

    def run(self, now: float) -> None:
        if not self._legs:
            return
        legs, frames = self._legs, self._frames
        self._legs, self._frames = [], []
        by_id = {id(leg): leg for leg in legs}
        for leg_id, event in self.bank.feed([id(leg) for leg in legs], np.stack(frames)):
            by_id[leg_id].inband_press(event.digit, now)

    def forget(self, leg: MediaLeg) -> None:
        self.bank.remove(id(leg))


class MediaClock:
    """Ticks every registered leg each 20 ms on absolute deadlines of the monotonic clock (no drift)."""

    def __init__(self) -> None:
        self.detection = InbandDetection()
        self._tick_waiters: list[asyncio.Future[None]] = []
        self.legs: set[MediaLeg] = set()
        self.tick_hooks: list[Callable[[float], None]] = []
        self._task: asyncio.Task[None] | None = None
        self.late_ticks = 0

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def until(self, condition: Callable[[], bool]) -> None:
        """Wait, tick by tick, until `condition()` holds. For tests and tools watching the media plane:
        the call path is told instead (a player's `on_finished`, a leg's `when_digits_sent`)."""
        while not condition():
            waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            self._tick_waiters.append(waiter)
            await waiter

    async def stop(self) -> None:
        if self._task:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass

    async def _run(self) -> None:
        start = time.monotonic()
        tick = 0
        while True:
            tick += 1
            deadline = start + tick * FRAME_SECONDS
            delay = deadline - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            elif delay < -0.2:
                # Far behind (the process was stopped or starved): skip the lost ticks instead of bursting.
                self.late_ticks += 1
                tick = int((time.monotonic() - start) / FRAME_SECONDS)
            now = time.monotonic()
            for hook in list(self.tick_hooks):
                try:
                    hook(now)
                except Exception:
                    log.exception("event=tick_hook_failed")
            for leg in list(self.legs):
                try:
                    leg.tick(now)
                except Exception:
                    log.exception("event=leg_tick_failed call_id=%s", leg.call_id)
            try:
                self.detection.run(now)
            except Exception:
                log.exception("event=inband_detection_failed")
            waiters, self._tick_waiters = self._tick_waiters, []
            for waiter in waiters:
                if not waiter.done():
                    waiter.set_result(None)
