"""The Sinch application without SIP or media: its applications registry, the typed per-call state (menu
presses, parking, bridge peers), the domain errors its API operations (calls/sinch_api.py) raise, and how
its call media (calls/playback.py) drives menus, parks, prompts and digit pauses from news (a press, a
player's end, a call timer, the call's end) rather than by polling. Engine, store, outbox and conference service are small stand-ins with only what the application
calls; the engine's clock is a number the test moves, and the media tick is the test taking frames."""

from __future__ import annotations

import asyncio
import base64
from collections.abc import Coroutine
from types import SimpleNamespace
from typing import Any, cast

import numpy as np
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
from tonebridge.calls.playback import DIGIT_PAUSE, CallMedia
from tonebridge.calls.requests import (
    CallbackUrls,
    Callout,
    CalloutMethod,
    ParticipantCommand,
    ParticipantUpdate,
)
from tonebridge.calls.sinch import SinchApplication, SinchCall
from tonebridge.calls.sinch_api import SinchOperations
from tonebridge.conference.options import DtmfMode, DtmfOptions
from tonebridge.config import ApplicationConfig, SecurityConfig
from tonebridge.media.endpoint import Press
from tonebridge.media.wav import WavPlayer
from tonebridge.svaml import interpreter as ops
from tonebridge.svaml.menu import MenuResult, MenuRunner
from tonebridge.svaml.models import Prompt, RunMenuAction, SvamlError, parse_svaml

SECRET = base64.b64encode(b"sixteen byte key").decode()
APPS = [
    ApplicationConfig(key="a", secret=SECRET, callback_url="https://a.example/cb", numbers=["+15550001"]),
    ApplicationConfig(key="b", secret=SECRET, numbers=["15550002"]),
]


class Timer:
    def __init__(self, deadline: float, callback: Any) -> None:
        self.deadline = deadline
        self.callback = callback
        self.pending = True

    def cancel(self) -> None:
        self.pending = False


class Engine:
    def __init__(self) -> None:
        self.sessions: dict[str, Any] = {}
        self.spawned: list[Coroutine[Any, Any, object]] = []
        self.hung_up: list[tuple[str, EndReason]] = []
        self.forgotten: list[str] = []
        self.time = 10.0
        self.timers: list[Timer] = []
        self.limits: list[tuple[str, float]] = []
        self.sent: list[tuple[str, float]] = []
        self.placed: list[Any] = []

    def now(self) -> float:
        return self.time

    def call_at(self, session: Any, deadline: float, callback: Any) -> Timer:
        timer = Timer(deadline, callback)
        self.timers.append(timer)
        return timer

    async def wait_until(self, session: Any, deadline: float) -> bool:
        came = asyncio.Event()
        timer = self.call_at(session, deadline, came.set)
        ended = asyncio.ensure_future(session.ended_event.wait())
        await asyncio.wait([asyncio.ensure_future(came.wait()), ended], return_when=asyncio.FIRST_COMPLETED)
        timer.cancel()
        return came.is_set()

    def pending(self) -> list[float]:
        return sorted(t.deadline for t in self.timers if t.pending)

    def advance(self, to: float) -> None:
        """Move the clock to `to`, firing each timer due on the way at its deadline, as the loop timer does."""
        while due := [t for t in self.timers if t.pending and t.deadline <= to]:
            timer = min(due, key=lambda t: t.deadline)
            self.time = max(self.time, timer.deadline)
            timer.pending = False
            timer.callback()
        self.time = max(self.time, to)

    def limit_duration(self, session: Any, seconds: float) -> None:
        self.limits.append((session.call_id, seconds))

    async def send_dtmf(
        self, session: Any, digits: str, method: str = "rfc4733", duration_ms: int = 160
    ) -> None:
        self.sent.append((digits, self.time))

    async def originate(self, destination: Any, **fields: Any) -> Any:
        placed = session(Direction.OUTBOUND, answered=False)
        if "call_id" in fields:
            placed.call.call_id = placed.call_id = fields["call_id"]

        async def wait_answered(timeout: float | None = None) -> bool:
            placed.call.answered(self.time)
            return True

        placed.wait_answered = wait_answered
        self.placed.append((destination, fields))
        return placed

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

    def join(
        self, session: Any, conference_id: str, options: DtmfOptions | None = None, moh: str | None = None
    ) -> None:
        self.done.append(("join", session.call_id, conference_id))

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

    def enqueue(
        self, key: str, url: str, call_id: str, event: str, body: dict[str, Any], **_: object
    ) -> None:
        self.sent.append((url, call_id, event, body))


@pytest.fixture
def parts() -> SimpleNamespace:
    engine = Engine()
    store, outbox, conferences = Store(), Outbox(), Conferences(engine)
    app = SinchApplication(
        cast(Any, SimpleNamespace(applications=APPS, security=SecurityConfig())),
        cast(Any, store),
        cast(Any, outbox),
    )
    app.attach(cast(Any, engine), cast(Any, conferences))
    return SimpleNamespace(
        app=app,
        api=SinchOperations(app),
        media=app.media,
        engine=engine,
        store=store,
        outbox=outbox,
        conferences=conferences,
    )


def session(direction: Direction = Direction.INBOUND, *, answered: bool = True) -> Any:
    call = Call(
        direction,
        remote_uri="sip:x@example.com",
        local_uri="sip:tb@example.com",
        started_at=0.0,
        cli="+15559999",
    )
    if answered:
        call.answered(1.0)
    return SimpleNamespace(
        call=call,
        call_id=call.call_id,
        incoming=None,
        leg=SimpleNamespace(source=None),
        ended_event=asyncio.Event(),
        media=None,
    )


def end(s: Any, reason: EndReason = EndReason.CALLER_HANGUP) -> None:
    s.call.ended(12.0, reason)
    s.ended_event.set()


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
    assert apps.callback_urls("a") == {
        "primary": "https://a.example/cb",
        "fallback": "https://a.example/fallback",
    }
    apps.set_callback_urls("a", CallbackUrls(primary=""))
    assert apps.callback_urls("a") == {"primary": "", "fallback": "https://a.example/fallback"}


def test_query_number_normalises() -> None:
    assert query_number("+1 (555) 000-1")["normalizedNumber"] == "+15550001"
    assert query_number("alice")["normalizedNumber"] == "alice"


# -- per-call state ------------------------------------------------------------------------------------------


def test_a_callout_call_carries_its_plan() -> None:
    callout = Callout(
        CalloutMethod.CONFERENCE,
        {"type": "number", "endpoint": "+1"},
        cli="+2",
        custom="c",
        conference_id="room",
        enable_dice=True,
        dtmf_options=DtmfOptions(DtmfMode.DETECT),
    )
    call = SinchCall.placed("a", callout)
    assert (call.method, call.conference_id, call.enable_dice, call.custom, call.callout) == (
        "conferenceCallout",
        "room",
        True,
        "c",
        callout,
    )
    call.cookies["k"] = "v"
    fields = call.fields("c1")
    assert (fields.call_id, fields.app_key, fields.conference_id, dict(fields.cookies)) == (
        "c1",
        "a",
        "room",
        {"k": "v"},
    )


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
    asyncio.run(
        parts.api.update_call(
            "a", s.call_id, parse_svaml({"action": {"name": "connectConf", "conferenceId": "room"}}), None
        )
    )
    assert call.parked is False and len(parts.engine.spawned) == 1
    parts.engine.spawned.pop().close()


def test_a_live_call_refuses_what_a_patch_may_not_do(parts: SimpleNamespace) -> None:
    s = session()
    parts.engine.sessions[s.call_id] = s
    parts.app.calls[s.call_id] = SinchCall.inbound("a", "+15550001", "+15559999")
    with pytest.raises(SvamlError) as caught:
        asyncio.run(
            parts.api.update_call(
                "a", s.call_id, parse_svaml({"action": {"name": "connectConf", "conferenceId": "r"}}), None
            )
        )
    assert caught.value.path == "action.name"
    assert parts.engine.spawned == []


def test_another_applications_call_or_an_ended_one_is_not_found(parts: SimpleNamespace) -> None:
    s = session()
    parts.engine.sessions[s.call_id] = s
    parts.app.calls[s.call_id] = SinchCall.inbound("a", "+15550001", "+15559999")
    hangup = parse_svaml({"action": {"name": "hangup"}})
    with pytest.raises(CallNotLive):
        asyncio.run(parts.api.update_call("b", s.call_id, hangup, None))
    with pytest.raises(CallNotFound):
        parts.api.call_info("b", s.call_id)
    assert parts.api.call_info("a", s.call_id)["status"] == "ONGOING"
    end(s)
    with pytest.raises(CallNotLive):
        asyncio.run(parts.api.update_call("a", s.call_id, hangup, None))


def test_conference_operations_check_owner_and_membership(parts: SimpleNamespace) -> None:
    parts.conferences.rooms["room"] = {"c1"}
    parts.app.conference_owner["room"] = "a"
    with pytest.raises(ConferenceNotFound):
        parts.api.kick_all("b", "room")
    with pytest.raises(NotAParticipant):
        parts.api.kick_participant("a", "room", "c2")
    parts.api.manage_participant(
        "a", "room", "c1", ParticipantUpdate(ParticipantCommand.ONHOLD, DtmfOptions(), "music2")
    )
    assert parts.conferences.done == [
        ("hold", "c1", "music2", "room"),
        ("options", "c1", DtmfOptions(), "room"),
    ]


# -- menus, parks, prompts and pauses, driven by news ----------------------------------------------------------

FRAME = 160


def tick(s: Any, ticks: int = 1) -> None:
    """What the media clock does to a leg each 20 ms: take a frame from its source."""
    for _ in range(ticks):
        if s.leg.source is not None:
            s.leg.source.frame(FRAME)


async def settle() -> None:
    """Let every coroutine run until it waits for news again (no time passes)."""
    for _ in range(20):
        await asyncio.sleep(0)


def renders(media: CallMedia, frames: dict[str, int], gate: asyncio.Event | None = None) -> list[str]:
    """Prompts render to `frames[text]` frames of audio (two when not given), after `gate` opens."""
    rendered: list[str] = []

    async def render(prompt_list: list[Prompt], locale: str) -> np.ndarray:
        if gate is not None:
            await gate.wait()
        text = " ".join(p.value for p in prompt_list)
        rendered.append(text)
        return np.ones(frames.get(text, 2) * FRAME, dtype=np.int16)

    media._render = render  # type: ignore[method-assign]
    return rendered


def menu(**fields: Any) -> RunMenuAction:
    main = {
        "id": "main",
        "mainPrompt": "#tts[choose]",
        "repeats": 0,
        "timeoutMills": 1500,
        "options": [{"dtmf": "1", "action": "return(sales)"}, {"dtmf": "2", "action": "return(support)"}],
    }
    main.update(fields)
    action = parse_svaml({"action": {"name": "runMenu", "barge": True, "menus": [main]}}).action
    assert isinstance(action, RunMenuAction)
    return action


def start_menu(parts: SimpleNamespace, spec: RunMenuAction) -> tuple[Any, SinchCall, asyncio.Future[Any]]:
    s = session()
    call = SinchCall.inbound("a", "+15550001", "+15559999")
    parts.app.calls[s.call_id] = call
    runner = MenuRunner(spec, parts.engine.now())
    call.menu = runner
    return s, call, asyncio.ensure_future(parts.media._drive_menu(s, call, runner))


def press(parts: SimpleNamespace, s: Any, digit: str) -> None:
    parts.app.on_press(parts.engine, s, Press(digit, "rfc4733", True, parts.engine.now()))
    parts.app.on_press(parts.engine, s, Press(digit, "rfc4733", False, parts.engine.now()))


def test_a_menu_opens_input_when_its_prompt_is_heard_and_times_out_on_a_call_timer(
    parts: SimpleNamespace,
) -> None:
    async def scenario() -> None:
        renders(parts.media, {"choose": 3})
        s, _, driving = start_menu(parts, menu())
        await settle()
        assert (
            isinstance(s.leg.source, WavPlayer) and parts.engine.pending() == []
        )  # no timer while prompting
        tick(s, 2)
        await settle()
        assert isinstance(s.leg.source, WavPlayer)  # a frame of prompt still to go
        parts.engine.time = 10.06
        tick(s)  # the prompt's last frame: its player tells the menu, which opens input
        await settle()
        assert s.leg.source is None and parts.engine.pending() == [pytest.approx(11.56)]
        parts.engine.advance(11.5)
        await settle()
        assert not driving.done()
        parts.engine.advance(11.56)
        await settle()
        assert driving.result() == MenuResult("main", "timeout", "")
        assert parts.engine.pending() == []

    asyncio.run(scenario())


def test_a_key_pressed_during_the_prompt_barges_in(parts: SimpleNamespace) -> None:
    async def scenario() -> None:
        renders(parts.media, {"choose": 50})
        s, call, driving = start_menu(parts, menu())
        await settle()
        tick(s, 10)
        press(parts, s, "2")
        await settle()
        assert driving.result() == MenuResult("main", "return", "support")
        assert s.leg.source is None and call.menu_wake is None and parts.engine.pending() == []

    asyncio.run(scenario())


def test_a_key_pressed_while_the_prompt_is_rendered_is_not_lost(parts: SimpleNamespace) -> None:
    async def scenario() -> None:
        gate = asyncio.Event()
        renders(parts.media, {}, gate)
        s, _, driving = start_menu(parts, menu())
        await settle()
        press(parts, s, "1")
        await settle()
        assert not driving.done()
        gate.set()
        await settle()
        assert driving.result() == MenuResult("main", "return", "sales") and s.leg.source is None

    asyncio.run(scenario())


def test_each_key_of_a_sequence_moves_the_menu_timer(parts: SimpleNamespace) -> None:
    async def scenario() -> None:
        renders(parts.media, {})
        s, _, driving = start_menu(parts, menu(maxDigits=4, timeoutMills=2000, options=[]))
        await settle()
        tick(s, 2)
        await settle()
        assert parts.engine.pending() == [12.0]
        parts.engine.advance(11.0)
        press(parts, s, "4")
        await settle()
        assert parts.engine.pending() == [13.0]  # the digit timeout, counted from the key; the old one gone
        parts.engine.advance(12.5)
        press(parts, s, "2")
        await settle()
        assert parts.engine.pending() == [14.5]
        parts.engine.advance(14.5)
        await settle()
        assert driving.result() == MenuResult("main", "sequence", "42") and parts.engine.pending() == []

    asyncio.run(scenario())


def test_a_menu_ends_with_its_call(parts: SimpleNamespace) -> None:
    async def scenario() -> None:
        renders(parts.media, {})
        s, _, driving = start_menu(parts, menu())
        await settle()
        tick(s, 2)
        await settle()
        assert parts.engine.pending() == [11.5]
        end(s)
        await settle()
        assert driving.result() is None and parts.engine.pending() == [] and s.leg.source is None

    asyncio.run(scenario())


def park_op(max_duration: int = 60, hold: bool = True) -> ops.Park:
    return ops.Park(
        intro_prompts=(Prompt("tts", "intro"),),
        hold_prompts=(Prompt("tts", "hold"),) if hold else (),
        max_duration=max_duration,
    )


def start_park(parts: SimpleNamespace, op: ops.Park) -> tuple[Any, SinchCall, asyncio.Future[Any]]:
    s = session()
    parts.engine.sessions[s.call_id] = s
    call = SinchCall.inbound("a", "+15550001", "+15559999")
    parts.app.calls[s.call_id] = call
    return s, call, asyncio.ensure_future(parts.media.park(s, call, op))


def test_a_park_plays_its_intro_then_loops_the_hold_prompt_until_a_patch_unparks_it(
    parts: SimpleNamespace,
) -> None:
    async def scenario() -> None:
        rendered = renders(parts.media, {"intro": 2, "hold": 1})
        s, call, parking = start_park(parts, park_op())
        await settle()
        assert call.parked and parts.engine.pending() == [70.0]  # maxDuration, from the park
        intro = s.leg.source
        tick(s, 2)
        await settle()
        hold = s.leg.source
        assert isinstance(hold, WavPlayer) and hold is not intro and hold.loop
        tick(s, 7)
        await settle()
        assert s.leg.source is hold and rendered == ["intro", "hold"]  # looped, not rendered again
        await parts.api.update_call(
            "a", s.call_id, parse_svaml({"action": {"name": "connectConf", "conferenceId": "room"}}), None
        )
        await settle()
        assert parking.done() and not call.parked and s.leg.source is None
        assert parts.engine.pending() == [] and parts.engine.hung_up == []
        for work in parts.engine.spawned:
            await work
        assert parts.conferences.done == [("join", s.call_id, "room")]

    asyncio.run(scenario())


def test_a_park_ends_the_call_with_timeout_at_its_max_duration(parts: SimpleNamespace) -> None:
    async def scenario() -> None:
        renders(parts.media, {"intro": 100})
        s, call, parking = start_park(parts, park_op(max_duration=30))
        await settle()
        tick(s, 3)
        parts.engine.advance(39.9)
        await settle()
        assert not parking.done()
        parts.engine.advance(40.0)  # the intro still playing: maxDuration does not wait for its end
        await settle()
        assert parking.done() and not call.parked and s.leg.source is None
        assert parts.engine.hung_up == [(s.call_id, EndReason.TIMEOUT)]

    asyncio.run(scenario())


def test_a_park_without_hold_prompts_waits_in_silence_and_goes_with_the_call(parts: SimpleNamespace) -> None:
    async def scenario() -> None:
        renders(parts.media, {})
        s, call, parking = start_park(parts, park_op(hold=False))
        await settle()
        tick(s, 2)
        await settle()
        assert s.leg.source is None and not parking.done()
        end(s)
        await settle()
        assert parking.done() and parts.engine.hung_up == [] and parts.engine.pending() == []

    asyncio.run(scenario())


def test_a_patch_that_parks_again_starts_a_new_park_the_old_one_leaves_alone(parts: SimpleNamespace) -> None:
    async def scenario() -> None:
        renders(parts.media, {})
        s, call, first = start_park(parts, park_op(max_duration=60))
        await settle()
        parts.engine.advance(15.0)
        await parts.api.update_call(
            "a", s.call_id, parse_svaml({"action": {"name": "park", "maxDuration": 30}}), None
        )
        second = asyncio.ensure_future(parts.engine.spawned.pop())
        await settle()
        assert first.done() and not second.done()
        assert call.parked and call.park_over is not None and parts.engine.pending() == [45.0]
        parts.engine.advance(45.0)
        await settle()
        assert second.done() and parts.engine.hung_up == [(s.call_id, EndReason.TIMEOUT)] and not call.parked

    asyncio.run(scenario())


def test_a_patch_while_the_intro_is_rendered_plays_nothing(parts: SimpleNamespace) -> None:
    async def scenario() -> None:
        gate = asyncio.Event()
        renders(parts.media, {}, gate)
        s, call, parking = start_park(parts, park_op())
        await settle()
        call.unpark()
        gate.set()
        await settle()
        assert parking.done() and s.leg.source is None and parts.engine.hung_up == []

    asyncio.run(scenario())


def test_play_returns_when_the_prompt_is_heard_or_the_call_ends(parts: SimpleNamespace) -> None:
    async def scenario() -> None:
        renders(parts.media, {"a": 2})
        s = session()
        playing = asyncio.ensure_future(parts.media.play(s, [Prompt("tts", "a")], "en-US"))
        await settle()
        tick(s)
        await settle()
        assert not playing.done()
        tick(s)
        await settle()
        assert playing.done() and s.leg.source is None
        playing = asyncio.ensure_future(parts.media.play(s, [Prompt("tts", "a")], "en-US"))
        await settle()
        end(s)
        await settle()
        assert playing.done() and s.leg.source is None

    asyncio.run(scenario())


def test_a_w_in_a_digit_string_is_a_call_timer(parts: SimpleNamespace) -> None:
    async def scenario() -> None:
        s = session()
        sending = asyncio.ensure_future(parts.media.send_digits(s, "12w3ww#"))
        await settle()
        assert parts.engine.sent == [("12", 10.0)] and parts.engine.pending() == [10.0 + DIGIT_PAUSE]
        parts.engine.advance(10.5)
        await settle()
        assert parts.engine.sent[-1] == ("3", 10.5) and parts.engine.pending() == [11.0]
        parts.engine.advance(11.0)
        await settle()
        parts.engine.advance(11.5)
        await settle()
        assert sending.done() and parts.engine.sent == [("12", 10.0), ("3", 10.5), ("#", 11.5)]
        sending = asyncio.ensure_future(parts.media.send_digits(s, "1w2"))
        await settle()
        end(s)
        await settle()
        assert sending.done() and parts.engine.sent[-1] == ("1", 11.5)  # the call ended during the pause

    asyncio.run(scenario())


def test_a_callouts_max_duration_limits_the_call_it_places(parts: SimpleNamespace) -> None:
    limited = Callout(CalloutMethod.TTS, {"type": "number", "endpoint": "+1"}, text="hi", max_duration=90)
    call_id = asyncio.run(parts.api.callout("a", limited))
    assert parts.engine.limits == [(call_id, 90.0)]
    asyncio.run(
        parts.api.callout("a", Callout(CalloutMethod.TTS, {"type": "number", "endpoint": "+1"}, text="hi"))
    )
    assert len(parts.engine.limits) == 1


def test_a_bridges_max_duration_limits_the_caller_from_the_bridging(parts: SimpleNamespace) -> None:
    s = session()
    call = SinchCall.inbound("a", "+15550001", "+15559999")
    parts.app.calls[s.call_id] = call
    asyncio.run(parts.app.bridge(s, call, ops.DialSip("sip:bob@192.0.2.9", max_duration=120)))
    far = call.bridge_peer
    assert [what for what, *_ in parts.conferences.done] == ["join", "join"]
    assert parts.engine.limits == [(s.call_id, 120.0)] and far is not None and parts.engine.spawned == []
