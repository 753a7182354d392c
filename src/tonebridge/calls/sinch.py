"""The Sinch-style application: what configured `[[applications]]` get (shared/spec/sinch-voice-v1.md).

Inbound calls to an application's numbers ask its backend with an ICE and do what the SVAML answer says;
callouts (`conferenceCallout`, `ttsCallout`, `customCallout`) are placed at once and, when answered, ask
for an ACE if enabled and then play, join or hang up as their method says. Conference collections and
runMenu results go out as PIEs, ended calls as DiCEs: those that need no answer through the persisted
outbox (callbacks/outbox.py), so none is lost to a backend that is down or a server restart.

This module orchestrates: the callback flow, SVAML run on live calls, joins, bridges and the call events.
Media on a call not in a room (prompts, digits, parks, menus) is calls/playback.py's; the API operations
on an application's calls, conferences and settings are calls/sinch_api.py's. Bodies come from
callbacks/bodies.py, records from calls/records.py.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Coroutine
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, assert_never

from tonebridge.callbacks import bodies
from tonebridge.calls.applications import Applications
from tonebridge.calls.call import CallState, Direction, EndReason
from tonebridge.calls.engine import CallEngine
from tonebridge.calls.events import CallAnswered, CallEnded, CallEvent, ConferenceEnded, KeyPressed
from tonebridge.calls.playback import CallMedia
from tonebridge.calls.records import call_record
from tonebridge.calls.requests import Callout, CalloutMethod
from tonebridge.calls.session import Destination, Session
from tonebridge.cluster.moves import MOVE_PARAM, CallMover, Move, conference_of, moved_call_id
from tonebridge.conference.collector import CollectionDone
from tonebridge.conference.options import DtmfMode, DtmfOptions
from tonebridge.config import Config
from tonebridge.media import prompts
from tonebridge.media.endpoint import Press
from tonebridge.media.players import make_moh
from tonebridge.netguard import FetchPolicy
from tonebridge.svaml import interpreter as ops
from tonebridge.svaml import menu as menus
from tonebridge.svaml.models import SvamlError, UnknownName, parse_prompts, parse_svaml

if TYPE_CHECKING:
    from tonebridge.callbacks.outbox import Delivery, Outbox
    from tonebridge.calls.conferencing import ConferenceService
    from tonebridge.cluster.directory import ClusterDirectory
    from tonebridge.store.db import Store

__all__ = ["SinchApplication", "SinchCall", "SinchCallbacks"]

log = logging.getLogger("tonebridge.sinch")

SYNC_CALLBACK_TIMEOUT = 5.0  # ICE and ACE (sinch-voice-v1.md §2)
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
    moved: bool = False  # sent to its conference's home node in a cluster: that node reports its end
    claimed: str | None = None  # the conference whose home this node claimed for it, in a cluster
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


class SinchCallbacks:
    """Where a call's callbacks go, and how: inline custom SVAML, a custom URL or the application's primary
    (and fallback) URL; those that need an answer at once, the others through the persisted outbox."""

    def __init__(self, apps: Applications, outbox: Outbox) -> None:
        self.apps = apps
        self.outbox = outbox

    async def ask(self, session: Session, call: SinchCall, event: str, body: dict[str, Any]) -> dict | None:
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

    def notify(
        self,
        session: Session,
        call: SinchCall,
        event: str,
        body: dict[str, Any],
        attempt_timeout: float | None = None,
    ) -> Delivery | None:
        """A callback that needs no answer (a collection's PIE, a DiCE), enqueued in the outbox."""
        target = self.target(call, event)
        if not target:
            return None
        return self.outbox.enqueue(
            call.app_key, target, session.call_id, event, body, attempt_timeout=attempt_timeout
        )

    def target(self, call: SinchCall, event: str) -> str | None:
        """Where `event` of `call` goes: its customCallout URL for that event, else the primary URL."""
        url = call.custom_svaml.get(event) if event in call.custom_svaml else None
        return url if url and url.startswith(("http://", "https://")) else self.apps[call.app_key].primary


class SinchApplication:
    """The engine's application for every configured key: its callbacks, its SVAML and its calls' events.
    What api/calling.py's routes call is calls/sinch_api.py's `SinchOperations` over it."""

    def __init__(
        self, config: Config, store: Store, outbox: Outbox, *, base_url: str = "", tts_dir: Path | None = None
    ) -> None:
        self.config = config
        self.store = store
        self.outbox = outbox
        self.base_url = base_url
        self.tts_dir = tts_dir
        self.apps = Applications(config.applications)
        self.callbacks = SinchCallbacks(self.apps, outbox)
        # URLs an application gives at run time (answers, callouts, the API, `#href`) reach public
        # addresses only, unless `[security]` allows more; the config file's own callback URLs are trusted.
        policy = FetchPolicy.from_config(config.security, (a.callback_url for a in config.applications))
        outbox.fetch_policy = policy
        prompts.set_fetch_policy(policy)
        self.engine: CallEngine | None = None
        self.media: CallMedia | None = None  # prompts, digits, parks and menus on calls not in a room
        self.conferences: ConferenceService | None = None
        # This node's entry in a cluster's directory, and what moves calls to their conference's home
        # (server.py sets both in cluster mode).
        self.directory: ClusterDirectory | None = None
        self.mover: CallMover | None = None
        self.conference_owner: dict[str, str] = {}
        self.calls: dict[str, SinchCall] = {}
        # The far leg of a bridge is no call of an application (no record, no callbacks): all it needs is
        # the call that dialled it, to end with it.
        self.far_legs: dict[str, Session] = {}

    def attach(self, engine: CallEngine, conferences: ConferenceService) -> None:
        self.engine = engine
        self.media = CallMedia(engine, self.tts_dir)
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

    # Inbound -------------------------------------------------------------------------------------------

    async def incoming(self, engine: CallEngine, session: Session) -> None:
        request_uri = session.invite.request_uri
        if self.mover is not None and (token := request_uri.params.get(MOVE_PARAM)) is not None:
            await self._moved_in(engine, session, token)
            return
        number = request_uri.user or session.invite.to.uri.user or ""
        app = self.apps.owner_of_number(number)
        if app is None:
            engine.reject(session, 404)
            return
        call = SinchCall.inbound(app.key, number, session.call.cli)
        self.calls[session.call_id] = call
        self.save(session, call)
        body = bodies.ice(
            call.fields(session.call_id),
            number=number,
            cli=session.call.cli,
            call_resource_url=f"{self.base_url}/calling/v1/calls/id/{session.call_id}",
        )
        answer = await self.callbacks.ask(session, call, "ice", body)
        if answer is None:
            # Sinch plays an error prompt and hangs up; there is no prompt to play on a call not yet answered.
            engine.reject(session, 480, EndReason.CALLBACK_ERROR)
            return
        if self.mover is not None and await self._move_out(engine, session, call, number, answer):
            return
        await self.execute(session, call, answer, "ice")

    async def _move_out(
        self, engine: CallEngine, session: Session, call: SinchCall, number: str, answer: dict[str, Any]
    ) -> bool:
        """In a cluster, send the call to its conference's home node when that is another node (with a
        302 the SIP front follows: cluster/moves.py); True when it went."""
        assert self.mover is not None
        conference_id = conference_of(answer)
        if conference_id is None or not session.call.active:
            return False
        try:
            home = await self.mover.home_elsewhere(conference_id)
            if home is None:
                call.claimed = conference_id  # ours now: given up should the call end before joining
                return False
            contact = await self.mover.hand_over(
                session.call_id, Move(call.app_key, number, call.cli, answer), home
            )
        except Exception as exc:
            # The directory is unreachable: mix the call here rather than lose it.
            log.warning("event=call_move_failed call_id=%s error=%r", session.call_id, exc)
            return False
        call.moved = True
        log.info("event=call_moved call_id=%s conference_id=%s to=%s", session.call_id, conference_id, home)
        engine.redirect(session, contact)
        return True

    async def _moved_in(self, engine: CallEngine, session: Session, token: str) -> None:
        """A call another node moved here: run the ICE answer it left, as this call's own."""
        assert self.mover is not None
        move = None
        if moved_call_id(token) == session.call_id:
            try:
                move = await self.mover.take(token)
            except Exception as exc:
                log.warning("event=call_move_lost call_id=%s error=%r", session.call_id, exc)
        if move is None or self.apps.secret_for(move.app_key) is None:
            log.warning("event=call_move_refused call_id=%s", session.call_id)
            engine.reject(session, 403, EndReason.GENERAL_ERROR)
            return
        call = SinchCall.inbound(move.app_key, move.number, move.cli)
        self.calls[session.call_id] = call
        self.save(session, call)
        await self.execute(session, call, move.answer, "ice")

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
        engine, media = self.engine, self.media
        assert engine is not None and media is not None and self.conferences is not None
        if isinstance(op, ops.Answer):
            if session.call.state is not CallState.ANSWERED and session.incoming is not None:
                engine.answer(session)
        elif isinstance(op, ops.Play):
            await self._ensure_answered(session)
            await media.play(session, list(op.prompts), op.locale or call.locale)
        elif isinstance(op, ops.SendDigits):
            await self._ensure_answered(session)
            await media.send_digits(session, op.value)
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
            await media.park(session, call, op)
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

    def run_patch(self, session: Session, call: SinchCall, plan: list[ops.Operation]) -> None:
        """Run a PATCH's plan on a live call, in the background."""
        self._spawn(self._run_all(session, call, plan))

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
        self.save(session, call)

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
            assert self.media is not None
            await self.media.send_digits(other, op.dtmf)
        room = f"bridge:{session.call_id}"
        forward = DtmfOptions(mode=DtmfMode.FORWARD)
        self.conferences.join(session, room, forward)
        self.conferences.join(other, room, forward)
        if op.max_duration:
            engine.limit_duration(session, float(op.max_duration))

    async def run_menu(self, session: Session, call: SinchCall, op: ops.RunMenu) -> None:
        """Run the menus (calls/playback.py), then send their result in a PIE and run its answer."""
        assert self.engine is not None and self.media is not None
        result = await self.media.menu(session, call, op)
        if result is None or not session.call.active:
            return
        body = bodies.menu_pie(
            call.fields(session.call_id),
            menu_id=result.menu_id,
            kind=result.type,
            value=result.value,
            input_method=result.input_method,
        )
        answer = await self.callbacks.ask(session, call, "pie", body)
        if answer is None:
            await self.engine.hangup(session, EndReason.CALLBACK_ERROR)
            return
        await self.execute(session, call, answer, "pie")

    # Engine hooks --------------------------------------------------------------------------------------

    def on_answered(self, engine: CallEngine, session: Session) -> None:
        call = self.calls.get(session.call_id)
        if call is None:
            return
        if session.call.direction is not Direction.OUTBOUND:
            if self.directory is not None:
                self.save(session, call)  # enters what its DiCE needs in the cluster's directory
            return
        self.save(session, call)
        engine.spawn(self._answered(session, call))

    async def _answered(self, session: Session, call: SinchCall) -> None:
        assert self.engine is not None and self.media is not None
        callout = call.callout
        if callout is None:
            return
        if callout.enable_ace or "ace" in call.custom_svaml:
            # No answer (timeout, error, not JSON) and `continue` both mean: go on as the callout said.
            # Only an answer naming another action replaces the callout's own plan.
            answer = await self.callbacks.ask(session, call, "ace", bodies.ace(call.fields(session.call_id)))
            if answer is not None and not await self.execute(session, call, answer, "ace"):
                return
            if not session.call.active:
                return
        if callout.method is CalloutMethod.CUSTOM:
            return
        if callout.greeting:
            await self.media.play(session, [prompts.speech(callout.greeting)], call.locale)
        if callout.dtmf:
            await self.media.send_digits(session, callout.dtmf)
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
            await self.media.play(session, list(to_play), call.locale)
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
        delivery = self.callbacks.notify(session, call, "pie", body, attempt_timeout=PIE_FIRST_ATTEMPT)
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
        self.save(session, call)
        if (
            call.claimed is not None
            and self.directory is not None
            and self.conferences is not None
            and call.claimed not in self.conferences.rooms
        ):
            # Claimed for this call, which ended before its room began: nobody mixes it here.
            self.directory.conference_ended(call.claimed)
        if (call.enable_dice or call.method == "ice") and not call.moved:
            self.callbacks.notify(session, call, "dice", self._dice(session, call))
        # An ended call is known from its record in the store (GET /calling/v1/calls/id/...); kept here,
        # every call the server ever had would stay in memory.
        self.calls.pop(session.call_id, None)
        engine.forget(session)

    def _dice(self, session: Session, call: SinchCall) -> dict[str, Any]:
        assert self.engine is not None
        return bodies.dice(
            call.fields(session.call_id),
            result=session.call.result.value if session.call.result else "N/A",
            reason=session.call.reason.value if session.call.reason else "N/A",
            duration=session.call.duration(self.engine.now()),
            to=call.destination,
            cli=call.cli,
        )

    def save(self, session: Session, call: SinchCall) -> None:
        """Store the call's record as it is now; in a cluster, also what a survivor would need to send its
        DiCE should this node die (docs/cluster.md, "When a node dies")."""
        assert self.engine is not None
        self.store.save_call(call_record(session.call, call, self.engine.now()))
        if (
            self.directory is not None
            and session.call.active
            and (call.enable_dice or call.method == "ice")
            and (target := self.callbacks.target(call, "dice"))
        ):
            self.directory.call_dice(session.call_id, call.app_key, target, self._dice(session, call))
