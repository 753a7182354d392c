"""The Sinch-style application: what configured `[[applications]]` get (shared/spec/sinch-voice-v1.md).

Inbound calls to an application's numbers ask its backend with an ICE and do what the SVAML answer says;
callouts (`conferenceCallout`, `ttsCallout`, `customCallout`) are placed at once and, when answered, ask
for an ACE if enabled and then play, join or hang up as their method says. Conference collections and
runMenu results go out as PIEs, ended calls as DiCEs: those that need no answer through the persisted
outbox (callbacks/outbox.py), so none is lost to a backend that is down or a server restart.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from tonebridge.api.errors import NOT_FOUND, ApiError, invalid, missing
from tonebridge.calls.call import CallState, Direction, EndReason
from tonebridge.calls.engine import CallEngine, Destination, Session
from tonebridge.conference.collector import CollectionDone
from tonebridge.conference.options import (
    DtmfMode,
    DtmfOptions,
    InvalidField,
    validate_conference_id,
    validate_moh_class,
)
from tonebridge.conference.room import ConferenceEnded
from tonebridge.config import Config
from tonebridge.media.endpoint import Press
from tonebridge.media.players import make_moh
from tonebridge.media.wav import WavPlayer
from tonebridge.sip.message import SipUri
from tonebridge.svaml import interpreter as ops
from tonebridge.svaml.models import Prompt, SvamlError, UnknownName, parse_svaml

if TYPE_CHECKING:
    from tonebridge.callbacks.outbox import Outbox
    from tonebridge.calls.conferencing import ConferenceService
    from tonebridge.store.db import Store

log = logging.getLogger("tonebridge.sinch")

SYNC_CALLBACK_TIMEOUT = 5.0  # ICE and ACE (sinch-voice-v1.md §2)
PIE_FIRST_ATTEMPT = 2.0  # conference-dtmf.md §3 detect 4
MAX_CUSTOM = 1024
MAX_DURATION = 14_400
MAX_TTS = 600
DTMF_SEND = re.compile(r"^[0-9#*A-Dw]+$")


def iso_now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass
class AppState:
    """An application's live settings: those of the config file, changed by the configuration API."""

    key: str
    secret: str
    primary: str
    fallback: str = ""
    numbers: set[str] = field(default_factory=set)


@dataclass
class SinchCall:
    """What the API knows of a call beyond its SIP leg."""

    app_key: str
    method: str  # "ice" for inbound, else the callout method
    destination: dict[str, str]
    cli: str = ""
    domain: str = "pstn"
    custom: str | None = None
    conference_id: str | None = None
    dtmf_options: DtmfOptions | None = None
    moh: str | None = None
    greeting: str | None = None
    locale: str = "en-US"
    dtmf: str | None = None
    text: str | None = None
    prompts: str | None = None
    enable_ace: bool = False
    enable_dice: bool = False
    enable_pie: bool = False
    max_duration: int | None = None
    custom_svaml: dict[str, str] = field(default_factory=dict)  # customCallout ice/ace/pie
    cookies: dict[str, str] = field(default_factory=dict)
    timestamp: str = field(default_factory=iso_now)
    menu: Any = None


class SinchApplication:
    def __init__(self, config: Config, store: Store, outbox: Outbox, *, base_url: str = "",
                 tts_dir: Path | None = None) -> None:
        self.config = config
        self.store = store
        self.outbox = outbox
        self.base_url = base_url
        self.tts_dir = tts_dir
        self.apps: dict[str, AppState] = {
            a.key: AppState(a.key, a.secret, a.callback_url, numbers=set(a.numbers)) for a in config.applications
        }
        self.engine: CallEngine | None = None
        self.conferences: ConferenceService | None = None
        self.conference_owner: dict[str, str] = {}
        self.calls: dict[str, SinchCall] = {}

    def attach(self, conferences: ConferenceService) -> None:
        self.conferences = conferences
        self.engine = conferences.engine
        conferences.listeners.append(self._room_effect)

    def _room_effect(self, effect: object) -> None:
        if isinstance(effect, ConferenceEnded):
            # A conference id belongs to an application only while the conference lasts.
            self.conference_owner.pop(effect.conference_id, None)

    # Lookups -------------------------------------------------------------------------------------------

    def secret_for(self, key: str) -> str | None:
        app = self.apps.get(key)
        return app.secret if app else None

    def owner_of_number(self, number: str) -> AppState | None:
        plain = number.lstrip("+")
        for app in self.apps.values():
            if any(n.lstrip("+") == plain for n in app.numbers):
                return app
        return None

    def _own_call(self, key: str, call_id: str) -> Session | None:
        call = self.calls.get(call_id)
        if call is None or call.app_key != key:
            return None
        assert self.engine is not None
        return self.engine.find(call_id)

    def _check_conference(self, key: str, conference_id: str) -> None:
        assert self.conferences is not None
        if self.conference_owner.get(conference_id) != key or self.conferences.rooms.get(conference_id) is None:
            raise ApiError(NOT_FOUND, f"conferenceId: conference {conference_id!r} not found")

    # Callbacks -----------------------------------------------------------------------------------------

    def _event(self, event: str, session: Session, call: SinchCall, **extra: Any) -> dict[str, Any]:
        body: dict[str, Any] = {"event": event, "callid": session.call_id, "timestamp": iso_now(), "version": 1}
        if call.custom is not None:
            body["custom"] = call.custom
        body["applicationKey"] = call.app_key
        if call.conference_id:
            body["conferenceId"] = call.conference_id
        if call.cookies:
            body["cookies"] = [{"key": k, "value": v} for k, v in call.cookies.items()]
        body.update(extra)
        return body

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
        response = await self.outbox.request_sync(app.key, target, body, SYNC_CALLBACK_TIMEOUT,
                                                  fallback_url=app.fallback or None)
        if response is None or not 200 <= response.status_code < 300:
            log.warning("event=callback_failed call_id=%s callback=%s status=%s", session.call_id, event,
                        None if response is None else response.status_code)
            return None
        try:
            answer = response.json()
        except ValueError:
            return None
        return answer if isinstance(answer, dict) else None

    def _notify(self, session: Session, call: SinchCall, event: str, body: dict[str, Any],  # type: ignore[no-untyped-def]
                attempt_timeout: float | None = None):
        app = self.apps[call.app_key]
        url = call.custom_svaml.get(event) if event in call.custom_svaml else None
        target = url if url and url.startswith(("http://", "https://")) else app.primary
        if not target:
            return None
        return self.outbox.enqueue(app.key, target, session.call_id, event, body, attempt_timeout=attempt_timeout)

    # Inbound -------------------------------------------------------------------------------------------

    async def incoming(self, engine: CallEngine, session: Session) -> None:
        request_uri = session.invite.request_uri
        number = request_uri.user or session.invite.to.uri.user or ""
        app = self.owner_of_number(number)
        if app is None:
            engine.reject(session, 404)
            return
        call = SinchCall(app.key, "ice", {"type": "did", "endpoint": number}, cli=session.call.cli)
        self.calls[session.call_id] = call
        self._save(session, call)
        body = self._event("ice", session, call, callResourceUrl=f"{self.base_url}/calling/v1/calls/id/{session.call_id}",
                           cli=session.call.cli or "private", to={"type": "did", "endpoint": number},
                           domain="pstn", originationType="PSTN", rdnis="",
                           callHeaders=[], userRate={"currencyId": "USD", "amount": 0.0})
        answer = await self._ask(session, call, "ice", body)
        if answer is None:
            # Sinch plays an error prompt and hangs up; there is no prompt to play on a call not yet answered.
            engine.reject(session, 480, EndReason.CALLBACK_ERROR)
            return
        await self.execute(session, call, answer, "ice")

    # SVAML -----------------------------------------------------------------------------------------------

    async def execute(self, session: Session, call: SinchCall, document: dict, event: str) -> bool:
        """Run an SVAML answer; True when its action was `continue` (explicit, or what an empty or
        unusable ACE answer means), so the call goes on with what was already planned for it."""
        assert self.engine is not None
        try:
            svaml = parse_svaml(document)
            plan = ops.plan(svaml, ops.CallContext(event=event, answered=session.call.state is CallState.ANSWERED))
        except UnknownName as exc:
            log.warning("event=svaml_unknown call_id=%s path=%s message=%r", session.call_id, exc.path, exc.message)
            plan = [ops.Continue()] if event == "ace" else [ops.Hangup()]
        except SvamlError as exc:
            log.warning("event=svaml_invalid call_id=%s path=%s message=%r", session.call_id, exc.path, exc.message)
            plan = [ops.Continue()] if event == "ace" else [ops.Hangup()]
        for op in plan:
            if not session.call.active:
                return False
            await self._run(session, call, op, event)
        return bool(plan) and isinstance(plan[-1], ops.Continue)

    async def _run(self, session: Session, call: SinchCall, op: object, event: str) -> None:
        engine = self.engine
        assert engine is not None and self.conferences is not None
        if isinstance(op, ops.Answer):
            if session.call.state is not CallState.ANSWERED and session.incoming is not None:
                engine.answer(session)
        elif isinstance(op, ops.Play):
            await self._ensure_answered(session)
            await self.play(session, op.prompts, op.locale or call.locale)
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
                await engine.hangup(session, EndReason.CALLEE_HANGUP if by_callee else EndReason.MANAGER_HANGUP)
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
            log.info("event=svaml_ignored call_id=%s operation=%s reason=recording_not_yet_supported",
                     session.call_id, type(op).__name__)
        else:
            log.warning("event=svaml_not_supported call_id=%s operation=%s", session.call_id, type(op).__name__)
            await engine.hangup(session, EndReason.GENERAL_ERROR)

    async def _ensure_answered(self, session: Session) -> None:
        if session.call.state is not CallState.ANSWERED and session.incoming is not None:
            assert self.engine is not None
            self.engine.answer(session)

    def join(self, session: Session, call: SinchCall, conference_id: str, options: DtmfOptions | None,
             moh: str | None) -> None:
        assert self.conferences is not None
        owner = self.conference_owner.get(conference_id)
        if owner is not None and owner != call.app_key and conference_id in self.conferences.rooms:
            log.warning("event=conference_foreign call_id=%s conference_id=%s", session.call_id, conference_id)
            self.engine.spawn(self.engine.hangup(session, EndReason.GENERAL_ERROR))  # type: ignore[union-attr]
            return
        call.conference_id = conference_id
        self.conferences.join(session, conference_id, options, moh)
        self.conference_owner[conference_id] = call.app_key
        self._save(session, call)

    async def bridge(self, session: Session, call: SinchCall, op: Any) -> None:
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
        session.data["bridge_peer"] = other
        other.data["bridge_peer"] = session
        answered = await other.wait_answered(ring_timeout + 5)
        session.leg.source = None
        if not answered or not session.call.active:
            if session.call.active:
                await engine.hangup(session, other.call.reason or EndReason.GENERAL_ERROR)
            if other.call.active:
                await engine.hangup(other, EndReason.MANAGER_HANGUP)
            return
        if op.dtmf if isinstance(op, ops.DialPstn) else False:
            await self.send_digits(other, op.dtmf)
        room = f"bridge:{session.call_id}"
        forward = DtmfOptions(mode=DtmfMode.FORWARD)
        self.conferences.join(session, room, forward)
        self.conferences.join(other, room, forward)
        max_duration = op.max_duration
        if max_duration:
            engine.spawn(self._limit(session, float(max_duration)))

    async def _limit(self, session: Session, seconds: float) -> None:
        try:
            await asyncio.wait_for(session.ended_event.wait(), seconds)
        except TimeoutError:
            await self.engine.hangup(session, EndReason.TIMEOUT)  # type: ignore[union-attr]

    async def park(self, session: Session, call: SinchCall, op: Any) -> None:
        """park: the intro once, then the hold prompts looped, until a PATCH unparks the call or
        maxDuration passes (then the call ends with reason TIMEOUT)."""
        locale = op.locale or call.locale
        session.data["parked"] = True
        deadline = time.monotonic() + op.max_duration
        still_parked = lambda: bool(session.data.get("parked"))  # noqa: E731
        await self.play(session, list(op.intro_prompts), locale, until=still_parked)
        while session.call.active and still_parked() and time.monotonic() < deadline:
            if op.hold_prompts:
                await self.play(session, list(op.hold_prompts), locale, until=still_parked)
            else:
                await self.engine.clock.until(  # type: ignore[union-attr]
                    lambda: not still_parked() or not session.call.active or time.monotonic() >= deadline)
        if session.call.active and still_parked():
            session.data["parked"] = False
            await self.engine.hangup(session, EndReason.TIMEOUT)  # type: ignore[union-attr]

    async def play(self, session: Session, prompts: list[Any], locale: str,
                   until: Callable[[], bool] | None = None) -> None:
        """Play prompts to a call that is not in a conference, and wait until they are heard (or `until`
        turns false)."""
        samples = await asyncio.get_running_loop().run_in_executor(None, self._render, prompts, locale)
        if samples.size == 0:
            return
        player = WavPlayer(samples)
        session.leg.source = player
        await self.engine.clock.until(  # type: ignore[union-attr]
            lambda: player.finished or not session.call.active or (until is not None and not until()))
        session.leg.source = None

    def _render(self, prompts: list[Any], locale: str) -> np.ndarray:
        from tonebridge.media.tts import TtsError, synthesize

        parts: list[np.ndarray] = []
        for prompt in prompts:
            if prompt.kind == "href":
                fetched = fetch_wav(prompt.value)
                if fetched is not None:
                    parts.append(fetched)
                continue
            if not prompt.is_speech:
                log.info("event=prompt_not_played kind=%s reason=no_file_store", prompt.kind)
                continue
            try:
                parts.append(synthesize(prompt.value, locale, cache_dir=self.tts_dir))
            except TtsError as exc:
                log.warning("event=tts_unavailable reason=%r", str(exc))
        return np.concatenate(parts) if parts else np.zeros(0, dtype=np.int16)

    async def send_digits(self, session: Session, value: str) -> None:
        assert self.engine is not None
        for chunk in re.split(r"(w)", value):
            if chunk == "w":
                await asyncio.sleep(0.5)  # `w` is a 500 ms pause in the digit string itself
            elif chunk:
                await self.engine.send_dtmf(session, chunk, "rfc4733" if session.media and
                                            session.media.telephone_event_pt is not None else "inband")

    async def run_menu(self, session: Session, call: SinchCall, op: Any) -> None:
        from tonebridge.svaml import menu as menus

        runner = menus.MenuRunner(op.menu_spec, time.monotonic())
        call.menu = runner
        result = await self._drive_menu(session, runner)
        call.menu = None
        if result is None or not session.call.active:
            return
        body = self._event("pie", session, call, menuResult={"menuId": result.menu_id, "type": result.type,
                                                             "value": result.value, "inputMethod": result.input_method})
        answer = await self._ask(session, call, "pie", body)
        if answer is None:
            await self.engine.hangup(session, EndReason.CALLBACK_ERROR)  # type: ignore[union-attr]
            return
        await self.execute(session, call, answer, "pie")

    async def _drive_menu(self, session: Session, runner: Any) -> Any:
        """Run the menu's effects: prompts played, presses fed in, timers fired; returns its result."""
        from tonebridge.svaml import menu as menus

        wake = asyncio.Event()
        session.data["menu_wake"] = wake
        pending = runner.start(time.monotonic())
        player: WavPlayer | None = None
        while session.call.active:
            for effect in pending:
                if isinstance(effect, menus.MenuResult):
                    session.leg.source = None
                    return effect
                if isinstance(effect, menus.PlayPrompt):
                    samples = await asyncio.get_running_loop().run_in_executor(
                        None, self._render, list(effect.prompts), effect.locale)
                    player = WavPlayer(samples) if samples.size else None
                    session.leg.source = player
                    if player is None:
                        pending = runner.prompt_finished(time.monotonic())
                        break
                elif isinstance(effect, menus.StopPrompt):
                    session.leg.source = None
                    player = None
            else:
                pending = []
            if pending:
                continue
            deadline = runner.next_timer()
            timeout = 0.02 if player is not None else (None if deadline is None else max(0.0, deadline - time.monotonic()))
            wake.clear()
            try:
                await asyncio.wait_for(wake.wait(), timeout)
            except TimeoutError:
                pass
            now = time.monotonic()
            presses = session.data.pop("menu_presses", [])
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

    # Engine hooks --------------------------------------------------------------------------------------

    def on_answered(self, engine: CallEngine, session: Session) -> None:
        call = self.calls.get(session.call_id)
        if call is None or session.call.direction is not Direction.OUTBOUND:
            return
        self._save(session, call)
        engine.spawn(self._answered(session, call))

    async def _answered(self, session: Session, call: SinchCall) -> None:
        if call.enable_ace or "ace" in call.custom_svaml:
            # No answer (timeout, error, not JSON) and `continue` both mean: go on as the callout said.
            # Only an answer naming another action replaces the callout's own plan.
            answer = await self._ask(session, call, "ace", self._event("ace", session, call))
            if answer is not None and not await self.execute(session, call, answer, "ace"):
                return
            if not session.call.active:
                return
        if call.method == "customCallout":
            return
        if call.greeting:
            await self.play(session, [_Text(call.greeting)], call.locale)
        if call.dtmf:
            await self.send_digits(session, call.dtmf)
        if call.method == "conferenceCallout" and session.call.active and call.conference_id:
            self.join(session, call, call.conference_id, call.dtmf_options, call.moh)
        elif call.method == "ttsCallout" and session.call.active:
            prompts: list[Any] = [_Text(call.text)] if call.text else []
            if call.prompts:
                from tonebridge.svaml.models import parse_prompts

                prompts = parse_prompts(call.prompts)
            await self.play(session, prompts, call.locale)
            await self.engine.hangup(session, EndReason.MANAGER_HANGUP)  # type: ignore[union-attr]

    def on_press(self, engine: CallEngine, session: Session, press: Press) -> None:
        call = self.calls.get(session.call_id)
        if call is not None and call.menu is not None:
            if press.started:
                session.data.setdefault("menu_presses", []).append(press.digit)
                wake = session.data.get("menu_wake")
                if isinstance(wake, asyncio.Event):
                    wake.set()
            return
        if self.conferences is not None:
            self.conferences.on_press(session, press)

    def collection(self, session: Session, done: CollectionDone):  # type: ignore[no-untyped-def]
        """A detect-mode collection: its PIE goes through the outbox; the participant returns to the mix
        when the first attempt completes or after 2 s (conference-dtmf.md §3 detect 4)."""
        call = self.calls.get(session.call_id)
        if call is None:
            return None
        body = self._event("pie", session, call, conferenceId=done.conference_id,
                           menuResult={"menuId": done.conference_id, "type": "sequence", "value": done.digits,
                                       "inputMethod": "dtmf"})
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
        peer = session.data.get("bridge_peer")
        if isinstance(peer, Session) and peer.call.active:
            reason = EndReason.CALLER_HANGUP if peer.call.direction is Direction.INBOUND else EndReason.CALLEE_HANGUP
            engine.spawn(engine.hangup(peer, reason))
        call = self.calls.get(session.call_id)
        if call is None:
            engine.forget(session)
            return
        self._save(session, call)
        if call.enable_dice or call.method == "ice":
            result = session.call.result.value if session.call.result else "N/A"
            reason = session.call.reason.value if session.call.reason else "N/A"
            body = self._event("dice", session, call, result=result, reason=reason,
                               duration=session.call.duration(engine.now()),
                               to=call.destination, **{"from": call.cli or "private"},
                               debit={"currencyId": "USD", "amount": 0.0},
                               userRate={"currencyId": "USD", "amount": 0.0})
            self._notify(session, call, "dice", body)
        engine.forget(session)

    def _save(self, session: Session, call: SinchCall) -> None:
        self.store.save_call(self._record(session, call))

    def _record(self, session: Session, call: SinchCall) -> dict[str, Any]:
        assert self.engine is not None
        c = session.call
        return {
            "call_id": session.call_id, "app_key": call.app_key,
            "direction": c.direction.value, "from_": call.cli, "to": json.dumps(call.destination),
            "domain": call.domain, "status": "ONGOING" if c.active else "FINAL",
            "result": c.result.value if c.result else "N/A", "reason": c.reason.value if c.reason else "N/A",
            "started_at": call.timestamp, "duration": c.duration(self.engine.now()), "custom": call.custom,
            "conference_id": call.conference_id, "cookies": call.cookies,
        }

    # API operations ------------------------------------------------------------------------------------

    async def callout(self, key: str, body: dict[str, Any]) -> str:
        assert self.engine is not None
        method = body.get("method")
        if method is None:
            raise missing("method")
        if method not in ("conferenceCallout", "ttsCallout", "customCallout"):
            raise invalid("method", "must be conferenceCallout, ttsCallout or customCallout")
        params = body.get(method)
        if params is None:
            raise missing(method)
        if not isinstance(params, dict):
            raise invalid(method, "must be an object")
        call = parse_callout(key, method, params, body)
        destination = Destination(call.destination["type"], call.destination["endpoint"])
        call_id = secrets.token_hex(16)
        self.calls[call_id] = call
        session = await self.engine.originate(destination, cli=call.cli, call_id=call_id)
        if session.call.active:
            self._save(session, call)
        return call_id

    def call_info(self, key: str, call_id: str) -> dict[str, Any]:
        call = self.calls.get(call_id)
        record = self.store.get_call(call_id)
        if (call is None or call.app_key != key) and (record is None or record.get("app_key") != key):
            raise ApiError(NOT_FOUND, f"callId: call {call_id!r} not found")
        session = self.engine.find(call_id) if self.engine else None
        if session is not None and call is not None:
            record = self._record(session, call)
        assert record is not None
        to = record.get("to") or "{}"
        to = json.loads(to) if isinstance(to, str) else to
        return {
            "from": {"type": "number", "endpoint": record.get("from_") or "private"},
            "to": to, "domain": record.get("domain") or "pstn", "callId": call_id,
            "duration": record.get("duration") or 0, "status": record.get("status"),
            "result": record.get("result") or "N/A", "reason": record.get("reason") or "N/A",
            "timestamp": record.get("started_at"), "custom": record.get("custom"),
            "userRate": {"currencyId": "USD", "amount": 0.0}, "debit": {"currencyId": "USD", "amount": 0.0},
        }

    async def update_call(self, key: str, call_id: str, body: dict[str, Any], leg: str | None) -> None:
        session = self._own_call(key, call_id)
        if session is None or not session.call.active:
            raise ApiError(NOT_FOUND, f"callId: call {call_id!r} not found or ended")
        call = self.calls[call_id]
        parked = bool(session.data.get("parked"))
        try:
            svaml = parse_svaml(body)
            plan = ops.plan(svaml, ops.CallContext(event="patch", answered=session.call.state is CallState.ANSWERED,
                                                   parked=parked))
        except SvamlError as exc:
            raise invalid(exc.path, exc.message) from None
        if parked:
            session.data["parked"] = False  # the PATCH is the postponed ICE answer
        self.engine.spawn(self._run_all(session, call, plan))  # type: ignore[union-attr]

    async def _run_all(self, session: Session, call: SinchCall, plan: list[Any]) -> None:
        for op in plan:
            if not session.call.active:
                return
            await self._run(session, call, op, "patch")

    def conference_participants(self, key: str, conference_id: str) -> list[dict[str, Any]]:
        self._check_conference(key, conference_id)
        assert self.conferences is not None
        return [{k: p[k] for k in ("cli", "id", "duration", "muted", "onhold")}
                for p in self.conferences.participants(conference_id)]

    def kick_all(self, key: str, conference_id: str) -> None:
        self._check_conference(key, conference_id)
        self.conferences.kick_all(conference_id)  # type: ignore[union-attr]

    def _participant(self, key: str, conference_id: str, call_id: str) -> None:
        self._check_conference(key, conference_id)
        room = self.conferences.rooms.get(conference_id)  # type: ignore[union-attr]
        if room is None or call_id not in room:
            raise ApiError(NOT_FOUND, f"callId: {call_id!r} is not in conference {conference_id!r}")

    def kick_participant(self, key: str, conference_id: str, call_id: str) -> None:
        self._participant(key, conference_id, call_id)
        self.conferences.kick(call_id, conference_id)  # type: ignore[union-attr]

    def manage_participant(self, key: str, conference_id: str, call_id: str, body: dict[str, Any]) -> None:
        self._participant(key, conference_id, call_id)
        service = self.conferences
        assert service is not None
        command = body.get("command")
        options = body.get("conferenceDtmfOptions")
        if command is None and options is None:
            raise missing("command")
        moh = body.get("moh")
        if moh is not None:
            try:
                validate_moh_class(moh, "moh")
            except InvalidField as exc:
                raise invalid(exc.field, exc.message) from None
        parsed: DtmfOptions | None = None
        if options is not None:
            if not isinstance(options, dict):
                raise invalid("conferenceDtmfOptions", "must be an object")
            try:
                parsed = DtmfOptions.from_json(options)
            except InvalidField as exc:
                raise invalid(f"conferenceDtmfOptions.{exc.field}", exc.message) from None
        if command is not None and command not in ("mute", "unmute", "onhold", "resume"):
            raise invalid("command", "must be mute, unmute, onhold or resume")
        if command == "mute":
            service.mute(call_id, conference_id)
        elif command == "unmute":
            service.unmute(call_id, conference_id)
        elif command == "onhold":
            service.hold(call_id, moh, conference_id)
        elif command == "resume":
            service.resume(call_id, conference_id)
        if parsed is not None:
            service.set_options(call_id, parsed, conference_id)

    def list_numbers(self, key: str) -> list[dict[str, str]]:
        return [{"number": n, "applicationkey": key, "capability": "voice"} for n in sorted(self.apps[key].numbers)]

    def assign_numbers(self, key: str, body: dict[str, Any]) -> None:
        numbers = body.get("numbers")
        if not isinstance(numbers, list) or not all(isinstance(n, str) and n for n in numbers):
            raise invalid("numbers", "must be a list of numbers") if numbers is not None else missing("numbers")
        target = body.get("applicationkey") or body.get("applicationKey") or key
        if target != key:
            raise ApiError(NOT_FOUND, f"applicationkey: no application {target!r} for these credentials")
        for number in numbers:
            owner = self.owner_of_number(number)
            if owner is not None and owner.key != key:
                raise invalid("numbers", f"{number} belongs to another application")
        self.apps[key].numbers.update(numbers)

    def unassign_number(self, key: str, body: dict[str, Any]) -> None:
        number = body.get("number")
        if not isinstance(number, str) or not number:
            raise invalid("number", "must be a number") if number is not None else missing("number")
        self.apps[key].numbers.discard(number)

    def callback_urls(self, key: str) -> dict[str, str]:
        app = self.apps[key]
        return {"primary": app.primary, "fallback": app.fallback}

    def set_callback_urls(self, key: str, url: dict[str, Any]) -> None:
        for name in ("primary", "fallback"):
            value = url.get(name)
            if value is not None and (not isinstance(value, str) or
                                      (value and not value.startswith(("http://", "https://")))):
                raise invalid(f"url.{name}", "must be an http:// or https:// URL")
        app = self.apps[key]
        if "primary" in url:
            app.primary = url["primary"] or ""
        if "fallback" in url:
            app.fallback = url["fallback"] or ""

    def query_number(self, number: str) -> dict[str, Any]:
        digits = re.sub(r"[^0-9]", "", number)
        return {"countryId": "", "numberType": "Unknown", "normalizedNumber": f"+{digits}" if digits else number,
                "restricted": False, "rate": {"currencyId": "USD", "amount": 0.0}}


MAX_HREF_BYTES = 10 * 1024 * 1024


def fetch_wav(url: str) -> np.ndarray | None:
    """A `#href[URL]` prompt: a WAV fetched over http(s), as 8 kHz samples; None (logged) when it fails."""
    import io

    import httpx

    from tonebridge.media.wav import WavError, read_wav

    if not url.startswith(("http://", "https://")):
        log.warning("event=href_refused url=%r reason=scheme", url[:200])
        return None
    try:
        with httpx.Client(timeout=5.0, trust_env=False, follow_redirects=True) as client:
            response = client.get(url)
        if response.status_code != 200 or len(response.content) > MAX_HREF_BYTES:
            log.warning("event=href_failed url=%r status=%s", url[:200], response.status_code)
            return None
        return read_wav(io.BytesIO(response.content))
    except (httpx.HTTPError, WavError, OSError, EOFError) as exc:
        log.warning("event=href_failed url=%r reason=%r", url[:200], str(exc))
        return None


def _Text(text: str) -> Prompt:  # noqa: N802 (reads as the prompt it makes)
    return Prompt("tts", text)


def _bool(params: dict[str, Any], name: str) -> bool:
    value = params.get(name, False)
    if value is None:
        return False
    if not isinstance(value, bool):
        raise invalid(name, "must be true or false")
    return value


def _text(params: dict[str, Any], name: str, limit: int = 1024) -> str | None:
    value = params.get(name)
    if value is None:
        return None
    if not isinstance(value, str):
        raise invalid(name, "must be a string")
    if len(value.encode()) > limit:
        raise invalid(name, f"must be at most {limit} bytes")
    return value


def parse_destination(params: dict[str, Any], method: str) -> dict[str, str]:
    destination = params.get("destination")
    if destination is None:
        raise missing(f"{method}.destination")
    if not isinstance(destination, dict):
        raise invalid(f"{method}.destination", "must be an object with type and endpoint")
    kind = destination.get("type")
    endpoint = destination.get("endpoint")
    if kind is None:
        raise missing(f"{method}.destination.type")
    if not isinstance(kind, str) or kind.lower() not in ("number", "username", "sip"):
        raise invalid(f"{method}.destination.type", "must be number, username or sip")
    if endpoint is None:
        raise missing(f"{method}.destination.endpoint")
    if not isinstance(endpoint, str) or not endpoint or len(endpoint) > 256:
        raise invalid(f"{method}.destination.endpoint", "must be a non-empty string")
    if kind.lower() == "sip":
        try:
            SipUri.parse(endpoint if endpoint.lower().startswith(("sip:", "sips:")) else f"sip:{endpoint}")
        except ValueError as exc:
            raise invalid(f"{method}.destination.endpoint", f"not a SIP URI ({exc})") from None
    elif not re.fullmatch(r"[A-Za-z0-9+._\-]{1,64}", endpoint):
        raise invalid(f"{method}.destination.endpoint", "must be a number or user name (letters, digits, + . _ -)")
    return {"type": kind.lower(), "endpoint": endpoint}


def parse_callout(key: str, method: str, params: dict[str, Any], envelope: dict[str, Any]) -> SinchCall:
    """Validate a callout body into a SinchCall; every fault is a 400 naming the field."""
    destination = parse_destination(params, method)
    cli = _text(params, "cli", 64)
    if cli is None:
        cli = _text(envelope, "cli", 64)  # the seed's example puts cli beside method
    call = SinchCall(key, method, destination, cli=cli or "")
    call.custom = _text(params, "custom", MAX_CUSTOM)
    call.locale = _text(params, "locale", 32) or "en-US"
    call.enable_ace = _bool(params, "enableAce")
    call.enable_dice = _bool(params, "enableDice")
    call.enable_pie = _bool(params, "enablePie")
    domain = _text(params, "domain", 16)
    if domain is not None and domain.lower() not in ("pstn", "mxp"):
        raise invalid(f"{method}.domain", "must be pstn or mxp")
    call.domain = (domain or "pstn").lower()
    dtmf = _text(params, "dtmf", 128)
    if dtmf is not None and dtmf and not DTMF_SEND.match(dtmf):
        raise invalid(f"{method}.dtmf", "may hold only 0-9, *, #, A-D and w (a 500 ms pause)")
    call.dtmf = dtmf or None
    max_duration = params.get("maxDuration")
    if max_duration is not None:
        if isinstance(max_duration, bool) or not isinstance(max_duration, int) or not 0 < max_duration <= MAX_DURATION:
            raise invalid(f"{method}.maxDuration", f"must be an integer from 1 to {MAX_DURATION} seconds")
        call.max_duration = max_duration
    if method == "conferenceCallout":
        conference_id = params.get("conferenceId")
        if conference_id is None:
            raise missing("conferenceCallout.conferenceId")
        try:
            call.conference_id = validate_conference_id(conference_id, "conferenceCallout.conferenceId")
            options = params.get("conferenceDtmfOptions")
            if options is not None and not isinstance(options, dict):
                raise InvalidField("conferenceCallout.conferenceDtmfOptions", "must be an object")
            call.dtmf_options = DtmfOptions.from_json(options) if options is not None else None
            moh = params.get("mohClass")
            call.moh = validate_moh_class(moh, "conferenceCallout.mohClass") if moh is not None else None
        except InvalidField as exc:
            field_name = exc.field if exc.field.startswith("conferenceCallout") else \
                f"conferenceCallout.conferenceDtmfOptions.{exc.field}"
            raise invalid(field_name, exc.message) from None
        call.greeting = _text(params, "greeting", MAX_TTS * 4)
    elif method == "ttsCallout":
        call.text = _text(params, "text", MAX_TTS * 4)
        if call.text is not None and len(call.text) > MAX_TTS:
            raise invalid("ttsCallout.text", f"must be at most {MAX_TTS} characters")
        call.prompts = _text(params, "prompts", 4096)
        if not call.text and not call.prompts:
            raise missing("ttsCallout.text")
    else:
        for name in ("ice", "ace", "pie"):
            value = params.get(name)
            if value is None:
                continue
            if isinstance(value, dict):
                value = json.dumps(value)
            if not isinstance(value, str):
                raise invalid(f"customCallout.{name}", "must be SVAML as a JSON string, or a URL")
            call.custom_svaml[name] = value
    return call
