"""A two-node cluster as users meet it (docs/cluster.md): `tonebridge cluster up` on one machine, phones
calling in through Kamailio and joining two conferences by their ICE answers, the application using the
official SDK through HAProxy.

Both nodes end up home to one conference, every call reaches its conference's home (a call that lands on
the other node is moved there with a 302 that Kamailio follows), each key press in detect mode gives
exactly one PIE with the caller's call id, and the SDK lists and kicks the participants of both
conferences whichever node its requests reach."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace

import pytest
from backend import Backend
from cluster_harness import cluster, count, free_block
from harness import HOST, Process, free_port, free_port_range, phone
from sinch_app import NUMBER, app_config, sdk

pytestmark = pytest.mark.integration

DEADLINE = 20.0
DTMF = {"mode": "detect", "maxDigits": 1}
# Who calls, in this order, and the key each presses: through round robin the first two land on different
# nodes and claim one conference each; the last two land on the node that is not their conference's home.
CALLERS = [("left-1", "1"), ("right-1", "2"), ("right-2", "3"), ("left-2", "4")]


@pytest.fixture
def running_cluster(tmp_path: Path, backend: Backend) -> Iterator[SimpleNamespace]:
    backend.answers["ice"] = lambda event: {
        "action": {
            "name": "connectConf",
            "conferenceId": str(event.get("cli", "")).split("-")[0],
            "conferenceDtmfOptions": DTMF,
        }
    }
    backend.answers["pie"] = lambda event: {}
    low, high = free_port_range(400)
    config = tmp_path / "cluster.toml"
    config.write_text(f"[server]\nrtp_ports = [{low}, {high}]\n\n" + app_config(backend), encoding="utf-8")
    state = tmp_path / "state"
    sip_port, http_port = free_port(), free_port()
    args = ["--nodes", "2", "--config", str(config), "--state-dir", str(state)]
    args += ["--sip", f"{HOST}:{sip_port}", "--http", f"{HOST}:{http_port}"]
    args += ["--redis-port", str(free_port()), "--first-node-port", str(free_block(4))]
    up = cluster("up", *args)
    assert up.returncode == 0, up.stdout + up.stderr
    try:
        yield SimpleNamespace(sip=f"{HOST}:{sip_port}", http_port=http_port, logs=state / "logs", state=state)
    finally:
        down = cluster("down", "--state-dir", str(state))
        assert down.returncode == 0, down.stdout + down.stderr


def homes(state: Path) -> dict[str, str]:
    """Conference -> node, as `tonebridge cluster status` lists them."""
    status = cluster("status", "--state-dir", str(state), timeout=30)
    return dict(re.findall(r"^\s+(left|right) -> (node-\d)$", status.stdout, flags=re.M))


def test_two_conferences_on_two_nodes_through_both_fronts(running_cluster, backend: Backend) -> None:  # type: ignore[no-untyped-def]
    phones: dict[str, Process] = {}
    for caller, _ in CALLERS:
        phones[caller] = phone(
            "dial", f"sip:{NUMBER}@{running_cluster.sip}", "--from-user", caller, stdin=True
        )
        phones[caller].wait_for(r"event=answered", timeout=DEADLINE)
    call_of = {event["cli"]: event["callid"] for event in backend.events("ice")}
    assert sorted(call_of) == sorted(caller for caller, _ in CALLERS)  # one ICE per call, moved or not

    # Each node is home to one conference; the calls that landed elsewhere were moved there.
    placed = homes(running_cluster.state)
    assert sorted(placed) == ["left", "right"] and placed["left"] != placed["right"], placed
    logs = running_cluster.logs
    moved = count(logs / "node-1.log", "event=call_moved") + count(logs / "node-2.log", "event=call_moved")
    assert moved == 2
    assert count(logs / "kamailio.log", "following the node's redirect") == moved
    for caller, _ in CALLERS:
        home = placed[caller.split("-")[0]]
        assert f"call_id={call_of[caller]}" in (logs / f"{home}.log").read_text(errors="replace")

    # One press each, in detect mode: exactly one PIE per press, with the presser's call id.
    for caller, key in CALLERS:
        phones[caller].send(f"dtmf {key}")
    backend.wait(lambda: len(backend.events("pie")) >= len(CALLERS), timeout=DEADLINE)
    pies = {(pie["callid"], pie["menuResult"]["value"]) for pie in backend.events("pie")}
    assert len(backend.events("pie")) == len(CALLERS)
    assert pies == {(call_of[caller], key) for caller, key in CALLERS}

    # The SDK through HAProxy: list both conferences, kick one participant of each. Round robin sends its
    # requests to both nodes; a node that is not the home forwards to it.
    class Api:
        http_port = running_cluster.http_port

    client = sdk(SimpleNamespace(server=Api))
    for room in ("left", "right"):
        for _ in range(2):  # twice: one request per node
            listed = sorted(p.id for p in client.voice.conferences.get(room).participants)
            assert listed == sorted(call_of[c] for c, _ in CALLERS if c.startswith(room)), room
    for kicked in ("left-1", "right-2"):
        room = kicked.split("-")[0]
        client.voice.conferences.kick_participant(conference_id=room, call_id=call_of[kicked])
        phones[kicked].wait_for(r"event=ended", timeout=DEADLINE)
        backend.wait(lambda k=kicked: len(backend.events("dice", call_of[k])) == 1, timeout=DEADLINE)
        assert backend.events("dice", call_of[kicked])[0]["reason"] == "MANAGERHANGUP"
    for room, stays in (("left", "left-2"), ("right", "right-1")):
        assert [p.id for p in client.voice.conferences.get(room).participants] == [call_of[stays]]
    for caller in ("left-2", "right-1"):
        phones[caller].send("hangup")
        phones[caller].wait_for(r"event=ended", timeout=DEADLINE)
    backend.wait(lambda: len(backend.events("dice")) == len(CALLERS), timeout=DEADLINE)
