"""baresip as the far end: the server calls it (directly and as a registered `[[users]]` account) and audio
flows both ways; a wrong password gets no registration."""

from __future__ import annotations

import asyncio
from pathlib import Path

import numpy as np
import pytest
from audio import active_segment, dominant_frequency, level_dbm0, read_wav, tone_wav
from baresip import direct_account, registering_account

from tonebridge.calls.session import Destination
from tonebridge.media.tones import sine
from tonebridge.media.wav import WavPlayer

pytestmark = pytest.mark.integration

USERS = '[[users]]\nname = "alice"\npassword = "wonderland"\n'


def call_and_hear(server, destination: Destination, seconds: float = 2.0):  # type: ignore[no-untyped-def]
    """Originate with a 1 kHz tone at -10 dBm0, record until `seconds` of audio came back, hang up."""
    engine = server.engine
    engine.record_calls = True

    async def run():  # type: ignore[no-untyped-def]
        session = await engine.originate(destination, cli="+15550000000")
        session.leg.source = WavPlayer(sine(1000.0, 1000, -10.0), loop=True)
        assert await session.wait_answered(10), session.call
        while len(session.leg.recording) < int(seconds * 50) + 25:
            await asyncio.sleep(0.02)
        await engine.hangup(session)
        return session

    return server.run(run(), timeout=30)


def check_baresip_heard_1khz(peer) -> None:  # type: ignore[no-untyped-def]
    peer.wait_event("CALL_CLOSED", timeout=10)
    heard, rate = read_wav(peer.received_wav(timeout=10))
    tone = active_segment(heard)
    assert rate == 8000 and tone.size > 8000
    middle = tone[len(tone) // 4 : -len(tone) // 4]
    assert abs(dominant_frequency(middle) - 1000.0) < 5.0
    assert abs(level_dbm0(middle) - (-10.0)) <= 1.0


def check_server_heard(session, freq: float) -> None:  # type: ignore[no-untyped-def]
    leg = session.leg
    assert leg.stats.packets_sent >= 100 and leg.stats.packets_received >= 90
    heard = np.concatenate(leg.recording[25:])
    assert abs(dominant_frequency(heard) - freq) < 5.0
    assert abs(level_dbm0(heard) - (-10.0)) <= 1.0


def test_server_calls_baresip_audio_both_ways(in_process_server, baresip_peer, tmp_path: Path) -> None:
    wav = tone_wav(tmp_path / "b.wav", 700, 10.0, level_dbm0=-10.0, pad_silence_s=30.0)
    peer = baresip_peer(
        "bob", lambda port: [direct_account("bob", port, auto_answer=True)], audio_source_wav=wav
    )
    server = in_process_server()
    session = call_and_hear(server, Destination("sip", f"sip:bob@127.0.0.1:{peer.sip_port}"))
    check_server_heard(session, 700.0)
    check_baresip_heard_1khz(peer)
    assert session.call.reason.value == "MANAGERHANGUP"
    assert server.engine.ports.in_use == 0


def test_registered_user_is_reached_by_username(in_process_server, baresip_peer, tmp_path: Path) -> None:
    server = in_process_server(USERS)
    sip_port = server.server.stack.port
    wav = tone_wav(tmp_path / "alice.wav", 700, 10.0, level_dbm0=-10.0, pad_silence_s=30.0)
    peer = baresip_peer(
        "alice", lambda port: [registering_account("alice", sip_port, "wonderland")], audio_source_wav=wav
    )
    peer.wait_event("REGISTER_OK", timeout=10)
    binding = server.engine.registrar.lookup("alice", server.engine.now())
    assert binding is not None and f":{peer.sip_port}" in binding.contact
    session = call_and_hear(server, Destination("username", "alice"))
    check_server_heard(session, 700.0)
    check_baresip_heard_1khz(peer)


def test_wrong_password_is_refused_and_not_registered(in_process_server, baresip_peer) -> None:
    server = in_process_server(USERS)
    sip_port = server.server.stack.port
    peer = baresip_peer("mallory", lambda port: [registering_account("alice", sip_port, "guess")])
    failure = peer.wait_event("REGISTER_FAIL", timeout=10)
    assert any(code in str(failure.get("param", "")) for code in ("401", "403")), failure
    assert server.engine.registrar.lookup("alice", server.engine.now()) is None
    session = server.run(server.engine.originate(Destination("username", "alice")))
    assert session.call.reason.value == "USERNOTFOUND"
