"""SVAML prompts rendered to 8 kHz samples: speech through text to speech, `#href[URL]` as a WAV fetched
over http(s).

A prompt that cannot be rendered (no TTS, a fetch that fails, a file id with no file store behind it) is
skipped and logged: a missing prompt never ends a call. Rendering blocks (espeak-ng, HTTP), so callers run
it in a worker thread.
"""

from __future__ import annotations

import io
import logging
import time
from collections.abc import Iterable
from pathlib import Path

import httpx
import numpy as np

from tonebridge.media import tts
from tonebridge.media.wav import WavError, read_wav
from tonebridge.netguard import FetchPolicy, FetchRefused, PinnedTransport
from tonebridge.svaml.models import Prompt

__all__ = ["HREF_TIMEOUT", "MAX_HREF_BYTES", "fetch_wav", "render", "set_fetch_policy", "speech"]

log = logging.getLogger("tonebridge.prompts")

MAX_HREF_BYTES = 10 * 1024 * 1024
HREF_TIMEOUT = 5.0  # per phase: connect, each read
HREF_TOTAL_TIMEOUT = 20.0  # the whole fetch, so a server dripping bytes cannot hold a worker thread

# Where `#href` may fetch from: set from `[security]` when the Sinch application starts
# (calls/sinch.py); refuses non-public addresses until then.
_policy = FetchPolicy()


def set_fetch_policy(policy: FetchPolicy) -> None:
    global _policy
    _policy = policy


def speech(text: str) -> Prompt:
    """Text to say, as the prompt `#tts[text]` would be."""
    return Prompt("tts", text)


def fetch_wav(
    url: str, *, transport: httpx.BaseTransport | None = None, policy: FetchPolicy | None = None
) -> np.ndarray | None:
    """A `#href[URL]` prompt: a WAV fetched over http(s), as 8 kHz samples; None (logged) when it fails.
    Only public addresses unless `policy` (by default the one `set_fetch_policy` set) allows more; every
    hop of a redirect is checked and the connection pinned to the checked address (netguard.py). At most
    MAX_HREF_BYTES are read, within HREF_TIMEOUT per phase and HREF_TOTAL_TIMEOUT in all. `transport` stands in for the network in tests."""
    if not url.startswith(("http://", "https://")):
        # Anything else (file:, ftp:...) would let an application read what the server can reach.
        log.warning("event=href_refused url=%r reason=scheme", url[:200])
        return None
    policy = policy if policy is not None else _policy
    try:
        policy.check(url)
    except (FetchRefused, ValueError, httpx.InvalidURL) as exc:
        log.warning("event=href_refused url=%r reason=%r", url[:200], str(exc))
        return None
    try:
        with (
            httpx.Client(
                timeout=HREF_TIMEOUT,
                trust_env=False,
                follow_redirects=True,
                max_redirects=5,
                transport=PinnedTransport(policy, transport),
            ) as client,
            client.stream("GET", url) as response,
        ):
            if response.status_code != 200:
                log.warning("event=href_failed url=%r status=%s", url[:200], response.status_code)
                return None
            content = bytearray()
            deadline = time.monotonic() + HREF_TOTAL_TIMEOUT
            for chunk in response.iter_bytes():
                content += chunk
                if len(content) > MAX_HREF_BYTES:
                    log.warning("event=href_failed url=%r reason=too_large", url[:200])
                    return None
                if time.monotonic() > deadline:
                    log.warning("event=href_failed url=%r reason=too_slow", url[:200])
                    return None
        return read_wav(io.BytesIO(bytes(content)))
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
