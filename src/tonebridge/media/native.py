"""The native cores behind Python interfaces the reference implementations share.

`tonebridge._mediaplane` holds the media plane's hot path in C; its jitter buffer and telephone-event receiver
take plain ints and buffers. These wrappers give them the interfaces of `media/jitter.py` and
`media/rfc4733.py`, so the same tests run against both and Python code can use either.
"""

from __future__ import annotations

import numpy as np

from tonebridge import _mediaplane
from tonebridge.media.rfc4733 import PressEnded, PressStarted
from tonebridge.media.rtp import RtpPacket

_JITTER_COUNTERS = (
    "pushed",
    "late",
    "duplicates",
    "resyncs",
    "overflow_samples",
    "drift_drops",
    "popped",
    "underruns",
)


class JitterBuffer:
    """`media.jitter.JitterBuffer` on the native core: the same frames and counters, packet for packet."""

    pushed: int
    late: int
    duplicates: int
    resyncs: int
    overflow_samples: int
    drift_drops: int
    popped: int
    underruns: int

    def __init__(
        self, clock_rate: int = 8000, frame_samples: int = 160, delay_frames: int = 2, max_frames: int = 50
    ) -> None:
        self._core = _mediaplane.JitterCore(clock_rate, frame_samples, delay_frames, max_frames)
        self.clock_rate = clock_rate
        self.frame_samples = frame_samples
        self.delay_frames = delay_frames
        self.max_frames = max_frames
        self.capacity = self._core.capacity

    def __getattr__(self, name: str) -> int:
        # Only reached for names not set on the instance: the counters live in the core.
        if name in _JITTER_COUNTERS:
            return getattr(self._core, name)
        raise AttributeError(name)

    def push(self, packet: RtpPacket, samples: np.ndarray) -> None:
        """Store a packet's decoded samples at its timestamp."""
        pcm = np.ascontiguousarray(samples, dtype=np.int16).reshape(-1)
        self._core.push(packet.ssrc, packet.timestamp, pcm)

    @property
    def depth(self) -> int:
        """Samples from the read position to the end of the newest packet (0 when empty)."""
        return self._core.depth

    def pop(self) -> np.ndarray | None:
        """The next frame (int16, `frame_samples` long), or None when nothing arrived for it."""
        frame = np.empty(self.frame_samples, dtype=np.int16)
        return frame if self._core.pop_into(frame) else None

    def reset(self) -> None:
        """Forget everything buffered; the next packet starts a new timeline."""
        self._core.reset()


def press_of(event: tuple) -> PressStarted | PressEnded:
    """A press tuple of the native receiver, ("started", digit, timestamp, ssrc) or ("ended", digit,
    timestamp, ssrc, duration, timed_out), as the receiver's dataclass."""
    if event[0] == "started":
        return PressStarted(event[1], event[2], event[3])
    return PressEnded(event[1], event[2], event[3], event[4], event[5])


class TelephoneEventReceiver:
    """`media.rfc4733.TelephoneEventReceiver` on the native core: the same presses for the same packets
    and times."""

    def __init__(self, clock_rate: int = 8000, timeout: float = 0.5, remembered: int = 32) -> None:
        self._core = _mediaplane.EventReceiverCore(clock_rate, timeout, remembered)
        self.clock_rate = clock_rate
        self.timeout = timeout
        self.remembered = remembered

    @property
    def malformed(self) -> int:
        return self._core.malformed

    @property
    def ignored(self) -> int:
        """Events that are not DTMF keys, and packets of presses already over."""
        return self._core.ignored

    def receive(self, packet: RtpPacket, now: float) -> list[PressStarted | PressEnded]:
        return [press_of(e) for e in self._core.receive(packet.ssrc, packet.timestamp, packet.payload, now)]

    def next_timer(self) -> float | None:
        """When `handle_timer` must be called next (None while no press is in progress)."""
        return self._core.next_timer()

    def handle_timer(self, now: float) -> list[PressEnded]:
        """End a press that has heard nothing for `timeout` seconds (all its end packets were lost)."""
        ended = [press_of(e) for e in self._core.handle_timer(now)]
        return [e for e in ended if isinstance(e, PressEnded)]  # the timer only ends presses
