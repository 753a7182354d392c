"""A fixed-delay jitter buffer on the RTP sample timeline: packets of any length in, 20 ms frames out.

Decoded samples are written at their RTP timestamp into a ring of `max_frames` frames; each `pop` (once per
media tick) reads the next frame and moves on, whatever arrived. So 10, 20 or 30 ms packets all come out
as continuous frames, reordered packets fall into place, duplicates are ignored, and packets whose slot was
already played are dropped and counted. Sans-IO: the caller's tick is the clock.
"""

from __future__ import annotations

import numpy as np

from tonebridge.media.rtp import RtpPacket, ts_diff

# Consecutive late packets that mean the sender's clock slipped behind ours (it paused without moving its
# timestamps): start again from its timeline rather than drop everything it sends from now on.
LATE_RESYNC = 3
# Drift control: when the buffer never held fewer than `delay_frames + DRIFT_SLACK` frames over a window of
# `DRIFT_WINDOW` pops, the sender's clock runs faster than ours; one frame is dropped to hold the delay.
DRIFT_SLACK = 2
DRIFT_WINDOW = 100


class JitterBuffer:
    def __init__(
        self, clock_rate: int = 8000, frame_samples: int = 160, delay_frames: int = 2, max_frames: int = 50
    ) -> None:
        if not 0 <= delay_frames < max_frames:
            raise ValueError(f"delay_frames ({delay_frames}) must be below max_frames ({max_frames})")
        self.clock_rate = clock_rate
        self.frame_samples = frame_samples
        self.delay_frames = delay_frames
        self.max_frames = max_frames
        self.capacity = max_frames * frame_samples
        self._samples = np.zeros(self.capacity, dtype=np.int16)
        self._filled = np.zeros(self.capacity, dtype=bool)
        self._head = 0  # ring index of the sample at `_read_ts`
        self._read_ts: int | None = None  # RTP timestamp of the next frame to pop; None before any packet
        self._high_ts = 0  # timestamp just past the newest sample written
        self._ssrc: int | None = None
        self._late_run = 0
        self._min_depth = max_frames
        self._pops_in_window = 0
        # Counters (packets unless said otherwise).
        self.pushed = 0
        self.late = 0
        self.duplicates = 0
        self.resyncs = 0
        self.overflow_samples = 0
        self.drift_drops = 0
        self.popped = 0
        self.underruns = 0  # pops that found nothing (the caller concealed)

    # Writing -------------------------------------------------------------------------------------------

    def _resync(self, timestamp: int) -> None:
        self._filled[:] = False
        self._head = 0
        # The first frame of the new timeline plays after `delay_frames` pops: the buffer's delay.
        self._read_ts = (timestamp - self.delay_frames * self.frame_samples) & 0xFFFFFFFF
        self._high_ts = self._read_ts
        self._late_run = 0
        self._min_depth = self.max_frames
        self._pops_in_window = 0
        self.resyncs += 1

    def push(self, packet: RtpPacket, samples: np.ndarray) -> None:
        """Store a packet's decoded samples at its timestamp."""
        pcm = np.asarray(samples, dtype=np.int16)
        if pcm.size == 0:
            return
        self.pushed += 1
        timestamp = packet.timestamp
        if pcm.size > self.capacity:  # longer than the whole ring: only its end can be played
            timestamp = (timestamp + pcm.size - self.capacity) & 0xFFFFFFFF
            pcm = pcm[-self.capacity :]
        if self._read_ts is None or packet.ssrc != self._ssrc:
            self._ssrc = packet.ssrc
            self._resync(timestamp)
        assert self._read_ts is not None
        offset = ts_diff(timestamp, self._read_ts)
        jumped_ahead = offset >= self.capacity and ts_diff(timestamp, self._high_ts) >= self.capacity // 2
        if jumped_ahead or offset < -self.capacity:
            # A timestamp jump (silence suppression, a restarted sender): follow the new timeline. A packet
            # that merely continues audio already buffered beyond the ring is an overflow, handled below.
            self._resync(timestamp)
            offset = ts_diff(timestamp, self._read_ts)
        if offset + pcm.size <= 0:
            self.late += 1
            self._late_run += 1
            if self._late_run < LATE_RESYNC:
                return
            self._resync(timestamp)
            offset = ts_diff(timestamp, self._read_ts)
        self._late_run = 0
        if offset < 0:
            pcm = pcm[-offset:]  # the start of the packet is late, its end is not
            offset = 0
        overflow = offset + pcm.size - self.capacity
        if overflow > 0:
            # More ahead than the ring holds: give up the oldest frames (bounded memory, bounded delay).
            drop = -(-overflow // self.frame_samples) * self.frame_samples
            self._skip(drop)
            self.overflow_samples += drop
            offset -= drop
            if offset < 0:
                pcm = pcm[-offset:]
                offset = 0
        index = (self._head + offset + np.arange(pcm.size)) % self.capacity
        if self._filled[index].all():
            self.duplicates += 1
            return
        self._samples[index] = pcm
        self._filled[index] = True
        end = (self._read_ts + offset + pcm.size) & 0xFFFFFFFF
        if ts_diff(end, self._high_ts) > 0:
            self._high_ts = end

    def _skip(self, samples: int) -> None:
        """Discard `samples` (whole frames) at the read position."""
        assert self._read_ts is not None
        index = (self._head + np.arange(samples)) % self.capacity
        self._filled[index] = False
        self._head = (self._head + samples) % self.capacity
        self._read_ts = (self._read_ts + samples) & 0xFFFFFFFF

    # Reading -------------------------------------------------------------------------------------------

    @property
    def depth(self) -> int:
        """Samples from the read position to the end of the newest packet (0 when empty)."""
        if self._read_ts is None:
            return 0
        return max(0, ts_diff(self._high_ts, self._read_ts))

    def pop(self) -> np.ndarray | None:
        """The next frame (int16, `frame_samples` long), or None when nothing arrived for it."""
        if self._read_ts is None:
            return None
        self._control_drift()
        n = self.frame_samples
        index = (self._head + np.arange(n)) % self.capacity
        filled = self._filled[index]
        frame: np.ndarray | None = None
        if filled.any():
            frame = np.where(filled, self._samples[index], 0).astype(np.int16)
            self.popped += 1
        else:
            self.underruns += 1
        self._skip(n)
        return frame

    def _control_drift(self) -> None:
        self._min_depth = min(self._min_depth, self.depth // self.frame_samples)
        self._pops_in_window += 1
        if self._pops_in_window < DRIFT_WINDOW:
            return
        if self._min_depth >= self.delay_frames + DRIFT_SLACK:
            self._skip(self.frame_samples)
            self.drift_drops += 1
        self._min_depth = self.max_frames
        self._pops_in_window = 0

    def reset(self) -> None:
        """Forget everything buffered; the next packet starts a new timeline."""
        self._filled[:] = False
        self._read_ts = None
        self._ssrc = None
