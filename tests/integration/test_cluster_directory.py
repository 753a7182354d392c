"""A node in cluster mode keeps its entry in a real Redis (Debian's redis-server, started here): it
registers with a heartbeat and a TTL, claims the home of each conference it mixes and gives it up when the
conference ends, enters its answered calls, takes over a claim left by a dead node, and, while Redis cannot
be reached, keeps its calls, refuses new ones with 503 and Retry-After, says so in health and metrics, and
puts its entries back when Redis returns (docs/cluster.md, "The directory")."""

from __future__ import annotations

import json
import socket
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cluster_harness import RedisServer, wait
from harness import HOST, Process, phone
from sinch_app import NUMBER, app_config

pytestmark = pytest.mark.integration

DEADLINE = 15.0
NODE = "node-a"


@pytest.fixture
def redis_server() -> Iterator[RedisServer]:
    server = RedisServer()
    yield server
    server.stop()


def get(port: int, path: str) -> tuple[int, dict[str, Any]]:
    try:
        with urllib.request.urlopen(f"http://{HOST}:{port}{path}", timeout=5) as reply:
            return reply.status, json.loads(reply.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def invite_answer(sip_port: int) -> str:
    """The first line and Retry-After of the final answer to a new INVITE sent from a socket of our own."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind((HOST, 0))
        sock.settimeout(5)
        port = sock.getsockname()[1]
        sock.sendto(
            (
                f"INVITE sip:{NUMBER}@{HOST}:{sip_port} SIP/2.0\r\n"
                f"Via: SIP/2.0/UDP {HOST}:{port};branch=z9hG4bK-c{port}\r\n"
                f"From: <sip:probe@{HOST}:{port}>;tag=p{port}\r\nTo: <sip:{NUMBER}@{HOST}:{sip_port}>\r\n"
                f"Call-ID: cluster-{port}@{HOST}\r\nCSeq: 1 INVITE\r\nContact: <sip:probe@{HOST}:{port}>\r\n"
                "Max-Forwards: 70\r\nContent-Length: 0\r\n\r\n"
            ).encode(),
            (HOST, sip_port),
        )
        while True:
            data = sock.recv(65535).decode()
            status = data.split("\r\n", 1)[0]
            if not status.startswith("SIP/2.0 1"):
                retry = [line for line in data.split("\r\n") if line.lower().startswith("retry-after")]
                return f"{status} | {retry[0] if retry else ''}"


@pytest.fixture
def node(in_process_server, backend, redis_server):  # type: ignore[no-untyped-def]
    backend.answers["ice"] = lambda event: {
        "action": {"name": "ConnectConf", "conferenceId": event.get("cli") or "room"}
    }
    cluster = (
        f'\n[cluster]\nredis = "{redis_server.url}"\nnode_id = "{NODE}"\n'
        "heartbeat_seconds = 0.5\nnode_ttl_seconds = 2\n"
    )
    server = in_process_server(app_config(backend) + cluster)
    server.redis = redis_server
    return server


def dial(server, room: str, record: Path | None = None) -> Process:  # type: ignore[no-untyped-def]
    """A phone calling in; the ICE answer puts it in the conference named by its caller id."""
    extra = ["--record", str(record)] if record else []
    caller = phone(
        "dial", f"sip:{NUMBER}@{HOST}:{server.server.stack.port}", "--from-user", room, *extra, stdin=True
    )
    caller.wait_for(r"event=answered", timeout=DEADLINE)
    return caller


def test_a_node_registers_claims_homes_and_gives_them_up(node) -> None:  # type: ignore[no-untyped-def]
    redis = node.redis.client
    entry = wait(lambda: redis.hgetall(f"tonebridge:node:{NODE}"), "the node's entry")
    assert entry["sip"] == f"{HOST}:{node.server.stack.port}" or entry["sip"].endswith(
        f":{node.server.stack.port}"
    )
    assert NODE in redis.smembers("tonebridge:nodes")
    assert 0 < redis.ttl(f"tonebridge:node:{NODE}") <= 2

    caller = dial(node, "alpha")
    assert wait(lambda: redis.get("tonebridge:home:alpha"), "alpha's home") == NODE
    calls = wait(lambda: redis.keys("tonebridge:call:*"), "the call's entry")
    assert [redis.hget(key, "node") for key in calls] == [NODE]

    # What a survivor would need to send its DiCE, with the conference it joined.
    def joined_dice() -> dict[str, str] | None:
        entry = redis.hgetall(calls[0])
        joined = "dice_body" in entry and json.loads(entry["dice_body"]).get("conferenceId") == "alpha"
        return entry if joined else None

    entry = wait(joined_dice, "the call's DiCE, with its conference")
    dice = json.loads(entry["dice_body"])
    assert (dice["event"], dice["callid"], dice["conferenceId"]) == ("dice", calls[0].split(":")[-1], "alpha")
    assert entry["app"] and entry["dice_url"].startswith("http://")
    wait(lambda: redis.hget(f"tonebridge:node:{NODE}", "conferences") == "1", "the load in the heartbeat")

    caller.send("hangup")
    caller.wait_for(r"event=ended", timeout=DEADLINE)
    wait(lambda: redis.get("tonebridge:home:alpha") is None, "alpha's home given up")
    wait(lambda: not redis.keys("tonebridge:call:*"), "the call's entry removed")


def test_a_claim_left_by_a_dead_node_is_taken_over(node) -> None:  # type: ignore[no-untyped-def]
    redis = node.redis.client
    wait(lambda: redis.exists(f"tonebridge:node:{NODE}"), "the node's entry")
    redis.set("tonebridge:home:orphan", "node-gone")  # its node's entry has lapsed: it is dead
    caller = dial(node, "orphan")
    wait(lambda: redis.get("tonebridge:home:orphan") == NODE, "the orphan's home taken over")
    caller.send("hangup")
    caller.wait_for(r"event=ended", timeout=DEADLINE)
    wait(lambda: redis.get("tonebridge:home:orphan") is None, "the orphan's home given up")


def test_a_call_for_a_conference_homed_on_another_live_node_is_sent_there(node, backend) -> None:  # type: ignore[no-untyped-def]
    redis = node.redis.client
    wait(lambda: redis.exists(f"tonebridge:node:{NODE}"), "the node's entry")
    redis.hset("tonebridge:node:node-b", mapping={"sip": "127.0.0.1:5999", "http": "127.0.0.1:2"})
    redis.expire("tonebridge:node:node-b", 60)
    redis.set("tonebridge:home:taken", "node-b")  # held by a live node
    caller = phone("dial", f"sip:{NUMBER}@{HOST}:{node.server.stack.port}", "--from-user", "taken")
    # This phone does not follow redirects (the SIP front does, in a cluster): it ends on the 302.
    caller.wait_for(r"event=ended .*status=302", timeout=DEADLINE)
    (ice,) = backend.events("ice")
    # The ICE answer waits for node-b under a one-time token that starts with the call's id.
    (key,) = redis.keys("tonebridge:move:*")
    assert key.removeprefix("tonebridge:move:").startswith(ice["callid"] + ".")
    move = json.loads(redis.get(key))
    assert move["answer"]["action"]["conferenceId"] == "taken" and move["number"] == NUMBER
    assert 0 < redis.ttl(key) <= 60
    assert redis.get("tonebridge:home:taken") == "node-b"  # never ours
    # The call goes on at node-b, which reports its end: no DiCE from here.
    # A call that stays here, after it: its DiCE comes, and the moved call's never came before it.
    wait(lambda: not node.server.engine.sessions, "the moved call forgotten here")
    control = dial(node, "here")
    control.send("hangup")
    control.wait_for(r"event=ended", timeout=DEADLINE)
    backend.wait(lambda: len(backend.events("dice")) >= 1)
    assert [d["callid"] for d in backend.events("dice")] == [backend.events("ice")[1]["callid"]]


def test_redis_lost_and_back(node, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    redis_server = node.redis
    http = node.server.http_port
    sip = node.server.stack.port
    wait(lambda: redis_server.client.exists(f"tonebridge:node:{NODE}"), "the node's entry")
    caller = dial(node, "steady", record=tmp_path / "steady.wav")
    wait(lambda: redis_server.client.get("tonebridge:home:steady") == NODE, "steady's home")

    redis_server.stop()
    status, body = wait(lambda: (r := get(http, "/tonebridge/v1/health"))[0] == 503 and r, "health says 503")
    assert body["status"] == "unavailable"
    assert get(http, "/tonebridge/v1/metrics")[1]["cluster"]["redisReachable"] is False
    assert invite_answer(sip) == "SIP/2.0 503 Service Unavailable - Node Cannot Take Calls | Retry-After: 5"
    # The call it had goes on: it still hears its room (the phone reports heard seconds).
    before = len(caller.matches(r"event=heard"))
    caller.wait_for_count(r"event=heard", before + 1, timeout=DEADLINE)

    redis_server.start()  # empty, as a Redis that lost its data
    wait(lambda: get(http, "/tonebridge/v1/health")[0] == 200, "health back to 200")
    wait(lambda: redis_server.client.get("tonebridge:home:steady") == NODE, "steady's home claimed again")
    wait(lambda: redis_server.client.keys("tonebridge:call:*"), "the call entered again")
    assert NODE in redis_server.client.smembers("tonebridge:nodes")
    caller.send("hangup")
    caller.wait_for(r"event=ended", timeout=DEADLINE)
    wait(lambda: redis_server.client.get("tonebridge:home:steady") is None, "steady's home given up")


def test_a_stopping_node_leaves_at_once(in_process_server, backend, redis_server) -> None:  # type: ignore[no-untyped-def]
    cluster = f'\n[cluster]\nredis = "{redis_server.url}"\nnode_id = "{NODE}"\n'
    server = in_process_server(app_config(backend) + cluster)
    redis = redis_server.client
    wait(lambda: redis.exists(f"tonebridge:node:{NODE}"), "the node's entry")
    server.close()
    assert not redis.exists(f"tonebridge:node:{NODE}")
    assert NODE not in redis.smembers("tonebridge:nodes")


def test_without_cluster_nothing_changes(in_process_server, backend) -> None:  # type: ignore[no-untyped-def]
    server = in_process_server(app_config(backend))
    assert server.server.directory is None
    assert "cluster" not in get(server.server.http_port, "/tonebridge/v1/metrics")[1]
    assert get(server.server.http_port, "/tonebridge/v1/health")[0] == 200
