"""Streaming audio sources for the mixer: built-in music on hold and looped sample buffers.

Every source yields 8 kHz int16 frames through ``frame(n=160)``, phase-continuous across calls (the next
frame starts exactly where the last one stopped), so a leg can be switched to a source at any tick.
The built-in classes (``ring``, ``music1``, ``music2``, ``music3``) are synthesised once per process and
shared read-only; each source returned by :func:`make_moh` keeps its own position.
"""

from __future__ import annotations

import wave
from dataclasses import dataclass
from functools import cache
from os import PathLike
from typing import Protocol

import numpy as np

__all__ = [
    "MOH_NAMES",
    "RATE",
    "AudioSource",
    "LoopSource",
    "WavLoopSource",
    "dbm0",
    "make_moh",
    "moh_loop",
]

RATE = 8000

MOH_NAMES: tuple[str, ...] = ("ring", "music1", "music2", "music3")

# ITU-T G.711 §3 (Table 2a note): the largest sine a mu-law coder carries is +3.17 dBm0, so a full-scale
# 16-bit sine sits 3.17 dB above the 0 dBm0 reference.
_DBM0_RMS = 32768.0 * 10 ** (-3.17 / 20) / np.sqrt(2.0)

#: Gentle music-on-hold level: about -20 dBm0 RMS over the loop.
MUSIC_LEVEL_DBM0 = -20.0
#: Each ring-back frequency at -19 dBm0 (the North American precise tone plan level for audible ringing).
RING_LEVEL_DBM0 = -19.0


class AudioSource(Protocol):
    """The one interface of everything that streams int16 frames: players, music on hold, prompts, tones.
    `frame(n)` gives the next `n` samples, or None when it has nothing more to play (heard as silence)."""

    def frame(self, n: int = 160) -> np.ndarray | None: ...


def dbm0(samples: np.ndarray) -> float:
    """RMS level of linear 16-bit samples in dBm0 (G.711 reference)."""
    rms = float(np.sqrt(np.mean(np.square(samples.astype(np.float64)))))
    return 20.0 * np.log10(max(rms, 1e-9) / _DBM0_RMS)


class LoopSource:
    """Plays a buffer of int16 samples round and round, from an optional start offset."""

    def __init__(self, samples: np.ndarray, start: int = 0) -> None:
        buffer = np.asarray(samples)
        if buffer.ndim != 1 or buffer.size == 0:
            raise ValueError("a loop needs a non-empty one-dimensional sample buffer")
        if buffer.dtype != np.int16:
            raise ValueError(f"a loop needs int16 samples (got {buffer.dtype})")
        if buffer.flags.writeable:
            buffer = buffer.copy()
            buffer.flags.writeable = False
        self._buffer = buffer
        self._pos = start % buffer.size

    def __len__(self) -> int:
        return int(self._buffer.size)

    @property
    def position(self) -> int:
        return self._pos

    def frame(self, n: int = 160) -> np.ndarray:
        """The next ``n`` samples (read-only when they need no wrap-around)."""
        size = self._buffer.size
        pos = self._pos
        self._pos = (pos + n) % size
        if pos + n <= size:
            return self._buffer[pos : pos + n]
        indices = (pos + np.arange(n)) % size
        return self._buffer[indices]


class WavLoopSource(LoopSource):
    """A looped recording: int16 samples at 8 kHz, or an 8 kHz mono 16-bit PCM WAV file."""

    @classmethod
    def from_file(cls, path: str | PathLike[str]) -> WavLoopSource:
        with wave.open(str(path), "rb") as wav:
            if wav.getnchannels() != 1 or wav.getsampwidth() != 2 or wav.getframerate() != RATE:
                raise ValueError(
                    f"{path}: need 8000 Hz mono 16-bit PCM (got {wav.getframerate()} Hz, "
                    f"{wav.getnchannels()} channels, {8 * wav.getsampwidth()}-bit)"
                )
            data = wav.readframes(wav.getnframes())
        return cls(np.frombuffer(data, dtype="<i2").astype(np.int16))


def make_moh(name: str) -> LoopSource:
    """A new source playing the built-in music-on-hold class ``name`` from its beginning."""
    return LoopSource(moh_loop(name))


@cache
def moh_loop(name: str) -> np.ndarray:
    """The whole loop of a built-in class, read-only int16 (computed once per process)."""
    if name not in _PIECES and name != "ring":
        raise ValueError(f"unknown music-on-hold class {name!r} (expected one of {', '.join(MOH_NAMES)})")
    samples = _ring() if name == "ring" else _render(_PIECES[name])
    samples.flags.writeable = False
    return samples


# --- ring-back ------------------------------------------------------------------------------------------------


def _ring() -> np.ndarray:
    on, off = 2 * RATE, 4 * RATE
    t = np.arange(on) / RATE
    amplitude = _DBM0_RMS * np.sqrt(2.0) * 10 ** (RING_LEVEL_DBM0 / 20)
    # 440 and 480 Hz complete whole cycles in 2 s, so the loop joins without a phase step.
    burst = amplitude * (np.sin(2 * np.pi * 440 * t) + np.sin(2 * np.pi * 480 * t))
    ramp = int(0.005 * RATE)  # 5 ms edges: no click at the cadence boundaries
    edge = np.sin(np.linspace(0, np.pi / 2, ramp)) ** 2
    burst[:ramp] *= edge
    burst[-ramp:] *= edge[::-1]
    return np.concatenate([np.round(burst), np.zeros(off)]).astype(np.int16)


# --- music ----------------------------------------------------------------------------------------------------

_NOTE_INDEX = {"C": 0, "D": 2, "E": 4, "F": 5, "G": 7, "A": 9, "B": 11}


def _hz(note: str) -> float:
    """Equal-tempered frequency of a note name like 'C5', 'F#4', 'Bb3' (A4 = 440 Hz)."""
    letter, rest = note[0], note[1:]
    semitone = _NOTE_INDEX[letter]
    while rest and rest[0] in "#b":
        semitone += 1 if rest[0] == "#" else -1
        rest = rest[1:]
    midi = 12 * (int(rest) + 1) + semitone
    return 440.0 * 2 ** ((midi - 69) / 12)


@dataclass(frozen=True)
class _Piece:
    bpm: float
    timbre: str
    #: (start beat, length in beats, note, relative loudness); the loop lasts ``beats`` beats.
    notes: tuple[tuple[float, float, str, float], ...]
    beats: int


def _voice(timbre: str, freq: float, length: int, rng_phase: float) -> np.ndarray:
    """One note of ``length`` samples (tail included) for the named timbre, peak about 1."""
    t = np.arange(length) / RATE
    out = np.zeros(length)
    if timbre == "organ":
        # Soft drawbar organ: a few harmonics, slow attack and release, no decay.
        for k, weight in ((1, 1.0), (2, 0.35), (3, 0.18), (4, 0.08)):
            if k * freq < 3600:
                out += weight * np.sin(2 * np.pi * k * freq * t + k * rng_phase)
        attack, release = int(0.06 * RATE), int(0.15 * RATE)
        env = np.ones(length)
        env[:attack] = np.linspace(0, 1, attack)
        env[-release:] = np.linspace(1, 0, release)
        return out * env / 1.6
    if timbre == "pluck":
        # Plucked string: bright harmonics that die away faster the higher they are.
        for k in range(1, 9):
            if k * freq < 3600:
                out += (0.9**k / k) * np.sin(2 * np.pi * k * freq * t) * np.exp(-t * (3.0 + 1.6 * k))
        attack = int(0.004 * RATE)
        out[:attack] *= np.linspace(0, 1, attack)
        out[-int(0.02 * RATE) :] *= np.linspace(1, 0, int(0.02 * RATE))
        return out / 1.3
    if timbre == "bell":
        # FM bell: a 1:1.4 carrier-to-modulator ratio gives inharmonic partials; the modulation index falls
        # as the note rings, so it mellows. Sidebands stay under 4 kHz for the notes used here.
        index = 2.0 * np.exp(-t * 2.5)
        out = np.sin(2 * np.pi * freq * t + index * np.sin(2 * np.pi * 1.4 * freq * t)) * np.exp(-t * 1.8)
        attack = int(0.003 * RATE)
        out[:attack] *= np.linspace(0, 1, attack)
        out[-int(0.05 * RATE) :] *= np.linspace(1, 0, int(0.05 * RATE))
        return out
    raise ValueError(timbre)


def _render(piece: _Piece) -> np.ndarray:
    beat = round(RATE * 60 / piece.bpm)
    total = piece.beats * beat
    mix = np.zeros(total)
    tail = {"organ": 0.0, "pluck": 1.2, "bell": 2.5}[piece.timbre]
    for i, (start, length, note, loudness) in enumerate(piece.notes):
        n = int(round(length * beat + tail * RATE))
        sound = loudness * _voice(piece.timbre, _hz(note), n, rng_phase=0.7 * i)
        # Tails that run past the loop's end wrap round to its start, so the loop joins seamlessly.
        indices = (int(round(start * beat)) + np.arange(n)) % total
        np.add.at(mix, indices, sound)
    mix *= _DBM0_RMS * 10 ** (MUSIC_LEVEL_DBM0 / 20) / np.sqrt(np.mean(mix**2))
    return np.clip(np.round(mix), -32768, 32767).astype(np.int16)


def _arpeggio(chords: list[list[str]], pattern: list[int], step: float, loud: float) -> list:
    notes = []
    beat = 0.0
    for chord in chords:
        for idx in pattern:
            notes.append((beat, step * 0.95, chord[idx % len(chord)], loud))
            beat += step
    return notes


def _music1() -> _Piece:
    # C major, 84 bpm, organ: I-vi-IV-V held chords under a slow stepwise melody.
    chords = [["C4", "E4", "G4"], ["A3", "C4", "E4"], ["F3", "A3", "C4"], ["G3", "B3", "D4"]] * 2
    notes = []
    for bar, chord in enumerate(chords):
        notes += [(4.0 * bar, 4.0, n, 0.35) for n in chord]
    melody = "E5 D5 C5 D5 E5 E5 E5 - D5 D5 D5 - E5 G5 G5 - E5 D5 C5 D5 E5 E5 E5 C5 D5 D5 E5 D5 C5 - - -"
    for i, note in enumerate(melody.split()):
        if note != "-":
            notes.append((i * 1.0, 0.9, note, 0.8))
    return _Piece(bpm=84, timbre="organ", notes=tuple(notes), beats=32)


def _music2() -> _Piece:
    # A minor, 112 bpm, plucked: i-VI-III-VII in running eighth-note arpeggios with a bass on each bar.
    chords = [["A3", "C4", "E4"], ["F3", "A3", "C4"], ["C4", "E4", "G4"], ["G3", "B3", "D4"]] * 2
    notes = _arpeggio(chords, [0, 1, 2, 1, 2, 3, 2, 1], 0.5, 0.6)
    bass = ["A2", "F2", "C3", "G2"] * 2
    notes += [(4.0 * bar, 2.0, b, 0.9) for bar, b in enumerate(bass)]
    top = "E5 - C5 - A4 - - - F5 - E5 - C5 - - - G5 - E5 - C5 - - - D5 - B4 - G4 - - -"
    top += " E5 - D5 - C5 - B4 - A4 - C5 - E5 - - - G5 - F5 - E5 - D5 - B4 - - - - -"
    for i, note in enumerate(top.split()):
        if note != "-":
            notes.append((i * 0.5, 0.5, note, 0.5))
    return _Piece(bpm=112, timbre="pluck", notes=tuple(notes), beats=32)


def _music3() -> _Piece:
    # F major pentatonic, 68 bpm, bells: a sparse, slow melody over open fifths.
    notes = []
    fifths = [("F3", "C4"), ("D3", "A3"), ("Bb2", "F3"), ("C3", "G3")] * 2
    for bar, (low, high) in enumerate(fifths):
        notes += [(4.0 * bar, 3.5, low, 0.5), (4.0 * bar + 2.0, 1.5, high, 0.4)]
    melody = "A4 - C5 D5 F5 - D5 - C5 A4 G4 - F4 - - - G4 A4 C5 - D5 C5 A4 - G4 - F4 - G4 - - -"
    for i, note in enumerate(melody.split()):
        if note != "-":
            notes.append((i * 1.0, 1.0, note, 0.9))
    return _Piece(bpm=68, timbre="bell", notes=tuple(notes), beats=32)


_PIECES = {"music1": _music1(), "music2": _music2(), "music3": _music3()}
