"""Callbacks are never lost: the backend is down for 30 s while PIEs and DiCEs pile up, and the server is
SIGKILLed and restarted in the middle; once the backend is back every one arrives once, in order per call."""

from __future__ import annotations

import json
import signal
import time
import urllib.request

import pytest
from backend import Backend
from harness import HOST, Process, free_port, free_port_range, phone, tonebridge_command, write_config
from sinch_app import KEY, NUMBER, SECRET, app_config

pytestmark = pytest.mark.integration

DOWNTIME = 30.0


def pending(http_port: int) -> int:
    with urllib.request.urlopen(f"http://{HOST}:{http_port}/tonebridge/v1/metrics", timeout=5) as reply:
        return json.loads(reply.read())["outbox"]["pending"]


def wait_pending(http_port: int, count: int, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while (seen := pending(http_port)) != count:
        assert time.monotonic() < deadline, f"outbox holds {seen} callbacks, expected {count}"
        time.sleep(0.1)  # polling an HTTP metric: each look is the event


def test_backend_down_30s_and_server_sigkilled_loses_nothing(tmp_path) -> None:  # type: ignore[no-untyped-def]
    backend = Backend(KEY, SECRET, free_port())
    backend.answers["ice"] = lambda event: {
        "action": {
            "name": "connectConf",
            "conferenceId": "vote",
            "conferenceDtmfOptions": {"mode": "detect", "maxDigits": 1},
        }
    }
    config = tmp_path / "durable.toml"

    def start() -> tuple[Process, int, int]:
        sip, http = free_port(), free_port()
        write_config(config, sip, http, free_port_range(), app_config(backend))
        server = Process([*tonebridge_command(), "serve", "--config", str(config)], name="tonebridge")
        server.wait_for(r"event=listening", timeout=20)
        return server, sip, http

    server, sip, http = start()
    try:
        voter = phone("dial", f"sip:{NUMBER}@{HOST}:{sip}", stdin=True)
        voter.wait_for(r"event=answered")
        backend.wait(lambda: len(backend.events("ice")) == 1)
        call_id = backend.events("ice")[0]["callid"]
        server.wait_for(r"event=conference_joined")
        backend.stop()
        down_since = time.monotonic()
        voter.send("dtmf 123")
        voter.wait_for(r"event=dtmf_sent")
        server.wait_for_count(r"event=collection_done", 3)
        voter.send("hangup")
        voter.wait_for(r"event=ended")
        wait_pending(http, 4)  # three PIEs and the DiCE
        server.stop(signal.SIGKILL)
        server, sip, http = start()
        wait_pending(http, 4)
        # The scenario: the backend stays down for 30 s in all (retries keep failing meanwhile).
        time.sleep(max(0.0, DOWNTIME - (time.monotonic() - down_since)))
        backend.start()
        backend.wait(lambda: len(backend.events("dice", call_id)) == 1, timeout=90)
        wait_pending(http, 0)
        events = [e for e in backend.received if e.get("callid") == call_id]
        assert [e["event"] for e in events] == ["ice", "pie", "pie", "pie", "dice"]
        assert [e["menuResult"]["value"] for e in events if e["event"] == "pie"] == ["1", "2", "3"]
        keys = [
            h.get("X-Idempotency-Key")
            for h, e in zip(backend.headers, backend.received, strict=True)
            if e.get("callid") == call_id and e["event"] != "ice"
        ]
        assert len(set(keys)) == 4 and None not in keys
        assert backend.bad_signatures == 0
    finally:
        server.stop()
        backend.stop()
