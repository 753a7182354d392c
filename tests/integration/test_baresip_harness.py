"""Self-test of the baresip harness: two baresip 1.0.0 instances call each other on loopback, no Tonebridge."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from audio import active_segment, dominant_frequency, level_dbm0, read_wav, tone_wav
from baresip import Baresip, direct_account, registering_account

pytestmark = pytest.mark.integration

Factory = Callable[..., Baresip]


def test_audio_helpers_measure_what_they_write(tmp_path: Path) -> None:
    path = tone_wav(tmp_path / "t.wav", 1234.5, 0.5, level_dbm0=-20.0, pad_silence_s=0.25)
    samples, rate = read_wav(path)
    assert rate == 8000 and samples.dtype == np.int16 and samples.size == 6000
    tone = active_segment(samples)
    assert tone.size == pytest.approx(4000, abs=80)
    assert dominant_frequency(tone) == pytest.approx(1234.5, abs=1.0)
    assert level_dbm0(tone) == pytest.approx(-20.0, abs=0.05)
    full_scale = (32767 * np.sin(2 * np.pi * 1000 * np.arange(8000) / 8000)).astype(np.int16)
    assert level_dbm0(full_scale) == pytest.approx(3.14, abs=0.01)
    assert level_dbm0(np.zeros(100, dtype=np.int16)) == float("-inf")
    assert active_segment(np.zeros(800, dtype=np.int16)).size == 0


def test_two_instances_call_send_digits_and_record(tmp_path: Path, baresip_peer: Factory) -> None:
    # aufile hangs up when its file ends: the silence after each tone outlasts the call.
    a_wav = tone_wav(tmp_path / "a.wav", 600, 8.0, level_dbm0=-10.0, pad_silence_s=30.0)
    b_wav = tone_wav(tmp_path / "b.wav", 1000, 8.0, level_dbm0=-10.0, pad_silence_s=30.0)
    b = baresip_peer("b", lambda port: [direct_account("b", port, auto_answer=True)], audio_source_wav=b_wav)
    a = baresip_peer("a", lambda port: [direct_account("a", port, auto_answer=False)], audio_source_wav=a_wav)

    a.dial(f"sip:b@127.0.0.1:{b.sip_port}")
    a.wait_event("CALL_ESTABLISHED", timeout=10, direction="outgoing")
    incoming = b.wait_event("CALL_ESTABLISHED", timeout=10, direction="incoming")
    assert incoming["peeruri"].startswith("sip:a@127.0.0.1")

    for digit in "1#":
        a.press(digit)
        b.wait_event("CALL_DTMF_START", timeout=5, param=digit)
        b.wait_event("CALL_DTMF_END", timeout=5)

    a.wait_received_audio(2.0, timeout=10)
    a.hangup()
    a.wait_event("CALL_CLOSED", timeout=10)
    b.wait_event("CALL_CLOSED", timeout=10)

    for peer, heard_hz, sent_hz in ((a, 1000, 600), (b, 600, 1000)):
        received, sent = peer.received_wav(), peer.sent_wav()
        assert received is not None and sent is not None
        heard, rate = read_wav(received)
        assert rate == 8000
        heard = active_segment(heard)
        assert heard.size >= 1.5 * rate, f"{received.name}: only {heard.size / rate:.2f}s of audio"
        assert dominant_frequency(heard) == pytest.approx(heard_hz, abs=5)
        # G.711 keeps the level to a fraction of a dB; edges and the digits' gaps cost a little more.
        assert level_dbm0(heard) == pytest.approx(-10.0, abs=1.0)
        own, _ = read_wav(sent)
        assert dominant_frequency(active_segment(own)) == pytest.approx(sent_hz, abs=5)

    assert a.stop() == 0 and b.stop() == 0


def test_register_failure_is_reported(baresip_peer: Factory) -> None:
    # baresip is no registrar: it refuses REGISTER, which the harness must surface as REGISTER_FAIL.
    b = baresip_peer("b", lambda port: [direct_account("b", port)])
    a = baresip_peer("a", lambda port: [registering_account("alice", b.sip_port, "secret")])
    a.wait_event("REGISTERING", timeout=5, accountaor=f"sip:alice@127.0.0.1:{b.sip_port}")
    event = a.wait_event("REGISTER_FAIL", timeout=10, accountaor=f"sip:alice@127.0.0.1:{b.sip_port}")
    assert event["param"].startswith("501")
