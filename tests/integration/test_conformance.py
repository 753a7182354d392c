"""What a Sinch app finds when it drives conferences through the API: ACE answers that keep the callout's
plan, callbacks in causal order, conference ids that end with their conference, metrics that are true,
keys forwarded for as long as they are held, and a callback log that is pruned. Real phones
(`tonebridge phone`), the `sinch` SDK or signed HTTP, and a real backend that verifies every callback."""

from __future__ import annotations

import asyncio
import json
import threading
import urllib.request
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from audio import read_wav
from harness import HOST, Process, phone
from rooms import Plan
from sinch_app import KEY, OTHER_KEY, OTHER_SECRET, SECRET, app_config, conference_callout, sdk, signed
from test_conference import room, tone_dbm0  # noqa: F401 (the fixture is used by name)

from tonebridge.conference.options import DtmfMode, DtmfOptions

pytestmark = pytest.mark.integration


def until(server, predicate: Callable[[], bool], timeout: float = 15.0) -> None:  # type: ignore[no-untyped-def]
    """Wait on the server's own loop, one media tick at a time, until `predicate()` holds."""

    async def wait() -> None:
        await asyncio.wait_for(server.server.clock.until(predicate), timeout)

    server.run(wait(), timeout + 5)


def answerer(*args: str, stdin: bool = False) -> tuple[Process, int]:
    process = phone("answer", "--calls", "1", *args, stdin=stdin)
    port = int(process.wait_for(r"event=listening sip=127.0.0.1:(\d+)").group(1))
    return process, port


def metrics(server) -> dict:  # type: ignore[no-untyped-def]
    with urllib.request.urlopen(
        f"http://{HOST}:{server.server.http_port}/tonebridge/v1/metrics", timeout=10
    ) as r:
        return json.loads(r.read())


def participants(server, conference_id: str, key: str = KEY, secret: str = SECRET) -> list[str]:  # type: ignore[no-untyped-def]
    status, info = signed(
        server, "GET", f"/calling/v1/conferences/id/{conference_id}", key=key, secret=secret
    )
    return [p["id"] for p in info["participants"]] if status == 200 else []


# 1. An ACE answer that names no other action keeps the callout's plan ----------------------------------

ACE_ANSWERS = {
    "continue": {"action": {"name": "continue"}},
    "empty": {},
    "unusable": {"action": {"name": "dance"}},
    "no-body": None,
}


@pytest.mark.parametrize("kind", list(ACE_ANSWERS))
def test_ace_continue_or_no_usable_answer_joins_the_callout_conference(
    in_process_server, backend, kind
) -> None:  # type: ignore[no-untyped-def]
    backend.answers["ace"] = lambda event: ACE_ANSWERS[kind]
    server = in_process_server(app_config(backend))
    client = sdk(server)
    process, port = answerer("--dtmf", "12", "--dtmf-delay", "1.5")
    call_id = client.voice.callouts.conference(
        destination={"type": "sip", "endpoint": f"sip:ace@127.0.0.1:{port}"},
        conference_id="ace-room",
        conference_dtmf_options={"mode": "detect", "max_digits": 2, "timeout_mills": 3000},
        enable_ace=True,
        enable_dice=True,
    ).call_id
    backend.wait(lambda: len(backend.events("ace", call_id)) == 1)
    until(server, lambda: call_id in server.server.conferences.members)
    assert participants(server, "ace-room") == [call_id]
    backend.wait(lambda: len(backend.events("pie", call_id)) == 1)
    assert backend.events("pie", call_id)[0]["menuResult"]["value"] == "12"
    signed(server, "DELETE", "/calling/v1/conferences/id/ace-room")
    process.wait_for(r"event=ended")


def test_ace_continue_on_a_tts_callout_plays_then_hangs_up(
    in_process_server, backend, tmp_path: Path
) -> None:  # type: ignore[no-untyped-def]
    backend.answers["ace"] = lambda event: {"action": {"name": "continue"}}
    server = in_process_server(app_config(backend))
    wav = tmp_path / "tts.wav"
    process, port = answerer("--record", str(wav))
    status, body = signed(
        server,
        "POST",
        "/calling/v1/callouts",
        {
            "method": "ttsCallout",
            "ttsCallout": {
                "destination": {"type": "sip", "endpoint": f"sip:tts@127.0.0.1:{port}"},
                "text": "Your code is one two",
                "enableAce": True,
                "enableDice": True,
            },
        },
    )
    assert status == 200
    process.wait_for(r"event=ended .*reason=", timeout=30)
    process.wait_for(r"event=recorded")
    samples, _ = read_wav(wav)
    assert np.abs(samples.astype(np.int32)).max() > 1000  # the text was spoken before the hang-up
    backend.wait(lambda: len(backend.events("dice", body["callId"])) == 1)
    assert backend.events("dice", body["callId"])[0]["reason"] == "MANAGERHANGUP"


# 2. The PIE of a collection ended by the hang-up reaches the backend before the DiCE ---------------------


def test_hangup_mid_collection_sends_the_pie_before_the_dice(in_process_server, backend) -> None:  # type: ignore[no-untyped-def]
    server = in_process_server(app_config(backend))
    client = sdk(server)
    process, port = answerer(stdin=True)
    call_id = client.voice.callouts.conference(
        destination={"type": "sip", "endpoint": f"sip:mid@127.0.0.1:{port}"},
        conference_id="mid",
        conference_dtmf_options={"mode": "detect", "max_digits": 3, "timeout_mills": 10000},
        enable_dice=True,
    ).call_id
    until(server, lambda: call_id in server.server.conferences.members)
    process.send("dtmf 34")
    process.wait_for(r"event=dtmf_sent")
    counters = server.server.conferences.events.counters
    until(server, lambda: counters["presses.rfc4733.detect"] == 2)
    process.send("hangup")
    backend.wait(lambda: len(backend.events("dice", call_id)) == 1)
    order = [
        (e["event"], e.get("menuResult", {}).get("value")) for e in backend.received if e["callid"] == call_id
    ]
    assert order == [("pie", "34"), ("dice", None)]


# 3. A conference id belongs to an application only while its conference lasts --------------------------


def test_conference_id_is_free_for_another_application_once_ended(in_process_server, backend) -> None:  # type: ignore[no-untyped-def]
    server = in_process_server(app_config(backend))
    first, port = answerer()
    a_call = conference_callout(server, {"type": "sip", "endpoint": f"sip:a@127.0.0.1:{port}"}, "shared-room")
    until(server, lambda: a_call in server.server.conferences.members)
    assert signed(server, "DELETE", "/calling/v1/conferences/id/shared-room")[0] == 200
    first.wait_for(r"event=ended")
    until(server, lambda: "shared-room" not in server.server.conferences.rooms)

    second, port = answerer()
    b_call = conference_callout(
        server, {"type": "sip", "endpoint": f"sip:b@127.0.0.1:{port}"}, "shared-room", OTHER_KEY, OTHER_SECRET
    )
    until(server, lambda: b_call in server.server.conferences.members)
    assert participants(server, "shared-room", OTHER_KEY, OTHER_SECRET) == [b_call]
    assert participants(server, "shared-room") == []  # and the first application no longer sees it
    signed(server, "DELETE", "/calling/v1/conferences/id/shared-room", key=OTHER_KEY, secret=OTHER_SECRET)
    second.wait_for(r"event=ended")
    until(server, lambda: "shared-room" not in server.server.conferences.rooms)
    assert server.server.sinch.conference_owner == {}  # nothing held for conferences that ended


# 6. Metrics that are true ---------------------------------------------------------------------------------


def test_metrics_count_callbacks_by_outcome_time_pies_to_the_answer_and_count_room_legs(
    in_process_server, backend
) -> None:  # type: ignore[no-untyped-def]
    slow_once = threading.Event()

    def pie(event: dict) -> dict:
        if not slow_once.is_set():
            slow_once.set()
            # The backend itself is slow: the first attempt outlives its 2 s limit and is retried.
            threading.Event().wait(2.5)
        return {}

    backend.answers["pie"] = pie
    server = in_process_server(app_config(backend))
    client = sdk(server)
    process, port = answerer("--dtmf", "7", "--dtmf-delay", "1.0")
    call_id = client.voice.callouts.conference(
        destination={"type": "sip", "endpoint": f"sip:m@127.0.0.1:{port}"},
        conference_id="metrics",
        conference_dtmf_options={"mode": "detect", "max_digits": 1, "timeout_mills": 3000},
    ).call_id
    until(server, lambda: call_id in server.server.conferences.members)
    assert metrics(server)["media"]["legs"] == 1
    until(server, lambda: len(server.server.conferences.pie_answered_ms) == 1, timeout=20)
    document = metrics(server)
    assert document["callbacks"]["pie"] == {"delivered": 1, "failedAttempts": 1, "givenUp": 0}
    # From the end of the collection: the request left at once, the answer came after the retry.
    assert document["conferences"]["pieRequestLatencyMsP50"] < 1000
    assert document["conferences"]["pieLatencyMsP50"] >= 2000
    signed(server, "DELETE", "/calling/v1/conferences/id/metrics")
    process.wait_for(r"event=ended")


# 8. Forwarded and rendered keys last as long as they are held -------------------------------------------


def test_forwarded_key_lasts_as_long_as_it_is_held(room) -> None:  # type: ignore[no-untyped-def]  # noqa: F811
    forward = DtmfOptions(mode=DtmfMode.FORWARD)
    receiver = room("rcv", Plan("held", forward))
    sender = room(
        "snd", Plan("held", forward), "--dtmf", "5", "--dtmf-delay", "0.5", "--dtmf-duration", "1000"
    )
    sender.process.wait_for(r"event=dtmf_sent", timeout=15)
    held = int(receiver.process.wait_for(r"^event=dtmf_ended .*digit=5 .*held_ms=(\d+)", timeout=10).group(1))
    assert 900 <= held <= 1300, receiver.process.output[-2000:]


def test_rendered_tone_lasts_as_long_as_the_key_is_held(room) -> None:  # type: ignore[no-untyped-def]  # noqa: F811
    listener = room("lis", Plan("render"))
    sender = room("snd", Plan("render"), "--dtmf", "5", "--dtmf-delay", "0.5", "--dtmf-duration", "1000")
    sender.process.wait_for(r"event=dtmf_sent", timeout=15)
    start = listener.window_start()
    listener.wait_heard(start + 1)
    samples = listener.hangup()
    # Count the 20 ms frames where the key's Q.23 pair (770 + 1336 Hz) sounds.
    frames = samples[: len(samples) // 160 * 160].reshape(-1, 160)
    toned = sum(1 for f in frames if tone_dbm0(f, 770.0) > -25 and tone_dbm0(f, 1336.0) > -25)
    assert 45 <= toned <= 65, toned  # 1 s held is 50 frames; a fixed-length tone was 6


def test_delivered_callbacks_are_pruned_after_the_retention_period(in_process_server, backend) -> None:  # type: ignore[no-untyped-def]
    server = in_process_server(app_config(backend) + "\n[callbacks]\nretention_seconds = 1\n")
    call_id = conference_callout(
        server, {"type": "number", "endpoint": "+15550000001"}, "nowhere", enableDice=True
    )
    backend.wait(lambda: len(backend.events("dice", call_id)) == 1)
    store, outbox = server.server.store, server.server.outbox
    until(server, lambda: not outbox.pending())
    assert [row.state for row in server.run(_log(store, call_id))] == ["delivered"]
    until(server, lambda: outbox.pruned >= 1, timeout=10)
    assert server.run(_log(store, call_id)) == []
    assert metrics(server)["outbox"]["pruned"] >= 1


async def _log(store, call_id: str) -> list:  # type: ignore[no-untyped-def]
    return store.delivery_log(call_id)  # on the server's loop: the store is the server's connection
