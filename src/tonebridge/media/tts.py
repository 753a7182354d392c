"""Text to speech for prompts: espeak-ng renders text to 8 kHz mono int16 samples, cached.

``synthesize(text, locale)`` runs ``espeak-ng -v <voice> -w <file>`` (Debian package ``espeak-ng``), reads the
WAV through :func:`tonebridge.media.wav.read_wav` (which resamples espeak's 22.05 kHz to the 8 kHz of the
media path) and keeps the result in an in-memory LRU and, when a cache folder is given, on disk as a WAV
named by a hash of the voice and the text. Sinch locales map to espeak voices, with a fallback on the
language and then on American English.

It blocks for the length of one espeak-ng run (tens to hundreds of milliseconds for a short prompt): call it
from a worker thread (``asyncio.to_thread``), never on the media loop. When espeak-ng is missing it raises
:class:`TtsUnavailable`; the caller skips the prompt and logs it.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import tempfile
import threading
from collections import OrderedDict
from pathlib import Path

import numpy as np

from tonebridge.media.wav import RATE, WavError, read_wav, write_wav

__all__ = [
    "DEFAULT_VOICE",
    "TtsError",
    "TtsUnavailable",
    "Synthesizer",
    "available",
    "synthesize",
    "voice_for_locale",
]

ESPEAK = "espeak-ng"
DEFAULT_VOICE = "en-us"
_RUN_TIMEOUT_S = 30.0

# Sinch locale (lower case) -> espeak-ng voice. Locales not listed fall back on their language below.
_VOICES: dict[str, str] = {
    "en-us": "en-us",
    "en-gb": "en-gb",
    "en-au": "en-gb",
    "en-nz": "en-gb",
    "en-ie": "en-gb",
    "en-in": "en-gb",
    "en-za": "en-gb",
    "en-gb-wls": "en-gb",
    "cy-gb": "cy",
    "sv-se": "sv",
    "da-dk": "da",
    "nb-no": "nb",
    "no-no": "nb",
    "fi-fi": "fi",
    "is-is": "is",
    "de-de": "de",
    "de-at": "de",
    "de-ch": "de",
    "fr-fr": "fr-fr",
    "fr-ca": "fr-fr",
    "fr-be": "fr-be",
    "fr-ch": "fr-ch",
    "es-es": "es",
    "es-mx": "es-419",
    "es-us": "es-419",
    "it-it": "it",
    "nl-nl": "nl",
    "nl-be": "nl",
    "pt-pt": "pt",
    "pt-br": "pt-br",
    "pl-pl": "pl",
    "ru-ru": "ru",
    "tr-tr": "tr",
    "ro-ro": "ro",
    "cs-cz": "cs",
    "hu-hu": "hu",
    "el-gr": "el",
    "ja-jp": "ja",
    "ko-kr": "ko",
    "cmn-cn": "cmn",
    "zh-cn": "cmn",
    "yue-hk": "yue",
    "hi-in": "hi",
    "ar-xa": "ar",
    "he-il": "he",
    "id-id": "id",
    "vi-vn": "vi",
    "uk-ua": "uk",
}
# Language -> voice, for locales whose region is not listed above.
_LANGUAGES: dict[str, str] = {
    "en": "en-us",
    "sv": "sv",
    "da": "da",
    "nb": "nb",
    "no": "nb",
    "fi": "fi",
    "de": "de",
    "fr": "fr-fr",
    "es": "es",
    "it": "it",
    "nl": "nl",
    "pt": "pt",
    "pl": "pl",
    "ru": "ru",
    "tr": "tr",
    "ja": "ja",
    "ko": "ko",
    "zh": "cmn",
    "cmn": "cmn",
    "ar": "ar",
    "hi": "hi",
    "he": "he",
    "el": "el",
    "cs": "cs",
    "hu": "hu",
    "ro": "ro",
    "uk": "uk",
    "vi": "vi",
    "id": "id",
    "cy": "cy",
    "is": "is",
}


class TtsError(RuntimeError):
    """Speech could not be synthesised."""


class TtsUnavailable(TtsError):
    """espeak-ng is not installed (Debian: ``apt-get install espeak-ng``)."""


def voice_for_locale(locale: str | None) -> str:
    """The espeak-ng voice for a Sinch locale (``en-US``, ``sv-SE``...): the exact locale if known, else its
    language, else :data:`DEFAULT_VOICE`. Voice-name suffixes (``en-US-Standard-C``) fall back the same way."""
    if not locale:
        return DEFAULT_VOICE
    key = locale.strip().replace("_", "-").lower()
    parts = key.split("-")
    # Longest known prefix first: en-gb-wls, then en-gb, then en.
    for n in range(len(parts), 1, -1):
        voice = _VOICES.get("-".join(parts[:n]))
        if voice is not None:
            return voice
    return _LANGUAGES.get(parts[0], DEFAULT_VOICE)


def available() -> bool:
    """Whether espeak-ng is on PATH."""
    return shutil.which(ESPEAK) is not None


class Synthesizer:
    """espeak-ng with an in-memory LRU (bounded in bytes) and an optional on-disk cache; thread safe.

    ``runs`` counts espeak-ng invocations (what the caches save); ``memory_hits`` and ``disk_hits`` count
    where cached results came from.
    """

    def __init__(self, cache_dir: Path | None = None, max_bytes: int = 16 * 1024 * 1024) -> None:
        self.cache_dir = cache_dir
        self.max_bytes = max_bytes
        self.runs = 0
        self.memory_hits = 0
        self.disk_hits = 0
        self._lru: OrderedDict[tuple[str, str], np.ndarray] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()

    def synthesize(self, text: str, locale: str = "en-US", cache_dir: Path | None = None) -> np.ndarray:
        """``text`` spoken in ``locale`` as read-only 8 kHz mono int16 samples."""
        text = text.strip()
        if not text:
            return _frozen(np.zeros(0, dtype=np.int16))
        voice = voice_for_locale(locale)
        # Locales that map to the same voice share one entry: they would give the same samples.
        key = (voice, text)
        with self._lock:
            cached = self._lru.get(key)
            if cached is not None:
                self._lru.move_to_end(key)
                self.memory_hits += 1
                return cached
        folder = cache_dir if cache_dir is not None else self.cache_dir
        path = folder / f"{_digest(voice, text)}.wav" if folder is not None else None
        samples: np.ndarray | None = None
        if path is not None and path.is_file():
            try:
                samples = read_wav(path)
                with self._lock:
                    self.disk_hits += 1
            except (OSError, WavError):
                samples = None  # a damaged cache file is rendered again and replaced
        if samples is None:
            samples = self._run(text, voice)
            if path is not None:
                _store(path, samples)
        samples = _frozen(samples)
        self._remember(key, samples)
        return samples

    def _run(self, text: str, voice: str) -> np.ndarray:
        exe = shutil.which(ESPEAK)
        if exe is None:
            raise TtsUnavailable(f"{ESPEAK} is not installed (Debian package espeak-ng)")
        with tempfile.TemporaryDirectory(prefix="tonebridge-tts-") as tmp:
            out = Path(tmp) / "out.wav"
            # The text goes on stdin, so a leading "-" is never read as an option; -b 1: UTF-8 input.
            try:
                proc = subprocess.run(
                    [exe, "-v", voice, "-b", "1", "-w", str(out), "--stdin"],
                    input=text.encode("utf-8"),
                    capture_output=True,
                    timeout=_RUN_TIMEOUT_S,
                    check=False,
                )
            except (OSError, subprocess.TimeoutExpired) as exc:
                raise TtsError(f"{ESPEAK} failed to run: {exc}") from exc
            if proc.returncode != 0 or not out.is_file():
                detail = proc.stderr.decode("utf-8", "replace").strip()[:200]
                raise TtsError(f"{ESPEAK} -v {voice} exited with {proc.returncode}: {detail}")
            with self._lock:
                self.runs += 1
            try:
                return read_wav(out)
            except WavError as exc:
                raise TtsError(f"{ESPEAK} wrote an unreadable WAV: {exc}") from exc

    def _remember(self, key: tuple[str, str], samples: np.ndarray) -> None:
        with self._lock:
            if key in self._lru:
                return
            self._lru[key] = samples
            self._bytes += samples.nbytes
            while self._bytes > self.max_bytes and len(self._lru) > 1:
                _, old = self._lru.popitem(last=False)
                self._bytes -= old.nbytes

    def clear(self) -> None:
        """Forget the in-memory cache (the disk cache stays)."""
        with self._lock:
            self._lru.clear()
            self._bytes = 0


def _digest(voice: str, text: str) -> str:
    return hashlib.sha256(f"{ESPEAK}\0{voice}\0{RATE}\0{text}".encode()).hexdigest()[:32]


def _frozen(samples: np.ndarray) -> np.ndarray:
    # Cached arrays are shared between callers: make writes fail loudly instead of corrupting the cache.
    samples.setflags(write=False)
    return samples


def _store(path: Path, samples: np.ndarray) -> None:
    # Written to a temporary name and renamed, so a reader never sees half a file.
    tmp: str | None = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".tmp")
        os.close(fd)
        write_wav(tmp, samples)
        os.replace(tmp, path)
    except OSError:
        # The disk cache is an optimisation: the samples are still returned.
        if tmp is not None:
            Path(tmp).unlink(missing_ok=True)


_default = Synthesizer()


def synthesize(text: str, locale: str = "en-US", cache_dir: Path | None = None) -> np.ndarray:
    """``text`` spoken in ``locale`` as read-only 8 kHz mono int16 samples, cached in memory and, with
    ``cache_dir``, on disk. Raises :class:`TtsUnavailable` without espeak-ng, :class:`TtsError` when it fails."""
    return _default.synthesize(text, locale, cache_dir)
