"""Tests for text to speech (tonebridge.media.tts): locale to voice mapping, and, when espeak-ng is
installed (Debian package espeak-ng), real synthesis and both caches."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from tonebridge.media import tts
from tonebridge.media.tts import Synthesizer, TtsUnavailable, voice_for_locale

needs_espeak = pytest.mark.skipif(not tts.available(), reason="espeak-ng is not installed")


@pytest.mark.parametrize(
    ("locale", "voice"),
    [
        ("en-US", "en-us"),
        ("en-GB", "en-gb"),
        ("en-AU", "en-gb"),
        ("sv-SE", "sv"),
        ("de-DE", "de"),
        ("fr-FR", "fr-fr"),
        ("fr-CA", "fr-fr"),
        ("es-ES", "es"),
        ("es-MX", "es-419"),
        ("pt-BR", "pt-br"),
        ("en_gb", "en-gb"),
        ("EN-us", "en-us"),
        ("de-LU", "de"),  # unknown region: the language
        ("en-US-Standard-C", "en-us"),  # a voice-name suffix
        ("xx-YY", "en-us"),  # unknown language: the default
        ("", "en-us"),
        (None, "en-us"),
    ],
)
def test_voice_for_locale(locale: str | None, voice: str) -> None:
    assert voice_for_locale(locale) == voice


def test_missing_espeak_raises_tts_unavailable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(tts.shutil, "which", lambda name: None)
    assert not tts.available()
    with pytest.raises(TtsUnavailable):
        Synthesizer().synthesize("hello")


def test_empty_text_needs_no_engine(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(tts.shutil, "which", lambda name: None)
    out = Synthesizer().synthesize("   ")
    assert out.dtype == np.int16 and out.size == 0


@needs_espeak
def test_one_two_three_is_speech_of_plausible_length(tmp_path: Path) -> None:
    synth = Synthesizer()
    samples = synth.synthesize("one two three", "en-US", cache_dir=tmp_path)
    assert samples.dtype == np.int16 and samples.ndim == 1
    seconds = samples.size / 8000
    assert 0.5 < seconds < 3.0, seconds
    rms = float(np.sqrt(np.mean(samples.astype(np.float64) ** 2)))
    assert rms > 300, rms  # clearly not silence
    # Resampled to 8 kHz: almost no energy above 3.7 kHz.
    spectrum = np.abs(np.fft.rfft(samples.astype(np.float64))) ** 2
    freqs = np.fft.rfftfreq(samples.size, 1 / 8000)
    assert spectrum[freqs > 3700].sum() < 0.01 * spectrum.sum()


@needs_espeak
def test_memory_cache_is_used_the_second_time() -> None:
    synth = Synthesizer()
    first = synth.synthesize("one two three")
    second = synth.synthesize("one two three", "en-US")
    assert synth.runs == 1 and synth.memory_hits == 1
    assert second is first
    assert not second.flags.writeable  # shared: callers cannot corrupt the cache
    # Locales with the same voice share the entry; another voice is another entry.
    synth.synthesize("one two three", "en")
    assert synth.runs == 1
    synth.synthesize("one two three", "sv-SE")
    assert synth.runs == 2


@needs_espeak
def test_disk_cache_is_used_by_a_fresh_synthesizer(tmp_path: Path) -> None:
    first = Synthesizer(cache_dir=tmp_path)
    samples = first.synthesize("one two three")
    files = list(tmp_path.glob("*.wav"))
    assert len(files) == 1 and first.runs == 1
    second = Synthesizer(cache_dir=tmp_path)
    again = second.synthesize("one two three")
    assert second.runs == 0 and second.disk_hits == 1
    np.testing.assert_array_equal(again, samples)


@needs_espeak
def test_damaged_cache_file_is_rendered_again(tmp_path: Path) -> None:
    Synthesizer(cache_dir=tmp_path).synthesize("one two three")
    (path,) = tmp_path.glob("*.wav")
    path.write_bytes(b"not a wav")
    synth = Synthesizer(cache_dir=tmp_path)
    assert synth.synthesize("one two three").size > 4000 and synth.runs == 1
    assert path.read_bytes()[:4] == b"RIFF"


@needs_espeak
def test_lru_is_bounded_in_bytes() -> None:
    synth = Synthesizer(max_bytes=1)
    synth.synthesize("one")
    synth.synthesize("two")
    synth.synthesize("one")
    assert synth.runs == 3  # "one" was evicted by "two"


@needs_espeak
def test_module_function_and_leading_dash_text() -> None:
    # Text on stdin: a leading "-" must not be read as an espeak-ng option.
    out = tts.synthesize("-v hello")
    assert out.size > 1000
