"""Signal helpers for integration tests: write test tones and measure what a peer heard.

Independent of the `tonebridge` package on purpose, so that tests judge the server's audio with code the
server does not share. Everything is 16-bit linear PCM, mono, 8 kHz unless said otherwise.

Levels are in dBm0 on the G.711 scale: a sine at full scale (peak 32768 in 16-bit PCM) is +3.14 dBm0,
the A-law figure of ITU-T G.711 (mu-law's is +3.17; the 0.03 dB gap is below what tests can resolve), so
0 dBm0 is a sine of peak ~22 800.
"""

from __future__ import annotations

import math
import wave
from pathlib import Path

import numpy as np

RATE = 8000
FULL_SCALE = 32768.0
# The level of a full-scale sine on the G.711 scale (ITU-T G.711, A-law).
FULL_SCALE_SINE_DBM0 = 3.14
# Mean square of a full-scale sine: the 0 dB reference of `FULL_SCALE_SINE_DBM0`.
_FULL_SCALE_SINE_POWER = FULL_SCALE * FULL_SCALE / 2.0


def amplitude_for_dbm0(level_dbm0: float) -> float:
    """The peak (in 16-bit PCM units) of a sine at `level_dbm0`."""
    return FULL_SCALE * 10.0 ** ((level_dbm0 - FULL_SCALE_SINE_DBM0) / 20.0)


def write_wav(path: Path, samples: np.ndarray, rate: int = RATE) -> Path:
    """Write int16 mono samples as a 16-bit PCM WAV (stdlib `wave`); returns `path`."""
    data = np.asarray(samples)
    if data.ndim != 1:
        raise ValueError(f"expected mono samples (1-D), got shape {data.shape}")
    if data.dtype != np.int16:
        data = np.clip(np.rint(data), -32768, 32767).astype(np.int16)
    path = Path(path)
    with wave.open(str(path), "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(rate)
        out.writeframes(data.astype("<i2").tobytes())
    return path


def tone_wav(
    path: Path,
    freq_hz: float,
    seconds: float,
    level_dbm0: float = -10.0,
    pad_silence_s: float = 0.0,
    rate: int = RATE,
) -> Path:
    """Write a sine of `freq_hz` lasting `seconds` at `level_dbm0`, then `pad_silence_s` of silence.

    The padding matters for baresip's `aufile` source, which ends the call when its file runs out: make
    the file outlast the call.
    """
    if seconds < 0 or pad_silence_s < 0:
        raise ValueError("durations must be >= 0")
    if not 0 < freq_hz < rate / 2:
        raise ValueError(f"freq_hz must lie between 0 and the Nyquist frequency {rate / 2} Hz")
    peak = amplitude_for_dbm0(level_dbm0)
    if peak > 32767:
        raise ValueError(f"{level_dbm0} dBm0 clips 16-bit PCM (max {FULL_SCALE_SINE_DBM0} dBm0)")
    n = int(round(seconds * rate))
    tone = peak * np.sin(2.0 * math.pi * freq_hz * np.arange(n) / rate)
    silence = np.zeros(int(round(pad_silence_s * rate)))
    return write_wav(path, np.concatenate([tone, silence]), rate)


def silence_wav(path: Path, seconds: float, rate: int = RATE) -> Path:
    """Write `seconds` of digital silence."""
    return write_wav(path, np.zeros(int(round(seconds * rate)), dtype=np.int16), rate)


def read_wav(path: Path) -> tuple[np.ndarray, int]:
    """The samples (int16, mono) and the sample rate of a 16-bit PCM WAV.

    Several channels are averaged into one. Raises ValueError for other sample widths.
    """
    with wave.open(str(path), "rb") as inp:
        width, channels, rate = inp.getsampwidth(), inp.getnchannels(), inp.getframerate()
        frames = inp.readframes(inp.getnframes())
    if width != 2:
        raise ValueError(f"{path}: {8 * width}-bit samples, expected 16-bit PCM")
    samples = np.frombuffer(frames, dtype="<i2")
    if channels > 1:
        usable = len(samples) - len(samples) % channels
        mixed = samples[:usable].reshape(-1, channels).astype(np.float64).mean(axis=1)
        return np.rint(mixed).astype(np.int16), rate
    return samples.astype(np.int16), rate


def level_dbm0(samples: np.ndarray) -> float:
    """The mean power of `samples` in dBm0 (-inf for silence or no samples)."""
    data = np.asarray(samples, dtype=np.float64)
    if data.size == 0:
        return float("-inf")
    power = float(np.mean(data * data))
    if power <= 0.0:
        return float("-inf")
    return FULL_SCALE_SINE_DBM0 + 10.0 * math.log10(power / _FULL_SCALE_SINE_POWER)


def dominant_frequency(samples: np.ndarray, rate: int = RATE) -> float:
    """The frequency (Hz) of the strongest spectral peak, refined between bins.

    Hann window, then a parabola through the log magnitudes of the peak bin and its neighbours (for a
    Hann window this lands within a few hundredths of a bin of the true frequency). The DC bin is ignored.
    """
    data = np.asarray(samples, dtype=np.float64)
    if data.size < 16:
        raise ValueError(f"need at least 16 samples, got {data.size}")
    data = data - data.mean()
    spectrum = np.abs(np.fft.rfft(data * np.hanning(data.size)))
    spectrum[0] = 0.0
    peak = int(np.argmax(spectrum))
    if spectrum[peak] <= 0.0:
        raise ValueError("no signal: the samples are constant")
    offset = 0.0
    if 0 < peak < spectrum.size - 1:
        left, centre, right = (math.log(max(v, 1e-300)) for v in spectrum[peak - 1 : peak + 2])
        denominator = left - 2.0 * centre + right
        if denominator != 0.0:
            offset = 0.5 * (left - right) / denominator
    return (peak + offset) * rate / data.size


def active_segment(samples: np.ndarray, threshold_dbm0: float = -45.0, frame: int = 80) -> np.ndarray:
    """`samples` without leading and trailing silence.

    Works on frames of `frame` samples (10 ms at 8 kHz): the segment runs from the first frame whose level
    reaches `threshold_dbm0` to the end of the last such frame. Empty when no frame does.
    """
    data = np.asarray(samples)
    if frame <= 0:
        raise ValueError("frame must be positive")
    count = data.size // frame
    if count == 0:
        return data[:0]
    frames = data[: count * frame].astype(np.float64).reshape(count, frame)
    power = np.mean(frames * frames, axis=1)
    threshold = _FULL_SCALE_SINE_POWER * 10.0 ** ((threshold_dbm0 - FULL_SCALE_SINE_DBM0) / 10.0)
    active = np.flatnonzero(power >= threshold)
    if active.size == 0:
        return data[:0]
    return data[active[0] * frame : (active[-1] + 1) * frame]
