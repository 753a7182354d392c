"""Tests for the music-on-hold and loop sources: levels, cadence, continuity, and that the three pieces
differ audibly (spectrum and pitch content)."""

from __future__ import annotations

import wave
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from tonebridge.conference.options import MOH_CLASSES
from tonebridge.media.players import (
    MOH_NAMES,
    RATE,
    LoopSource,
    WavLoopSource,
    dbm0,
    make_moh,
    moh_loop,
)

MUSIC = ("music1", "music2", "music3")
PITCH_CLASSES = "C C# D D# E F F# G G# A A# B".split()


def test_names_match_the_conference_moh_classes() -> None:
    assert MOH_NAMES == MOH_CLASSES


def test_unknown_name_is_refused() -> None:
    with pytest.raises(ValueError, match="music4"):
        make_moh("music4")


def test_dbm0_reference() -> None:
    # A 1 kHz sine whose peak is 3.17 dB below 16-bit full scale is 0 dBm0 (G.711's mu-law overload point).
    t = np.arange(8000) / RATE
    sine = 32768 * 10 ** (-3.17 / 20) * np.sin(2 * np.pi * 1000 * t)
    assert dbm0(sine) == pytest.approx(0.0, abs=0.01)
    assert dbm0(sine / 10) == pytest.approx(-20.0, abs=0.01)


@pytest.mark.parametrize("name", MUSIC)
def test_music_is_gentle_about_minus_20_dbm0(name: str) -> None:
    loop = moh_loop(name)
    assert dbm0(loop) == pytest.approx(-20.0, abs=1.0)
    assert np.abs(loop.astype(np.int32)).max() < 16000  # well clear of clipping
    # Long enough not to sound like a stutter, and no long silences inside.
    assert len(loop) >= 10 * RATE
    seconds = loop[: len(loop) // RATE * RATE].reshape(-1, RATE)
    assert min(dbm0(s) for s in seconds) > -40.0


@pytest.mark.parametrize("name", MOH_NAMES)
def test_loops_are_read_only_and_shared(name: str) -> None:
    loop = moh_loop(name)
    assert loop.dtype == np.int16 and not loop.flags.writeable
    assert moh_loop(name) is loop
    with pytest.raises(ValueError):
        make_moh(name).frame()[0] = 1


def _spectrum(x: np.ndarray) -> np.ndarray:
    magnitude = np.abs(np.fft.rfft(x.astype(np.float64), 2**18))
    return magnitude / np.linalg.norm(magnitude)


def _pitch_profile(x: np.ndarray) -> np.ndarray:
    power = np.abs(np.fft.rfft(x.astype(np.float64))) ** 2
    freqs = np.fft.rfftfreq(len(x), 1 / RATE)
    band = (freqs > 100) & (freqs < 2000)
    classes = np.round(69 + 12 * np.log2(freqs[band] / 440)).astype(int) % 12
    profile = np.bincount(classes, weights=power[band], minlength=12)
    return profile / profile.sum()


def test_the_three_pieces_differ_in_spectrum() -> None:
    spectra = {name: _spectrum(moh_loop(name)) for name in MUSIC}
    for i, a in enumerate(MUSIC):
        for b in MUSIC[i + 1 :]:
            assert float(spectra[a] @ spectra[b]) < 0.6, (a, b)


def test_the_three_pieces_are_in_different_keys() -> None:
    tops = {}
    for name in MUSIC:
        profile = _pitch_profile(moh_loop(name))
        tops[name] = {PITCH_CLASSES[i] for i in np.argsort(profile)[::-1][:3]}
    # Tonic triads of C major, A minor and F major dominate respectively.
    assert {"C", "E"} <= tops["music1"]
    assert {"A", "C"} <= tops["music2"]
    assert {"F", "C"} <= tops["music3"]
    assert len({frozenset(t) for t in tops.values()}) == 3


def test_ring_cadence_two_seconds_on_four_off() -> None:
    loop = moh_loop("ring")
    assert len(loop) == 6 * RATE
    on, off = loop[: 2 * RATE], loop[2 * RATE :]
    assert not off.any()
    assert dbm0(on[100:-100]) == pytest.approx(-16.0, abs=0.5)  # two tones at -19 dBm0 each
    spectrum = np.abs(np.fft.rfft(on.astype(np.float64)))
    freqs = np.fft.rfftfreq(len(on), 1 / RATE)
    peaks = sorted(freqs[np.argsort(spectrum)[-2:]])
    assert peaks == [440.0, 480.0]
    # A ring source keeps the cadence across frames.
    source = make_moh("ring")
    frames = np.concatenate([source.frame() for _ in range(2 * 6 * RATE // 160)])
    assert np.array_equal(frames, np.concatenate([loop, loop]))


@pytest.mark.parametrize("name", MOH_NAMES)
def test_frames_are_phase_continuous_across_the_loop_boundary(name: str) -> None:
    loop = moh_loop(name)
    source = make_moh(name)
    count = len(loop) // 160 + 5
    played = np.concatenate([source.frame(160) for _ in range(count)])
    expected = np.concatenate([loop, loop])[: count * 160]
    assert np.array_equal(played, expected)
    # The join itself is smooth: no jump at the wrap bigger than the largest step inside the loop.
    steps = np.abs(np.diff(loop.astype(np.int32)))
    assert abs(int(loop[0]) - int(loop[-1])) <= steps.max()


def test_each_source_keeps_its_own_position() -> None:
    a, b = make_moh("music2"), make_moh("music2")
    first = a.frame().copy()
    a.frame()
    assert np.array_equal(b.frame(), first)


@given(st.lists(st.integers(1, 700), min_size=1, max_size=30), st.integers(0, 1000))
def test_loop_source_streams_any_frame_sizes(sizes: list[int], start: int) -> None:
    samples = np.arange(-500, 497, dtype=np.int16)  # 997 samples: a prime length
    source = LoopSource(samples, start=start)
    played = np.concatenate([source.frame(n) for n in sizes])
    expected = samples[(start + np.arange(sum(sizes))) % len(samples)]
    assert np.array_equal(played, expected)
    assert source.position == (start + sum(sizes)) % len(samples)


def test_loop_source_copies_a_writable_buffer() -> None:
    samples = np.ones(320, dtype=np.int16)
    source = WavLoopSource(samples)
    samples[:] = 7
    assert np.array_equal(source.frame(), np.ones(160, dtype=np.int16))
    assert len(source) == 320


@pytest.mark.parametrize(
    "bad", [np.zeros(0, np.int16), np.zeros((2, 160), np.int16), np.zeros(160, np.float32)]
)
def test_loop_source_refuses_bad_buffers(bad: np.ndarray) -> None:
    with pytest.raises(ValueError):
        LoopSource(bad)


def _write_wav(path: Path, samples: np.ndarray, rate: int = RATE, channels: int = 1) -> None:
    with wave.open(str(path), "wb") as wav:
        wav.setnchannels(channels)
        wav.setsampwidth(2)
        wav.setframerate(rate)
        wav.writeframes(samples.astype("<i2").tobytes())


def test_wav_file_round_trip(tmp_path: Path) -> None:
    samples = (1000 * np.sin(np.arange(800) / 5)).astype(np.int16)
    _write_wav(tmp_path / "hold.wav", samples)
    source = WavLoopSource.from_file(tmp_path / "hold.wav")
    played = np.concatenate([source.frame() for _ in range(10)])
    assert np.array_equal(played, np.concatenate([samples, samples]))


def test_wav_file_must_be_8khz_mono(tmp_path: Path) -> None:
    _write_wav(tmp_path / "wide.wav", np.zeros(1600, np.int16), rate=16000)
    with pytest.raises(ValueError, match="8000 Hz mono"):
        WavLoopSource.from_file(tmp_path / "wide.wav")
    _write_wav(tmp_path / "stereo.wav", np.zeros(1600, np.int16), channels=2)
    with pytest.raises(ValueError, match="8000 Hz mono"):
        WavLoopSource.from_file(tmp_path / "stereo.wav")
