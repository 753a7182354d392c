"""The Sinch application without SIP or media: its applications registry, the typed per-call state (menu
presses, parking, bridge peers), and the domain errors its API operations raise. Engine, store, outbox and
conference service are small stand-ins with only what the application calls."""

from __future__ import annotations

import asyncio
import base64
from collections.abc import Coroutine
from types import SimpleNamespace
from typing import Any, cast

import pytest

from tonebridge.calls.applications import Applications, query_number
from tonebridge.calls.call import Call, Direction, EndReason
from tonebridge.calls.errors import (
    CallNotFound,
    CallNotLive,
    ConferenceNotFound,
    NotAParticipant,
    NumberTaken,
)
from tonebridge.calls.requests import (
    CallbackUrls,
    Callout,
    CalloutMethod,
    ParticipantCommand,
    ParticipantUpdate,
)
from tonebridge.calls.sinch import SinchApplication, SinchCall
from tonebridge.conference.options import DtmfMode, DtmfOptions
from tonebridge.config import ApplicationConfig
from tonebridge.media.endpoint import Press
from tonebridge.svaml.models import SvamlError, parse_svaml

SECRET = base64.b64encode(b"sixteen byte key").decode()
APPS = [ApplicationConfig(key="a", secret=SECRET, callback_url="https://a.example/cb", numbers=["+15550001"]),
        ApplicationConfig(key="b", secret=SECRET, numbers=["15550002"])]


class Engine:
    def __init__(self) -> None:
        self.sessions: dict[str, Any] = {}
        self.spawned: list[Coroutine[Any, Any, object]] = []
        self.hung_up: list[tuple[str, EndReason]] = []
        self.forgotten: list[str] = []

    def now(self) -> float:
        return 10.0

    def spawn(self, coro: Coroutine[Any, Any, object]) -> None:
        self.spawned.append(coro)

    def find(self, call_id: str) -> Any:
        return self.sessions.get(call_id)

    async def hangup(self, session: Any, reason: EndReason = EndReason.MANAGER_HANGUP) -> None:
        self.hung_up.append((session.call_id, reason))

    def forget(self, session: Any) -> None:
        self.forgotten.append(session.call_id)

    def run_spawned(self) -> None:
        while self.spawned:
            asyncio.run(self.spawned.pop(0))  # type: ignore[arg-type]


class Conferences:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.rooms: dict[str, set[str]] = {}
        self.done: list[tuple[Any, ...]] = []

    def on_press(self, session: Any, press: Press) -> None:
        self.done.append(("press", session.call_id, press.digit))

    def mute(self, call_id: str, conference_id: str) -> None:
        self.done.append(("mute", call_id, conference_id))

    def hold(self, call_id: str, moh: str | None, conference_id: str) -> None:
        self.done.append(("hold", call_id, moh, conference_id))

    def set_options(self, call_id: str, options: DtmfOptions, conference_id: str) -> None:
        self.done.append(("options", call_id, options, conference_id))


class Store:
    def __init__(self) -> None:
        self.rows: dict[str, dict[str, Any]] = {}

    def save_call(self, record: dict[str, Any]) -> None:
        self.rows.setdefault(record["call_id"], {}).update(record)

    def get_call(self, call_id: str) -> dict[str, Any] | None:
        return self.rows.get(call_id)


class Outbox:
    def __init__(self) -> None:
        self.sent: list[tuple[str, str, str, dict[str, Any]]] = []

    def enqueue(self, key: str, url: str, call_id: str, event: str, body: dict[str, Any], **_: object) -> None:
        self.sent.append((url, call_id, event, body))


@pytest.fixture
def parts() -> SimpleNamespace:
    engine = Engine()
    store, outbox, conferences = Store(), Outbox(), Conferences(engine)
    app = SinchApplication(cast(Any, SimpleNamespace(applications=APPS)), cast(Any, store), cast(Any, outbox),
                           clock=cast(Any, None))
    app.attach(cast(Any, engine), cast(Any, conferences))
    return SimpleNamespace(app=app, engine=engine, store=store, outbox=outbox, conferences=conferences)


def session(direction: Direction = Direction.INBOUND, *, answered: bool = True) -> Any:
    call = Call(direction, remote_uri="sip:x@example.com", local_uri="sip:tb@example.com", started_at=0.0,
                cli="+15559999")
    if answered:
        call.answered(1.0)
    return SimpleNamespace(call=call, call_id=call.call_id, incoming=None)


def end(s: Any, reason: EndReason = EndReason.CALLER_HANGUP) -> None:
    s.call.ended(12.0, reason)


# -- applications --------------------------------------------------------------------------------------------


def test_numbers_match_with_or_without_the_plus() -> None:
    apps = Applications(APPS)
    assert apps.owner_of_number("15550001").key == "a"  # type: ignore[union-attr]
    assert apps.owner_of_number("+15550002").key == "b"  # type: ignore[union-attr]
    assert apps.owner_of_number("+15550003") is None
    assert apps.secret_for("a") == SECRET and apps.secret_for("nobody") is None


def test_assigning_a_number_another_application_holds_assigns_none() -> None:
    apps = Applications(APPS)
    with pytest.raises(NumberTaken) as caught:
        apps.assign_numbers("a", ["+15550005", "+15550002"])
    assert caught.value.number == "+15550002"
    assert apps.list_numbers("a") == [{"number": "+15550001", "applicationkey": "a", "capability": "voice"}]
    apps.assign_numbers("a", ["+15550005", "+15550001"])
    apps.unassign_number("a", "+15550001")
    assert [n["number"] for n in apps.list_numbers("a")] == ["+15550005"]


def test_callback_urls_change_only_where_given() -> None:
    apps = Applications(APPS)
    apps.set_callback_urls("a", CallbackUrls(fallback="https://a.example/fallback"))
    assert apps.callback_urls("a") == {"primary": "https://a.example/cb", "fallback": "https://a.example/fallback"}
    apps.set_callback_urls("a", CallbackUrls(primary=""))
    assert apps.callback_urls("a") == {"primary": "", "fallback": "https://a.example/fallback"}


def test_query_number_normalises() -> None:
    assert query_number("+1 (555) 000-1")["normalizedNumber"] == "+15550001"
    assert query_number("alice")["normalizedNumber"] == "alice"


# -- per-call state ------------------------------------------------------------------------------------------


def test_a_callout_call_carries_its_plan() -> None:
    callout = Callout(CalloutMethod.CONFERENCE, {"type": "number", "endpoint": "+1"}, cli="+2", custom="c",
                      conference_id="room", enable_dice=True, dtmf_options=DtmfOptions(DtmfMode.DETECT))
    call = SinchCall.placed("a", callout)
    assert (call.method, call.conference_id, call.enable_dice, call.custom, call.callout) == \
        ("conferenceCallout", "room", True, "c", callout)
    call.cookies["k"] = "v"
    fields = call.fields("c1")
    assert (fields.call_id, fields.app_key, fields.conference_id, dict(fields.cookies)) == ("c1", "a", "room", {"k": "v"})


def test_presses_during_a_menu_go_to_the_menu_not_the_room(parts: SimpleNamespace) -> None:
    s = session()
    call = SinchCall.inbound("a", "+15550001", "+15559999")
    parts.app.calls[s.call_id] = call
    call.menu = cast(Any, object())
    call.menu_wake = asyncio.Event()
    parts.app.on_press(parts.engine, s, Press("5", "rfc4733", True, 0.0))
    parts.app.on_press(parts.engine, s, Press("5", "rfc4733", False, 0.1))  # a key's end is no new press
    assert call.menu_presses == ["5"] and call.menu_wake.is_set()
    call.menu = None
    parts.app.on_press(parts.engine, s, Press("7", "rfc4733", True, 1.0))
    # Not the menu's: the application leaves it alone (the conference service observes presses itself).
    assert call.menu_presses == ["5"] and parts.conferences.done == []


def test_either_end_of_a_bridge_ends_the_other(parts: SimpleNamespace) -> None:
    caller, far = session(Direction.INBOUND), session(Direction.OUTBOUND)
    call = SinchCall.inbound("a", "+15550001", "+15559999")
    parts.app.calls[caller.call_id] = call
    call.bridge_peer = far
    parts.app.far_legs[far.call_id] = caller

    end(far, EndReason.CALLEE_HANGUP)
    parts.app.on_ended(parts.engine, far)
    parts.engine.run_spawned()
    assert parts.engine.hung_up == [(caller.call_id, EndReason.CALLER_HANGUP)]
    assert parts.app.far_legs == {} and parts.engine.forgotten == [far.call_id]
    assert parts.outbox.sent == []  # the far leg is no call of the application: no DiCE of its own

    caller2, far2 = session(Direction.INBOUND), session(Direction.OUTBOUND)
    call2 = SinchCall.inbound("a", "+15550001", "+15559999")
    parts.app.calls[caller2.call_id] = call2
    call2.bridge_peer = far2
    parts.app.far_legs[far2.call_id] = caller2
    end(caller2)
    parts.app.on_ended(parts.engine, caller2)
    parts.engine.run_spawned()
    assert parts.engine.hung_up[-1] == (far2.call_id, EndReason.CALLEE_HANGUP)
    assert [(event, call_id) for _, call_id, event, _ in parts.outbox.sent] == [("dice", caller2.call_id)]
    assert parts.store.rows[caller2.call_id]["status"] == "FINAL"


def test_a_patch_unparks_a_parked_call(parts: SimpleNamespace) -> None:
    s = session()
    parts.engine.sessions[s.call_id] = s
    call = SinchCall.inbound("a", "+15550001", "+15559999")
    call.parked = True
    parts.app.calls[s.call_id] = call
    asyncio.run(parts.app.update_call("a", s.call_id, parse_svaml({"action": {"name": "connectConf",
                                                                              "conferenceId": "room"}}), None))
    assert call.parked is False and len(parts.engine.spawned) == 1
    parts.engine.spawned.pop().close()


def test_a_live_call_refuses_what_a_patch_may_not_do(parts: SimpleNamespace) -> None:
    s = session()
    parts.engine.sessions[s.call_id] = s
    parts.app.calls[s.call_id] = SinchCall.inbound("a", "+15550001", "+15559999")
    with pytest.raises(SvamlError) as caught:
        asyncio.run(parts.app.update_call("a", s.call_id, parse_svaml({"action": {"name": "connectConf",
                                                                                  "conferenceId": "r"}}), None))
    assert caught.value.path == "action.name"
    assert parts.engine.spawned == []


def test_another_applications_call_or_an_ended_one_is_not_found(parts: SimpleNamespace) -> None:
    s = session()
    parts.engine.sessions[s.call_id] = s
    parts.app.calls[s.call_id] = SinchCall.inbound("a", "+15550001", "+15559999")
    hangup = parse_svaml({"action": {"name": "hangup"}})
    with pytest.raises(CallNotLive):
        asyncio.run(parts.app.update_call("b", s.call_id, hangup, None))
    with pytest.raises(CallNotFound):
        parts.app.call_info("b", s.call_id)
    assert parts.app.call_info("a", s.call_id)["status"] == "ONGOING"
    end(s)
    with pytest.raises(CallNotLive):
        asyncio.run(parts.app.update_call("a", s.call_id, hangup, None))


def test_conference_operations_check_owner_and_membership(parts: SimpleNamespace) -> None:
    parts.conferences.rooms["room"] = {"c1"}
    parts.app.conference_owner["room"] = "a"
    with pytest.raises(ConferenceNotFound):
        parts.app.kick_all("b", "room")
    with pytest.raises(NotAParticipant):
        parts.app.kick_participant("a", "room", "c2")
    parts.app.manage_participant("a", "room", "c1", ParticipantUpdate(ParticipantCommand.ONHOLD, DtmfOptions(),
                                                                      "music2"))
    assert parts.conferences.done == [("hold", "c1", "music2", "room"), ("options", "c1", DtmfOptions(), "room")]
