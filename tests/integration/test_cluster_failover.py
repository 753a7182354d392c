"""Acceptance: callbacks survive a node (docs/cluster.md, "When a node dies"). Two nodes share a Redis
(appendonly, appendfsync always); a phone on node A is in conference "failover" in detect mode while the
application's backend is down, so A holds its PIEs undelivered; A is SIGKILLed and the backend comes back.
Node B delivers A's PIEs, with the keys A gave them, then a DiCE (ANSWERED, GENERALERROR) for each of A's
two calls within 30 s of the kill; a new call to "failover" is homed on B."""

from __future__ import annotations

import json
import signal
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from backend import Backend
from cluster_harness import RedisServer, wait
from harness import HOST, Process, free_port, free_port_range, phone, tonebridge_command, write_config
from sinch_app import KEY, NUMBER, SECRET, app_config

pytestmark = pytest.mark.integration

DEADLINE = 20.0
DICE_WITHIN = 30.0  # of the kill, with the default timings; these nodes beat every 1 s with a 3 s TTL


class Node:
    def __init__(self, tmp_path: Path, node_id: str, extra: str) -> None:
        self.node_id = node_id
        self.sip, self.http = free_port(), free_port()
        directory = tmp_path / node_id
        directory.mkdir()
        config = directory / "tonebridge.toml"  # its own data_dir: tmp_path/node_id/data
        write_config(config, self.sip, self.http, free_port_range(), extra)
        self.process = Process([*tonebridge_command(), "serve", "--config", str(config)], name=node_id)
        self.process.wait_for(r"event=listening", timeout=DEADLINE)

    def metrics(self) -> dict[str, Any]:
        with urllib.request.urlopen(f"http://{HOST}:{self.http}/tonebridge/v1/metrics", timeout=5) as reply:
            return json.loads(reply.read())


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    directory = tmp_path / "redis"
    directory.mkdir()
    server = RedisServer(directory)
    yield server
    server.stop()


def test_a_survivor_delivers_a_killed_nodes_callbacks_and_ends_its_calls(tmp_path, redis_server) -> None:  # type: ignore[no-untyped-def]
    import redis

    store = redis.Redis(host=HOST, port=redis_server.port, decode_responses=True)
    backend = Backend(KEY, SECRET, free_port())
    backend.answers["ice"] = lambda event: {
        "action": {
            "name": "ConnectConf",
            "conferenceId": "failover",
            "conferenceDtmfOptions": {"mode": "detect", "maxDigits": 1},
        }
    }

    def cluster(node_id: str) -> str:
        return (
            app_config(backend)
            + f'\n[cluster]\nredis = "{redis_server.url}"\nnode_id = "{node_id}"\n'
            + "heartbeat_seconds = 1\nnode_ttl_seconds = 3\n"
        )

    nodes: list[Node] = []
    phones: list[Process] = []
    try:
        a = Node(tmp_path, "node-a", cluster("node-a"))
        nodes.append(a)
        b = Node(tmp_path, "node-b", cluster("node-b"))
        nodes.append(b)
        wait(lambda: store.exists("tonebridge:node:node-a", "tonebridge:node:node-b") == 2, "both registered")

        voter = phone("dial", f"sip:{NUMBER}@{HOST}:{a.sip}", stdin=True)
        phones.append(voter)
        voter.wait_for(r"event=answered", timeout=DEADLINE)
        backend.wait(lambda: len(backend.events("ice")) == 1)
        call_id = backend.events("ice")[0]["callid"]
        a.process.wait_for(r"event=conference_joined", timeout=DEADLINE)
        assert wait(lambda: store.get("tonebridge:home:failover"), "the conference's home") == "node-a"
        listener = phone("dial", f"sip:{NUMBER}@{HOST}:{a.sip}", stdin=True)  # a second call on A
        phones.append(listener)
        listener.wait_for(r"event=answered", timeout=DEADLINE)
        backend.wait(lambda: len(backend.events("ice")) == 2)
        other_id = backend.events("ice")[1]["callid"]
        a.process.wait_for_count(r"event=conference_joined", 2, timeout=DEADLINE)
        for call in (call_id, other_id):
            wait(lambda c=call: store.hget(f"tonebridge:call:{c}", "dice_body"), "what a call's DiCE needs")

        backend.stop()
        voter.send("dtmf 12")
        voter.wait_for(r"event=dtmf_sent", timeout=DEADLINE)
        a.process.wait_for_count(r"event=collection_done", 2, timeout=DEADLINE)
        # Both PIEs are stored in Redis, in A's outbox, and A has tried (and failed) to send them.
        members = wait(
            lambda: (m := store.zrange("tonebridge:outbox:node-a", 0, -1)) and len(m) == 2 and m, "PIEs"
        )
        rows = [store.hgetall(f"tonebridge:cb:{member}") for member in members]
        assert [json.loads(r["body"])["menuResult"]["value"] for r in rows] == ["1", "2"]
        keys = [r["key"] for r in rows]
        a.process.wait_for(r"event=callback_retry .*callback=pie", timeout=DEADLINE)

        a.process.stop(signal.SIGKILL)
        killed = time.monotonic()
        backend.start()

        backend.wait(lambda: len(backend.events("dice")) == 2, timeout=DICE_WITHIN)
        dice_after = time.monotonic() - killed
        assert {e["callid"] for e in backend.events("dice")} == {call_id, other_id}
        assert dice_after < DICE_WITHIN
        events = [e for e in backend.received if e.get("callid") == call_id and e["event"] != "ice"]
        assert [e["event"] for e in events] == ["pie", "pie", "dice"]
        assert [e["menuResult"]["value"] for e in events[:2]] == ["1", "2"]
        sent_keys = [
            h.get("X-Idempotency-Key")
            for h, e in zip(backend.headers, backend.received, strict=True)
            if e.get("callid") == call_id and e["event"] == "pie"
        ]
        assert sent_keys == keys  # the keys A gave them: to the application, each arrives once
        for dice in backend.events("dice"):
            assert (dice["result"], dice["reason"]) == ("ANSWERED", "GENERALERROR")
            assert dice["duration"] >= 0 and dice["conferenceId"] == "failover"
        assert b.process.matches(r"event=cluster_node_reaped .*dead=node-a")
        wait(lambda: b.metrics()["outbox"]["pending"] == 0, "B's outbox empty")
        assert not store.exists("tonebridge:outbox:node-a", "tonebridge:outbox:node-b")
        assert not store.exists(f"tonebridge:call:{call_id}", f"tonebridge:call:{other_id}")
        assert "node-a" not in store.smembers("tonebridge:nodes")
        assert store.get("tonebridge:home:failover") is None
        assert len(backend.events("dice")) == 2 and backend.bad_signatures == 0

        # A new call to the conference is homed on the survivor.
        second = phone("dial", f"sip:{NUMBER}@{HOST}:{b.sip}", stdin=True)
        phones.append(second)
        second.wait_for(r"event=answered", timeout=DEADLINE)
        assert wait(lambda: store.get("tonebridge:home:failover"), "the new home") == "node-b"
        second.send("hangup")
        second.wait_for(r"event=ended", timeout=DEADLINE)
        print(f"DiCE of the killed node's call {dice_after:.1f} s after the kill")
    finally:
        for peer in phones:
            peer.stop()
        codes = {node.node_id: node.process.stop() for node in nodes}
        backend.stop()
        store.close()
    # Node A was killed; node B stops as any node does.
    assert codes.get("node-b") == 0, nodes[1].process.output[-3000:]
    for node in nodes:
        assert "Traceback" not in node.process.output, node.process.output[-5000:]
