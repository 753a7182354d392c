"""The calling API's routes over Starlette's TestClient, against a fake application: authentication, request
validation as Sinch error bodies, domain errors mapped to 404 (or 400), ids decoded once, the body limit, and
which application method each route calls with which typed arguments."""

from __future__ import annotations

import base64
import hashlib
import hmac
import inspect
import json
import warnings
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace
from typing import Any, cast
from urllib.parse import unquote

import pytest
from starlette.exceptions import StarletteDeprecationWarning
from starlette.types import ASGIApp, Receive, Scope, Send

with warnings.catch_warnings():
    # Starlette would rather run its test client on httpx2; httpx, which the project already uses, still works.
    warnings.simplefilter("ignore", StarletteDeprecationWarning)
    from starlette.testclient import TestClient

from tonebridge.api.app import create_app
from tonebridge.api.calling import CallingApplication
from tonebridge.api.limits import MAX_BODY
from tonebridge.calls.errors import (
    CallNotFound,
    CallNotLive,
    ConferenceNotFound,
    NotAParticipant,
    NumberTaken,
)
from tonebridge.calls.requests import (
    CallbackUrls,
    CallLeg,
    Callout,
    CalloutMethod,
    ParticipantCommand,
    ParticipantUpdate,
)
from tonebridge.calls.sinch_api import SinchOperations
from tonebridge.conference.options import DtmfMode, DtmfOptions
from tonebridge.svaml.models import SvamlError, parse_svaml

KEY = "0b4a5d6e-1111-4c2a-9f00-7d1e2f3a4b5c"
SECRET = base64.b64encode(b"sixteen byte key").decode()


class FakeApplication:
    """Records each call; raises `error` instead of answering when one is set."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, tuple[Any, ...]]] = []
        self.error: Exception | None = None

    def _called(self, name: str, *args: Any) -> None:
        self.calls.append((name, args))
        if self.error is not None:
            raise self.error

    def secret_for(self, key: str) -> str | None:
        return SECRET if key == KEY else None

    async def callout(self, key: str, callout: Callout) -> str:
        self._called("callout", key, callout)
        return "c1"

    def call_info(self, key: str, call_id: str) -> dict[str, Any]:
        self._called("call_info", key, call_id)
        return {"callId": call_id, "status": "ONGOING"}

    async def update_call(self, key: str, call_id: str, svaml: Any, leg: CallLeg | None) -> None:
        self._called("update_call", key, call_id, svaml, leg)

    def conference_participants(self, key: str, conference_id: str) -> list[dict[str, Any]]:
        self._called("conference_participants", key, conference_id)
        return [{"cli": "+1555", "id": "c1", "duration": 3, "muted": False, "onhold": False}]

    def kick_all(self, key: str, conference_id: str) -> None:
        self._called("kick_all", key, conference_id)

    def kick_participant(self, key: str, conference_id: str, call_id: str) -> None:
        self._called("kick_participant", key, conference_id, call_id)

    def manage_participant(
        self, key: str, conference_id: str, call_id: str, update: ParticipantUpdate
    ) -> None:
        self._called("manage_participant", key, conference_id, call_id, update)

    def list_numbers(self, key: str) -> list[dict[str, str]]:
        self._called("list_numbers", key)
        return [{"number": "+15550001", "applicationkey": key, "capability": "voice"}]

    def assign_numbers(self, key: str, numbers: list[str]) -> None:
        self._called("assign_numbers", key, numbers)

    def unassign_number(self, key: str, number: str) -> None:
        self._called("unassign_number", key, number)

    def callback_urls(self, key: str) -> dict[str, str]:
        self._called("callback_urls", key)
        return {"primary": "https://app.example/cb", "fallback": ""}

    def set_callback_urls(self, key: str, urls: CallbackUrls) -> None:
        self._called("set_callback_urls", key, urls)

    def query_number(self, number: str) -> dict[str, Any]:
        self._called("query_number", number)
        return {"normalizedNumber": number}


def decoded_once(app: ASGIApp) -> ASGIApp:
    """The path as uvicorn gives it, the raw path decoded once: the test client decodes it twice (`%2541`
    would reach the app as `A`, not `%41`)."""

    async def app_with_path_decoded_once(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            scope = {**scope, "path": unquote(scope["raw_path"].decode("ascii"))}
        await app(scope, receive, send)

    return app_with_path_decoded_once


@pytest.fixture
def fake() -> FakeApplication:
    return FakeApplication()


@pytest.fixture
def client(fake: FakeApplication) -> Iterator[TestClient]:
    # The real app (middleware, error handlers, routes) around the fake; a stand-in server, since only the
    # calling routes are asked for.
    app = create_app(cast(Any, SimpleNamespace(sinch_api=fake, forwarder=None)))
    with TestClient(decoded_once(app), raise_server_exceptions=False) as test_client:
        yield test_client


def signed_headers(
    method: str,
    path: str,
    data: bytes,
    *,
    secret: str = SECRET,
    key: str = KEY,
    at: datetime | None = None,
    content_type: str = "application/json",
) -> dict[str, str]:
    """Sinch request signing, written out again here so that the test does not lean on the code it tests."""
    timestamp = (at or datetime.now(UTC)).strftime("%Y-%m-%dT%H:%M:%SZ")
    md5 = base64.b64encode(hashlib.md5(data).digest()).decode() if data else ""
    text = f"{method}\n{md5}\n{content_type}\nx-timestamp:{timestamp}\n{path}"
    sig = base64.b64encode(
        hmac.new(base64.b64decode(secret), text.encode(), hashlib.sha256).digest()
    ).decode()
    return {
        "Authorization": f"Application {key}:{sig}",
        "x-timestamp": timestamp,
        "Content-Type": content_type,
    }


def send(
    client: TestClient,
    method: str,
    path: str,
    body: Any = None,
    *,
    raw: bytes | None = None,
    headers: dict[str, str] | None = None,
) -> tuple[int, Any]:
    data = raw if raw is not None else (b"" if body is None else json.dumps(body).encode())
    reply = client.request(
        method, path, content=data, headers=signed_headers(method, path, data) if headers is None else headers
    )
    return reply.status_code, reply.json() if reply.content else None


def assert_error(reply: tuple[int, Any], status: int, code: int, *words: str) -> None:
    got_status, body = reply
    assert got_status == status and body["errorCode"] == code and body["reference"], body
    for word in words:
        assert word in body["message"], (word, body)


CONFERENCE_CALLOUT = {
    "method": "conferenceCallout",
    "conferenceCallout": {
        "destination": {"type": "number", "endpoint": "+15550002"},
        "conferenceId": "room",
        "cli": "+15550001",
        "conferenceDtmfOptions": {"mode": "detect", "maxDigits": 4},
        "enableDice": True,
        "custom": "x",
    },
}


# -- authentication --------------------------------------------------------------------------------------


def test_a_signed_request_is_the_application_the_key_names(client: TestClient, fake: FakeApplication) -> None:
    status, body = send(client, "GET", "/calling/v1/calls/id/c1")
    assert status == 200 and body == {"callId": "c1", "status": "ONGOING"}
    assert fake.calls == [("call_info", (KEY, "c1"))]


def test_basic_credentials_are_accepted(client: TestClient, fake: FakeApplication) -> None:
    basic = base64.b64encode(f"{KEY}:{SECRET}".encode()).decode()
    status, _ = send(client, "GET", "/v1/configuration/numbers", headers={"Authorization": f"Basic {basic}"})
    assert status == 200 and fake.calls == [("list_numbers", (KEY,))]


@pytest.mark.parametrize(
    ("headers", "code"),
    [
        ({}, 40100),
        ({"Authorization": "Bearer token"}, 40100),
        ({"Authorization": "Basic " + base64.b64encode(f"{KEY}:wrong".encode()).decode()}, 40108),
        (signed_headers("GET", "/calling/v1/calls/id/c1", b"", key="someone-else"), 40108),
        (signed_headers("GET", "/calling/v1/calls/id/other", b""), 40102),  # signed for another path
        (
            signed_headers(
                "GET", "/calling/v1/calls/id/c1", b"", secret=base64.b64encode(b"x" * 16).decode()
            ),
            40102,
        ),
        (
            signed_headers("GET", "/calling/v1/calls/id/c1", b"", at=datetime.now(UTC) - timedelta(hours=1)),
            40101,
        ),
    ],
)
def test_unauthenticated_requests_get_401_and_reach_nothing(
    client: TestClient, fake: FakeApplication, headers: dict[str, str], code: int
) -> None:
    assert_error(send(client, "GET", "/calling/v1/calls/id/c1", headers=headers), 401, code)
    assert fake.calls == []


# -- validation ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "path", "body", "code", "words"),
    [
        ("POST", "/calling/v1/callouts", {}, 40002, ("method",)),
        ("POST", "/calling/v1/callouts", {"method": "videoCallout"}, 40001, ("method",)),
        ("POST", "/calling/v1/callouts", {"method": "ttsCallout"}, 40002, ("ttsCallout",)),
        ("POST", "/calling/v1/callouts", {"method": "ttsCallout", "ttsCallout": []}, 40001, ("ttsCallout",)),
        (
            "POST",
            "/calling/v1/callouts",
            {"method": "conferenceCallout", "conferenceCallout": {"conferenceId": "r"}},
            40002,
            ("conferenceCallout.destination",),
        ),
        (
            "POST",
            "/calling/v1/callouts",
            {
                "method": "conferenceCallout",
                "conferenceCallout": {
                    "destination": {"type": "number", "endpoint": "1"},
                    "conferenceId": "r",
                    "conferenceDtmfOptions": {"mode": "shout"},
                },
            },
            40001,
            ("conferenceCallout.conferenceDtmfOptions.mode",),
        ),
        (
            "POST",
            "/calling/v1/callouts",
            {
                "method": "conferenceCallout",
                "conferenceCallout": {
                    "destination": {"type": "number", "endpoint": "1"},
                    "conferenceId": "r",
                    "conferenceDtmfOptions": {"maxDigits": 99},
                },
            },
            40001,
            ("maxDigits",),
        ),
        (
            "POST",
            "/calling/v1/callouts",
            {
                "method": "ttsCallout",
                "ttsCallout": {
                    "destination": {"type": "number", "endpoint": "1"},
                    "text": "hi",
                    "dtmf": "12x",
                },
            },
            40001,
            ("ttsCallout.dtmf",),
        ),
        (
            "POST",
            "/calling/v1/callouts",
            {
                "method": "ttsCallout",
                "ttsCallout": {"destination": {"type": "fax", "endpoint": "1"}, "text": "hi"},
            },
            40001,
            ("destination.type",),
        ),
        (
            "POST",
            "/calling/v1/callouts",
            {
                "method": "customCallout",
                "customCallout": {"destination": {"type": "number", "endpoint": "1"}, "enableAce": "yes"},
            },
            40001,
            ("enableAce",),
        ),
        ("PATCH", "/calling/v1/calls/id/c1", {"action": {"name": "dance"}}, 40001, ("action",)),
        ("PATCH", "/calling/v1/calls/id/c1/leg/nobody", {"action": {"name": "hangup"}}, 40001, ("callLeg",)),
        ("PATCH", "/calling/v1/conferences/id/room/c1", {}, 40002, ("command",)),
        ("PATCH", "/calling/v1/conferences/id/room/c1", {"command": "shout"}, 40001, ("command",)),
        (
            "PATCH",
            "/calling/v1/conferences/id/room/c1",
            {"command": "onhold", "moh": "jazz"},
            40001,
            ("moh",),
        ),
        (
            "PATCH",
            "/calling/v1/conferences/id/room/c1",
            {"conferenceDtmfOptions": {"mode": "x"}},
            40001,
            ("conferenceDtmfOptions.mode",),
        ),
        ("POST", "/v1/configuration/numbers", {}, 40002, ("numbers",)),
        ("POST", "/v1/configuration/numbers", {"numbers": [5]}, 40001, ("numbers",)),
        ("DELETE", "/v1/configuration/numbers", {"number": ""}, 40001, ("number",)),
        ("POST", f"/v1/configuration/callbacks/applications/{KEY}", {}, 40002, ("url",)),
        (
            "POST",
            f"/v1/configuration/callbacks/applications/{KEY}",
            {"url": {"primary": "ftp://x"}},
            40001,
            ("url.primary",),
        ),
    ],
)
def test_invalid_requests_are_sinch_400s_that_reach_nothing(
    client: TestClient,
    fake: FakeApplication,
    method: str,
    path: str,
    body: Any,
    code: int,
    words: tuple[str, ...],
) -> None:
    assert_error(send(client, method, path, body), 400, code, *words)
    assert fake.calls == []


@pytest.mark.parametrize(
    ("raw", "words"),
    [
        (b"{not json", ("JSON",)),
        (b"[1, 2]", ("JSON object",)),
        (b"", ("JSON object",)),
        (b'{"a":' * 70 + b"1" + b"}" * 70, ("nested",)),
    ],
)
def test_bodies_that_are_no_json_object_are_40003(
    client: TestClient, fake: FakeApplication, raw: bytes, words: tuple[str, ...]
) -> None:
    assert_error(send(client, "POST", "/calling/v1/callouts", raw=raw), 400, 40003, *words)
    assert fake.calls == []


def test_an_oversize_body_is_413_before_authentication(client: TestClient, fake: FakeApplication) -> None:
    data = b" " * (MAX_BODY + 1)
    status, body = send(client, "POST", "/calling/v1/callouts", raw=data)
    assert status == 413 and body["errorCode"] == 41300 and str(MAX_BODY) in body["message"]
    assert fake.calls == []


# -- each route, its method and typed arguments ----------------------------------------------------------


HANGUP = {"action": {"name": "hangup"}}

ROUTES = [
    (
        "POST",
        "/calling/v1/callouts",
        CONFERENCE_CALLOUT,
        "callout",
        (
            KEY,
            Callout(
                CalloutMethod.CONFERENCE,
                {"type": "number", "endpoint": "+15550002"},
                cli="+15550001",
                custom="x",
                enable_dice=True,
                conference_id="room",
                dtmf_options=DtmfOptions(DtmfMode.DETECT, max_digits=4),
            ),
        ),
        {"callId": "c1"},
    ),
    (
        "POST",
        "/calling/v1/callouts",
        {
            "method": "ttsCallout",
            "cli": "+15550009",
            "ttsCallout": {
                "destination": {"type": "SIP", "endpoint": "bob@example.com"},
                "text": "hello",
                "dtmf": "1w2",
                "locale": "en-GB",
                "domain": "MXP",
            },
        },
        "callout",
        (
            KEY,
            Callout(
                CalloutMethod.TTS,
                {"type": "sip", "endpoint": "bob@example.com"},
                cli="+15550009",
                text="hello",
                dtmf="1w2",
                locale="en-GB",
                domain="mxp",
            ),
        ),
        {"callId": "c1"},
    ),
    (
        "POST",
        "/calling/v1/callouts",
        {
            "method": "customCallout",
            "customCallout": {
                "destination": {"type": "username", "endpoint": "alice"},
                "ice": HANGUP,
                "ace": "https://app/ace",
                "maxDuration": 60,
                "enableAce": True,
            },
        },
        "callout",
        (
            KEY,
            Callout(
                CalloutMethod.CUSTOM,
                {"type": "username", "endpoint": "alice"},
                max_duration=60,
                enable_ace=True,
                custom_svaml={"ice": json.dumps(HANGUP), "ace": "https://app/ace"},
            ),
        ),
        {"callId": "c1"},
    ),
    ("GET", "/calling/v1/calls/id/c1", None, "call_info", (KEY, "c1"), {"callId": "c1", "status": "ONGOING"}),
    ("PATCH", "/calling/v1/calls/id/c1", HANGUP, "update_call", (KEY, "c1", parse_svaml(HANGUP), None), None),
    (
        "PATCH",
        "/calling/v1/calls/id/c1/leg/callee",
        HANGUP,
        "update_call",
        (KEY, "c1", parse_svaml(HANGUP), CallLeg.CALLEE),
        None,
    ),
    (
        "GET",
        "/calling/v1/conferences/id/room",
        None,
        "conference_participants",
        (KEY, "room"),
        {"participants": [{"cli": "+1555", "id": "c1", "duration": 3, "muted": False, "onhold": False}]},
    ),
    ("DELETE", "/calling/v1/conferences/id/room", None, "kick_all", (KEY, "room"), None),
    (
        "PATCH",
        "/calling/v1/conferences/id/room/c1",
        {"command": "onhold", "moh": "music2"},
        "manage_participant",
        (KEY, "room", "c1", ParticipantUpdate(ParticipantCommand.ONHOLD, None, "music2")),
        None,
    ),
    (
        "PATCH",
        "/calling/v1/conferences/id/room/c1",
        {"conferenceDtmfOptions": {"mode": "forward"}},
        "manage_participant",
        (KEY, "room", "c1", ParticipantUpdate(None, DtmfOptions(DtmfMode.FORWARD))),
        None,
    ),
    ("DELETE", "/calling/v1/conferences/id/room/c1", None, "kick_participant", (KEY, "room", "c1"), None),
    (
        "GET",
        "/v1/configuration/numbers",
        None,
        "list_numbers",
        (KEY,),
        {"numbers": [{"number": "+15550001", "applicationkey": KEY, "capability": "voice"}]},
    ),
    (
        "POST",
        "/v1/configuration/numbers",
        {"numbers": ["+15550003"], "applicationkey": KEY},
        "assign_numbers",
        (KEY, ["+15550003"]),
        None,
    ),
    (
        "DELETE",
        "/v1/configuration/numbers",
        {"number": "+15550003"},
        "unassign_number",
        (KEY, "+15550003"),
        None,
    ),
    (
        "GET",
        f"/v1/configuration/callbacks/applications/{KEY}",
        None,
        "callback_urls",
        (KEY,),
        {"url": {"primary": "https://app.example/cb", "fallback": ""}},
    ),
    (
        "POST",
        f"/v1/configuration/callbacks/applications/{KEY}",
        {"url": {"primary": "https://a/cb", "fallback": None}},
        "set_callback_urls",
        (KEY, CallbackUrls(primary="https://a/cb", fallback="")),
        None,
    ),
    (
        "POST",
        f"/v1/configuration/callbacks/applications/{KEY}",
        {"url": {"fallback": "http://b/cb"}},
        "set_callback_urls",
        (KEY, CallbackUrls(fallback="http://b/cb")),
        None,
    ),
    (
        "GET",
        "/v1/calling/query/number/+15550004",
        None,
        "query_number",
        ("+15550004",),
        {"number": {"normalizedNumber": "+15550004"}},
    ),
]


@pytest.mark.parametrize(
    ("method", "path", "body", "name", "args", "answer"),
    ROUTES,
    ids=[f"{r[0]} {r[1]} {r[3]}" for r in ROUTES],
)
def test_each_route_calls_its_method_with_typed_arguments(
    client: TestClient,
    fake: FakeApplication,
    method: str,
    path: str,
    body: Any,
    name: str,
    args: tuple[Any, ...],
    answer: Any,
) -> None:
    assert send(client, method, path, body) == (200, answer)
    assert fake.calls == [(name, args)]


# -- domain errors -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("error", "method", "path", "body", "status", "code", "message"),
    [
        (
            CallNotFound("c9"),
            "GET",
            "/calling/v1/calls/id/c9",
            None,
            404,
            40400,
            "callId: call 'c9' not found",
        ),
        (
            CallNotLive("c9"),
            "PATCH",
            "/calling/v1/calls/id/c9",
            HANGUP,
            404,
            40400,
            "callId: call 'c9' not found or ended",
        ),
        (
            ConferenceNotFound("r9"),
            "GET",
            "/calling/v1/conferences/id/r9",
            None,
            404,
            40400,
            "conferenceId: conference 'r9' not found",
        ),
        (
            NotAParticipant("c9", "room"),
            "DELETE",
            "/calling/v1/conferences/id/room/c9",
            None,
            404,
            40400,
            "callId: 'c9' is not in conference 'room'",
        ),
        (
            NumberTaken("+15550005"),
            "POST",
            "/v1/configuration/numbers",
            {"numbers": ["+15550005"]},
            400,
            40001,
            "numbers: +15550005 belongs to another application",
        ),
        (
            SvamlError("action.name", "connectConf cannot update a live call"),
            "PATCH",
            "/calling/v1/calls/id/c1",
            HANGUP,
            400,
            40001,
            "action.name: connectConf cannot update a live call",
        ),
    ],
)
def test_domain_errors_map_to_sinch_error_bodies(
    client: TestClient,
    fake: FakeApplication,
    error: Exception,
    method: str,
    path: str,
    body: Any,
    status: int,
    code: int,
    message: str,
) -> None:
    fake.error = error
    reply = send(client, method, path, body)
    assert_error(reply, status, code)
    assert reply[1]["message"] == message


def test_another_applications_key_is_404(client: TestClient, fake: FakeApplication) -> None:
    other = "ffffffff-0000-0000-0000-000000000000"
    assert_error(
        send(client, "GET", f"/v1/configuration/callbacks/applications/{other}"),
        404,
        40400,
        f"applicationkey: no application '{other}' for these credentials",
    )
    assert_error(
        send(client, "POST", "/v1/configuration/numbers", {"numbers": ["+1"], "applicationKey": other}),
        404,
        40400,
        "applicationkey",
    )
    assert fake.calls == []


def test_an_unexpected_failure_is_a_500_body_with_a_reference(
    client: TestClient, fake: FakeApplication
) -> None:
    fake.error = RuntimeError("boom")
    status, body = send(client, "GET", "/calling/v1/calls/id/c1")
    assert (
        status == 500 and body["errorCode"] == 50000 and body["reference"] and "boom" not in body["message"]
    )


# -- ids in paths ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "args"),
    [
        ("/calling/v1/conferences/id/c7%2F1", (KEY, "c7/1")),
        ("/calling/v1/conferences/id/c7%2f1", (KEY, "c7/1")),
        ("/calling/v1/conferences/id/c7%2541", (KEY, "c7%41")),
        ("/calling/v1/conferences/id/c7%252F1", (KEY, "c7%2F1")),  # decoded once, not twice
        ("/calling/v1/conferences/id/my%23conf", (KEY, "my#conf")),
    ],
)
def test_conference_ids_are_percent_decoded_once(
    client: TestClient, fake: FakeApplication, path: str, args: tuple[str, str]
) -> None:
    status, _ = send(client, "GET", path)
    assert status == 200 and fake.calls == [("conference_participants", args)]


def test_participant_routes_decode_both_ids_once(client: TestClient, fake: FakeApplication) -> None:
    status, _ = send(client, "PATCH", "/calling/v1/conferences/id/c7%2F1/a%2Fb%2541", {"command": "mute"})
    assert status == 200
    assert fake.calls == [
        ("manage_participant", (KEY, "c7/1", "a/b%41", ParticipantUpdate(ParticipantCommand.MUTE)))
    ]
    fake.calls.clear()
    status, _ = send(client, "DELETE", "/calling/v1/calls/id/c7%2F1")
    assert status == 405 and fake.calls == []


def test_call_ids_are_percent_decoded_once(client: TestClient, fake: FakeApplication) -> None:
    status, _ = send(client, "GET", "/calling/v1/calls/id/c7%2F1")
    assert status == 200 and fake.calls == [("call_info", (KEY, "c7/1"))]


# -- the interface ---------------------------------------------------------------------------------------


def _methods(protocol: type) -> dict[str, inspect.Signature]:
    return {
        name: inspect.signature(member)
        for name, member in vars(protocol).items()
        if inspect.isfunction(member) and not name.startswith("_")
    }


@pytest.mark.parametrize("implementation", [SinchOperations, FakeApplication])
def test_the_application_and_the_fake_both_satisfy_the_interface(implementation: type) -> None:
    for name, wanted in _methods(CallingApplication).items():
        member = getattr(implementation, name, None)
        assert member is not None, f"{implementation.__name__} lacks {name}"
        got = inspect.signature(member)
        assert list(got.parameters) == list(wanted.parameters), (name, got, wanted)
        assert inspect.iscoroutinefunction(member) == inspect.iscoroutinefunction(
            getattr(CallingApplication, name)
        ), name
