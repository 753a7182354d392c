"""Application isolation across every route: application A has a live call in its conference and the record of
an ended call; application B, correctly authenticated with its own secret (signed, or through its console
session), tries every route on A's call ids, conference id, number, callback settings, records and event
stream. Each answer is that of an object that does not exist (a Sinch 404), an empty list or a refusal, never
A's data, and nothing of A's changes: its call stays up in its room, unmuted, its callbacks and numbers as
they were. The operator-level metrics carry only aggregates. One server and one call serve the whole module."""

from __future__ import annotations

import asyncio
import json
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from backend import Backend
from harness import HOST, InProcessServer, Process, free_port, free_port_range, phone, write_config
from sinch_app import KEY, NUMBER, OTHER_KEY, OTHER_SECRET, SECRET, app_config, conference_callout, signed
from sse import EventStream, signed_headers

from tonebridge.api.access import COOKIE, CSRF_HEADER

pytestmark = pytest.mark.integration

ROOM = "a-room"  # A's conference
B_ROOM = "b-room"  # B's own conference
DEADLINE = 20.0
DTMF = {"mode": "detect", "maxDigits": 1}
STRANGER_NUMBER = "+15550002222"  # held by no application


@dataclass
class Console:
    """A console session: its client (holding the cookie) and its CSRF token."""

    client: httpx.Client
    csrf: str

    @property
    def cookie(self) -> str:
        return self.client.cookies[COOKIE]

    def request(self, method: str, path: str, body: dict | None = None) -> tuple[int, Any]:
        reply = self.client.request(method, path, json=body, headers={CSRF_HEADER: self.csrf})
        return reply.status_code, reply.json() if reply.content else None


@dataclass
class World:
    server: InProcessServer
    backend: Backend
    live: str  # A's call, up in ROOM
    finished: str  # A's ended call, known only from its record
    b_call: str  # B's own call, up in B_ROOM
    a_caller: Process
    a_stream: EventStream
    b_streams: dict[str, EventStream]
    a_console: Console
    b_console: Console
    baseline: int  # how many events A's stream had when the world was set up

    @property
    def port(self) -> int:
        return self.server.server.http_port

    def ids(self) -> dict[str, str]:
        return {"live": self.live, "finished": self.finished, "room": ROOM, "b_room": B_ROOM, "key": KEY}


def until(server: InProcessServer, predicate: Callable[[], bool], timeout: float = DEADLINE) -> None:
    """Wait on the server's own loop, one media tick at a time, until `predicate()` holds."""

    async def wait() -> None:
        await asyncio.wait_for(server.server.clock.until(predicate), timeout)

    server.run(wait(), timeout + 5)


def of_type(kind: str, **fields: Any) -> Callable[[dict[str, Any]], bool]:
    return lambda e: e["type"] == kind and all(e.get(name) == value for name, value in fields.items())


def log_in(base: str, name: str, password: str) -> Console:
    """A console session opened through the login form, as a browser posts it."""
    client = httpx.Client(base_url=base, timeout=10)
    reply = client.post("/console/login", data={"name": name, "password": password}, headers={"Origin": base})
    assert reply.status_code == 303, reply.text
    page = client.get("/console").text
    return Console(client, page.split('name="csrf-token" content="', 1)[1].split('"', 1)[0])


def answerer() -> tuple[Process, str]:
    """A `tonebridge phone` answering one call; its SIP URI."""
    process = phone("answer", "--calls", "1")
    port = int(process.wait_for(r"event=listening sip=127.0.0.1:(\d+)").group(1))
    return process, f"sip:callee@{HOST}:{port}"


def mentions_a(payload: object, world: World) -> list[str]:
    """Which of A's identifiers (call ids, room, key, number, callback URL) a payload carries."""
    text = payload if isinstance(payload, str) else json.dumps(payload)
    secrets_of_a = (world.live, world.finished, ROOM, KEY, NUMBER.lstrip("+"), world.backend.url)
    return [item for item in secrets_of_a if item in text]


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    backend = Backend(KEY, SECRET, free_port())
    backend.answers["ice"] = lambda event: {
        "action": {"name": "connectConf", "conferenceId": ROOM, "conferenceDtmfOptions": DTMF}
    }
    backend.answers["pie"] = lambda event: {}
    config = tmp_path_factory.mktemp("isolation") / "tonebridge.toml"
    write_config(config, free_port(), free_port(), free_port_range(), app_config(backend))
    server = InProcessServer(config.read_text())
    port = server.server.http_port
    base = f"http://{HOST}:{port}"
    processes: list[Process] = []
    streams: list[EventStream] = []
    consoles: list[Console] = []
    try:
        a_console, b_console = log_in(base, KEY, SECRET), log_in(base, OTHER_KEY, OTHER_SECRET)
        consoles += [a_console, b_console]
        # Subscribed before anything happens: every event from now on reaches each stream it may.
        a_stream = EventStream(port, headers=signed_headers(KEY, SECRET))
        b_streams = {
            "signed": EventStream(port, headers=signed_headers(OTHER_KEY, OTHER_SECRET)),
            "by-conference": EventStream(
                port,
                params={"conferenceId": [ROOM, B_ROOM]},
                headers=signed_headers(OTHER_KEY, OTHER_SECRET),
            ),
            "console": EventStream(port, headers={"Cookie": f"{COOKIE}={b_console.cookie}"}),
        }
        streams += [a_stream, *b_streams.values()]

        # A's ended call: a callout to a user who is not registered fails at once; its DiCE is delivered.
        finished = conference_callout(
            server, {"type": "username", "endpoint": "nobody"}, ROOM, enableDice=True
        )
        backend.wait(lambda: len(backend.events("dice", finished)) == 1)
        until(server, lambda: (server.server.store.get_call(finished) or {}).get("status") == "FINAL")

        # A's live call: a phone dials A's number; the ICE answer puts it in ROOM; a key press is collected.
        a_caller = phone("dial", f"sip:{NUMBER}@{HOST}:{server.server.stack.port}", stdin=True)
        processes.append(a_caller)
        a_caller.wait_for(r"event=answered", timeout=DEADLINE)
        backend.wait(lambda: len(backend.events("ice")) == 1)
        live = backend.events("ice")[0]["callid"]
        a_stream.wait(of_type("joined", callId=live, conferenceId=ROOM))
        a_caller.send("dtmf 7")
        a_stream.wait(of_type("pie_answered", callId=live))
        a_stream.wait(of_type("returned_to_mix", callId=live))
        baseline = len(a_stream.snapshot())

        # B's own call in its own room, last: once B's streams have its `joined`, they have had every
        # earlier event they were ever going to get (the bus delivers in order).
        b_answerer, uri = answerer()
        processes.append(b_answerer)
        b_call = conference_callout(
            server, {"type": "sip", "endpoint": uri}, B_ROOM, key=OTHER_KEY, secret=OTHER_SECRET
        )
        for stream in b_streams.values():
            stream.wait(of_type("joined", callId=b_call, conferenceId=B_ROOM))
        # A replay for B from before anything was held, filtered on A's call and its own.
        epoch = a_stream.ids[0].partition("-")[0]
        b_streams["replay-by-call"] = EventStream(
            port,
            params={"lastEventId": f"{int(epoch) - 1}-0", "callId": [live, b_call]},
            headers=signed_headers(OTHER_KEY, OTHER_SECRET),
        )
        streams.append(b_streams["replay-by-call"])
        b_streams["replay-by-call"].wait(of_type("joined", callId=b_call))

        yield World(
            server,
            backend,
            live,
            finished,
            b_call,
            a_caller,
            a_stream,
            b_streams,
            a_console,
            b_console,
            baseline,
        )
    finally:
        for stream in streams:
            stream.close()
        for console in consoles:
            console.client.close()
        for process in processes:
            process.stop()
        server.close()
        backend.stop()


def a_state(world: World) -> dict[str, Any]:
    """Everything of A's that B might change, as A reads it."""
    status, room = signed(world.server, "GET", f"/calling/v1/conferences/id/{ROOM}")
    assert status == 200, room
    status, call = signed(world.server, "GET", f"/calling/v1/calls/id/{world.live}")
    assert status == 200, call
    status, urls = signed(world.server, "GET", f"/v1/configuration/callbacks/applications/{KEY}")
    assert status == 200, urls
    status, numbers = signed(world.server, "GET", "/v1/configuration/numbers")
    assert status == 200, numbers
    options = world.server.server.conferences.rooms.participant(world.live, ROOM).options
    return {
        "participants": [(p["id"], p["muted"], p["onhold"]) for p in room["participants"]],
        "call": (call["callId"], call["status"]),
        "urls": urls,
        "numbers": numbers,
        "mode": (options.mode.value, options.max_digits),
    }


def expected_a_state(world: World) -> dict[str, Any]:
    return {
        "participants": [(world.live, False, False)],
        "call": (world.live, "ONGOING"),
        "urls": {"url": {"primary": world.backend.url, "fallback": ""}},
        "numbers": {"numbers": [{"number": NUMBER, "applicationkey": KEY, "capability": "voice"}]},
        "mode": ("detect", 1),
    }


# The calling/v1 and configuration routes, as B sends them with A's identifiers. Each: method, path, body.
NOT_FOUND_ROUTES: dict[str, tuple[str, str, dict | None]] = {
    "get-live-call": ("GET", "/calling/v1/calls/id/{live}", None),
    "get-ended-call": ("GET", "/calling/v1/calls/id/{finished}", None),
    "hang-up-live-call": ("PATCH", "/calling/v1/calls/id/{live}", {"action": {"name": "hangup"}}),
    "park-live-call": ("PATCH", "/calling/v1/calls/id/{live}", {"action": {"name": "park"}}),
    "patch-ended-call": ("PATCH", "/calling/v1/calls/id/{finished}", {"action": {"name": "hangup"}}),
    "hang-up-caller-leg": ("PATCH", "/calling/v1/calls/id/{live}/leg/caller", {"action": {"name": "hangup"}}),
    "play-to-both-legs": (
        "PATCH",
        "/calling/v1/calls/id/{live}/leg/both",
        {"instructions": [{"name": "playFiles", "ids": ["#tts[hello]"], "locale": "en-US"}]},
    ),
    "get-conference": ("GET", "/calling/v1/conferences/id/{room}", None),
    "kick-all": ("DELETE", "/calling/v1/conferences/id/{room}", None),
    "mute-participant": ("PATCH", "/calling/v1/conferences/id/{room}/{live}", {"command": "mute"}),
    "hold-participant": (
        "PATCH",
        "/calling/v1/conferences/id/{room}/{live}",
        {"command": "onhold", "moh": "music1"},
    ),
    "change-participant-dtmf": (
        "PATCH",
        "/calling/v1/conferences/id/{room}/{live}",
        {"conferenceDtmfOptions": {"mode": "forward"}},
    ),
    "kick-participant": ("DELETE", "/calling/v1/conferences/id/{room}/{live}", None),
    # A's call named under B's own room: still not B's to act on.
    "mute-via-own-room": ("PATCH", "/calling/v1/conferences/id/{b_room}/{live}", {"command": "mute"}),
    "kick-via-own-room": ("DELETE", "/calling/v1/conferences/id/{b_room}/{live}", None),
    "get-callbacks": ("GET", "/v1/configuration/callbacks/applications/{key}", None),
    "set-callbacks": (
        "POST",
        "/v1/configuration/callbacks/applications/{key}",
        {"url": {"primary": "http://127.0.0.1:9/stolen", "fallback": "http://127.0.0.1:9/stolen"}},
    ),
    "assign-number-to-a": (
        "POST",
        "/v1/configuration/numbers",
        {"numbers": [STRANGER_NUMBER], "applicationkey": KEY},
    ),
}

# What A's own requests on the same paths answer: the object B is refused does exist.
A_READS = {
    "get-live-call": lambda world, answer: answer["callId"] == world.live and answer["status"] == "ONGOING",
    "get-ended-call": lambda world, answer: (
        answer["callId"] == world.finished and answer["status"] == "FINAL"
    ),
    "get-conference": lambda world, answer: [p["id"] for p in answer["participants"]] == [world.live],
    "get-callbacks": lambda world, answer: answer == {"url": {"primary": world.backend.url, "fallback": ""}},
}


MODES = ["signed", "basic", "console"]  # B's three ways in: its signature, its Basic credentials, its session


def as_b(world: World, mode: str, method: str, path: str, body: dict | None = None) -> tuple[int, Any]:
    if mode == "signed":
        return signed(world.server, method, path, body, key=OTHER_KEY, secret=OTHER_SECRET)
    if mode == "basic":
        reply = httpx.request(
            method,
            f"http://{HOST}:{world.port}{path}",
            json=body,
            auth=(OTHER_KEY, OTHER_SECRET),
            timeout=10,
        )
        return reply.status_code, reply.json() if reply.content else None
    return world.b_console.request(method, path, body)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("route", list(NOT_FOUND_ROUTES))
def test_b_gets_not_found_for_a_objects_and_changes_nothing(world: World, route: str, mode: str) -> None:
    method, template, body = NOT_FOUND_ROUTES[route]
    path = template.format(**world.ids())
    if route in A_READS:
        status, answer = signed(world.server, method, path)
        assert status == 200 and A_READS[route](world, answer), answer
    status, answer = as_b(world, mode, method, path, body)
    assert status == 404, (status, answer)
    assert answer["errorCode"] == 40400 and answer["reference"], answer
    # The message names only what B asked for (the id in its own path), nothing it could not know.
    assert not {"participants", "callId", "url", "numbers"} & set(answer), answer
    if "{key}" not in template and "applicationkey" not in json.dumps(body):
        assert KEY not in answer["message"], answer
    assert a_state(world) == expected_a_state(world)


@pytest.mark.parametrize("mode", MODES)
def test_b_numbers_list_is_its_own_and_a_number_stays_a(world: World, mode: str) -> None:
    assert as_b(world, mode, "GET", "/v1/configuration/numbers") == (200, {"numbers": []})

    # Taking A's number is refused (the number is held: B cannot have it) without naming who holds it.
    status, answer = as_b(world, mode, "POST", "/v1/configuration/numbers", {"numbers": [NUMBER]})
    assert status == 400 and answer["errorCode"] == 40001, answer
    assert KEY not in answer["message"] and world.backend.url not in answer["message"], answer

    # Releasing A's number answers as releasing a number B never had does, and releases nothing of A's.
    stranger = as_b(world, mode, "DELETE", "/v1/configuration/numbers", {"number": STRANGER_NUMBER})
    assert (
        as_b(world, mode, "DELETE", "/v1/configuration/numbers", {"number": NUMBER})
        == stranger
        == (200, None)
    )
    assert as_b(world, mode, "GET", "/v1/configuration/numbers") == (200, {"numbers": []})
    assert a_state(world) == expected_a_state(world)
    # A's number still routes to A: the server would answer an inbound call on it with A's ICE.
    assert world.server.server.sinch.apps.owner_of_number(NUMBER).key == KEY


@pytest.mark.parametrize("mode", MODES)
def test_b_own_settings_and_calls_hold_nothing_of_a(world: World, mode: str) -> None:
    """What B may read of its own (its callback URLs, its call, its room) is B's alone."""
    own = as_b(world, mode, "GET", f"/v1/configuration/callbacks/applications/{OTHER_KEY}")
    assert own == (200, {"url": {"primary": "", "fallback": ""}})
    status, call = as_b(world, mode, "GET", f"/calling/v1/calls/id/{world.b_call}")
    assert status == 200 and call["callId"] == world.b_call and call["status"] == "ONGOING", call
    status, room = as_b(world, mode, "GET", f"/calling/v1/conferences/id/{B_ROOM}")
    assert status == 200 and [p["id"] for p in room["participants"]] == [world.b_call], room
    assert not mentions_a([call, room], world)


@pytest.mark.parametrize("mode", MODES)
def test_b_number_query_tells_nothing_of_a(world: World, mode: str) -> None:
    status, held = as_b(world, mode, "GET", f"/v1/calling/query/number/{NUMBER}")
    assert status == 200, held
    status, stranger = as_b(world, mode, "GET", f"/v1/calling/query/number/{STRANGER_NUMBER}")
    assert status == 200, stranger
    # The same answer as for a number no one holds, but for the number itself.
    assert held["number"].pop("normalizedNumber") == NUMBER
    assert stranger["number"].pop("normalizedNumber") == STRANGER_NUMBER
    assert held == stranger
    assert KEY not in json.dumps(held)


def test_b_cannot_sign_as_a(world: World) -> None:
    """A's key with B's secret is a bad signature, on A's own application path and elsewhere."""
    for method, path, body in (
        ("GET", f"/v1/configuration/callbacks/applications/{KEY}", None),
        (
            "POST",
            f"/v1/configuration/callbacks/applications/{KEY}",
            {"url": {"primary": "http://127.0.0.1:9/x"}},
        ),
        ("GET", f"/calling/v1/calls/id/{world.live}", None),
        ("GET", "/tonebridge/v1/calls", None),
    ):
        status, answer = signed(world.server, method, path, body, key=KEY, secret=OTHER_SECRET)
        assert status == 401 and answer["errorCode"] == 40102, (path, answer)
    forged = EventStream(world.port, headers=signed_headers(KEY, OTHER_SECRET))
    assert forged.status == 401 and forged.body["errorCode"] == 40102
    # Nor does B's own login open A's console: a session is B's, whatever it names.
    reply = httpx.post(
        f"http://{HOST}:{world.port}/console/login",
        data={"name": KEY, "password": OTHER_SECRET},
        headers={"Origin": f"http://{HOST}:{world.port}"},
    )
    assert reply.status_code == 401 and "set-cookie" not in reply.headers
    assert a_state(world) == expected_a_state(world)


def records(world: World, query: str, key: str, secret: str) -> tuple[int, Any]:
    """`GET /tonebridge/v1/calls`: signed without a query (the route verifies the path without it, as
    calling/v1 does), with Basic credentials when there is one."""
    if not query:
        return signed(world.server, "GET", "/tonebridge/v1/calls", key=key, secret=secret)
    reply = httpx.get(
        f"http://{HOST}:{world.port}/tonebridge/v1/calls{query}", auth=(key, secret), timeout=10
    )
    return reply.status_code, reply.json()


@pytest.mark.parametrize("query", ["", f"?conferenceId={ROOM}", "?from=0&limit=10000"])
def test_b_records_hold_none_of_a_calls(world: World, query: str) -> None:
    status, mine = records(world, query, KEY, SECRET)
    assert status == 200 and world.finished in {c["callId"] for c in mine}, mine
    status, theirs = records(world, query, OTHER_KEY, OTHER_SECRET)
    assert status == 200, theirs
    assert all(c["applicationKey"] == OTHER_KEY for c in theirs), theirs
    assert not {world.live, world.finished} & {c["callId"] for c in theirs}
    assert not mentions_a(theirs, world), theirs
    # B's console session reads no more: today the route refuses sessions; should it take them, B's only.
    reply = world.b_console.client.get(f"/tonebridge/v1/calls{query}")
    assert reply.status_code in (200, 401), reply.text
    if reply.status_code == 200:
        assert not mentions_a(reply.json(), world)


@pytest.mark.parametrize("stream", ["signed", "by-conference", "console", "replay-by-call"])
def test_b_event_stream_carries_none_of_a_events(world: World, stream: str) -> None:
    # A's own stream has its room's events: there was something to leak.
    kinds = {e["type"] for e in world.a_stream.snapshot() if e.get("callId") == world.live}
    assert {"joined", "press", "collection", "pie_sent", "pie_answered"} <= kinds, kinds
    events = world.b_streams[stream].snapshot()
    assert any(e.get("callId") == world.b_call for e in events), events  # B's own events do arrive
    leaked = [e for e in events if mentions_a({k: v for k, v in e.items() if k != "id"}, world)]
    assert leaked == []
    assert world.b_streams[stream].error is None


def test_b_console_shows_only_b(world: World) -> None:
    state = world.b_console.client.get("/tonebridge/v1/console/state").json()
    assert [room["id"] for room in state["rooms"]] == [B_ROOM], state
    assert not mentions_a(state, world), state
    callbacks = world.b_console.client.get("/tonebridge/v1/console/callbacks").json()
    assert not mentions_a(callbacks, world), callbacks
    # A's session sees what B's does not: A's room and A's callbacks.
    state = world.a_console.client.get("/tonebridge/v1/console/state").json()
    assert [room["id"] for room in state["rooms"]] == [ROOM], state
    callbacks = world.a_console.client.get("/tonebridge/v1/console/callbacks").json()["callbacks"]
    assert (world.finished, "dice") in {(c["callId"], c["event"]) for c in callbacks}, callbacks


@pytest.mark.parametrize("path", ["/tonebridge/v1/metrics", "/metrics", "/tonebridge/v1/health"])
def test_operator_metrics_are_aggregates_only(world: World, path: str) -> None:
    """Open to anyone who reaches the port (docs/operations.md): so they name no call, room or application."""
    with urllib.request.urlopen(f"http://{HOST}:{world.port}{path}", timeout=10) as reply:
        assert reply.status == 200
        text = reply.read().decode()
    assert "active" in text.lower() or "tonebridge_" in text, text[:500]
    assert mentions_a(text, world) == []
    assert world.b_call not in text and OTHER_KEY not in text and B_ROOM not in text


def test_b_callout_into_a_conference_never_joins_it(world: World) -> None:
    """B may place a call, but a call of B's put in A's room is ended before it joins."""
    callee, uri = answerer()
    try:
        call_id = conference_callout(
            world.server, {"type": "sip", "endpoint": uri}, ROOM, key=OTHER_KEY, secret=OTHER_SECRET
        )
        callee.wait_for(r"event=answered", timeout=DEADLINE)
        callee.wait_for(r"event=ended", timeout=DEADLINE)
        until(
            world.server, lambda: (world.server.server.store.get_call(call_id) or {}).get("status") == "FINAL"
        )
    finally:
        callee.stop()
    status, call = signed(
        world.server, "GET", f"/calling/v1/calls/id/{call_id}", key=OTHER_KEY, secret=OTHER_SECRET
    )
    assert status == 200 and call["status"] == "FINAL" and call["result"] != "N/A", call
    status, listed = records(world, f"?conferenceId={ROOM}", OTHER_KEY, OTHER_SECRET)
    assert status == 200, listed
    (record,) = [c for c in listed if c["callId"] == call_id]
    assert record["conferences"] == [], record  # never in any room
    assert [c["callId"] for c in listed] == [call_id]  # and none of A's calls in ROOM
    # A cannot see B's call either: isolation runs both ways.
    status, answer = signed(world.server, "GET", f"/calling/v1/calls/id/{call_id}")
    assert status == 404 and answer["errorCode"] == 40400, answer
    assert a_state(world) == expected_a_state(world)


def test_a_is_untouched_and_still_in_control(world: World) -> None:
    """After every attempt of B's: A's call is up, in its room, unmuted, with its settings; and A itself can
    still act on it (an options change whose event, once seen, follows anything B's attempts set off)."""
    status, _ = signed(
        world.server,
        "PATCH",
        f"/calling/v1/conferences/id/{ROOM}/{world.live}",
        {"conferenceDtmfOptions": DTMF},
    )
    assert status == 200
    world.a_stream.wait(of_type("options_changed", callId=world.live, mode="detect"))
    assert a_state(world) == expected_a_state(world)
    # Since the setup, A's call had only A's own change: nothing B tried left a trace in its room.
    since = [e["type"] for e in world.a_stream.snapshot()[world.baseline :] if e.get("callId") == world.live]
    assert since == ["options_changed"], since
    assert not world.a_caller.matches(r"event=ended")
    assert world.backend.events("dice", world.live) == []
    assert world.backend.bad_signatures == 0
