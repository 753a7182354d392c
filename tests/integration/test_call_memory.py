"""An ended call is freed by reference counting alone: its session, call, core, media leg and the
application's record of it leave no reference cycle behind. The media thread's GC policy makes full
collections rare (media/clock.py), so a cycle per call would hold every ended call in memory for a long
while: the soak bench saw that as memory growing by megabytes a minute (docs/benchmarks.md, "Soak").

The collector is switched off while each call ends, so a cycle shows as an object still alive."""

from __future__ import annotations

import gc
import weakref
from collections.abc import Iterator
from typing import Any

import pytest
from harness import HOST, phone
from sinch_app import NUMBER, app_config, conference_callout, signed

pytestmark = pytest.mark.integration

DEADLINE = 15.0


@pytest.fixture
def no_cycle_collection() -> Iterator[None]:
    gc.collect()
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


def watch(server, call_id: str) -> dict[str, weakref.ref[Any]]:  # type: ignore[no-untyped-def]
    session = server.engine.sessions[call_id]
    watched = {
        "session": session,
        "call": session.call,
        "core": session.core,
        "leg": session.leg,
    }
    sinch = server.server.sinch
    if sinch is not None and call_id in sinch.calls:
        watched["application's call"] = sinch.calls[call_id]
    return {name: weakref.ref(obj) for name, obj in watched.items()}


def wait_gone(server, refs: dict[str, weakref.ref[Any]]) -> None:  # type: ignore[no-untyped-def]
    """Wait, tick by tick, for the engine to forget the call; then nothing of it may be alive."""
    server.run(server.server.clock.until(lambda: not server.engine.sessions), timeout=DEADLINE)
    # One more tick: what the media thread hands the loop about the call's last tick has run by then.
    ticks = server.server.clock.metrics()["ticks"]
    server.run(server.server.clock.until(lambda: server.server.clock.metrics()["ticks"] > ticks + 1))
    alive = sorted(name for name, ref in refs.items() if ref() is not None)
    assert alive == [], f"still referenced after the call ended (a reference cycle): {alive}"


def test_a_demo_call_is_freed_without_the_cycle_collector(in_process_server, no_cycle_collection) -> None:  # type: ignore[no-untyped-def]
    server = in_process_server()
    caller = phone("dial", f"sip:demo@{HOST}:{server.server.stack.port}", stdin=True)
    caller.wait_for(r"event=answered", timeout=DEADLINE)
    (call_id,) = server.engine.sessions
    refs = watch(server, call_id)
    caller.send("hangup")
    caller.wait_for(r"event=ended", timeout=DEADLINE)
    wait_gone(server, refs)


def test_a_conference_call_with_a_collection_is_freed(
    in_process_server, backend, no_cycle_collection
) -> None:  # type: ignore[no-untyped-def]
    backend.answers["ice"] = lambda event: {
        "action": {
            "name": "connectConf",
            "conferenceId": "memory",
            "conferenceDtmfOptions": {"mode": "detect", "maxDigits": 1},
        }
    }
    backend.answers["pie"] = lambda event: {}
    server = in_process_server(app_config(backend))
    caller = phone("dial", f"sip:{NUMBER}@{HOST}:{server.server.stack.port}", stdin=True)
    caller.wait_for(r"event=answered", timeout=DEADLINE)
    (call_id,) = server.engine.sessions
    refs = watch(server, call_id)
    caller.send("dtmf 5")
    backend.wait(lambda: len(backend.events("pie")) == 1, timeout=DEADLINE)
    caller.send("hangup")
    caller.wait_for(r"event=ended", timeout=DEADLINE)
    backend.wait(lambda: len(backend.events("dice")) == 1, timeout=DEADLINE)
    wait_gone(server, refs)


def test_a_kicked_callout_is_freed(in_process_server, backend, no_cycle_collection) -> None:  # type: ignore[no-untyped-def]
    server = in_process_server(app_config(backend))
    callee = phone("answer", "--calls", "1")
    port = int(callee.wait_for(r"event=listening sip=127.0.0.1:(\d+)").group(1))

    call_id = conference_callout(
        server, {"type": "sip", "endpoint": f"sip:callee@{HOST}:{port}"}, "kicked", enableDice=True
    )
    callee.wait_for(r"event=answered", timeout=DEADLINE)
    server.run(server.server.clock.until(lambda: call_id in server.server.conferences.members))
    refs = watch(server, call_id)
    status, _ = signed(server, "DELETE", f"/calling/v1/conferences/id/kicked/{call_id}")
    assert status == 200
    callee.wait_for(r"event=ended", timeout=DEADLINE)
    backend.wait(lambda: len(backend.events("dice", call_id)) == 1, timeout=DEADLINE)
    wait_gone(server, refs)
