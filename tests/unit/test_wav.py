"""WAV reading (formats, channels, resampling quality), writing, and the frame player."""

from __future__ import annotations

import wave
from pathlib import Path

import numpy as np
import pytest

from tonebridge.media.wav import WavError, WavPlayer, read_wav, resample, write_wav


def write_raw(path: Path, data: bytes, rate: int, width: int, channels: int) -> Path:
    with wave.open(str(path), "wb") as out:
        out.setnchannels(channels)
        out.setsampwidth(width)
        out.setframerate(rate)
        out.writeframes(data)
    return path


def tone(freq: float, rate: int, seconds: float = 1.0, peak: float = 10000.0) -> np.ndarray:
    return peak * np.sin(2 * np.pi * freq * np.arange(int(rate * seconds)) / rate)


def gain_db(y: np.ndarray, freq: float, peak: float = 10000.0, rate: int = 8000) -> float:
    """Level of `freq` in y relative to a sine of `peak` (windowed projection)."""
    y = y[400:-400].astype(np.float64)  # away from the edges
    w = np.hanning(y.size)
    t = np.arange(y.size) / rate
    a = 2 * np.abs(np.sum(y * w * np.exp(-2j * np.pi * freq * t))) / w.sum()
    return float(20 * np.log10(max(a, 1e-9) / peak))


def test_round_trip_at_8k(tmp_path: Path) -> None:
    samples = np.arange(-3000, 3000, 7, dtype=np.int16)
    path = tmp_path / "a.wav"
    write_wav(path, samples)
    with wave.open(str(path)) as check:
        assert (check.getnchannels(), check.getsampwidth(), check.getframerate()) == (1, 2, 8000)
    np.testing.assert_array_equal(read_wav(path), samples)


def test_stereo_is_averaged(tmp_path: Path) -> None:
    left = np.full(100, 1000, dtype="<i2")
    right = np.full(100, 3000, dtype="<i2")
    data = np.stack([left, right], axis=1).tobytes()
    samples = read_wav(write_raw(tmp_path / "s.wav", data, 8000, 2, 2))
    assert samples.dtype == np.int16 and samples.tolist() == [2000] * 100


def test_8bit_unsigned(tmp_path: Path) -> None:
    data = bytes([128, 255, 0, 192])
    samples = read_wav(write_raw(tmp_path / "b.wav", data, 8000, 1, 1))
    assert samples.tolist() == [0, 127 * 256, -128 * 256, 64 * 256]


@pytest.mark.parametrize("rate", [11025, 16000, 22050, 44100, 48000])
def test_resampling_keeps_the_band_and_rejects_aliases(rate: int) -> None:
    for freq in (300.0, 1000.0, 3400.0):
        assert gain_db(resample(tone(freq, rate), rate, 8000), freq) == pytest.approx(0.0, abs=0.05)
    for freq in (4300.0, 5000.0):
        if freq < rate / 2:
            alias = 8000 - freq
            assert gain_db(resample(tone(freq, rate), rate, 8000), alias) < -90


def test_read_resamples_to_8k(tmp_path: Path) -> None:
    pcm = np.round(tone(1000.0, 44100, 0.5)).astype("<i2")
    stereo = np.stack([pcm, pcm], axis=1).tobytes()
    samples = read_wav(write_raw(tmp_path / "cd.wav", stereo, 44100, 2, 2))
    assert samples.dtype == np.int16 and samples.size == 4000
    assert gain_db(samples, 1000.0) == pytest.approx(0.0, abs=0.05)


def test_upsampling_from_a_lower_rate() -> None:
    y = resample(tone(1000.0, 6000), 6000, 8000)
    assert y.size == 8000
    assert gain_db(y, 1000.0) == pytest.approx(0.0, abs=0.05)


def test_unsupported_files_raise_wav_error(tmp_path: Path) -> None:
    path = write_raw(tmp_path / "24.wav", bytes(30), 8000, 3, 1)
    with pytest.raises(WavError, match="24-bit"):
        read_wav(path)
    junk = tmp_path / "junk.wav"
    junk.write_bytes(b"RIFF\x00\x00\x00\x00WAVEnope")
    with pytest.raises(WavError, match="junk.wav"):
        read_wav(junk)


def test_write_rejects_stereo_arrays(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="mono"):
        write_wav(tmp_path / "x.wav", np.zeros((10, 2), dtype=np.int16))


def test_player_plays_once_with_a_padded_last_frame() -> None:
    player = WavPlayer(np.arange(1, 401, dtype=np.int16))
    frames = []
    while (f := player.frame()) is not None:
        frames.append(f)
    assert [f.size for f in frames] == [160, 160, 160]
    np.testing.assert_array_equal(np.concatenate(frames)[:400], np.arange(1, 401))
    assert not frames[-1][80:].any()
    assert player.finished and player.frame() is None


def test_player_tells_once_when_its_last_samples_go_out() -> None:
    heard: list[int] = []
    player = WavPlayer(np.arange(1, 321, dtype=np.int16), on_finished=lambda: heard.append(player.position))
    player.frame()
    assert heard == []
    player.frame()  # the last samples, exactly a frame's worth
    assert heard == [320] and player.finished
    assert player.frame() is None and heard == [320]
    looped: list[int] = []
    loop = WavPlayer(np.arange(100, dtype=np.int16), loop=True, on_finished=lambda: looped.append(1))
    for _ in range(5):
        loop.frame()
    assert looped == []  # a loop is never over


def test_player_loops_seamlessly() -> None:
    samples = np.arange(100, dtype=np.int16)
    player = WavPlayer(samples, loop=True)
    out = np.concatenate([player.frame(160) for _ in range(5)])
    np.testing.assert_array_equal(out, np.tile(samples, 8))
    assert not player.finished


def test_empty_player_is_finished() -> None:
    assert WavPlayer(np.zeros(0, dtype=np.int16), loop=True).frame() is None
