"""WAV files in and out of the 8 kHz mono int16 world of the media path, and a frame-by-frame player.

Reading accepts 8- or 16-bit PCM, mono or stereo (channels averaged), at any rate. Other rates are
resampled to 8 kHz by band-limited interpolation: a Kaiser-windowed sinc (32 zero crossings a side,
beta 8.6) low-passed at 92 % of the lower Nyquist frequency, i.e. at 3.68 kHz when going down to 8 kHz.
Measured on tones from 44.1 kHz (and checked in tests/unit/test_wav.py): flat within 0.02 dB up to
3.4 kHz, and tones from 4.3 kHz up, which would alias into the band, attenuated by more than 95 dB.
"""

from __future__ import annotations

import math
import wave
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

import numpy as np

RATE = 8000
_ZERO_CROSSINGS = 32
_KAISER_BETA = 8.6
_CUTOFF = 0.92  # of the lower Nyquist frequency
_CHUNK = 4096  # outputs computed per block, to bound memory


class WavError(ValueError):
    """A WAV file this module cannot read."""


def resample(samples: np.ndarray, src_rate: int, dst_rate: int) -> np.ndarray:
    """Resample a mono signal (returned as float64) from `src_rate` to `dst_rate`."""
    x = np.asarray(samples, dtype=np.float64)
    if src_rate == dst_rate or x.size == 0:
        return x.copy()
    # Output k sits at input position k * src / dst = k * up_step / phases: its fractional part takes
    # one of `phases` values, so the kernel is computed once per phase and reused (polyphase).
    g = math.gcd(src_rate, dst_rate)
    phases, up_step = dst_rate // g, src_rate // g
    # Cutoff in cycles per input sample; the kernel spans `_ZERO_CROSSINGS` of its zeros on each side.
    fc = _CUTOFF * 0.5 * min(src_rate, dst_rate) / src_rate
    half_width = _ZERO_CROSSINGS / (2.0 * fc)
    taps = np.arange(-math.floor(half_width), math.floor(half_width) + 2)
    d = (np.arange(phases) / phases)[:, None] - taps[None, :]  # distance from each tap to the output instant
    window = np.i0(_KAISER_BETA * np.sqrt(np.clip(1.0 - (d / half_width) ** 2, 0.0, 1.0)))
    window /= np.i0(_KAISER_BETA)
    kernels = np.where(np.abs(d) < half_width, 2.0 * fc * np.sinc(2.0 * fc * d) * window, 0.0)
    n_out = x.size * dst_rate // src_rate
    pad = taps.size
    padded = np.concatenate([np.zeros(pad), x, np.zeros(pad)])
    out = np.empty(n_out)
    for start in range(0, n_out, _CHUNK):
        k = np.arange(start, min(n_out, start + _CHUNK), dtype=np.int64)
        base, phase = np.divmod(k * up_step, phases)
        out[k] = np.einsum("ij,ij->i", padded[base[:, None] + taps[None, :] + pad], kernels[phase])
    return out


def read_wav(path: str | Path | BinaryIO) -> np.ndarray:
    """A WAV file (a path, or a binary file object) as 8 kHz mono int16 samples."""
    try:
        with wave.open(path if hasattr(path, "read") else str(path), "rb") as wav:  # type: ignore[arg-type]
            channels = wav.getnchannels()
            width = wav.getsampwidth()
            rate = wav.getframerate()
            raw = wav.readframes(wav.getnframes())
    except wave.Error as exc:
        raise WavError(f"{path}: not a PCM WAV file this server reads ({exc})") from exc
    if width == 1:
        # 8-bit WAV samples are unsigned, centred on 128.
        data = (np.frombuffer(raw, dtype=np.uint8).astype(np.float64) - 128.0) * 256.0
    elif width == 2:
        data = np.frombuffer(raw, dtype="<i2").astype(np.float64)
    else:
        raise WavError(f"{path}: {8 * width}-bit samples; convert to 8- or 16-bit PCM")
    if channels < 1:
        raise WavError(f"{path}: no channels")
    frames = data.size // channels
    mono = data[: frames * channels].reshape(frames, channels).mean(axis=1)
    if rate != RATE:
        mono = resample(mono, rate, RATE)
    return np.clip(np.rint(mono), -32768, 32767).astype(np.int16)


def write_wav(path: str | Path, samples: np.ndarray, rate: int = RATE) -> None:
    """Write int16 mono samples as a 16-bit PCM WAV."""
    pcm = np.asarray(samples)
    if pcm.ndim != 1:
        raise ValueError(f"expected mono samples (1-D), got shape {pcm.shape}")
    if pcm.dtype != np.int16:
        pcm = np.clip(np.rint(pcm), -32768, 32767).astype(np.int16)
    with wave.open(str(path), "wb") as wav:
        wav.setnchannels(1)
        wav.setsampwidth(2)
        wav.setframerate(rate)
        wav.writeframes(pcm.astype("<i2").tobytes())


class WavPlayer:
    """Plays samples frame by frame, once or looping; `frame` returns None once a single play is over.

    `on_finished` is called once, from the `frame` call that hands out the last samples of a single play:
    whoever waits for a prompt to be heard is told so, instead of asking the player every tick.
    """

    def __init__(
        self, samples: np.ndarray, loop: bool = False, on_finished: Callable[[], None] | None = None
    ) -> None:
        self.samples = np.asarray(samples, dtype=np.int16)
        self.loop = loop
        self.position = 0
        self.on_finished = on_finished

    @property
    def finished(self) -> bool:
        return self.samples.size == 0 or (not self.loop and self.position >= self.samples.size)

    def frame(self, n: int = 160) -> np.ndarray | None:
        if self.finished:
            return None
        size = self.samples.size
        if not self.loop:
            chunk = self.samples[self.position : self.position + n]
            self.position += chunk.size
            if chunk.size < n:  # the last frame, padded with silence
                chunk = np.concatenate([chunk, np.zeros(n - chunk.size, dtype=np.int16)])
            if self.position >= size and self.on_finished is not None:
                finished, self.on_finished = self.on_finished, None
                finished()
            return chunk.copy()
        index = (self.position + np.arange(n)) % size
        self.position = (self.position + n) % size
        return self.samples[index]
