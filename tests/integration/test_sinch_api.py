"""The Sinch Voice API with the official `sinch` SDK 1.1.4 as the client and a real backend receiving and
verifying every callback; calls go to SIPp behind the trunk and to `tonebridge phone`."""

from __future__ import annotations

import base64
import json
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from harness import HOST, free_port, phone
from sinch_app import (
    KEY,
    NUMBER,
    OTHER_KEY,
    OTHER_SECRET,
    SECRET,
    app_config,
    conference_callout,
    sdk,
    signed,
)
from sipp import start_uas

pytestmark = pytest.mark.integration


def test_conference_callout_detect_pie_and_participant_control(
    in_process_server, backend, tmp_path: Path
) -> None:
    (tmp_path / "pcap").symlink_to("/usr/share/sip-tester")
    uas, uas_port, _ = start_uas(tmp_path, scenario="uas_answer_press_42.xml", echo=False, calls=1)
    server = in_process_server(app_config(backend, uas_port))
    client = sdk(server)
    from sinch.domains.voice.models import ConferenceDTMFOptions, Destination  # noqa: F401 (typing of the SDK)

    response = client.voice.callouts.conference(
        destination={"type": "number", "endpoint": "+15559990000"},
        conference_id="myconf#1",
        cli="+15550000000",
        conference_dtmf_options={"mode": "detect", "max_digits": 2, "timeout_mills": 2500},
        enable_dice=True,
        custom="ticket-7",
    )
    call_id = response.call_id
    backend.wait(lambda: len(backend.events("pie", call_id)) == 1)
    pie = backend.events("pie", call_id)[0]
    assert pie["menuResult"] == {
        "menuId": "myconf#1",
        "type": "sequence",
        "value": "42",
        "inputMethod": "dtmf",
    }
    assert pie["conferenceId"] == "myconf#1" and pie["custom"] == "ticket-7" and pie["applicationKey"] == KEY
    # The SDK does not percent-encode ids; this one has none of the characters that would break it.
    client.voice.callouts.conference(
        destination={"type": "sip", "endpoint": f"sip:nobody@{HOST}:{free_port()}"}, conference_id="room2"
    )
    status, info = signed(server, "GET", "/calling/v1/conferences/id/myconf%231")
    assert status == 200 and [p["id"] for p in info["participants"]] == [call_id]
    assert set(info["participants"][0]) == {"cli", "id", "duration", "muted", "onhold"}
    for command in ("mute", "onhold", "resume", "unmute"):
        status, _ = signed(
            server, "PATCH", f"/calling/v1/conferences/id/myconf%231/{call_id}", {"command": command}
        )
        assert status == 200
    status, info = signed(server, "GET", "/calling/v1/conferences/id/myconf%231")
    assert info["participants"][0]["muted"] is False and info["participants"][0]["onhold"] is False
    status, _ = signed(server, "DELETE", f"/calling/v1/conferences/id/myconf%231/{call_id}")
    assert status == 200
    backend.wait(lambda: len(backend.events("dice", call_id)) == 1)
    dice = backend.events("dice", call_id)[0]
    assert dice["result"] == "ANSWERED" and dice["reason"] == "MANAGERHANGUP"
    assert backend.bad_signatures == 0
    status, info = signed(server, "GET", f"/calling/v1/calls/id/{call_id}")
    assert status == 200 and info["status"] == "FINAL" and info["callId"] == call_id
    uas.wait_exit(10)


def test_sdk_conference_get_manage_kick_and_kick_all(in_process_server, backend, tmp_path: Path) -> None:
    server = in_process_server(app_config(backend))
    client = sdk(server)
    answerers, call_ids = [], []
    for name in ("bob", "eve"):
        answerer = phone("answer", "--calls", "1")
        port = int(answerer.wait_for(r"event=listening sip=127.0.0.1:(\d+)").group(1))
        call_id = client.voice.callouts.conference(
            destination={"type": "sip", "endpoint": f"sip:{name}@127.0.0.1:{port}"},
            conference_id="room1",
            enable_dice=True,
        ).call_id
        answerer.wait_for(r"event=answered")
        server.run(_wait_joined(server, call_id))
        answerers.append(answerer)
        call_ids.append(call_id)
    bob, eve = call_ids
    assert sorted(p.id for p in client.voice.conferences.get("room1").participants) == sorted(call_ids)
    client.voice.conferences.manage_participant(conference_id="room1", call_id=bob, command="mute")
    client.voice.conferences.manage_participant(
        conference_id="room1", call_id=eve, command="onhold", moh="music2"
    )
    state = {p.id: p for p in client.voice.conferences.get("room1").participants}
    assert state[bob].muted is True and state[eve].onhold is True
    client.voice.conferences.manage_participant(conference_id="room1", call_id=eve, command="resume")
    assert {p.id: p for p in client.voice.conferences.get("room1").participants}[eve].onhold is False
    client.voice.conferences.kick_participant(conference_id="room1", call_id=bob)
    backend.wait(lambda: len(backend.events("dice", bob)) == 1)
    assert [p.id for p in client.voice.conferences.get("room1").participants] == [eve]
    client.voice.conferences.kick_all("room1")
    backend.wait(lambda: len(backend.events("dice", eve)) == 1)
    assert backend.events("dice", eve)[0]["reason"] == "MANAGERHANGUP"
    for answerer in answerers:
        answerer.wait_for(r"event=ended")


async def _wait_joined(server, call_id: str) -> None:  # type: ignore[no-untyped-def]
    import asyncio

    while call_id not in server.server.conferences.members:
        await asyncio.sleep(0.02)


def test_inbound_ice_connect_conf_forward(in_process_server, backend) -> None:
    backend.answers["ice"] = lambda event: {
        "action": {"name": "ConnectConf", "conferenceId": "fwd", "conferenceDtmfOptions": {"mode": "forward"}}
    }
    server = in_process_server(app_config(backend))
    port = server.server.stack.port
    listener = phone("dial", f"sip:{NUMBER}@127.0.0.1:{port}", stdin=True)
    listener.wait_for(r"event=answered")
    sender = phone("dial", f"sip:{NUMBER}@127.0.0.1:{port}", "--dtmf", "159", "--dtmf-delay", "0.8")
    sender.wait_for(r"event=dtmf_sent")
    listener.wait_for_count(r"^event=dtmf ", 3)
    assert "".join(m.group(1) for m in listener.matches(r"^event=dtmf .*digit=(\S)")) == "159"
    ice = backend.events("ice")
    assert len(ice) == 2 and ice[0]["to"] == {"type": "did", "endpoint": NUMBER}


def test_unknown_number_gets_404_and_bad_requests_get_sinch_errors(in_process_server, backend) -> None:
    server = in_process_server(app_config(backend))
    status, body = signed(
        server,
        "POST",
        "/calling/v1/callouts",
        {"method": "conferenceCallout", "conferenceCallout": {"conferenceId": "x"}},
    )
    assert status == 400 and body["errorCode"] == 40002 and "destination" in body["message"]
    status, body = signed(
        server,
        "POST",
        "/calling/v1/callouts",
        {
            "method": "conferenceCallout",
            "conferenceCallout": {
                "destination": {"type": "number", "endpoint": "+1"},
                "conferenceId": "x",
                "conferenceDtmfOptions": {"mode": "shout"},
            },
        },
    )
    assert status == 400 and "mode" in body["message"]
    status, body = signed(server, "POST", "/calling/v1/callouts", {"method": "videoCallout"})
    assert status == 400 and body["errorCode"] == 40001 and "method" in body["message"]
    status, body = signed(
        server,
        "POST",
        "/calling/v1/callouts",
        {
            "method": "conferenceCallout",
            "conferenceCallout": {
                "destination": {"type": "number", "endpoint": "+1"},
                "conferenceId": "x",
                "conferenceDtmfOptions": {"mode": "detect", "maxDigits": 1000},
            },
        },
    )
    assert status == 400 and "maxDigits" in body["message"]
    request = urllib.request.Request(
        f"http://{HOST}:{server.server.http_port}/calling/v1/callouts",
        data=b"{not json",
        method="POST",
        headers={
            "Authorization": "Basic " + base64.b64encode(f"{KEY}:{SECRET}".encode()).decode(),
            "Content-Type": "application/json",
        },
    )
    with pytest.raises(urllib.error.HTTPError) as caught:
        urllib.request.urlopen(request, timeout=10)
    assert caught.value.code == 400 and "JSON" in json.loads(caught.value.read())["message"]
    unsigned = urllib.request.Request(f"http://{HOST}:{server.server.http_port}/calling/v1/calls/id/nope")
    with pytest.raises(urllib.error.HTTPError) as caught:
        urllib.request.urlopen(unsigned, timeout=10)
    assert caught.value.code == 401 and json.loads(caught.value.read())["errorCode"] == 40100
    status, body = signed(server, "GET", "/calling/v1/calls/id/nope")
    assert status == 404 and body["errorCode"] == 40400
    status, body = signed(server, "GET", "/calling/v1/calls/id/nope", signature="AAAA")
    assert status == 401 and body["errorCode"] == 40102
    status, body = signed(server, "GET", "/calling/v1/calls/id/nope", timestamp="2014-06-04T13:41:58Z")
    assert status == 401 and body["errorCode"] == 40101
    status, body = signed(server, "GET", "/calling/v1/calls/id/nope", key="unknown")
    assert status == 401
    assert server.engine.sessions == {}  # none of the refused requests placed a call
    call_id = signed(
        server,
        "POST",
        "/calling/v1/callouts",
        {
            "method": "conferenceCallout",
            "conferenceCallout": {
                "destination": {"type": "number", "endpoint": "+15550000001"},
                "conferenceId": "nowhere",
                "enableDice": True,
            },
        },
    )[1]["callId"]
    backend.wait(lambda: len(backend.events("dice", call_id)) == 1)
    assert backend.events("dice", call_id)[0]["result"] == "FAILED"
    # Another application's call is not there for it.
    status, _ = signed(server, "GET", f"/calling/v1/calls/id/{call_id}", key=OTHER_KEY, secret=OTHER_SECRET)
    assert status == 404


MENU = {
    "action": {
        "name": "runMenu",
        "barge": True,
        "mainMenu": "main",
        "menus": [
            {
                "id": "main",
                "mainPrompt": "#tts[Press one for sales or two for support]",
                "repeats": 0,
                "timeoutMills": 1500,
                "options": [
                    {"dtmf": "1", "action": "return(sales)"},
                    {"dtmf": "2", "action": "return(support)"},
                ],
            }
        ],
    }
}


def test_run_menu_choice_and_timeout_arrive_in_pies(in_process_server, backend) -> None:
    backend.answers["ice"] = lambda event: MENU
    backend.answers["pie"] = lambda event: {"action": {"name": "hangup"}}
    server = in_process_server(app_config(backend))
    port = server.server.stack.port
    chooser = phone("dial", f"sip:{NUMBER}@127.0.0.1:{port}", "--dtmf", "2", "--dtmf-delay", "1.0")
    chooser.wait_for(r"event=ended", timeout=20)
    silent = phone("dial", f"sip:{NUMBER}@127.0.0.1:{port}")
    silent.wait_for(r"event=ended", timeout=30)
    results = [e["menuResult"] for e in backend.events("pie")]
    assert results[0] == {"menuId": "main", "type": "return", "value": "support", "inputMethod": "dtmf"}
    assert results[1]["menuId"] == "main" and results[1]["type"] == "timeout"
    assert backend.bad_signatures == 0


def test_sdk_update_hangs_up_and_call_info_before_and_after(in_process_server, backend) -> None:
    server = in_process_server(app_config(backend))
    client = sdk(server)
    answerer = phone("answer", "--calls", "1")
    port = int(answerer.wait_for(r"event=listening sip=127.0.0.1:(\d+)").group(1))
    call_id = client.voice.callouts.conference(
        destination={"type": "sip", "endpoint": f"sip:carol@127.0.0.1:{port}"},
        conference_id="upd",
        enable_dice=True,
        custom="c-1",
    ).call_id
    answerer.wait_for(r"event=answered")
    server.run(_wait_joined(server, call_id))
    status, live = signed(server, "GET", f"/calling/v1/calls/id/{call_id}")
    assert status == 200 and live["status"] == "ONGOING" and live["custom"] == "c-1"
    assert live["to"] == {"type": "sip", "endpoint": f"sip:carol@127.0.0.1:{port}"}
    client.voice.calls.update(call_id=call_id, instructions=[], action={"name": "hangup"})
    answerer.wait_for(r"event=ended")
    backend.wait(lambda: len(backend.events("dice", call_id)) == 1)
    status, final = signed(server, "GET", f"/calling/v1/calls/id/{call_id}")
    assert status == 200 and final["status"] == "FINAL" and final["reason"] == "MANAGERHANGUP"
    assert set(final) >= {
        "from",
        "to",
        "domain",
        "callId",
        "duration",
        "status",
        "result",
        "reason",
        "timestamp",
        "custom",
        "userRate",
        "debit",
    }
    status, body = signed(server, "PATCH", f"/calling/v1/calls/id/{call_id}", {"action": {"name": "hangup"}})
    assert status == 404


def test_callout_max_duration_ends_the_call_with_timeout_after_the_answer(in_process_server, backend) -> None:  # type: ignore[no-untyped-def]
    server = in_process_server(app_config(backend))
    answerer = phone("answer", "--calls", "1")
    port = int(answerer.wait_for(r"event=listening sip=127.0.0.1:(\d+)").group(1))
    call_id = conference_callout(
        server,
        {"type": "sip", "endpoint": f"sip:dave@127.0.0.1:{port}"},
        "limited",
        maxDuration=1,
        enableDice=True,
    )
    answerer.wait_for(r"event=answered")
    answerer.wait_for(r"event=ended", timeout=10)
    backend.wait(lambda: len(backend.events("dice", call_id)) == 1)
    dice = backend.events("dice", call_id)[0]
    assert (dice["reason"], dice["result"], dice["duration"]) == ("TIMEOUT", "ANSWERED", 1)


def test_no_request_produces_a_server_error(in_process_server, backend, tmp_path: Path) -> None:
    """schemathesis, a CI-sized run over the OpenAPI document, authenticated with Basic credentials."""
    import shutil
    import subprocess
    import sys

    server = in_process_server(app_config(backend))
    base = f"http://{HOST}:{server.server.http_port}"
    basic = base64.b64encode(f"{KEY}:{SECRET}".encode()).decode()
    cli = shutil.which("schemathesis", path=str(Path(sys.executable).parent)) or "schemathesis"
    completed = subprocess.run(
        [
            cli,
            "run",
            f"{base}/tonebridge/v1/openapi.json",
            "--url",
            base,
            "--checks",
            "not_a_server_error",
            "--max-examples",
            "25",
            "--header",
            f"Authorization: Basic {basic}",
            "--exclude-path-regex",
            "^/tonebridge/v1/events",
            "--seed",
            "1",
        ],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=tmp_path,
    )
    assert completed.returncode == 0, completed.stdout[-5000:] + completed.stderr[-2000:]


def test_connect_sip_bridges_two_phones_and_either_hangup_ends_both(
    in_process_server, backend, tmp_path
) -> None:  # type: ignore[no-untyped-def]
    import numpy as np
    from audio import dominant_frequency, read_wav

    callee = phone("answer", "--calls", "1", "--tone", "700", "--level", "-15")
    callee_port = int(callee.wait_for(r"event=listening sip=127.0.0.1:(\d+)").group(1))
    backend.answers["ice"] = lambda event: {
        "action": {"name": "connectSip", "destination": {"endpoint": f"sip:bob@127.0.0.1:{callee_port}"}}
    }
    server = in_process_server(app_config(backend))
    wav = tmp_path / "caller.wav"
    caller = phone(
        "dial",
        f"sip:{NUMBER}@127.0.0.1:{server.server.stack.port}",
        "--tone",
        "500",
        "--level",
        "-15",
        "--record",
        str(wav),
        stdin=True,
    )
    caller.wait_for(r"event=answered")
    callee.wait_for(r"event=answered")
    caller.wait_for(r"event=heard .*seconds=4", timeout=20)
    caller.send("hangup")
    callee.wait_for(r"event=ended .*reason=CALLERHANGUP", timeout=10)  # the bridge, its caller, hung up
    caller.wait_for(r"event=recorded")
    samples, _ = read_wav(wav)
    assert abs(dominant_frequency(samples[-16000:-4000].astype(np.int16)) - 700.0) < 5.0
    backend.wait(lambda: len(backend.events("dice")) == 1)


def test_park_plays_href_prompt_until_a_patch_unparks_into_a_conference(
    in_process_server, backend, tmp_path
) -> None:  # type: ignore[no-untyped-def]
    import io
    import wave

    import numpy as np

    tone = (3000 * np.sin(2 * np.pi * 600 * np.arange(8000) / 8000)).astype(np.int16)
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(8000)
        out.writeframes(tone.tobytes())
    backend.files["/hold.wav"] = buffer.getvalue()
    backend.answers["ice"] = lambda event: {
        "action": {
            "name": "park",
            "introPrompt": "#tts[Please hold]",
            "holdPrompt": f"#href[{backend.url[:-10]}/hold.wav]",
            "maxDuration": 60,
        }
    }
    server = in_process_server(app_config(backend))
    wav = tmp_path / "parked.wav"
    caller = phone(
        "dial", f"sip:{NUMBER}@127.0.0.1:{server.server.stack.port}", "--record", str(wav), stdin=True
    )
    caller.wait_for(r"event=answered")
    backend.wait(lambda: len(backend.events("ice")) == 1)
    call_id = backend.events("ice")[0]["callid"]
    caller.wait_for(r"event=heard .*seconds=4", timeout=20)
    status, _ = signed(
        server,
        "PATCH",
        f"/calling/v1/calls/id/{call_id}",
        {"action": {"name": "connectConf", "conferenceId": "after-park"}},
    )
    assert status == 200
    server.run(_wait_joined(server, call_id))
    status, info = signed(server, "GET", "/calling/v1/conferences/id/after-park")
    assert [p["id"] for p in info["participants"]] == [call_id]
    caller.send("hangup")
    caller.wait_for(r"event=recorded")
    from audio import dominant_frequency, read_wav

    heard, _ = read_wav(wav)
    # After "Please hold", the fetched 600 Hz prompt loops (seconds 2 to 4 of the call).
    assert abs(dominant_frequency(heard[2 * 8000 : 4 * 8000]) - 600.0) < 5.0


def test_ace_answer_decides_what_an_answered_callout_does(in_process_server, backend) -> None:
    backend.answers["ace"] = lambda event: {"action": {"name": "connectConf", "conferenceId": "from-ace"}}
    server = in_process_server(app_config(backend))
    answerer = phone("answer", "--calls", "1")
    port = int(answerer.wait_for(r"event=listening sip=127.0.0.1:(\d+)").group(1))
    status, body = signed(
        server,
        "POST",
        "/calling/v1/callouts",
        {
            "method": "customCallout",
            "customCallout": {
                "destination": {"type": "sip", "endpoint": f"sip:dan@127.0.0.1:{port}"},
                "ace": backend.url,
            },
        },
    )
    assert status == 200
    call_id = body["callId"]
    server.run(_wait_joined(server, call_id))
    assert backend.events("ace", call_id)[0]["applicationKey"] == KEY
    status, info = signed(server, "GET", "/calling/v1/conferences/id/from-ace")
    assert [p["id"] for p in info["participants"]] == [call_id]
    status, _ = signed(server, "DELETE", "/calling/v1/conferences/id/from-ace")
    answerer.wait_for(r"event=ended")
