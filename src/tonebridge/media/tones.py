"""Tone generation: sums of sines streamed frame by frame, DTMF key tones (ITU-T Q.23) and a renderer that
plays queued key presses into the outgoing audio.

Levels are in dBm0 on the G.711 scale: a full-scale sine (peak 32768) is +3.14 dBm0 (G.711 A-law; mu-law's
+3.17 differs by less than any test resolves), so 0 dBm0 is a sine of peak about 22 800.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence

import numpy as np

FULL_SCALE = 32768.0
FULL_SCALE_SINE_DBM0 = 3.14

# ITU-T Q.23 §2 (Table 1): the low (row) and high (column) frequency of each key, in Hz.
_ROWS = (697.0, 770.0, 852.0, 941.0)
_COLUMNS = (1209.0, 1336.0, 1477.0, 1633.0)
_KEYPAD = ("123A", "456B", "789C", "*0#D")
DTMF_FREQUENCIES: dict[str, tuple[float, float]] = {
    key: (_ROWS[r], _COLUMNS[c]) for r, row in enumerate(_KEYPAD) for c, key in enumerate(row)
}
# Q.24 asks receivers to accept 40 ms tones with 40 ms pauses; 60 ms of silence after each tone leaves margin.
INTER_DIGIT_SILENCE_MS = 60


def amplitude(level_dbm0: float) -> float:
    """The peak (16-bit PCM units) of a sine at `level_dbm0`."""
    return FULL_SCALE * 10.0 ** ((level_dbm0 - FULL_SCALE_SINE_DBM0) / 20.0)


def _to_int16(signal: np.ndarray) -> np.ndarray:
    return np.clip(np.rint(signal), -32768, 32767).astype(np.int16)


def _dtmf_pair(digit: str) -> tuple[float, float]:
    try:
        return DTMF_FREQUENCIES[digit.upper()]
    except KeyError:
        raise ValueError(f"not a DTMF key: {digit!r} (expected 0-9, *, #, A-D)") from None


class ToneGenerator:
    """A sum of sines at one level each, streamed in frames with continuous phase across calls."""

    def __init__(
        self,
        frequencies: Sequence[float],
        level_dbm0: float | Sequence[float] = -10.0,
        sample_rate: int = 8000,
    ) -> None:
        self.frequencies = np.asarray(frequencies, dtype=np.float64)
        levels = np.broadcast_to(np.asarray(level_dbm0, dtype=np.float64), self.frequencies.shape)
        self.amplitudes = FULL_SCALE * 10.0 ** ((levels - FULL_SCALE_SINE_DBM0) / 20.0)
        self.sample_rate = sample_rate
        self._position = 0  # samples generated so far; phase is recomputed from it, so it never drifts

    def frame(self, n: int = 160) -> np.ndarray:
        t = (self._position + np.arange(n)) / self.sample_rate
        self._position += n
        if self.frequencies.size == 0:
            return np.zeros(n, dtype=np.int16)
        phases = 2.0 * np.pi * np.outer(self.frequencies, t)
        return _to_int16((self.amplitudes[:, None] * np.sin(phases)).sum(axis=0))


def sine(freq: float, duration_ms: float, level_dbm0: float = -10.0, sample_rate: int = 8000) -> np.ndarray:
    """A sine of `freq` Hz lasting `duration_ms` at `level_dbm0`."""
    return ToneGenerator([freq], level_dbm0, sample_rate).frame(int(round(sample_rate * duration_ms / 1000)))


def dtmf_samples(
    digit: str, duration_ms: float, level_dbm0: float = -10.0, sample_rate: int = 8000
) -> np.ndarray:
    """The Q.23 tone pair of `digit` lasting `duration_ms`, each of the two tones at `level_dbm0`."""
    n = int(round(sample_rate * duration_ms / 1000))
    return ToneGenerator(_dtmf_pair(digit), level_dbm0, sample_rate).frame(n)


class DtmfToneRenderer:
    """Plays key presses as in-band tones, each followed by 60 ms of silence.

    A press is either of a known length (`press`) or held (`hold`): a held tone sounds until `release`,
    for at least its minimum length, so a key forwarded or rendered from another leg lasts as long as
    the key is held there. A hold never released stops at `max_ms`, the longest one RFC 4733 event can
    carry without segments, so a lost release cannot leave a tone on for ever.
    """

    def __init__(self, level_dbm0: float = -10.0, sample_rate: int = 8000, frame_samples: int = 160) -> None:
        self.level_dbm0 = level_dbm0
        self.sample_rate = sample_rate
        self.frame_samples = frame_samples
        self._chunks: deque[np.ndarray | _HeldTone] = deque()

    def press(self, digit: str, duration_ms: int = 100) -> None:
        tone = dtmf_samples(digit, duration_ms, self.level_dbm0, self.sample_rate)
        self._chunks.append(tone)
        self._silence()

    def hold(self, digit: str, min_ms: int = 100, max_ms: int = 8000) -> None:
        """Start a tone that lasts until `release(digit)` (at least `min_ms`, at most `max_ms`)."""
        self._chunks.append(
            _HeldTone(
                ToneGenerator(_dtmf_pair(digit), self.level_dbm0, self.sample_rate),
                digit,
                self.sample_rate * min_ms // 1000,
                self.sample_rate * max_ms // 1000,
            )
        )
        self._silence()

    def release(self, digit: str) -> None:
        """End the oldest unreleased hold of `digit` once its minimum has played; no-op when none is held."""
        for chunk in self._chunks:
            if isinstance(chunk, _HeldTone) and chunk.digit == digit and not chunk.released:
                chunk.released = True
                return

    def _silence(self) -> None:
        self._chunks.append(np.zeros(self.sample_rate * INTER_DIGIT_SILENCE_MS // 1000, dtype=np.int16))

    @property
    def pending(self) -> bool:
        """True while tone or its trailing silence remains to be played."""
        return bool(self._chunks)

    def frame(self) -> np.ndarray | None:
        """The next frame of tones and silences, or None when nothing is queued."""
        if not self._chunks:
            return None
        out = np.zeros(self.frame_samples, dtype=np.int16)
        filled = 0
        while filled < self.frame_samples and self._chunks:
            chunk = self._chunks[0]
            wanted = self.frame_samples - filled
            if isinstance(chunk, _HeldTone):
                take = chunk.available(wanted)
                if take == 0:
                    self._chunks.popleft()
                    continue
                out[filled : filled + take] = chunk.generator.frame(take)
                chunk.played += take
                filled += take
                continue
            take = min(chunk.size, wanted)
            out[filled : filled + take] = chunk[:take]
            filled += take
            if take == chunk.size:
                self._chunks.popleft()
            else:
                self._chunks[0] = chunk[take:]
        return out


class _HeldTone:
    """A tone whose end is not known yet."""

    def __init__(self, generator: ToneGenerator, digit: str, min_samples: int, max_samples: int) -> None:
        self.generator = generator
        self.digit = digit
        self.min_samples = min_samples
        self.max_samples = max(min_samples, max_samples)
        self.played = 0
        self.released = False

    def available(self, wanted: int) -> int:
        """Samples it may play now: up to its minimum, or on while held, never past its maximum."""
        limit = self.max_samples if not self.released else self.min_samples
        return max(0, min(wanted, limit - self.played))
