"""Prompt rendering (tonebridge.media.prompts) without a network or espeak-ng: `#href` fetched through a
stand-in transport, TTS replaced, and every prompt that cannot be rendered skipped."""

from __future__ import annotations

import ipaddress
import logging
from pathlib import Path

import httpx
import numpy as np
import pytest

from tonebridge.media import prompts, tts
from tonebridge.media.wav import write_wav
from tonebridge.netguard import FetchPolicy
from tonebridge.svaml.models import Prompt, parse_prompts

PUBLIC = "93.184.216.34"


def fake_dns(names: dict[str, str]):  # type: ignore[no-untyped-def]
    def resolve(host: str, port: int) -> list[str]:
        return [names.get(host, PUBLIC)]

    return resolve


@pytest.fixture(autouse=True)
def public_dns() -> None:
    """Every name resolves to a public address unless a test says otherwise."""
    prompts.set_fetch_policy(FetchPolicy(resolver=fake_dns({})))
    yield
    prompts.set_fetch_policy(FetchPolicy())


def wav_bytes(tmp_path: Path, samples: np.ndarray) -> bytes:
    path = tmp_path / "prompt.wav"
    write_wav(path, samples)
    return path.read_bytes()


def answering(status: int, content: bytes) -> httpx.MockTransport:
    return httpx.MockTransport(lambda request: httpx.Response(status, content=content))


def refusing_network() -> httpx.MockTransport:
    def handler(request: httpx.Request) -> httpx.Response:
        raise AssertionError(f"no request was to be made, got {request.url}")

    return httpx.MockTransport(handler)


@pytest.mark.parametrize("url", ["file:///etc/passwd", "ftp://example.com/a.wav", "/tmp/a.wav", "HTTP//x"])
def test_href_refuses_anything_but_http(url: str, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, "tonebridge.prompts"):
        assert prompts.fetch_wav(url, transport=refusing_network()) is None
    assert "event=href_refused" in caplog.text and "reason=scheme" in caplog.text


def test_href_fetches_a_wav(tmp_path: Path) -> None:
    samples = (np.arange(800, dtype=np.int16) * 7) % 4000
    fetched = prompts.fetch_wav(
        "https://app.example/hello.wav", transport=answering(200, wav_bytes(tmp_path, samples))
    )
    assert fetched is not None and np.array_equal(fetched, samples)


@pytest.mark.parametrize(("status", "content"), [(404, b"not here"), (200, b"RIFF but no WAV"), (500, b"")])
def test_href_failures_are_none_and_logged(
    status: int, content: bytes, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, "tonebridge.prompts"):
        assert prompts.fetch_wav("http://app.example/x.wav", transport=answering(status, content)) is None
    assert "event=href_failed" in caplog.text


def test_href_over_the_size_limit_is_refused(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    content = wav_bytes(tmp_path, np.zeros(8000, dtype=np.int16))
    monkeypatch.setattr(prompts, "MAX_HREF_BYTES", len(content) - 1)
    assert prompts.fetch_wav("http://app.example/x.wav", transport=answering(200, content)) is None


def test_href_transport_errors_are_none() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("refused", request=request)

    assert prompts.fetch_wav("http://127.0.0.1:9/x.wav", transport=httpx.MockTransport(handler)) is None


def test_render_joins_speech_and_href_in_order(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    spoken: list[tuple[str, str, Path | None]] = []

    def synthesize(text: str, locale: str = "en-US", cache_dir: Path | None = None) -> np.ndarray:
        spoken.append((text, locale, cache_dir))
        return np.full(3, len(spoken), dtype=np.int16)

    monkeypatch.setattr(tts, "synthesize", synthesize)
    href = wav_bytes(tmp_path, np.full(2, 9, dtype=np.int16))
    audio = prompts.render(
        parse_prompts("#tts[one];#href[http://app.example/a.wav];#ssml[<s>two</s>]"),
        "sv-SE",
        cache_dir=tmp_path,
        transport=answering(200, href),
    )
    assert audio.tolist() == [1, 1, 1, 9, 9, 2, 2, 2]
    assert spoken == [("one", "sv-SE", tmp_path), ("two", "sv-SE", tmp_path)]


def test_render_skips_what_cannot_be_rendered(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    def synthesize(text: str, locale: str = "en-US", cache_dir: Path | None = None) -> np.ndarray:
        if text == "broken":
            raise tts.TtsUnavailable("espeak-ng is not installed")
        return np.ones(4, dtype=np.int16)

    monkeypatch.setattr(tts, "synthesize", synthesize)
    with caplog.at_level(logging.INFO, "tonebridge.prompts"):
        audio = prompts.render(
            [
                Prompt("tts", "broken"),
                Prompt("file", "welcome"),
                Prompt("href", "file:///x"),
                prompts.speech("fine"),
            ],
            "en-US",
            transport=refusing_network(),
        )
    assert audio.tolist() == [1, 1, 1, 1]
    assert "event=tts_unavailable" in caplog.text and "event=prompt_not_played kind=file" in caplog.text
    assert "event=href_refused" in caplog.text


def test_nothing_renderable_is_empty_audio(monkeypatch: pytest.MonkeyPatch) -> None:
    def synthesize(text: str, locale: str = "en-US", cache_dir: Path | None = None) -> np.ndarray:
        raise tts.TtsError("failed")

    monkeypatch.setattr(tts, "synthesize", synthesize)
    audio = prompts.render([prompts.speech("hello")], "en-US")
    assert audio.size == 0 and audio.dtype == np.int16
    assert prompts.render([], "en-US").size == 0


def test_speech_is_a_tts_prompt() -> None:
    assert prompts.speech("Welcome") == Prompt("tts", "Welcome")


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:8000/a.wav",
        "http://169.254.169.254/latest/meta-data",
        "http://10.1.2.3/a.wav",
        "http://[::1]/a.wav",
        "http://[::ffff:192.168.1.1]/a.wav",
        "http://internal.example/a.wav",
    ],
)
def test_href_to_a_non_public_address_is_refused(url: str, caplog: pytest.LogCaptureFixture) -> None:
    prompts.set_fetch_policy(FetchPolicy(resolver=fake_dns({"internal.example": "127.0.0.1"})))
    with caplog.at_level(logging.WARNING, logger="tonebridge.prompts"):
        assert prompts.fetch_wav(url, transport=refusing_network()) is None
    assert "event=href_refused" in caplog.text


def test_href_allowed_network_is_fetched_pinned(tmp_path: Path) -> None:
    seen: list[httpx.Request] = []
    body = wav_bytes(tmp_path, np.zeros(80, dtype=np.int16))

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, content=body)

    policy = FetchPolicy(
        allow=(ipaddress.ip_network("10.0.0.0/8"),),
        resolver=fake_dns({"media.lan": "10.9.9.9"}),
    )
    assert (
        prompts.fetch_wav("https://media.lan/a.wav", transport=httpx.MockTransport(handler), policy=policy)
        is not None
    )
    # Connected to the checked address, with the name kept for Host and TLS.
    assert seen[0].url.host == "10.9.9.9"
    assert seen[0].headers["host"] == "media.lan"
    assert seen[0].extensions["sni_hostname"] == "media.lan"


def test_href_redirect_to_a_private_address_is_refused(caplog: pytest.LogCaptureFixture) -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        assert request.url.host == PUBLIC, "the redirect target must not be fetched"
        return httpx.Response(302, headers={"location": "http://10.0.0.5/secret.wav"})

    with caplog.at_level(logging.WARNING, logger="tonebridge.prompts"):
        assert prompts.fetch_wav("http://app.example/a.wav", transport=httpx.MockTransport(handler)) is None
    assert "refused" in caplog.text


def test_href_slower_than_the_total_timeout_is_abandoned(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setattr(prompts, "HREF_TOTAL_TIMEOUT", -1.0)
    content = wav_bytes(tmp_path, np.zeros(800, dtype=np.int16))
    assert prompts.fetch_wav("http://app.example/x.wav", transport=answering(200, content)) is None
