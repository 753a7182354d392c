"""SVAML prompts rendered to 8 kHz samples: speech through text to speech, `#href[URL]` as a WAV fetched
over http(s).

A prompt that cannot be rendered (no TTS, a fetch that fails, a file id with no file store behind it) is
skipped and logged: a missing prompt never ends a call. Rendering blocks (espeak-ng, HTTP), so callers run
it in a worker thread.
"""

from __future__ import annotations

import io
import logging
from collections.abc import Iterable
from pathlib import Path

import httpx
import numpy as np

from tonebridge.media import tts
from tonebridge.media.wav import WavError, read_wav
from tonebridge.svaml.models import Prompt

__all__ = ["HREF_TIMEOUT", "MAX_HREF_BYTES", "fetch_wav", "render", "speech"]

log = logging.getLogger("tonebridge.prompts")

MAX_HREF_BYTES = 10 * 1024 * 1024
HREF_TIMEOUT = 5.0


def speech(text: str) -> Prompt:
    """Text to say, as the prompt `#tts[text]` would be."""
    return Prompt("tts", text)


def fetch_wav(url: str, *, transport: httpx.BaseTransport | None = None) -> np.ndarray | None:
    """A `#href[URL]` prompt: a WAV fetched over http(s), as 8 kHz samples; None (logged) when it fails.
    `transport` stands in for the network in tests."""
    if not url.startswith(("http://", "https://")):
        # Anything else (file:, ftp:...) would let an application read what the server can reach.
        log.warning("event=href_refused url=%r reason=scheme", url[:200])
        return None
    try:
        with httpx.Client(
            timeout=HREF_TIMEOUT, trust_env=False, follow_redirects=True, transport=transport
        ) as client:
            response = client.get(url)
        if response.status_code != 200 or len(response.content) > MAX_HREF_BYTES:
            log.warning("event=href_failed url=%r status=%s", url[:200], response.status_code)
            return None
        return read_wav(io.BytesIO(response.content))
    except (httpx.HTTPError, WavError, OSError, EOFError) as exc:
        log.warning("event=href_failed url=%r reason=%r", url[:200], str(exc))
        return None


def render(
    prompts: Iterable[Prompt],
    locale: str,
    *,
    cache_dir: Path | None = None,
    transport: httpx.BaseTransport | None = None,
) -> np.ndarray:
    """Every prompt that can be rendered, one after the other; empty when none can."""
    parts: list[np.ndarray] = []
    for prompt in prompts:
        if prompt.kind == "href":
            fetched = fetch_wav(prompt.value, transport=transport)
            if fetched is not None:
                parts.append(fetched)
            continue
        if not prompt.is_speech:
            log.info("event=prompt_not_played kind=%s reason=no_file_store", prompt.kind)
            continue
        try:
            parts.append(tts.synthesize(prompt.value, locale, cache_dir=cache_dir))
        except tts.TtsError as exc:
            log.warning("event=tts_unavailable reason=%r", str(exc))
    return np.concatenate(parts) if parts else np.zeros(0, dtype=np.int16)
