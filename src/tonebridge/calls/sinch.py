"""The Sinch-style application: what configured `[[applications]]` get (shared/spec/sinch-voice-v1.md).

Inbound calls to an application's numbers ask its backend with an ICE and do what the SVAML answer says;
callouts (`conferenceCallout`, `ttsCallout`, `customCallout`) are placed at once and, when answered, ask
for an ACE if enabled and then play, join or hang up as their method says. Conference collections and
runMenu results go out as PIEs, ended calls as DiCEs: those that need no answer through the persisted
outbox (callbacks/outbox.py), so none is lost to a backend that is down or a server restart.

This module orchestrates: it runs SVAML on live calls and drives their media, menus, bridges and parking.
It takes typed requests (calls/requests.py) and raises domain errors (calls/errors.py); the API validates
and maps. Bodies come from callbacks/bodies.py, audio from media/prompts.py, records from calls/records.py.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import secrets
from collections.abc import Coroutine
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, assert_never

from tonebridge.callbacks import bodies
from tonebridge.calls.applications import Applications, query_number
from tonebridge.calls.call import CallState, Direction, EndReason
from tonebridge.calls.engine import CallEngine, CallTimer, Destination, Session, first_set
from tonebridge.calls.errors import CallNotFound, CallNotLive, ConferenceNotFound, NotAParticipant
from tonebridge.calls.events import CallAnswered, CallEnded, CallEvent, ConferenceEnded, KeyPressed
from tonebridge.calls.records import call_record, call_resource
from tonebridge.calls.requests import (
    CallbackUrls,
    CallLeg,
    Callout,
    CalloutMethod,
    ParticipantCommand,
    ParticipantUpdate,
)
from tonebridge.conference.collector import CollectionDone
from tonebridge.conference.options import DtmfMode, DtmfOptions
from tonebridge.config import Config
from tonebridge.media import prompts
from tonebridge.media.endpoint import Press
from tonebridge.media.players import make_moh
from tonebridge.media.wav import WavPlayer
from tonebridge.svaml import interpreter as ops
from tonebridge.svaml import menu as menus
from tonebridge.svaml.models import Prompt, Svaml, SvamlError, UnknownName, parse_prompts, parse_svaml

if TYPE_CHECKING:
    import numpy as np

    from tonebridge.callbacks.outbox import Delivery, Outbox
    from tonebridge.calls.conferencing import ConferenceService
    from tonebridge.store.db import Store

__all__ = ["SinchApplication", "SinchCall"]

log = logging.getLogger("tonebridge.sinch")

SYNC_CALLBACK_TIMEOUT = 5.0  # ICE and ACE (sinch-voice-v1.md §2)
DIGIT_PAUSE = 0.5  # what a `w` in a digit string waits (sinch-voice-v1.md, callout `dtmf`)
PIE_FIRST_ATTEMPT = 2.0  # conference-dtmf.md §3 detect 4


@dataclass
class SinchCall:
    """One call of an application: whose it is, what it was asked to do, and what it is doing now."""

    app_key: str
    method: str  # "ice" for inbound, else the callout method
    destination: dict[str, str]
    cli: str = ""
    domain: str = "pstn"
    custom: str | None = None
    locale: str = "en-US"
    conference_id: str | None = None  # the conference it is in, or bound for
    enable_dice: bool = False
    custom_svaml: dict[str, str] = field(default_factory=dict)  # customCallout ice/ace/pie
    callout: Callout | None = None  # what a callout does once answered; None for an inbound call
    cookies: dict[str, str] = field(default_factory=dict)
    timestamp: str = field(default_factory=bodies.iso_now)
    # What it is doing now
    menu: menus.MenuRunner | None = None
    menu_presses: list[str] = field(default_factory=list)  # key presses the menu has not yet taken
    menu_wake: asyncio.Event | None = None  # set on a press, so the menu takes it at once
    bridge_peer: Session | None = None  # the far leg of a connectPstn / connectSip
    parked: bool = False  # until a PATCH gives the postponed ICE answer
    park_over: asyncio.Event | None = None  # set when the park ends: unparked, or its maxDuration passed

    @classmethod
    def inbound(cls, app_key: str, number: str, cli: str) -> SinchCall:
        return cls(app_key, "ice", {"type": "did", "endpoint": number}, cli=cli)

    @classmethod
    def placed(cls, app_key: str, callout: Callout) -> SinchCall:
        return cls(
            app_key,
            callout.method.value,
            dict(callout.destination),
            cli=callout.cli,
            domain=callout.domain,
            custom=callout.custom,
            locale=callout.locale,
            conference_id=callout.conference_id,
            enable_dice=callout.enable_dice,
            custom_svaml=dict(callout.custom_svaml),
            callout=callout,
        )

    def fields(self, call_id: str) -> bodies.CallFields:
        return bodies.CallFields(call_id, self.app_key, self.custom, self.conference_id, dict(self.cookies))

    def unpark(self) -> None:
        """The PATCH that is the postponed ICE answer has come: the park ends now, not at its next check."""
        self.parked = False
        if self.park_over is not None:
            self.park_over.set()


class SinchApplication:
    """The engine's application for every configured key, and what api/calling.py's routes call."""

    def __init__(
        self, config: Config, store: Store, outbox: Outbox, *, base_url: str = "", tts_dir: Path | None = None
    ) -> None:
        self.config = config
        self.store = store
        self.outbox = outbox
        self.base_url = base_url
        self.tts_dir = tts_dir
        self.apps = Applications(config.applications)
        self.engine: CallEngine | None = None
        self.conferences: ConferenceService | None = None
        self.conference_owner: dict[str, str] = {}
        self.calls: dict[str, SinchCall] = {}
        # The far leg of a bridge is no call of an application (no record, no callbacks): all it needs is
        # the call that dialled it, to end with it.
        self.far_legs: dict[str, Session] = {}

    def attach(self, engine: CallEngine, conferences: ConferenceService) -> None:
        self.engine = engine
        self.conferences = conferences

    def on_event(self, event: CallEvent) -> None:
        assert self.engine is not None
        match event:
            case CallAnswered(session=session):
                self.on_answered(self.engine, session)
            case KeyPressed(session=session, press=press):
                self.on_press(self.engine, session, press)
            case CallEnded(session=session):
                self.on_ended(self.engine, session)
            case ConferenceEnded(conference_id=conference_id):
                # A conference id belongs to an application only while the conference lasts.
                self.conference_owner.pop(conference_id, None)
            case _:
                assert_never(event)

    # Lookups -------------------------------------------------------------------------------------------

    def secret_for(self, key: str) -> str | None:
        return self.apps.secret_for(key)

    def _own_call(self, key: str, call_id: str) -> Session | None:
        call = self.calls.get(call_id)
        if call is None or call.app_key != key:
            return None
        assert self.engine is not None
        return self.engine.find(call_id)

    def _check_conference(self, key: str, conference_id: str) -> None:
        assert self.conferences is not None
        if (
            self.conference_owner.get(conference_id) != key
            or self.conferences.rooms.get(conference_id) is None
        ):
            raise ConferenceNotFound(conference_id)

    # Callbacks -----------------------------------------------------------------------------------------

    async def _ask(self, session: Session, call: SinchCall, event: str, body: dict[str, Any]) -> dict | None:
        """A synchronous callback (ICE, ACE, runMenu PIE): the SVAML answer, or None when it failed."""
        app = self.apps[call.app_key]
        url = call.custom_svaml.get(event)
        if url is not None and not url.startswith(("http://", "https://")):
            try:
                return json.loads(url)
            except ValueError:
                log.warning("event=custom_svaml_invalid call_id=%s callback=%s", session.call_id, event)
                return None
        target = url or app.primary
        if not target:
            return None
        response = await self.outbox.request_sync(
            app.key, target, body, SYNC_CALLBACK_TIMEOUT, fallback_url=app.fallback or None
        )
        if response is None or not 200 <= response.status_code < 300:
            log.warning(
                "event=callback_failed call_id=%s callback=%s status=%s",
                session.call_id,
                event,
                None if response is None else response.status_code,
            )
            return None
        try:
            answer = response.json()
        except ValueError:
            return None
        return answer if isinstance(answer, dict) else None

    def _notify(
        self,
        session: Session,
        call: SinchCall,
        event: str,
        body: dict[str, Any],
        attempt_timeout: float | None = None,
    ) -> Delivery | None:
        app = self.apps[call.app_key]
        url = call.custom_svaml.get(event) if event in call.custom_svaml else None
        target = url if url and url.startswith(("http://", "https://")) else app.primary
        if not target:
            return None
        return self.outbox.enqueue(
            app.key, target, session.call_id, event, body, attempt_timeout=attempt_timeout
        )

    # Inbound -------------------------------------------------------------------------------------------

    async def incoming(self, engine: CallEngine, session: Session) -> None:
        request_uri = session.invite.request_uri
        number = request_uri.user or session.invite.to.uri.user or ""
        app = self.apps.owner_of_number(number)
        if app is None:
            engine.reject(session, 404)
            return
        call = SinchCall.inbound(app.key, number, session.call.cli)
        self.calls[session.call_id] = call
        self._save(session, call)
        body = bodies.ice(
            call.fields(session.call_id),
            number=number,
            cli=session.call.cli,
            call_resource_url=f"{self.base_url}/calling/v1/calls/id/{session.call_id}",
        )
        answer = await self._ask(session, call, "ice", body)
        if answer is None:
            # Sinch plays an error prompt and hangs up; there is no prompt to play on a call not yet answered.
            engine.reject(session, 480, EndReason.CALLBACK_ERROR)
            return
        await self.execute(session, call, answer, "ice")

    # SVAML -----------------------------------------------------------------------------------------------

    async def execute(self, session: Session, call: SinchCall, document: dict, event: ops.CallEvent) -> bool:
        """Run an SVAML answer; True when its action was `continue` (explicit, or what an empty or
        unusable ACE answer means), so the call goes on with what was already planned for it."""
        assert self.engine is not None
        try:
            svaml = parse_svaml(document)
            plan = ops.plan(
                svaml, ops.CallContext(event=event, answered=session.call.state is CallState.ANSWERED)
            )
        except UnknownName as exc:
            log.warning(
                "event=svaml_unknown call_id=%s path=%s message=%r", session.call_id, exc.path, exc.message
            )
            plan = [ops.Continue()] if event == "ace" else [ops.Hangup()]
        except SvamlError as exc:
            log.warning(
                "event=svaml_invalid call_id=%s path=%s message=%r", session.call_id, exc.path, exc.message
            )
            plan = [ops.Continue()] if event == "ace" else [ops.Hangup()]
        for op in plan:
            if not session.call.active:
                return False
            await self._run(session, call, op, event)
        return bool(plan) and isinstance(plan[-1], ops.Continue)

    async def _run(self, session: Session, call: SinchCall, op: ops.Operation, event: ops.CallEvent) -> None:
        engine = self.engine
        assert engine is not None and self.conferences is not None
        if isinstance(op, ops.Answer):
            if session.call.state is not CallState.ANSWERED and session.incoming is not None:
                engine.answer(session)
        elif isinstance(op, ops.Play):
            await self._ensure_answered(session)
            await self.play(session, list(op.prompts), op.locale or call.locale)
        elif isinstance(op, ops.SendDigits):
            await self._ensure_answered(session)
            await self.send_digits(session, op.value)
        elif isinstance(op, ops.SetCookie):
            call.cookies[op.key] = op.value
        elif isinstance(op, ops.JoinConference):
            await self._ensure_answered(session)
            self.join(session, call, op.conference_id, op.options, op.moh)
        elif isinstance(op, ops.Hangup):
            if session.call.state is CallState.ANSWERED or session.incoming is None:
                # The application ends the call: for an inbound call answered by it, it is the callee.
                by_callee = event != "patch" and session.call.direction is Direction.INBOUND
                await engine.hangup(
                    session, EndReason.CALLEE_HANGUP if by_callee else EndReason.MANAGER_HANGUP
                )
            else:
                engine.reject(session, 486, EndReason.MANAGER_HANGUP)
        elif isinstance(op, ops.RunMenu):
            await self._ensure_answered(session)
            await self.run_menu(session, call, op)
        elif isinstance(op, ops.Continue):
            pass
        elif isinstance(op, (ops.DialPstn, ops.DialSip)):
            await self.bridge(session, call, op)
        elif isinstance(op, ops.Park):
            await self.park(session, call, op)
        elif isinstance(op, (ops.StartRecording, ops.StopRecording)):
            log.info(
                "event=svaml_ignored call_id=%s operation=%s reason=recording_not_yet_supported",
                session.call_id,
                type(op).__name__,
            )
        else:
            log.warning(
                "event=svaml_not_supported call_id=%s operation=%s", session.call_id, type(op).__name__
            )
            await engine.hangup(session, EndReason.GENERAL_ERROR)

    async def _run_all(self, session: Session, call: SinchCall, plan: list[ops.Operation]) -> None:
        for op in plan:
            if not session.call.active:
                return
            await self._run(session, call, op, "patch")

    # Orchestration -------------------------------------------------------------------------------------

    async def _ensure_answered(self, session: Session) -> None:
        if session.call.state is not CallState.ANSWERED and session.incoming is not None:
            assert self.engine is not None
            self.engine.answer(session)

    def _spawn(self, work: Coroutine[Any, Any, object]) -> None:
        assert self.engine is not None
        self.engine.spawn(work)

    def join(
        self,
        session: Session,
        call: SinchCall,
        conference_id: str,
        options: DtmfOptions | None,
        moh: str | None,
    ) -> None:
        assert self.conferences is not None and self.engine is not None
        owner = self.conference_owner.get(conference_id)
        if owner is not None and owner != call.app_key and conference_id in self.conferences.rooms:
            log.warning(
                "event=conference_foreign call_id=%s conference_id=%s", session.call_id, conference_id
            )
            self._spawn(self.engine.hangup(session, EndReason.GENERAL_ERROR))
            return
        call.conference_id = conference_id
        self.conferences.join(session, conference_id, options, moh)
        self.conference_owner[conference_id] = call.app_key
        self._save(session, call)

    async def bridge(self, session: Session, call: SinchCall, op: ops.DialPstn | ops.DialSip) -> None:
        """connectPstn / connectSip: dial the other party and, once it answers, bridge the two legs in a
        private two-party room (forward mode, so key presses pass across). Either hanging up ends both."""
        engine = self.engine
        assert engine is not None and self.conferences is not None
        if isinstance(op, ops.DialPstn):
            destination = Destination("number", op.number or call.destination.get("endpoint", ""))
            ring_timeout = float(op.dial_timeout or 60)
        else:
            destination = Destination("sip", op.destination)
            ring_timeout = 60.0
        await self._ensure_answered(session)
        session.leg.source = make_moh("ring")  # the caller hears ring-back while the other side rings
        other = await engine.originate(destination, cli=op.cli or call.cli, ring_timeout=ring_timeout)
        call.bridge_peer = other
        if other.call.active:  # one that failed at once has already been through on_ended
            self.far_legs[other.call_id] = session
        answered = await other.wait_answered()  # the far leg's core ends it at its ring timeout
        session.leg.source = None
        if not answered or not session.call.active:
            if session.call.active:
                await engine.hangup(session, other.call.reason or EndReason.GENERAL_ERROR)
            if other.call.active:
                await engine.hangup(other, EndReason.MANAGER_HANGUP)
            return
        if isinstance(op, ops.DialPstn) and op.dtmf:
            await self.send_digits(other, op.dtmf)
        room = f"bridge:{session.call_id}"
        forward = DtmfOptions(mode=DtmfMode.FORWARD)
        self.conferences.join(session, room, forward)
        self.conferences.join(other, room, forward)
        if op.max_duration:
            engine.limit_duration(session, float(op.max_duration))

    async def park(self, session: Session, call: SinchCall, op: ops.Park) -> None:
        """park: the intro once, then the hold prompts looped, until a PATCH unparks the call or
        maxDuration passes (then the call ends with reason TIMEOUT)."""
        engine = self.engine
        assert engine is not None
        locale = op.locale or call.locale
        over = asyncio.Event()
        expired = False

        def expire() -> None:
            nonlocal expired
            if call.park_over is over:  # not a park a PATCH has already ended (and maybe parked again)
                # Unparked at the deadline itself: a PATCH coming after it finds a live call, not a park.
                expired, call.parked = True, False
                over.set()

        call.parked, call.park_over = True, over
        limit = engine.call_at(session, engine.now() + op.max_duration, expire)
        try:
            await self.play(session, list(op.intro_prompts), locale, stop=over)
            if op.hold_prompts:
                await self.play(session, list(op.hold_prompts), locale, stop=over, loop=True)
            await first_set(over, session.ended_event)
        finally:
            limit.cancel()
            if call.park_over is over:
                call.park_over = None
        if expired and session.call.active:
            await engine.hangup(session, EndReason.TIMEOUT)

    async def _render(self, prompt_list: list[Prompt], locale: str) -> np.ndarray:
        return await asyncio.get_running_loop().run_in_executor(
            None, lambda: prompts.render(prompt_list, locale, cache_dir=self.tts_dir)
        )

    async def play(
        self,
        session: Session,
        prompt_list: list[Prompt],
        locale: str,
        *,
        stop: asyncio.Event | None = None,
        loop: bool = False,
    ) -> None:
        """Play prompts to a call that is not in a conference, and wait until they are heard, the call ends
        or `stop` is set (looped, only the last two end the play)."""
        samples = await self._render(prompt_list, locale)
        ends = (session.ended_event,) if stop is None else (session.ended_event, stop)
        if samples.size == 0 or any(end.is_set() for end in ends):
            return
        heard = asyncio.Event()
        player = WavPlayer(samples, loop=loop, on_finished=heard.set)
        session.leg.source = player
        try:
            await first_set(heard, *ends)
        finally:
            if session.leg.source is player:
                session.leg.source = None

    async def send_digits(self, session: Session, value: str) -> None:
        engine = self.engine
        assert engine is not None
        for chunk in re.split(r"(w)", value):
            if chunk == "w":
                if not await engine.wait_until(session, engine.now() + DIGIT_PAUSE):
                    return
            elif chunk:
                await engine.send_dtmf(
                    session,
                    chunk,
                    "rfc4733" if session.media and session.media.telephone_event_pt is not None else "inband",
                )

    async def run_menu(self, session: Session, call: SinchCall, op: ops.RunMenu) -> None:
        assert self.engine is not None
        runner = menus.MenuRunner(op.menu_spec, self.engine.now())
        call.menu = runner
        result = await self._drive_menu(session, call, runner)
        call.menu = None
        if result is None or not session.call.active:
            return
        body = bodies.menu_pie(
            call.fields(session.call_id),
            menu_id=result.menu_id,
            kind=result.type,
            value=result.value,
            input_method=result.input_method,
        )
        answer = await self._ask(session, call, "pie", body)
        if answer is None:
            await self.engine.hangup(session, EndReason.CALLBACK_ERROR)
            return
        await self.execute(session, call, answer, "pie")

    async def _drive_menu(
        self, session: Session, call: SinchCall, runner: menus.MenuRunner
    ) -> menus.MenuResult | None:
        """Run the menu's effects and feed it what happens, when it happens: every source of news sets one
        wake event (a press through on_press, the prompt's player at its end, a call timer at the menu's
        deadline, the call's end), and each wake takes all the news there is; returns the menu's result."""
        engine = self.engine
        assert engine is not None
        wake = asyncio.Event()
        call.menu_wake = wake
        ended = asyncio.ensure_future(session.ended_event.wait())
        ended.add_done_callback(lambda _: wake.set())
        player: WavPlayer | None = None
        timer: CallTimer | None = None
        pending = runner.start(engine.now())
        try:
            while session.call.active:
                for effect in pending:
                    if isinstance(effect, menus.MenuResult):
                        return effect
                    if isinstance(effect, menus.PlayPrompt):
                        samples = await self._render(list(effect.prompts), effect.locale)
                        player = WavPlayer(samples, on_finished=wake.set) if samples.size else None
                        session.leg.source = player
                        if player is None:
                            pending = runner.prompt_finished(engine.now())
                            break
                    elif isinstance(effect, menus.StopPrompt):
                        session.leg.source = None
                        player = None
                else:
                    pending = []
                if pending:
                    continue
                deadline = runner.next_timer()
                if timer is not None and (not timer.pending or timer.deadline != deadline):
                    timer.cancel()
                    timer = None
                if deadline is not None and timer is None:
                    timer = engine.call_at(session, deadline, wake.set)
                # Cleared after the wait, not before: news that came while a prompt was being rendered
                # has set it already and must not be lost.
                await wake.wait()
                wake.clear()
                now = engine.now()
                presses, call.menu_presses = call.menu_presses, []
                for digit in presses:
                    pending += runner.press(digit, now)
                if player is not None and player.finished:
                    player = None
                    session.leg.source = None
                    pending += runner.prompt_finished(now)
                deadline = runner.next_timer()
                if deadline is not None and deadline <= now:
                    pending += runner.handle_timer(now)
            return None
        finally:
            ended.cancel()
            if timer is not None:
                timer.cancel()
            if player is not None and session.leg.source is player:
                session.leg.source = None
            call.menu_wake = None

    # Engine hooks --------------------------------------------------------------------------------------

    def on_answered(self, engine: CallEngine, session: Session) -> None:
        call = self.calls.get(session.call_id)
        if call is None or session.call.direction is not Direction.OUTBOUND:
            return
        self._save(session, call)
        engine.spawn(self._answered(session, call))

    async def _answered(self, session: Session, call: SinchCall) -> None:
        assert self.engine is not None
        callout = call.callout
        if callout is None:
            return
        if callout.enable_ace or "ace" in call.custom_svaml:
            # No answer (timeout, error, not JSON) and `continue` both mean: go on as the callout said.
            # Only an answer naming another action replaces the callout's own plan.
            answer = await self._ask(session, call, "ace", bodies.ace(call.fields(session.call_id)))
            if answer is not None and not await self.execute(session, call, answer, "ace"):
                return
            if not session.call.active:
                return
        if callout.method is CalloutMethod.CUSTOM:
            return
        if callout.greeting:
            await self.play(session, [prompts.speech(callout.greeting)], call.locale)
        if callout.dtmf:
            await self.send_digits(session, callout.dtmf)
        if callout.method is CalloutMethod.CONFERENCE and session.call.active and call.conference_id:
            self.join(session, call, call.conference_id, callout.dtmf_options, callout.moh)
        elif callout.method is CalloutMethod.TTS and session.call.active:
            to_play = (
                parse_prompts(callout.prompts)
                if callout.prompts
                else [prompts.speech(callout.text)]
                if callout.text
                else []
            )
            await self.play(session, list(to_play), call.locale)
            await self.engine.hangup(session, EndReason.MANAGER_HANGUP)

    def on_press(self, engine: CallEngine, session: Session, press: Press) -> None:
        call = self.calls.get(session.call_id)
        if call is not None and call.menu is not None:
            if press.started:
                call.menu_presses.append(press.digit)
                if call.menu_wake is not None:
                    call.menu_wake.set()
        # Presses of a participant reach its room by themselves (the conference service observes them).

    def collection(self, session: Session, done: CollectionDone) -> Coroutine[Any, Any, None] | None:
        """A detect-mode collection: its PIE goes through the outbox; the participant returns to the mix
        when the first attempt completes or after 2 s (conference-dtmf.md §3 detect 4)."""
        call = self.calls.get(session.call_id)
        if call is None:
            return None
        body = bodies.conference_pie(
            call.fields(session.call_id), conference_id=done.conference_id, digits=done.digits
        )
        delivery = self._notify(session, call, "pie", body, attempt_timeout=PIE_FIRST_ATTEMPT)
        if delivery is None:
            return None
        conferences = self.conferences
        assert conferences is not None and self.engine is not None

        async def measure() -> None:
            await delivery.first_sent
            conferences.pie_sent(done)
            if await delivery.delivered:
                conferences.pie_answered(done)

        self.engine.spawn(measure())

        async def first_attempt() -> None:
            try:
                await asyncio.wait_for(asyncio.shield(delivery.first_attempt), PIE_FIRST_ATTEMPT)
            except TimeoutError:
                pass

        return first_attempt()

    def on_ended(self, engine: CallEngine, session: Session) -> None:
        call = self.calls.get(session.call_id)
        peer = call.bridge_peer if call is not None else self.far_legs.pop(session.call_id, None)
        if peer is not None and peer.call.active:
            reason = (
                EndReason.CALLER_HANGUP
                if peer.call.direction is Direction.INBOUND
                else EndReason.CALLEE_HANGUP
            )
            engine.spawn(engine.hangup(peer, reason))
        if call is None:
            engine.forget(session)
            return
        self._save(session, call)
        if call.enable_dice or call.method == "ice":
            body = bodies.dice(
                call.fields(session.call_id),
                result=session.call.result.value if session.call.result else "N/A",
                reason=session.call.reason.value if session.call.reason else "N/A",
                duration=session.call.duration(engine.now()),
                to=call.destination,
                cli=call.cli,
            )
            self._notify(session, call, "dice", body)
        engine.forget(session)

    def _save(self, session: Session, call: SinchCall) -> None:
        assert self.engine is not None
        self.store.save_call(call_record(session.call, call, self.engine.now()))

    # API operations (api/calling.py's CallingApplication) -----------------------------------------------

    async def callout(self, key: str, callout: Callout) -> str:
        assert self.engine is not None
        call = SinchCall.placed(key, callout)
        destination = Destination(call.destination["type"], call.destination["endpoint"])
        call_id = secrets.token_hex(16)
        # Known before the call is placed: an unreachable destination ends it inside originate.
        self.calls[call_id] = call
        session = await self.engine.originate(destination, cli=call.cli, call_id=call_id)
        if session.call.active:
            if callout.max_duration:
                self.engine.limit_duration(session, float(callout.max_duration))
            self._save(session, call)
        return call_id

    def call_info(self, key: str, call_id: str) -> dict[str, Any]:
        call = self.calls.get(call_id)
        record = self.store.get_call(call_id)
        if (call is None or call.app_key != key) and (record is None or record.get("app_key") != key):
            raise CallNotFound(call_id)
        session = self.engine.find(call_id) if self.engine else None
        if session is not None and call is not None:
            assert self.engine is not None
            record = call_record(session.call, call, self.engine.now())
        assert record is not None
        return call_resource(call_id, record)

    async def update_call(self, key: str, call_id: str, svaml: Svaml, leg: CallLeg | None) -> None:
        """PATCH a live call. An action its state does not allow raises SvamlError (a 400, as a malformed
        document is)."""
        session = self._own_call(key, call_id)
        if session is None or not session.call.active:
            raise CallNotLive(call_id)
        call = self.calls[call_id]
        plan = ops.plan(
            svaml,
            ops.CallContext(
                event="patch", answered=session.call.state is CallState.ANSWERED, parked=call.parked
            ),
        )
        if call.parked:
            call.unpark()  # the PATCH is the postponed ICE answer
        self._spawn(self._run_all(session, call, plan))

    def conference_participants(self, key: str, conference_id: str) -> list[dict[str, Any]]:
        self._check_conference(key, conference_id)
        assert self.conferences is not None
        return [
            {k: p[k] for k in ("cli", "id", "duration", "muted", "onhold")}
            for p in self.conferences.participants(conference_id)
        ]

    def kick_all(self, key: str, conference_id: str) -> None:
        self._check_conference(key, conference_id)
        assert self.conferences is not None
        self.conferences.kick_all(conference_id)

    def _participant(self, key: str, conference_id: str, call_id: str) -> ConferenceService:
        self._check_conference(key, conference_id)
        service = self.conferences
        assert service is not None
        room = service.rooms.get(conference_id)
        if room is None or call_id not in room:
            raise NotAParticipant(call_id, conference_id)
        return service

    def kick_participant(self, key: str, conference_id: str, call_id: str) -> None:
        self._participant(key, conference_id, call_id).kick(call_id, conference_id)

    def manage_participant(
        self, key: str, conference_id: str, call_id: str, update: ParticipantUpdate
    ) -> None:
        service = self._participant(key, conference_id, call_id)
        if update.command is ParticipantCommand.MUTE:
            service.mute(call_id, conference_id)
        elif update.command is ParticipantCommand.UNMUTE:
            service.unmute(call_id, conference_id)
        elif update.command is ParticipantCommand.ONHOLD:
            service.hold(call_id, update.moh, conference_id)
        elif update.command is ParticipantCommand.RESUME:
            service.resume(call_id, conference_id)
        if update.dtmf_options is not None:
            service.set_options(call_id, update.dtmf_options, conference_id)

    def list_numbers(self, key: str) -> list[dict[str, str]]:
        return self.apps.list_numbers(key)

    def assign_numbers(self, key: str, numbers: list[str]) -> None:
        self.apps.assign_numbers(key, numbers)

    def unassign_number(self, key: str, number: str) -> None:
        self.apps.unassign_number(key, number)

    def callback_urls(self, key: str) -> dict[str, str]:
        return self.apps.callback_urls(key)

    def set_callback_urls(self, key: str, urls: CallbackUrls) -> None:
        self.apps.set_callback_urls(key, urls)

    def query_number(self, number: str) -> dict[str, Any]:
        return query_number(number)
