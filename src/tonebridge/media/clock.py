"""The media clock: a dedicated thread that runs the media plane's 20 ms tick over every leg at once.

Each tick is a fixed number of calls, whatever the number of legs: one native call receives for all legs
(sockets, RTP and RFC 4733 parsing, latching, jitter buffers, G.711 decoding) into a legs × 160 sample
matrix; in-band detection and the rooms' mixing are vectorised numpy over that matrix (the tick hooks);
one native call encodes and sends what each leg hears. Python runs per leg only for the few legs that
have something of their own this tick: a prompt or music playing outside a room, digits being sent, a
softphone's recording.

The tick runs on its own thread so that nothing on the asyncio loop (SIP bursts, HTTP, callbacks) can
delay a frame (docs/architecture.md, "The media thread"). The thread and the loop share the legs' and
rooms' media state under `lock`: the tick holds it while it runs; the call layer takes it around every
change. What the tick finds for the call layer (key presses, digits sent, audio heard) is handed to the
loop with one `call_soon_threadsafe` per tick, never run on the media thread.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import sys
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import numpy as np

from tonebridge._mediaplane import Plane
from tonebridge.histogram import Histogram
from tonebridge.media.dtmf import DtmfDetectorBank

if TYPE_CHECKING:
    from tonebridge.media.endpoint import MediaLeg

log = logging.getLogger("tonebridge.media")

FRAME_SAMPLES = 160
FRAME_SECONDS = 0.020
# Far behind (the process was stopped or starved): skip the lost ticks instead of bursting them.
SKIP_AFTER_SECONDS = 0.2
# How long a thread may hold the GIL while another waits for it. CPython's default of 5 ms would let the
# loop thread hold the media thread past a frame's deadline; 1 ms bounds that wait (docs/architecture.md).
SWITCH_INTERVAL = 0.001
# The cyclic garbage collector stops every thread, the media thread included, for as long as it runs; a
# full collection over the objects of a thousand calls takes tens of milliseconds. Young collections stay
# as frequent as CPython makes them (cheap); full ones wait for this many young-generation-1 collections
# instead of 10, and the start-up heap is frozen out of them (docs/architecture.md, "The media thread").
GC_FULL_AFTER = 1000
RTCP_SWEEP_SECONDS = 1.0
# Rows of the plane: one per open leg, each a port pair of the RTP range.
DEFAULT_CAPACITY = 32768
# Levels for the console: five snapshots a second are enough for a meter and cost one numpy pass each.
LEVEL_EVERY_TICKS = 10
SILENCE_DBFS = -96.0

TickHook = Callable[[float, np.ndarray, np.ndarray, np.ndarray], None]


class MediaClock:
    """Ticks every open leg each 20 ms on absolute deadlines of the monotonic clock (no drift)."""

    def __init__(self, capacity: int = DEFAULT_CAPACITY) -> None:
        self.plane = Plane(capacity)
        self.lock = threading.RLock()
        # Legs that send their own source (a prompt, music, a softphone's tone), not a room's mix.
        self.legs: set[MediaLeg] = set()
        # Called each tick with (now, received, out, send mask): the rooms read `received` and write the
        # rows of their members into `out` and `mask`.
        self.tick_hooks: list[TickHook] = []
        # Called on the loop once a second (with the RTCP sweep) with time.monotonic(): checks over all
        # legs that need no tick's precision, such as the engine's media timeout.
        self.sweep_hooks: list[Callable[[float], None]] = []
        self.detector = DtmfDetectorBank()
        self.ticks = 0
        self.late_ticks = 0  # ticks skipped (more than SKIP_AFTER_SECONDS behind)
        self.duration_ms = Histogram()
        self.lateness_ms = Histogram()
        # The collector stops every thread while it runs: its pauses explain late ticks.
        self.gc_pause_ms = Histogram()
        self._gc_started = 0.0
        # Each open leg's level (dBFS) of what it sends into the room, from the latest snapshot. Replaced
        # whole, never changed in place, so readers on the loop need no lock.
        self.levels: dict[str, float] = {}
        self._level_countdown = LEVEL_EVERY_TICKS
        self._by_row: dict[int, MediaLeg] = {}
        self._listening: set[MediaLeg] = set()
        self._digit_legs: set[MediaLeg] = set()
        self._inband_legs: set[MediaLeg] = set()
        self._inband_rows = np.zeros(0, dtype=np.intp)
        self._inband_ids: list[int] = []
        self._inband_dirty = False
        self._received = np.zeros((0, FRAME_SAMPLES), dtype=np.int16)
        self._out = np.zeros((0, FRAME_SAMPLES), dtype=np.int16)
        self._mask = np.zeros(0, dtype=np.uint8)
        self._posted: list[tuple[Callable[..., Any], tuple[Any, ...]]] = []
        self._tick_waiters: list[asyncio.Future[None]] = []
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._stopping = threading.Event()
        self._rtcp_task: asyncio.Task[None] | None = None

    # Legs ----------------------------------------------------------------------------------------------

    def attach(self, leg: MediaLeg, fd: int) -> int:
        """Give an opened leg's RTP socket a row of the plane; returns the row."""
        with self.lock:
            row = self.plane.add(fd)
            self._by_row[row] = leg
            if leg.recording is not None or leg.heard_listeners:
                self._listening.add(leg)
            return row

    def detach(self, leg: MediaLeg) -> None:
        with self.lock:
            row = leg.row
            self.legs.discard(leg)
            self._listening.discard(leg)
            self._digit_legs.discard(leg)
            if leg in self._inband_legs:
                self._inband_legs.discard(leg)
                self._inband_dirty = True
            if row is not None and self._by_row.get(row) is leg:
                del self._by_row[row]
                self.detector.remove(row)
                self.plane.remove(row)

    def add_leg(self, leg: MediaLeg) -> None:
        """From the next tick on, the leg sends its own source (silence when it has none)."""
        with self.lock:
            self.legs.add(leg)

    def remove_leg(self, leg: MediaLeg) -> None:
        with self.lock:
            self.legs.discard(leg)

    def listen(self, leg: MediaLeg, listener: Callable[[np.ndarray], None]) -> None:
        """Call `listener` on the loop with each frame the leg hears."""
        with self.lock:
            leg.heard_listeners.append(listener)
            if leg.row is not None:
                self._listening.add(leg)

    def inband_changed(self, leg: MediaLeg) -> None:
        with self.lock:
            if leg.inband_detection and leg.row is not None:
                self._inband_legs.add(leg)
            else:
                self._inband_legs.discard(leg)
                if leg.row is not None:
                    self.detector.remove(leg.row)
            self._inband_dirty = True

    def digits_queued(self, leg: MediaLeg) -> None:
        with self.lock:
            self._digit_legs.add(leg)

    def leg_at(self, row: int) -> MediaLeg | None:
        return self._by_row.get(row)

    @property
    def open_legs(self) -> int:
        return len(self._by_row)

    # Running ---------------------------------------------------------------------------------------------

    def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        sys.setswitchinterval(SWITCH_INTERVAL)
        gc.collect()
        gc.freeze()
        young, middle, _ = gc.get_threshold()
        gc.set_threshold(young, middle, GC_FULL_AFTER)
        if self._gc_callback not in gc.callbacks:
            gc.callbacks.append(self._gc_callback)
        self._stopping.clear()
        self._thread = threading.Thread(target=self._run, name="tonebridge-media", daemon=True)
        self._thread.start()
        self._rtcp_task = self._loop.create_task(self._send_rtcp_reports())

    async def stop(self) -> None:
        self._stopping.set()
        if self._gc_callback in gc.callbacks:
            gc.callbacks.remove(self._gc_callback)
        if self._thread is not None:
            await asyncio.to_thread(self._thread.join, 2.0)
            self._thread = None
        if self._rtcp_task is not None:
            self._rtcp_task.cancel()
            try:
                await self._rtcp_task
            except asyncio.CancelledError:
                pass
            self._rtcp_task = None

    async def until(self, condition: Callable[[], bool]) -> None:
        """Wait, tick by tick, until `condition()` holds. For tests and tools watching the media plane:
        the call path is told instead (a player's `on_finished`, a leg's `when_digits_sent`)."""
        while not condition():
            waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            self._tick_waiters.append(waiter)
            await waiter

    def post(self, function: Callable[..., Any], *args: Any) -> None:
        """Run `function(*args)` on the loop after this tick (media thread only)."""
        self._posted.append((function, args))

    def run_posted(self) -> None:
        """Run what the tick posted, here and now: for tests and benches that call `tick` themselves."""
        posted, self._posted = self._posted, []
        _run_posted(posted)

    def _run(self) -> None:
        start = time.monotonic()
        tick = 0
        while not self._stopping.is_set():
            tick += 1
            deadline = start + tick * FRAME_SECONDS
            self.plane.sleep_until(deadline)
            if time.monotonic() - deadline > SKIP_AFTER_SECONDS:
                self.late_ticks += 1
                tick = int((time.monotonic() - start) / FRAME_SECONDS)
                deadline = start + tick * FRAME_SECONDS
            with self.lock:
                began = time.monotonic()
                self.lateness_ms.observe(max(0.0, began - deadline) * 1000)
                try:
                    self.tick(began)
                except Exception:
                    log.exception("event=media_tick_failed")
                self.ticks += 1
                self.duration_ms.observe((time.monotonic() - began) * 1000)
                posted, self._posted = self._posted, []
            if self._tick_waiters:
                posted.append((self._wake_waiters, ()))
            if posted and self._loop is not None:
                try:
                    self._loop.call_soon_threadsafe(_run_posted, posted)
                except RuntimeError:  # the loop closed under us: the server is stopping
                    return

    def _gc_callback(self, phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            self._gc_started = time.monotonic()
        else:
            self.gc_pause_ms.observe((time.monotonic() - self._gc_started) * 1000)

    def _wake_waiters(self) -> None:
        waiters, self._tick_waiters = self._tick_waiters, []
        for waiter in waiters:
            if not waiter.done():
                waiter.set_result(None)

    def _report_rtcp(self, now: float) -> None:
        # A function of its own, so that no leg stays referenced by the sweep's suspended frame until the next
        # sweep: an ended call is freed by reference counting alone (test_call_memory.py).
        for leg in list(self._by_row.values()):
            try:
                leg.send_rtcp(now)
            except Exception:
                log.exception("event=rtcp_send_failed call_id=%s", leg.call_id)

    async def _send_rtcp_reports(self) -> None:
        """Each leg's RTCP report once per RTCP_INTERVAL, from the loop (a few legs a second per 100)."""
        while True:
            await asyncio.sleep(RTCP_SWEEP_SECONDS)
            now = time.monotonic()
            self._report_rtcp(now)
            for hook in self.sweep_hooks:
                try:
                    hook(now)
                except Exception:
                    log.exception("event=media_sweep_failed hook=%r", hook)

    # The tick --------------------------------------------------------------------------------------------

    def tick(self, now: float) -> None:
        """One 20 ms tick for every leg (on the media thread, under `lock`)."""
        plane = self.plane
        rows = plane.rows
        if rows > len(self._mask):
            self._grow(rows)
        events = plane.receive(now, self._received)
        for row, kind, digit, *_ in events:
            leg = self._by_row.get(row)
            if leg is not None:
                self.post(leg.event_press, digit, kind == "started", now)
        received, out, mask = self._received[:rows], self._out[:rows], self._mask[:rows]
        out.fill(0)
        mask.fill(0)
        if self._inband_dirty:
            self._rebuild_inband()
        if self._inband_ids:
            for row, event in self.detector.feed(self._inband_ids, received[self._inband_rows]):
                leg = self._by_row.get(row)
                if leg is not None:
                    self.post(leg.inband_press, event.digit, now)
        for leg in self.legs:
            mask[leg.row] = 1
            source = leg.source
            if source is not None:
                frame = source.frame(FRAME_SAMPLES)
                if frame is not None:
                    out[leg.row] = frame
        for hook in self.tick_hooks:
            hook(now, received, out, mask)
        self._level_countdown -= 1
        if self._level_countdown <= 0:
            self._level_countdown = LEVEL_EVERY_TICKS
            self._measure_levels(received)
        for leg in self._listening:
            if mask[leg.row]:  # what a leg hears counts from when it carries audio (answered)
                self._heard(leg, received[leg.row].copy())
        if self._digit_legs:
            for leg in list(self._digit_legs):
                if not leg.send_digits_tick(out, mask):
                    self._digit_legs.discard(leg)
        plane.send(self._out, self._mask)

    def _heard(self, leg: MediaLeg, frame: np.ndarray) -> None:
        if leg.recording is not None:
            leg.recording.append(frame)
        for listener in leg.heard_listeners:
            self.post(listener, frame)

    def _measure_levels(self, received: np.ndarray) -> None:
        legs = list(self._by_row.items())
        if not legs:
            self.levels = {}
            return
        rows = np.fromiter((row for row, _ in legs), dtype=np.intp, count=len(legs))
        frames = received[rows].astype(np.float32)
        power = np.einsum("ij,ij->i", frames, frames) / (FRAME_SAMPLES * 32768.0**2)
        with np.errstate(divide="ignore"):
            dbfs = np.maximum(10.0 * np.log10(power), SILENCE_DBFS)
        self.levels = dict(zip((leg.call_id for _, leg in legs), np.round(dbfs, 1).tolist(), strict=True))

    def _grow(self, rows: int) -> None:
        size = max(64, 2 * rows)
        for name in ("_received", "_out"):
            grown = np.zeros((size, FRAME_SAMPLES), dtype=np.int16)
            setattr(self, name, grown)
        self._mask = np.zeros(size, dtype=np.uint8)

    def _rebuild_inband(self) -> None:
        rows = sorted(leg.row for leg in self._inband_legs if leg.row is not None)
        self._inband_rows = np.asarray(rows, dtype=np.intp)
        self._inband_ids = rows
        self._inband_dirty = False

    # Metrics ---------------------------------------------------------------------------------------------

    def metrics(self) -> dict[str, object]:
        totals = self.plane.totals()
        return {
            "lateTicks": self.late_ticks,
            "skippedTicks": self.late_ticks,
            "ticks": self.ticks,
            "tickDurationMs": self.duration_ms.snapshot(),
            "tickLatenessMs": self.lateness_ms.snapshot(),
            "packets": {
                "in": totals["packets_in"],
                "out": totals["packets_out"],
                "dropped": totals["packets_dropped"],
                "sendErrors": totals["send_errors"],
            },
            "openLegs": len(self._by_row),
            "gcPauseMs": self.gc_pause_ms.snapshot(),
        }


def _run_posted(posted: list[tuple[Callable[..., Any], tuple[Any, ...]]]) -> None:
    for function, args in posted:
        try:
            function(*args)
        except Exception:
            log.exception("event=media_callback_failed")
