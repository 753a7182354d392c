"""Real SIP calls on loopback: SIPp and `tonebridge phone` call the server; the server calls SIPp.

Each test starts its own server with ports chosen free at run time.
"""

from __future__ import annotations

import json
import socket
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from audio import dominant_frequency, level_dbm0
from harness import HOST, free_port, phone
from sipp import run_uac, start_uas, uas_stats

pytestmark = pytest.mark.integration


def metrics(server) -> dict:  # type: ignore[no-untyped-def]
    with urllib.request.urlopen(
        f"http://{HOST}:{server.http_port}/tonebridge/v1/metrics", timeout=5
    ) as reply:
        return json.loads(reply.read())


def test_options_answered_with_allow(start_server, tmp_path: Path) -> None:
    server = start_server()
    stats = run_uac(tmp_path, server.sip_uri_host, scenario="uac_options.xml", calls=1, timeout=10)
    assert stats.exit_code == 0, stats.output[-2000:]
    assert (stats.successful, stats.failed) == (1, 0)


def test_sipp_uac_100_calls_at_10_per_second(start_server, tmp_path: Path) -> None:
    server = start_server()
    stats = run_uac(tmp_path, server.sip_uri_host, builtin="uac", calls=100, rate=10, timeout=60)
    assert stats.exit_code == 0, stats.output[-3000:]
    assert (stats.successful, stats.failed, stats.unexpected) == (100, 0, 0)
    # Every call ended cleanly on the server side, with no leg left behind.
    server.process.wait_for_count(r"event=call_ended .*reason=CALLERHANGUP", 100, timeout=10)
    current = metrics(server)
    assert current["calls"]["active"] == 0
    assert current["media"]["portsInUse"] == 0


@pytest.mark.parametrize("transport", ["u1", "t1"])
def test_sipp_custom_sdp_pcma_and_telephone_event(start_server, tmp_path: Path, transport: str) -> None:
    server = start_server()
    stats = run_uac(
        tmp_path,
        server.sip_uri_host,
        scenario="uac_pcma_te.xml",
        calls=5,
        rate=5,
        transport=transport,
        timeout=30,
    )
    assert stats.exit_code == 0, stats.output[-3000:]
    assert (stats.successful, stats.failed, stats.unexpected) == (5, 0, 0)


def test_offer_without_common_codec_gets_488(start_server, tmp_path: Path) -> None:
    server = start_server()
    stats = run_uac(tmp_path, server.sip_uri_host, scenario="uac_no_common_codec.xml", calls=1, timeout=10)
    assert stats.exit_code == 0, stats.output[-3000:]
    assert (stats.successful, stats.failed) == (1, 0)
    assert metrics(server)["media"]["portsInUse"] == 0


def test_outbound_call_to_sipp_uas_audio_both_ways(in_process_server, tmp_path: Path) -> None:
    uas, uas_port, stat_file = start_uas(tmp_path, builtin="uas", echo=True, calls=1)
    server = in_process_server(f'[[trunks]]\nname = "sipp"\nuri = "sip:{HOST}:{uas_port}"\n')
    engine = server.engine
    engine.record_calls = True
    from tonebridge.calls.session import Destination
    from tonebridge.media.tones import sine
    from tonebridge.media.wav import WavPlayer

    async def call():  # type: ignore[no-untyped-def]
        session = await engine.originate(Destination("number", "+15550001111"), cli="+15550000000")
        session.leg.source = WavPlayer(sine(1000.0, 1000, -10.0), loop=True)
        assert await session.wait_answered(10), session.call
        return session

    session = server.run(call())
    leg = session.leg

    async def heard_enough() -> None:
        import asyncio

        # Wait on the recording itself: 2 s of what came back, beyond the jitter buffer's start-up.
        while len(leg.recording) < 100:
            await asyncio.sleep(0.02)

    server.run(heard_enough(), timeout=10)
    server.run(engine.hangup(session))
    assert leg.stats.packets_sent >= 100
    assert leg.stats.packets_received >= 90
    heard = np.concatenate(leg.recording[20:100])
    assert abs(dominant_frequency(heard) - 1000.0) < 5.0
    assert abs(level_dbm0(heard) - (-10.0)) <= 1.0
    stats = uas_stats(uas, stat_file)
    assert (stats.successful, stats.failed) == (1, 0), stats.output[-2000:]
    assert session.call.reason.value == "MANAGERHANGUP"
    assert engine.ports.in_use == 0


def test_cancel_of_ringing_outbound_call(in_process_server, tmp_path: Path) -> None:
    uas, uas_port, stat_file = start_uas(tmp_path, scenario="uas_ring_until_cancel.xml", echo=False, calls=1)
    server = in_process_server(f'[[trunks]]\nname = "sipp"\nuri = "sip:{HOST}:{uas_port}"\n')
    engine = server.engine
    from tonebridge.calls.call import CallState
    from tonebridge.calls.session import Destination

    async def call_and_cancel():  # type: ignore[no-untyped-def]
        import asyncio

        session = await engine.originate(Destination("number", "+15550002222"))
        while session.call.state is not CallState.RINGING:
            await asyncio.sleep(0.01)
        await asyncio.wait_for(engine.cancel(session), 10)
        return session

    session = server.run(call_and_cancel())
    assert session.call.state is CallState.ENDED
    assert session.call.reason.value == "CANCEL"
    assert session.call.result.value == "NOANSWER"
    stats = uas_stats(uas, stat_file)
    assert (stats.successful, stats.failed, stats.unexpected) == (1, 0, 0), stats.output[-2000:]
    assert engine.ports.in_use == 0


@pytest.mark.parametrize("method", ["rfc4733", "info", "inband"])
def test_phone_digits_reach_server_in_order(start_server, method: str) -> None:
    server = start_server()
    extra = ["--no-telephone-event"] if method == "inband" else []
    caller = phone(
        "dial",
        f"sip:demo@{server.sip_uri_host}",
        "--dtmf",
        "159#*0D",
        "--dtmf-mode",
        method,
        "--dtmf-delay",
        "0.3",
        *extra,
    )
    caller.wait_for(r"event=dtmf_sent", timeout=30)
    server.process.wait_for(r"event=dtmf .*digit=D", timeout=10)
    digits = "".join(m.group(1) for m in server.process.matches(r"event=dtmf .*digit=(\S+) source=" + method))
    assert digits == "159#*0D"
    assert not server.process.matches(r"event=dtmf .*source=(?!" + method + ")")
    caller.stop()


def test_hold_and_resume_by_reinvite(start_server) -> None:
    server = start_server()
    tasks_before = metrics(server)["tasks"]
    caller = phone("dial", f"sip:demo@{server.sip_uri_host}", stdin=True)
    caller.wait_for(r"event=answered")
    for direction, expected in (("sendonly", "recvonly"), ("inactive", "inactive")):
        caller.send(f"hold {direction}")
        caller.wait_for(r"event=hold .*status=200", start=len(caller.lines) - 1)
        server.process.wait_for(rf"event=call_media_updated .*direction={expected} on_hold=True")
        caller.send("resume")
        caller.wait_for(r"event=resume .*status=200", start=len(caller.lines) - 1)
        server.process.wait_for(
            r"event=call_media_updated .*direction=sendrecv on_hold=False",
            start=len(server.process.lines) - 5,
        )
    caller.send("hangup")
    caller.wait_for(r"event=ended .*reason=CALLERHANGUP")
    assert caller.wait_exit() == 0
    server.process.wait_for(r"event=call_ended .*reason=CALLERHANGUP")
    current = metrics(server)
    assert current["calls"]["active"] == 0 and current["media"]["portsInUse"] == 0
    assert current["media"]["legs"] == 0
    assert current["tasks"] <= tasks_before, "tasks of the ended call linger"


def test_malformed_request_gets_400_naming_the_fault_and_garbage_is_counted(start_server) -> None:
    server = start_server()
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind((HOST, free_port(both=False)))
        sock.settimeout(5)
        port = sock.getsockname()[1]
        bad = (
            f"OPTIONS sip:x@{HOST} SIP/2.0\r\nVia: SIP/2.0/UDP {HOST}:{port};branch=z9hG4bKbad1\r\n"
            f"From: <sip:a@{HOST}>;tag=1\r\nTo: <sip:x@{HOST}>\r\nCall-ID: bad1\r\nCSeq: nine OPTIONS\r\n"
            "Max-Forwards: 70\r\nContent-Length: 0\r\n\r\n"
        ).encode()
        sock.sendto(bad, (HOST, server.sip_port))
        reply, _ = sock.recvfrom(65535)
        status_line = reply.split(b"\r\n", 1)[0].decode()
        assert status_line.startswith("SIP/2.0 400 ") and "CSeq" in status_line
        sock.sendto(b"\x00\x01garbage that is not SIP at all", (HOST, server.sip_port))
        sock.sendto(b"X" * 65000, (HOST, server.sip_port))
    # The server still answers afterwards, and counted what it dropped.
    stats = run_uac(
        Path(server.config_path.parent), server.sip_uri_host, scenario="uac_options.xml", calls=1, timeout=10
    )
    assert stats.successful == 1
    assert metrics(server)["sip"].get("dropped_garbage", 0) >= 2


def test_sipp_pcap_media_30ms_pcma_and_rfc2833_with_ssrc_change(start_server, tmp_path: Path) -> None:
    """SIPp's `uac_pcap`: 7 s of PCMA in 30 ms packets, then digit 1 as RFC 2833 from another SSRC."""
    (tmp_path / "pcap").symlink_to("/usr/share/sip-tester")
    server = start_server()
    stats = run_uac(tmp_path, server.sip_uri_host, builtin="uac_pcap", calls=1, timeout=40)
    assert stats.exit_code == 0, stats.output[-3000:]
    assert (stats.successful, stats.failed) == (1, 0)
    server.process.wait_for(r"event=dtmf .*digit=1 source=rfc4733", timeout=5)
    assert len(server.process.matches(r"event=dtmf ")) == 1
    ended = server.process.wait_for(r"event=call_ended .*rtp_in=(\d+)", timeout=5)
    assert int(ended.group(1)) >= 200  # 7 s at 30 ms is 233 audio packets, plus the digit's


def test_tcp_stream_that_never_ends_its_headers_is_cut_off(start_server) -> None:
    server = start_server()
    with socket.create_connection((HOST, server.sip_port), timeout=10) as conn:
        conn.sendall(b"OPTIONS sip:x@127.0.0.1 SIP/2.0\r\n")
        sent = 0
        closed = False
        try:
            while sent < 1_000_000:
                conn.sendall(b"X-Filler: " + b"a" * 1000 + b"\r\n")
                sent += 1012
        except (BrokenPipeError, ConnectionResetError):
            closed = True
        if not closed:
            conn.settimeout(10)
            try:
                closed = conn.recv(1) == b""
            except ConnectionResetError:
                closed = True
    # The kernel's socket buffers take more than the server reads; the server itself stopped at its limit.
    assert closed, f"connection still open after {sent} bytes of headers"
    assert metrics(server)["sip"]["tcp_framing_errors"] == 1


def test_outbound_digest_auth_to_trunk_and_record_route(in_process_server, tmp_path: Path) -> None:
    """The trunk challenges (401) and checks our digest answer; its 200 comes through a record-routing
    proxy, so our BYE must carry the Route header."""
    uas, uas_port, stat_file = start_uas(tmp_path, scenario="uas_auth_record_route.xml", echo=False, calls=1)
    server = in_process_server(
        f'[[trunks]]\nname = "carrier"\nuri = "sip:{HOST}:{uas_port}"\n'
        'username = "trunkuser"\npassword = "trunkpass"\n'
    )
    engine = server.engine
    from tonebridge.calls.session import Destination

    async def call():  # type: ignore[no-untyped-def]
        session = await engine.originate(Destination("number", "+15550003333"))
        assert await session.wait_answered(10), session.call
        await engine.hangup(session)
        return session

    session = server.run(call())
    assert session.dialog.route_set, "the Record-Route of the 200 made no route set"
    stats = uas_stats(uas, stat_file)
    assert (stats.successful, stats.failed, stats.unexpected) == (1, 0, 0), stats.output[-3000:]
