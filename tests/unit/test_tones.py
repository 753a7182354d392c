"""Tone generation: levels on the dBm0 scale, Q.23 pairs, phase continuity, the DTMF renderer."""

from __future__ import annotations

import numpy as np
import pytest

from tonebridge.media.tones import (
    DTMF_FREQUENCIES,
    DtmfToneRenderer,
    ToneGenerator,
    amplitude,
    dtmf_samples,
    sine,
)

RATE = 8000


def level_dbm0(x: np.ndarray) -> float:
    """Power of a signal on the G.711 scale: a full-scale sine (mean square 32768^2 / 2) is +3.14 dBm0."""
    power = np.mean(x.astype(np.float64) ** 2)
    return 10 * np.log10(power / (32768.0**2 / 2)) + 3.14


def peaks(x: np.ndarray, count: int) -> list[float]:
    spectrum = np.abs(np.fft.rfft(x * np.hanning(x.size)))
    freqs = np.fft.rfftfreq(x.size, 1 / RATE)
    found: list[float] = []
    for index in np.argsort(spectrum)[::-1]:
        if all(abs(freqs[index] - f) > 30 for f in found):
            found.append(float(freqs[index]))
        if len(found) == count:
            break
    return sorted(found)


@pytest.mark.parametrize("level", [0.0, -10.0, -25.0])
def test_sine_level_and_frequency(level: float) -> None:
    x = sine(1000.0, 1000, level)
    assert x.dtype == np.int16 and x.size == RATE
    assert level_dbm0(x) == pytest.approx(level, abs=0.05)
    assert peaks(x, 1) == [pytest.approx(1000.0, abs=2)]


def test_full_scale_reference() -> None:
    assert amplitude(3.14) == pytest.approx(32768.0)
    assert amplitude(0.0) == pytest.approx(22_827, abs=1)


@pytest.mark.parametrize("digit", list("0123456789*#ABCD"))
def test_dtmf_pairs_follow_q23(digit: str) -> None:
    x = dtmf_samples(digit, 100)
    assert x.size == 800
    low, high = DTMF_FREQUENCIES[digit]
    assert peaks(x, 2) == [pytest.approx(low, abs=12), pytest.approx(high, abs=12)]


def test_dtmf_level_is_per_tone() -> None:
    x = dtmf_samples("5", 1000, level_dbm0=-10.0)
    low, high = DTMF_FREQUENCIES["5"]
    t = np.arange(x.size) / RATE
    for f in (low, high):
        # Project on the tone: its amplitude alone must be that of a -10 dBm0 sine.
        a = 2 * np.abs(np.mean(x * np.exp(-2j * np.pi * f * t)))
        assert a == pytest.approx(amplitude(-10.0), rel=0.01)
    assert level_dbm0(x) == pytest.approx(-10.0 + 10 * np.log10(2), abs=0.05)


def test_dtmf_keypad_layout() -> None:
    assert DTMF_FREQUENCIES["1"] == (697.0, 1209.0)
    assert DTMF_FREQUENCIES["#"] == (941.0, 1477.0)
    assert DTMF_FREQUENCIES["D"] == (941.0, 1633.0)
    assert dtmf_samples("a", 20).size == 160
    with pytest.raises(ValueError, match="not a DTMF key"):
        dtmf_samples("E", 100)


def test_generator_frames_are_phase_continuous() -> None:
    gen = ToneGenerator([350.0, 440.0], -13.0)
    frames = np.concatenate([gen.frame(160), gen.frame(80), gen.frame(240), gen.frame(160)])
    whole = ToneGenerator([350.0, 440.0], -13.0).frame(640)
    np.testing.assert_array_equal(frames, whole)
    assert ToneGenerator([]).frame(10).tolist() == [0] * 10


def test_loud_sums_saturate_instead_of_wrapping() -> None:
    x = ToneGenerator([100.0, 100.0], 3.14).frame(800)  # twice full scale
    assert x.max() == 32767 and x.min() == -32768
    # Wrapping around int16 would jump by ~65000; the clipped sum moves at most 2 * 2pi * 100/8000 of 32768.
    assert np.all(np.abs(np.diff(x.astype(np.int32))) < 6000)


def test_renderer_plays_tone_then_silence_then_nothing() -> None:
    renderer = DtmfToneRenderer()
    assert renderer.frame() is None and not renderer.pending
    renderer.press("7", duration_ms=100)
    renderer.press("8", duration_ms=40)
    frames = []
    while (f := renderer.frame()) is not None:
        assert f.size == 160 and f.dtype == np.int16
        frames.append(f)
    signal = np.concatenate(frames)
    expected = np.concatenate(
        [dtmf_samples("7", 100), np.zeros(480, np.int16), dtmf_samples("8", 40), np.zeros(480, np.int16)]
    )
    # 100 + 60 + 40 + 60 ms = 1600 samples = 10 frames exactly.
    np.testing.assert_array_equal(signal, expected)
    assert not renderer.pending


def test_renderer_pads_the_last_frame() -> None:
    renderer = DtmfToneRenderer()
    renderer.press("1", duration_ms=50)  # 400 + 480 samples: 5.5 frames
    frames = []
    while (f := renderer.frame()) is not None:
        frames.append(f)
    assert len(frames) == 6
    assert not frames[-1][80:].any()
