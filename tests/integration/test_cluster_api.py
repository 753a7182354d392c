"""The calling API is the same from every node of a cluster (docs/cluster.md, "API in a cluster"): two
nodes in this process share a real Redis; a phone calls node A into conference "left", another calls node B
into "right", and the official SDK, pointed at either node, lists, mutes and kicks the participants of
both, reads their calls and places a conference callout, which the conference's home places. Unknown ids
get a single node's 404 from either node; an unauthenticated request is refused by the node that got it; a
forwarded request is not forwarded again; a home that cannot be reached gives 503 in the Sinch shape."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from harness import HOST, InProcessServer, free_port, free_port_range, phone, write_config
from sinch_app import app_config, sdk, signature_headers, signed
from test_cluster_directory import DEADLINE, RedisServer, dial, get, wait

pytestmark = pytest.mark.integration

A, B = "node-a", "node-b"


def start_node(directory: Path, config: str) -> InProcessServer:
    """A node in this process with a data directory of its own (each node has its own store)."""
    directory.mkdir()
    path = directory / "tonebridge.toml"
    write_config(path, free_port(), free_port(), free_port_range(), config)
    return InProcessServer(path.read_text())


@pytest.fixture
def cluster(backend, tmp_path: Path):  # type: ignore[no-untyped-def]
    """Two nodes sharing one Redis, both registered; the backend puts each inbound call in the conference
    named by its caller id."""
    redis_server = RedisServer()
    backend.answers["ice"] = lambda event: {
        "action": {"name": "ConnectConf", "conferenceId": event.get("cli") or "room"}
    }
    nodes: list[InProcessServer] = []
    try:
        for node_id in (A, B):
            section = (
                f'\n[cluster]\nredis = "{redis_server.url}"\nnode_id = "{node_id}"\n'
                "heartbeat_seconds = 0.5\nnode_ttl_seconds = 2\n"
            )
            nodes.append(start_node(tmp_path / node_id, app_config(backend) + section))
        for node_id in (A, B):
            wait(
                lambda n=node_id: redis_server.client.exists(f"tonebridge:node:{n}"), f"{node_id} registered"
            )
        yield redis_server, *nodes
    finally:
        for node in nodes:
            node.close()  # before Redis goes, so that they leave the directory cleanly
        redis_server.stop()


def counters(node) -> dict[str, Any]:  # type: ignore[no-untyped-def]
    return get(node.server.http_port, "/tonebridge/v1/metrics")[1]["cluster"]


def participants(client, conference_id: str) -> dict[str, Any]:  # type: ignore[no-untyped-def]
    return {p.id: p for p in client.voice.conferences.get(conference_id).participants}


def joined(node, call_id: str) -> bool:  # type: ignore[no-untyped-def]
    return call_id in node.server.conferences.members


def raw(node, method: str, path: str, headers: dict[str, str]) -> tuple[int, dict[str, Any]]:  # type: ignore[no-untyped-def]
    request = urllib.request.Request(f"http://{HOST}:{node.server.http_port}{path}", method=method)
    for name, value in headers.items():
        request.add_header(name, value)
    try:
        with urllib.request.urlopen(request, timeout=10) as reply:
            return reply.status, json.loads(reply.read() or b"null")
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"null")


def without_reference(body: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in body.items() if k != "reference"}


def test_the_sdk_cannot_tell_which_node_it_talks_to(cluster, backend) -> None:  # type: ignore[no-untyped-def]
    redis_server, node_a, node_b = cluster
    redis = redis_server.client
    via_a, via_b = sdk(node_a), sdk(node_b)

    first = dial(node_a, "left")
    wait(lambda: redis.get("tonebridge:home:left") == A, "left homed on A")
    (first_id,) = wait(lambda: list(participants(via_a, "left")), "the first participant of left")
    second = dial(node_a, "left")
    second_id = wait(
        lambda: [i for i in participants(via_a, "left") if i != first_id], "the second participant"
    )[0]
    right = dial(node_b, "right")
    wait(lambda: redis.get("tonebridge:home:right") == B, "right homed on B")
    (right_id,) = wait(lambda: list(participants(via_b, "right")), "the participant of right")

    # Each conference, listed through the node that does not mix it.
    assert set(participants(via_b, "left")) == {first_id, second_id}
    assert set(participants(via_a, "right")) == {right_id}
    assert counters(node_b)["api_forwarded"] >= 1 and counters(node_a)["api_forwarded"] >= 1

    # A call, read through the node that does not carry it (once its entry names its node).
    wait(lambda: redis.hget(f"tonebridge:call:{first_id}", "node") == A, "the first call's entry")
    # (Signed by hand: the SDK's calls.get cannot read a call with a `from`, from any server.)
    status, info = signed(node_b, "GET", f"/calling/v1/calls/id/{first_id}")
    assert status == 200 and info["callId"] == first_id and info["status"] == "ONGOING"
    _, at_home = signed(node_a, "GET", f"/calling/v1/calls/id/{first_id}")
    assert {**info, "duration": 0} == {**at_home, "duration": 0}

    # Mute through the other node.
    via_b.voice.conferences.manage_participant(conference_id="left", call_id=first_id, command="mute")
    assert participants(via_a, "left")[first_id].muted is True
    assert participants(via_b, "left")[second_id].muted is False
    via_a.voice.conferences.manage_participant(conference_id="right", call_id=right_id, command="mute")
    assert participants(via_b, "right")[right_id].muted is True

    # A conference callout sent to B for A's conference: A places it.
    forwarded_in = counters(node_a).get("api_forwarded_in", 0)
    answerer = phone("answer", "--calls", "1")
    port = int(answerer.wait_for(r"event=listening sip=127.0.0.1:(\d+)").group(1))
    callout_id = via_b.voice.callouts.conference(
        destination={"type": "sip", "endpoint": f"sip:carol@127.0.0.1:{port}"},
        conference_id="left",
        enable_dice=True,
    ).call_id
    answerer.wait_for(r"event=answered", timeout=DEADLINE)
    wait(lambda: joined(node_a, callout_id), "the callout joined left on A")
    assert not joined(node_b, callout_id) and node_b.server.engine.find(callout_id) is None
    assert counters(node_a)["api_forwarded_in"] > forwarded_in
    wait(lambda: redis.hget(f"tonebridge:call:{callout_id}", "node") == A, "the callout's entry names A")
    assert set(participants(via_b, "left")) == {first_id, second_id, callout_id}

    # Kick through the other node: A's phone is hung up with MANAGERHANGUP.
    via_b.voice.conferences.kick_participant(conference_id="left", call_id=first_id)
    first.wait_for(r"event=ended", timeout=DEADLINE)
    backend.wait(lambda: len(backend.events("dice", first_id)) == 1)
    assert backend.events("dice", first_id)[0]["reason"] == "MANAGERHANGUP"
    assert set(participants(via_b, "left")) == {second_id, callout_id}

    # PATCH a call through the other node: the callout, hung up by B's request, on A.
    via_b.voice.calls.update(call_id=callout_id, instructions=[], action={"name": "hangup"})
    answerer.wait_for(r"event=ended", timeout=DEADLINE)
    backend.wait(lambda: len(backend.events("dice", callout_id)) == 1)

    # Kick all of B's conference through A.
    via_a.voice.conferences.kick_all("right")
    right.wait_for(r"event=ended", timeout=DEADLINE)
    second.send("hangup")
    second.wait_for(r"event=ended", timeout=DEADLINE)
    assert backend.bad_signatures == 0
    assert "api_forward_failed" not in counters(node_a) and "api_forward_failed" not in counters(node_b)


def test_refusals_and_unknown_ids_are_a_single_nodes(cluster, in_process_server, backend) -> None:  # type: ignore[no-untyped-def]
    redis_server, node_a, node_b = cluster
    redis = redis_server.client
    caller = dial(node_a, "left")
    wait(lambda: redis.get("tonebridge:home:left") == A, "left homed on A")
    single = in_process_server(app_config(backend))
    before_b, before_a = counters(node_b), counters(node_a)

    # Unknown ids: the same 404 from either node as from a single node.
    for path in ("/calling/v1/conferences/id/nope", "/calling/v1/calls/id/nope"):
        answers = [signed(node, "GET", path) for node in (node_a, node_b, single)]
        assert {status for status, _ in answers} == {404}
        assert len({json.dumps(without_reference(body)) for _, body in answers}) == 1, answers

    path = "/calling/v1/conferences/id/left"
    # Unauthenticated, or badly signed: refused by B itself, never sent to A.
    status, body = raw(node_b, "GET", path, {})
    assert status == 401 and body["errorCode"] == 40100
    status, body = signed(node_b, "GET", path, signature="AAAA")
    assert status == 401 and body["errorCode"] == 40102
    # Already forwarded: B answers itself (it has no room "left") and sends nothing on.
    status, body = raw(
        node_b, "GET", path, {**signature_headers("GET", path), "X-Tonebridge-Forwarded-By": A}
    )
    assert status == 404 and body["errorCode"] == 40400 and "left" in body["message"]
    after_b, after_a = counters(node_b), counters(node_a)
    assert after_b.get("api_forwarded", 0) == before_b.get("api_forwarded", 0)
    assert after_b.get("api_forwarded_in", 0) == before_b.get("api_forwarded_in", 0) + 1
    assert after_a.get("api_forwarded_in", 0) == before_a.get("api_forwarded_in", 0)
    # Signed, and not yet forwarded: A answers it through B.
    status, body = signed(node_b, "GET", path)
    assert status == 200 and len(body["participants"]) == 1

    # A home that is alive in the directory but cannot be reached: 503 in the Sinch shape, not a 500.
    redis.hset("tonebridge:node:node-c", mapping={"sip": f"{HOST}:1", "http": f"{HOST}:{free_port()}"})
    redis.expire("tonebridge:node:node-c", 60)
    redis.set("tonebridge:home:ghost", "node-c")
    status, body = signed(node_a, "GET", "/calling/v1/conferences/id/ghost")
    assert status == 503 and body["errorCode"] == 50300, body
    assert body["message"] == "conference ghost is on node node-c, which cannot be reached"
    assert set(body) == {"errorCode", "message", "reference"}
    assert counters(node_a)["api_forward_failed"] == 1
    # The same home, dead (its heartbeat lapsed): the request is this node's, as a single node's is.
    redis.delete("tonebridge:node:node-c")
    status, body = signed(node_a, "GET", "/calling/v1/conferences/id/ghost")
    assert status == 404 and body["errorCode"] == 40400 and "ghost" in body["message"]
    # And a callout for a conference with a dead home is placed here (the join claims the home).
    answerer = phone("answer", "--calls", "1")
    port = int(answerer.wait_for(r"event=listening sip=127.0.0.1:(\d+)").group(1))
    status, answer = signed(
        node_b,
        "POST",
        "/calling/v1/callouts",
        {
            "method": "conferenceCallout",
            "conferenceCallout": {
                "destination": {"type": "sip", "endpoint": f"sip:dave@127.0.0.1:{port}"},
                "conferenceId": "ghost",
            },
        },
    )
    assert status == 200, answer
    wait(lambda: joined(node_b, answer["callId"]), "the callout joined ghost on B")
    wait(lambda: redis.get("tonebridge:home:ghost") == B, "ghost's home claimed by B")
    status, _ = signed(node_a, "DELETE", "/calling/v1/conferences/id/ghost")
    assert status == 200
    answerer.wait_for(r"event=ended", timeout=DEADLINE)
    caller.send("hangup")
    caller.wait_for(r"event=ended", timeout=DEADLINE)
