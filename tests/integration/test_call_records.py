"""Call records after a run: calls that end differently (a caller hanging up in a conference, a call to a
number no application has, a callout to a user who is not registered, a callout whose callee hangs up),
listed by `tonebridge records` (JSON and CSV, from the store file, as a separate process) and by `GET
/tonebridge/v1/calls` for the application that signs the request, each with its conferences and its
callback attempts. Real SIPp and `tonebridge phone` peers, and the real backend that verifies callbacks."""

from __future__ import annotations

import asyncio
import base64
import csv
import io
import json
import subprocess
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from harness import HOST, phone, tonebridge_command
from sinch_app import KEY, NUMBER, OTHER_KEY, OTHER_SECRET, SECRET, app_config, conference_callout, signed
from sipp import run_uac

pytestmark = pytest.mark.integration

ROOM = "records-room"
UNKNOWN_NUMBER = "+15559999999"


def until(server, predicate: Callable[[], bool], timeout: float = 20.0) -> None:  # type: ignore[no-untyped-def]
    """Wait on the server's own loop, one media tick at a time, until `predicate()` holds."""

    async def wait() -> None:
        await asyncio.wait_for(server.server.clock.until(predicate), timeout)

    server.run(wait(), timeout + 5)


def records(config: Path, *args: str) -> str:
    completed = subprocess.run(
        [*tonebridge_command(), "records", "--config", str(config), *args],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert completed.returncode == 0, completed.stderr
    return completed.stdout


def get(server, query: str = "", headers: dict[str, str] | None = None) -> tuple[int, Any]:  # type: ignore[no-untyped-def]
    request = urllib.request.Request(
        f"http://{HOST}:{server.server.http_port}/tonebridge/v1/calls{query}", headers=headers or {}
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as reply:
            return reply.status, json.loads(reply.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def basic(key: str, secret: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{key}:{secret}".encode()).decode()}


def endpoint(call: dict[str, Any]) -> str:
    return call["to"]["endpoint"]


def test_records_list_every_call_with_its_result_reason_conference_and_callbacks(  # type: ignore[no-untyped-def]
    in_process_server, backend, tmp_path: Path
) -> None:
    backend.answers["ice"] = lambda event: {"action": {"name": "connectConf", "conferenceId": ROOM}}
    server = in_process_server(app_config(backend))
    config = tmp_path / "inproc-0.toml"  # the fixture's config file for its first server
    target = f"{HOST}:{server.server.stack.port}"
    store = server.server.store

    # 1. A caller dials the application's number, is put in the room by the ICE answer, and hangs up.
    stats = run_uac(tmp_path, target, service=NUMBER, calls=1, timeout=30, extra=["-d", "500"])
    assert stats.successful == 1, stats.output[-2000:]
    # 2. A caller dials a number no application has: refused.
    stats = run_uac(tmp_path, target, service=UNKNOWN_NUMBER, calls=1, timeout=30)
    assert stats.failed == 1, stats.output[-2000:]
    # 3. A callout to a user who is not registered fails at once.
    nobody = conference_callout(server, {"type": "username", "endpoint": "nobody"}, ROOM, enableDice=True)
    # 4. A callout answered into the room; then the callee hangs up.
    callee = phone("answer", "--calls", "1", stdin=True)
    port = int(callee.wait_for(r"event=listening sip=127.0.0.1:(\d+)").group(1))
    answered = conference_callout(
        server, {"type": "sip", "endpoint": f"sip:callee@{HOST}:{port}"}, ROOM, enableDice=True
    )
    until(server, lambda: answered in server.server.conferences.members)
    callee.send("hangup")
    callee.wait_for(r"event=ended")

    # Every call ended and committed, with the DiCEs of the three application calls attempted.
    def settled() -> bool:
        history = store.call_history()
        dices = sum(1 for h in history for a in h.callbacks if a.event == "dice" and a.status == 200)
        return len(history) == 4 and all(h.record["status"] == "FINAL" for h in history) and dices == 3

    until(server, settled)

    listed = json.loads(records(config, "--format", "json"))
    assert len(listed) == 4
    by_id = {call["callId"]: call for call in listed}
    inbound = next(c for c in listed if c["direction"] == "inbound" and endpoint(c) == NUMBER)
    refused = next(c for c in listed if c["direction"] == "inbound" and UNKNOWN_NUMBER in endpoint(c))
    outcomes = {
        "inbound": (inbound["result"], inbound["reason"], inbound["applicationKey"]),
        "refused": (refused["result"], refused["reason"], refused["applicationKey"]),
        "nobody": (by_id[nobody]["result"], by_id[nobody]["reason"], by_id[nobody]["applicationKey"]),
        "answered": (by_id[answered]["result"], by_id[answered]["reason"], by_id[answered]["applicationKey"]),
    }
    # Newest first, in the order the calls were placed.
    assert [c["callId"] for c in listed] == [answered, nobody, refused["callId"], inbound["callId"]]
    assert outcomes == {
        "inbound": ("ANSWERED", "CALLERHANGUP", KEY),
        "refused": ("FAILED", "GENERALERROR", None),
        "nobody": ("FAILED", "USERNOTFOUND", KEY),
        "answered": ("ANSWERED", "CALLEEHANGUP", KEY),
    }
    # The rooms each call was in; the callout that never got through was only bound for it.
    assert [s["conferenceId"] for s in inbound["conferences"]] == [ROOM]
    assert [s["conferenceId"] for s in by_id[answered]["conferences"]] == [ROOM]
    assert all(s["leftAt"] is not None for c in (inbound, by_id[answered]) for s in c["conferences"])
    assert by_id[nobody]["conferences"] == [] and by_id[nobody]["conferenceId"] == ROOM
    assert refused["conferences"] == [] and refused["callbacks"] == []
    # Every callback attempt: the inbound call's ICE (synchronous) and DiCE, the callouts' DiCEs.
    assert [(a["event"], a["status"], a["stored"]) for a in inbound["callbacks"]] == [
        ("ice", 200, False),
        ("dice", 200, True),
    ]
    for call_id in (nobody, answered):
        assert [(a["event"], a["status"], a["url"]) for a in by_id[call_id]["callbacks"]] == [
            ("dice", 200, backend.url)
        ]
    for call in listed:
        assert call["startedAt"] and call["endedAt"] and call["status"] == "FINAL"
    assert inbound["answeredAt"] and inbound["duration"] >= 0 and refused["answeredAt"] is None

    rows = list(csv.DictReader(io.StringIO(records(config, "--format", "csv"))))
    assert {row["callId"]: (row["result"], row["reason"]) for row in rows} == {
        c["callId"]: (c["result"], c["reason"]) for c in listed
    }
    assert {row["callId"]: row["conferences"] for row in rows}[answered] == ROOM
    assert records(config, "--format", "json", "--since", "2100-01-01T00:00:00Z").strip() == "[]"

    # Over HTTP: the signing application sees its own three calls, newest first, with their attempts.
    status, mine = signed(server, "GET", "/tonebridge/v1/calls")
    assert status == 200, mine
    assert {c["callId"] for c in mine} == {inbound["callId"], nobody, answered}
    assert [c["startedAt"] for c in mine] == sorted((c["startedAt"] for c in mine), reverse=True)
    assert {c["callId"]: c["callbacks"] for c in mine} == {
        c["callId"]: c["callbacks"] for c in listed if c["applicationKey"] == KEY
    }
    assert signed(server, "GET", "/tonebridge/v1/calls", key=OTHER_KEY, secret=OTHER_SECRET) == (200, [])
    status, in_room = get(server, f"?conferenceId={ROOM}&from=0", basic(KEY, SECRET))
    assert status == 200 and {c["callId"] for c in in_room} == {inbound["callId"], nobody, answered}
    assert get(server, "?from=2100-01-01", basic(KEY, SECRET)) == (200, [])

    status, error = get(server)
    assert status == 401 and error["errorCode"] == 40100 and error["message"]
    status, error = get(server, "?from=yesterday", basic(KEY, SECRET))
    assert status == 400 and error["errorCode"] == 40001 and error["message"].startswith("from:")
