"""Console access (api/access.py): password hashes that name their own cost, operator and application logins,
sessions that expire, CSRF tokens on every action, the cookie's flags; the console routes over Starlette's
TestClient; and the media clock's level snapshot the console reads."""

from __future__ import annotations

import asyncio
import warnings
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
from starlette.exceptions import StarletteDeprecationWarning
from starlette.requests import Request

with warnings.catch_warnings():
    warnings.simplefilter("ignore", StarletteDeprecationWarning)
    from starlette.testclient import TestClient

from tonebridge.api.access import (
    COOKIE,
    ConsoleAccess,
    Refused,
    Viewer,
    acting_viewer,
    hash_password,
    parse_password_hash,
    same_origin,
    session_cookie,
    verify_password,
)
from tonebridge.config import parse_config
from tonebridge.media.clock import SILENCE_DBFS, MediaClock

FAST = {"n": 2**10, "r": 8, "p": 1}
APP_KEY, APP_SECRET = "app-1", "c2VjcmV0"


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def make_access(clock: FakeClock | None = None) -> ConsoleAccess:
    return ConsoleAccess(
        {"ops": hash_password("pw", **FAST)},
        {APP_KEY: APP_SECRET}.get,
        lambda conference_id, call_id: APP_KEY if conference_id == "room" else None,
        lifetime=60.0,
        clock=clock or FakeClock(),
    )


def request(
    method: str = "GET", cookie: str | None = None, csrf: str | None = None, **headers: str
) -> Request:
    raw = [(k.replace("_", "-").encode(), v.encode()) for k, v in headers.items()]
    if cookie is not None:
        raw.append((b"cookie", f"{COOKIE}={cookie}".encode()))
    if csrf is not None:
        raw.append((b"x-csrf-token", csrf.encode()))
    scope: dict[str, Any] = {
        "type": "http",
        "method": method,
        "scheme": "http",
        "path": "/x",
        "query_string": b"",
        "headers": raw,
        "server": ("127.0.0.1", 8080),
    }
    return Request(scope)


# Password hashes -------------------------------------------------------------------------------------------


def test_a_hash_verifies_its_password_only_and_names_its_cost() -> None:
    stored = hash_password("correct horse", **FAST)
    assert stored.startswith("scrypt$n=1024,r=8,p=1$")
    assert verify_password("correct horse", stored)
    assert not verify_password("correct horsE", stored)
    assert hash_password("correct horse", **FAST) != stored  # salted


def test_the_default_cost_verifies_too() -> None:
    stored = hash_password("pw")
    assert parse_password_hash(stored).n == 2**14 and verify_password("pw", stored)


@pytest.mark.parametrize(
    "text",
    [
        "",
        "plain-password",
        "bcrypt$x$y$z",
        "scrypt$n=1000,r=8,p=1$AAAAAAAAAAAAAAAAAAAAAA==$AAAAAAAAAAAAAAAAAAAAAA==",  # n not a power of two
        "scrypt$n=1024,r=8$AAAAAAAAAAAAAAAAAAAAAA==$AAAAAAAAAAAAAAAAAAAAAA==",  # p missing
        "scrypt$n=1024,r=8,p=1$not base64!$AAAAAAAAAAAAAAAAAAAAAA==",
        "scrypt$n=1024,r=8,p=1$AAAA$AAAAAAAAAAAAAAAAAAAAAA==",  # salt too short
        "scrypt$n=4194304,r=8,p=1$AAAAAAAAAAAAAAAAAAAAAA==$AAAAAAAAAAAAAAAAAAAAAA==",  # memory past the limit
    ],
)
def test_malformed_hashes_are_refused_and_never_verify(text: str) -> None:
    with pytest.raises(ValueError):
        parse_password_hash(text)
    assert not verify_password("anything", text)


# Logins and sessions ---------------------------------------------------------------------------------------


def test_operators_log_in_with_their_password_applications_with_key_and_secret() -> None:
    access = make_access()
    assert access.check_login("ops", "pw") == Viewer("ops")
    assert access.check_login("ops", "wrong") is None
    assert access.check_login(APP_KEY, APP_SECRET) == Viewer(APP_KEY, app_key=APP_KEY)
    assert access.check_login(APP_KEY, APP_SECRET + "x") is None
    assert access.check_login("nobody", "pw") is None
    assert access.check_login("", "") is None


def test_viewers_see_all_rooms_or_their_applications_only() -> None:
    assert Viewer("ops").sees("any") and Viewer("ops").sees(None)
    assert Viewer("a", "a").sees("a") and not Viewer("a", "a").sees("b") and not Viewer("a", "a").sees(None)


def test_sessions_have_random_tokens_and_expire() -> None:
    clock = FakeClock()
    access = make_access(clock)
    first, second = access.open(Viewer("ops")), access.open(Viewer("ops"))
    assert len({first.token, second.token, first.csrf, second.csrf}) == 4
    assert len(first.token) >= 40
    assert access.find(first.token) is first
    access.close(second.token)
    assert access.find(second.token) is None
    clock.now += 59.9
    assert access.find(first.token) is first
    clock.now += 0.2
    assert access.find(first.token) is None and len(access) == 0
    assert access.find(None) is None and access.find("made-up") is None


def test_expired_sessions_are_dropped_when_others_open() -> None:
    clock = FakeClock()
    access = make_access(clock)
    access.open(Viewer("ops"))
    clock.now += 61
    access.open(Viewer("ops"))
    assert len(access) == 1


def test_reads_need_a_session_actions_also_its_csrf_token() -> None:
    access = make_access()
    session = access.open(Viewer("ops"))
    assert acting_viewer(request("GET", session.token), access) == Viewer("ops")
    assert acting_viewer(request("PATCH", session.token, session.csrf), access) == Viewer("ops")
    for refused, status in [
        (request("PATCH"), 401),
        (request("GET", "forged"), 401),
        (request("PATCH", "forged", session.csrf), 401),
        (request("PATCH", session.token), 403),
        (request("DELETE", session.token, ""), 403),
        (request("POST", session.token, session.csrf + "x"), 403),
        (request("PATCH", session.token, make_access().open(Viewer("ops")).csrf), 403),
    ]:
        with pytest.raises(Refused) as caught:
            acting_viewer(refused, access)
        assert caught.value.status == status


def test_login_posts_must_come_from_this_server() -> None:
    assert same_origin(request("POST", host="127.0.0.1:8080", origin="http://127.0.0.1:8080"))
    assert same_origin(request("POST", host="127.0.0.1:8080", referer="http://127.0.0.1:8080/console"))
    assert not same_origin(request("POST", host="127.0.0.1:8080", origin="http://evil.example"))
    assert not same_origin(request("POST", host="127.0.0.1:8080", origin="https://127.0.0.1:8080"))
    assert not same_origin(request("POST", host="127.0.0.1:8080", origin="null"))
    assert not same_origin(request("POST", host="127.0.0.1:8080"))


def test_the_cookie_is_http_only_same_site_strict_and_secure_over_https() -> None:
    plain = session_cookie(request(), "tok", 60)
    assert plain == f"{COOKIE}=tok; Max-Age=60; Path=/; HttpOnly; SameSite=Strict"
    scope = request().scope | {"scheme": "https"}
    assert session_cookie(Request(scope), "tok", 60).endswith("; Secure")


# Configuration ---------------------------------------------------------------------------------------------


def test_operators_are_configured_with_a_password_hash() -> None:
    stored = hash_password("pw", **FAST)
    config = parse_config(f'[[operators]]\nname = "night"\npassword_hash = "{stored}"\n')
    assert config.operators[0].name == "night" and config.operators[0].password_hash == stored


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('[[operators]]\nname = "night"\npassword_hash = "hunter2"\n', "operators[0].password_hash"),
        ('[[operators]]\nname = "night"\n', "operators[0].password_hash"),
        ('[[operators]]\nname = "has space"\npassword_hash = "{h}"\n', "operators[0].name"),
        (
            '[[operators]]\nname = "a"\npassword_hash = "{h}"\n\n[[operators]]\nname = "a"\npassword_hash = "{h}"\n',
            "unique",
        ),
        (
            '[[applications]]\nkey = "k"\nsecret = "c2VjcmV0"\n\n[[operators]]\nname = "k"\npassword_hash = "{h}"\n',
            "also an application key",
        ),
        ('[[operators]]\nname = "a"\npassword_hash = "{h}"\nrole = "admin"\n', "unknown key 'role'"),
    ],
)
def test_bad_operators_are_config_errors(text: str, message: str) -> None:
    from tonebridge.config import ConfigError

    with pytest.raises(ConfigError) as caught:
        parse_config(text.replace("{h}", hash_password("pw", **FAST)))
    assert message in str(caught.value)


def test_a_bad_hash_names_its_line() -> None:
    from tonebridge.config import ConfigError

    with pytest.raises(ConfigError) as caught:
        parse_config('\n[[operators]]\nname = "night"\npassword_hash = "hunter2"\n')
    assert "operators[0].password_hash (line 4)" in str(caught.value)


# The console's routes --------------------------------------------------------------------------------------


@pytest.fixture
def console() -> TestClient:
    from tonebridge.api.app import create_app
    from tonebridge.server import Server

    config = parse_config(f'[[operators]]\nname = "ops"\npassword_hash = "{hash_password("pw", **FAST)}"\n')

    async def build() -> Server:
        return Server(config)  # demo mode: no applications, no calling routes

    server = asyncio.run(build())
    return TestClient(create_app(server), base_url="http://127.0.0.1:8080")


ORIGIN = {"Origin": "http://127.0.0.1:8080"}


def test_without_a_session_the_console_is_a_login_page_and_its_api_401(console: TestClient) -> None:
    page = console.get("/console")
    assert (
        page.status_code == 200 and 'action="/console/login"' in page.text and "csrf-token" not in page.text
    )
    assert "frame-ancestors 'none'" in page.headers["content-security-policy"]
    assert console.get("/console/console.css").status_code == 200  # the login page's own style
    for path in ("/console/console.js", "/tonebridge/v1/console/state", "/tonebridge/v1/console/callbacks"):
        reply = console.get(path)
        assert reply.status_code == 401 and reply.json()["errorCode"] == 40100


def test_login_logout_and_the_state_of_a_session(console: TestClient) -> None:
    wrong = console.post("/console/login", data={"name": "ops", "password": "no"}, headers=ORIGIN)
    assert (
        wrong.status_code == 401 and "Wrong name or password" in wrong.text and COOKIE not in console.cookies
    )
    cross = console.post(
        "/console/login", data={"name": "ops", "password": "pw"}, headers={"Origin": "http://x"}
    )
    assert cross.status_code == 403 and COOKIE not in console.cookies
    done = console.post(
        "/console/login", data={"name": "ops", "password": "pw"}, headers=ORIGIN, follow_redirects=False
    )
    assert done.status_code == 303 and done.headers["location"] == "/console"
    assert "HttpOnly" in done.headers["set-cookie"] and "SameSite=Strict" in done.headers["set-cookie"]
    page = console.get("/console").text
    assert "operator ops" in page
    csrf = page.split('name="csrf-token" content="', 1)[1].split('"', 1)[0]
    state = console.get("/tonebridge/v1/console/state").json()
    assert state["viewer"] == {"name": "ops", "operator": True} and state["rooms"] == []
    assert set(state["media"]["tickLatenessMs"]) == {"count", "sum", "max", "p99"}
    assert console.get("/tonebridge/v1/console/callbacks").json() == {"callbacks": []}
    assert console.post("/console/logout").status_code == 403
    assert console.post("/console/logout", headers={"X-CSRF-Token": csrf}).status_code == 204
    assert console.get("/tonebridge/v1/console/state").status_code == 401


# Levels --------------------------------------------------------------------------------------------------


def test_levels_are_each_open_legs_received_frame_in_dbfs() -> None:
    clock = MediaClock(capacity=4)
    received = np.zeros((3, 160), dtype=np.int16)
    t = np.arange(160) / 8000.0
    received[0] = np.round(32767 * np.sin(2 * np.pi * 1000 * t)).astype(np.int16)  # full-scale sine
    received[2] = np.round(3277 * np.sin(2 * np.pi * 1000 * t)).astype(np.int16)  # 20 dB below
    clock._by_row = {0: SimpleNamespace(call_id="loud"), 1: SimpleNamespace(call_id="silent")}  # type: ignore[dict-item]
    clock._by_row[2] = SimpleNamespace(call_id="quiet")  # type: ignore[assignment]
    before = clock.levels
    clock._measure_levels(received)
    assert clock.levels is not before  # replaced whole, for readers on another thread
    assert clock.levels["loud"] == pytest.approx(-3.0, abs=0.1)
    assert clock.levels["quiet"] == pytest.approx(-23.0, abs=0.1)
    assert clock.levels["silent"] == SILENCE_DBFS
    clock._by_row = {}
    clock._measure_levels(received)
    assert clock.levels == {}


def test_hash_password_prints_a_hash_of_the_line_on_stdin(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import io

    from tonebridge.cli import main

    monkeypatch.setattr("sys.stdin", io.StringIO("s3cret pass\n"))
    assert main(["hash-password"]) == 0
    printed = capsys.readouterr().out.strip()
    assert verify_password("s3cret pass", printed) and not verify_password("s3cret pass\n", printed)
    monkeypatch.setattr("sys.stdin", io.StringIO("\n"))
    assert main(["hash-password"]) == 1
