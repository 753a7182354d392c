"""The event stream over real HTTP: a client that reconnects with Last-Event-ID gets exactly what it missed,
filters by conference and call, and an application reads only its own events."""

from __future__ import annotations

import json
import time
import urllib.request
from collections.abc import Callable
from typing import Any

import pytest
from harness import HOST, phone
from sinch_app import KEY, OTHER_KEY, OTHER_SECRET, SECRET, app_config, conference_callout, signed
from sse import EventStream, signed_headers

pytestmark = pytest.mark.integration


def metrics(server) -> dict[str, Any]:  # type: ignore[no-untyped-def]
    with urllib.request.urlopen(
        f"http://{HOST}:{server.http_port}/tonebridge/v1/metrics", timeout=10
    ) as reply:
        return json.loads(reply.read())


def until(condition: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.05)  # polling a condition, with a deadline: not a wait standing in for an event


def seq(event_id: str) -> int:
    return int(event_id.rpartition("-")[2])


def of_type(kind: str, **fields: Any) -> Any:
    return lambda e: e["type"] == kind and all(e.get(name) == value for name, value in fields.items())


def test_reconnecting_with_last_event_id_gets_exactly_what_was_missed(start_server) -> None:  # type: ignore[no-untyped-def]
    server = start_server()  # demo mode: everyone in the conference `demo`, detect mode, maxDigits 2
    steady = EventStream(server.http_port)
    leaver = EventStream(server.http_port)
    callers = []
    try:
        first = phone("dial", f"sip:demo@{server.sip_uri_host}", stdin=True)
        callers.append(first)
        first.wait_for(r"event=answered")
        first_call = steady.wait(of_type("joined"))["callId"]
        first.send("dtmf 12")
        leaver.wait(of_type("pie_answered", callId=first_call))
        leaver.close()
        # Gone for the server too (no buffer kept the rest for it): only the steady client is subscribed.
        until(lambda: metrics(server)["conferences"]["eventSubscribers"] == 1)
        assert steady.retry == leaver.retry == 3000
        seen = leaver.snapshot()
        last_seen = leaver.last_event_id
        assert last_seen is not None and all(e["id"] == i for e, i in zip(seen, leaver.ids, strict=True))

        # Missed: two more presses, a second caller joining and leaving, the first leaving, the room ending.
        first.send("dtmf 34")
        steady.wait(lambda e: e["type"] == "collection" and e["digits"] == "34")
        second = phone("dial", f"sip:demo@{server.sip_uri_host}", stdin=True)
        callers.append(second)
        second.wait_for(r"event=answered")
        second_call = steady.wait(lambda e: e["type"] == "joined" and e["callId"] != first_call)["callId"]
        second.send("hangup")
        steady.wait(of_type("left", callId=second_call))
        first.send("hangup")
        steady.wait(of_type("conference_ended"))

        back = EventStream(server.http_port, headers={"Last-Event-ID": last_seen})
        back.wait(of_type("conference_ended"))
        missed = [e for e in steady.snapshot() if seq(e["id"]) > seq(last_seen)]
        assert back.snapshot() == missed  # ids, order and contents: nothing lost, repeated or invented
        assert back.ids == [e["id"] for e in missed] and seq(back.ids[0]) == seq(last_seen) + 1
        kinds = [e["type"] for e in missed]
        assert {"press", "collection", "joined", "left", "conference_ended"} <= set(kinds)
        assert "gap" not in kinds
        # What came before the disconnection is what the steady client had up to the same id.
        assert seen == [e for e in steady.snapshot() if seq(e["id"]) <= seq(last_seen)]

        # The query parameter serves clients that cannot set headers; a filter applies to the replay too.
        by_call = EventStream(server.http_port, params={"lastEventId": last_seen, "callId": second_call})
        by_call.wait(of_type("left", callId=second_call))
        assert by_call.snapshot() == [e for e in missed if e.get("callId") == second_call]
        by_call.close()
        back.close()

        # An id of another run (here, a made-up epoch) is answered with a notice, then all that is held.
        epoch = last_seen.partition("-")[0]
        restarted = EventStream(server.http_port, params={"lastEventId": f"{int(epoch) - 1}-5"})
        restarted.wait(of_type("conference_ended"))
        gap, *rest = restarted.snapshot()
        assert gap["type"] == "gap" and gap["reason"] == "unknown" and gap["id"] == f"{epoch}-0"
        assert rest == steady.snapshot()
        restarted.close()
    finally:
        steady.close()
        for caller in callers:
            caller.stop()


def test_an_application_reads_only_its_own_events_filtered_by_conference(in_process_server, backend) -> None:  # type: ignore[no-untyped-def]
    server = in_process_server(app_config(backend))
    port = server.server.http_port

    unsigned = EventStream(port)
    assert unsigned.status == 401 and unsigned.body["errorCode"] == 40100 and unsigned.body["reference"]
    forged = EventStream(port, headers=signed_headers(OTHER_KEY, SECRET))
    assert forged.status == 401 and forged.body["errorCode"] == 40102

    mine = EventStream(port, headers=signed_headers(KEY, SECRET))
    theirs = EventStream(port, headers=signed_headers(OTHER_KEY, OTHER_SECRET))
    red_only = EventStream(port, params={"conferenceId": "red"}, headers=signed_headers(KEY, SECRET))
    answerers = []
    try:
        calls = {}
        for room, key, secret in (
            ("red", KEY, SECRET),
            ("blue", KEY, SECRET),
            ("green", OTHER_KEY, OTHER_SECRET),
        ):
            answerer = phone("answer", "--calls", "1", stdin=True)
            answerers.append(answerer)
            sip_port = int(answerer.wait_for(r"event=listening sip=127.0.0.1:(\d+)").group(1))
            destination = {"type": "sip", "endpoint": f"sip:{room}@127.0.0.1:{sip_port}"}
            calls[room] = conference_callout(
                server,
                destination,
                room,
                key=key,
                secret=secret,
                conferenceDtmfOptions={"mode": "detect", "maxDigits": 1},
            )
            # The key goes once the call is in its room: a press before the join is no room's event.
            stream = mine if key == KEY else theirs
            stream.wait(of_type("joined", callId=calls[room]))
            answerer.send("dtmf 5")
        for room in ("red", "blue"):
            mine.wait(of_type("collection", callId=calls[room], digits="5"))
        theirs.wait(of_type("collection", callId=calls["green"], digits="5"))
        red_only.wait(of_type("collection", callId=calls["red"]))
        for room, key, secret in (
            ("red", KEY, SECRET),
            ("blue", KEY, SECRET),
            ("green", OTHER_KEY, OTHER_SECRET),
        ):
            status, _ = signed(server, "DELETE", f"/calling/v1/conferences/id/{room}", key=key, secret=secret)
            assert status == 200
        for room in ("red", "blue"):
            mine.wait(of_type("conference_ended", conferenceId=room))
        theirs.wait(of_type("conference_ended", conferenceId="green"))
        red_only.wait(of_type("conference_ended", conferenceId="red"))

        # Each application's stream holds all of its rooms' events and none of the other's.
        assert {e.get("conferenceId") for e in mine.snapshot()} == {"red", "blue"}
        assert {e.get("conferenceId") for e in theirs.snapshot()} == {"green"}
        kinds = {e["type"] for e in theirs.snapshot()}
        assert {"conference_started", "joined", "press", "collection", "left", "conference_ended"} <= kinds
        assert all(e.get("callId") in (None, calls["green"]) for e in theirs.snapshot())
        assert not any(key.startswith("_") or key == "owner" for e in mine.snapshot() for key in e)
        assert red_only.snapshot() == [e for e in mine.snapshot() if e["conferenceId"] == "red"]

        # A replay is scoped as the live stream is: the other application's events are not in it.
        first_id = theirs.ids[0]
        again = EventStream(
            port, params={"lastEventId": first_id}, headers=signed_headers(OTHER_KEY, OTHER_SECRET)
        )
        again.wait(of_type("conference_ended", conferenceId="green"))
        assert again.snapshot() == theirs.snapshot()[1:]
        again.close()
        for answerer in answerers:
            answerer.wait_for(r"event=ended")
    finally:
        for stream in (mine, theirs, red_only):
            stream.close()
        for answerer in answerers:
            answerer.stop()
