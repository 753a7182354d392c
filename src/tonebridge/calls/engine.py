"""The call engine: turns SIP requests into Calls and Calls into SIP requests.

It is the transaction user of the SIP stack (RFC 3261 §8, §12-15): it answers OPTIONS and REGISTER,
takes inbound INVITEs to the application that owns them, originates outbound calls to trunks, registered
users or SIP URIs, keeps each call's dialog and media leg, and ends calls with a reason. What a call does
once answered (play, join a room, collect digits) is the application's business, reached through the
`Application` protocol.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

from tonebridge.calls.call import Call, CallResult, CallState, Direction, EndReason, outcome_for_status
from tonebridge.config import Config, TrunkConfig
from tonebridge.media.endpoint import MediaClock, MediaLeg, Press
from tonebridge.media.ports import PortPool
from tonebridge.sip import auth, sdp
from tonebridge.sip import transaction as tx
from tonebridge.sip.dialog import Dialog, DialogError
from tonebridge.sip.message import Headers, Request, Response, SipUri
from tonebridge.sip.registrar import IntervalTooBrief, Registrar
from tonebridge.sip.stack import ACCEPT, ALLOW, IncomingRequest, SipStack
from tonebridge.sip.transport import Peer

log = logging.getLogger("tonebridge.calls")

T1 = 0.5
T2 = 4.0
SHUTDOWN_GRACE = 2.0
DTMF_DIGITS = set("0123456789*#ABCD")


class Application(Protocol):
    """What decides about calls: the demo application now, the Sinch-style application later."""

    async def incoming(self, engine: CallEngine, session: Session) -> None:
        """A new inbound call: answer it (engine.answer), reject it (engine.reject), or leave it ringing."""

    def on_answered(self, engine: CallEngine, session: Session) -> None: ...

    def on_press(self, engine: CallEngine, session: Session, press: Press) -> None: ...

    def on_ended(self, engine: CallEngine, session: Session) -> None: ...


@dataclass
class Destination:
    """Where a callout goes: `number` (via the trunk), `username` (a registered user) or `sip` (a URI)."""

    type: str
    endpoint: str


@dataclass
class Session:
    """Everything the engine keeps about one call."""

    call: Call
    leg: MediaLeg
    invite: Request
    peer: Peer
    local_tag: str
    dialog: Dialog | None = None
    incoming: IncomingRequest | None = None
    local_offer: sdp.SessionDescription | None = None
    sdp_version: int = 0
    sdp_session_id: int = field(default_factory=lambda: secrets.randbelow(2**31))
    media: sdp.NegotiatedMedia | None = None
    answered_event: asyncio.Event = field(default_factory=asyncio.Event)
    ended_event: asyncio.Event = field(default_factory=asyncio.Event)
    ack_event: asyncio.Event = field(default_factory=asyncio.Event)
    trunk: TrunkConfig | None = None
    data: dict[str, object] = field(default_factory=dict)

    @property
    def call_id(self) -> str:
        return self.call.call_id

    async def wait_answered(self, timeout: float | None = None) -> bool:
        """True once answered, False if the call ended first (or the timeout passed)."""
        answered = asyncio.ensure_future(self.answered_event.wait())
        ended = asyncio.ensure_future(self.ended_event.wait())
        try:
            await asyncio.wait({answered, ended}, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
        finally:
            answered.cancel()
            ended.cancel()
        return self.answered_event.is_set() and self.call.active


class CallEngine:
    def __init__(self, config: Config, stack: SipStack, clock: MediaClock, application: Application,
                 *, user_agent_name: str = "tonebridge") -> None:
        self.config = config
        self.stack = stack
        self.clock = clock
        self.application = application
        self.name = user_agent_name
        low, high = config.server.rtp_ports
        self.ports = PortPool(low, high)
        self.registrar = Registrar()
        self.digest = auth.DigestServer(realm=config.server.public_address, secret_key=secrets.token_bytes(32),
                                        algorithms=config.server.digest_algorithms)
        self.sessions: dict[str, Session] = {}  # by Tonebridge call id
        self._by_sip_call_id: dict[str, Session] = {}
        self._tasks: set[asyncio.Task[object]] = set()
        self.ended_listeners: list[Callable[[Session], None]] = []
        # What this user agent offers and accepts; the softphone narrows these to act as other peers.
        self.codecs: tuple[str, ...] = ("PCMU", "PCMA")
        self.telephone_event = True
        self.record_calls = False
        stack.on_request = self._on_request
        stack.on_ack = self._on_ack
        stack.on_stray_response = self._on_stray_response

    # Helpers -------------------------------------------------------------------------------------------

    @staticmethod
    def now() -> float:
        return time.monotonic()

    def spawn(self, coro: object) -> asyncio.Task[object]:
        """Run a call's background work; the engine keeps it, logs its failure, cancels it at shutdown."""
        task = asyncio.get_running_loop().create_task(coro)  # type: ignore[arg-type]
        self._tasks.add(task)
        task.add_done_callback(self._task_done)
        return task

    def _task_done(self, task: asyncio.Task[object]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("event=call_task_failed error=%r", task.exception(), exc_info=task.exception())

    def log_event(self, event: str, session: Session | None = None, **fields: object) -> None:
        """One `event=... call_id=... key=value` log line, the format every call event uses."""
        parts = [f"event={event}"]
        if session is not None:
            parts.append(f"call_id={session.call_id}")
        parts.extend(f"{k}={v}" for k, v in fields.items())
        log.info(" ".join(parts))

    def _new_leg(self, call: Call) -> MediaLeg:
        return MediaLeg(self.stack.transport.host, self.ports, call_id=call.call_id, record=self.record_calls,
                        detection=self.clock.detection)

    def _offer(self, session: Session, direction: str = "sendrecv") -> sdp.SessionDescription:
        session.sdp_version += 1
        offer = sdp.build_offer(self.stack.public_address, session.leg.port, codecs=self.codecs,
                                telephone_event_pt=101 if self.telephone_event else None,
                                direction=direction, session_id=session.sdp_session_id,
                                version=session.sdp_version)
        session.local_offer = offer
        return offer

    def _register_session(self, session: Session) -> None:
        self.sessions[session.call_id] = session
        self._by_sip_call_id[session.invite.call_id] = session
        leg = session.leg
        leg.on_press = lambda press, s=session: self._press(s, press)

    def _press(self, session: Session, press: Press) -> None:
        if press.started:
            self.log_event("dtmf", session, digit=press.digit, source=press.source)
        try:
            self.application.on_press(self, session, press)
        except Exception:
            log.exception("event=application_press_failed call_id=%s", session.call_id)

    def find(self, call_id: str) -> Session | None:
        return self.sessions.get(call_id)

    # Incoming requests ----------------------------------------------------------------------------------

    async def _on_request(self, incoming: IncomingRequest) -> None:
        request = incoming.request
        method = request.method
        try:
            if method == "OPTIONS":
                self._answer_options(incoming)
            elif method == "REGISTER":
                self._register(incoming)
            elif method == "INVITE":
                if request.to.tag:
                    self._reinvite(incoming)
                else:
                    await self._new_invite(incoming)
            elif method == "BYE":
                self._bye(incoming)
            elif method == "CANCEL":
                self._cancel(incoming)
            elif method == "INFO":
                self._info(incoming)
            else:
                response = tx.make_response(request, 405)
                response.headers.set("Allow", ALLOW)
                self.stack.respond(incoming, response)
        except ValueError as exc:
            # A header that parsed structurally but cannot be used (bad SDP, bad Contact...).
            self.log_event("request_rejected", method=method, reason=repr(str(exc)))
            self.stack.respond(incoming, tx.make_response(request, 400, f"Bad Request - {exc}"[:120]))

    def _answer_options(self, incoming: IncomingRequest) -> None:
        response = tx.make_response(incoming.request, 200, to_tag=secrets.token_hex(6))
        response.headers.set("Allow", ALLOW)
        response.headers.set("Accept", ACCEPT)
        response.headers.set("Supported", "")
        self.stack.respond(incoming, response)

    def _register(self, incoming: IncomingRequest) -> None:
        request = incoming.request
        user = request.to.uri.user or ""
        header = request.headers.get("Authorization")
        now = self.now()
        if header is None:
            self._challenge(incoming)
            return
        result = self.digest.verify("REGISTER", header, self._password, now)
        if not result.ok or result.username != user:
            if getattr(result, "stale", False):
                self._challenge(incoming, stale=True)
                return
            self.log_event("register_refused", user=user, reason=repr(result.reason or "credentials"))
            self.stack.respond(incoming, tx.make_response(request, 403, "Forbidden - wrong credentials"))
            return
        peer = incoming.peer
        try:
            bindings = self.registrar.register(user, request, (peer.transport, peer.host, peer.port), now)
        except IntervalTooBrief:
            response = tx.make_response(request, 423)
            response.headers.set("Min-Expires", "60")
            self.stack.respond(incoming, response)
            return
        response = tx.make_response(request, 200, to_tag=secrets.token_hex(6))
        for binding in bindings:
            response.headers.add("Contact", f"<{binding.contact}>;expires={max(0, int(binding.expires_at - now))}")
        self.stack.respond(incoming, response)
        self.log_event("registered", user=user, contacts=len(bindings))

    def _password(self, username: str) -> str | None:
        user = self.config.user(username)
        return user.password if user else None

    def _challenge(self, incoming: IncomingRequest, stale: bool = False) -> None:
        response = tx.make_response(incoming.request, 401, to_tag=secrets.token_hex(6))
        for value in self.digest.challenge(self.now(), stale=stale):
            response.headers.add("WWW-Authenticate", value)
        self.stack.respond(incoming, response)

    async def _new_invite(self, incoming: IncomingRequest) -> None:
        request = incoming.request
        if request.call_id in self._by_sip_call_id:
            # A second INVITE with the same Call-ID and no To tag: a merged request (§8.2.2.2).
            self.stack.respond(incoming, tx.make_response(request, 482))
            return
        self.stack.respond(incoming, tx.make_response(request, 100))
        if request.body and request.content_type != "application/sdp":
            self.stack.respond(incoming, tx.make_response(request, 415))
            return
        offer = sdp.SessionDescription.parse(request.body) if request.body else None
        from_ = request.from_
        call = Call(Direction.INBOUND, remote_uri=str(from_.uri), local_uri=request.uri, started_at=self.now(),
                    cli=from_.uri.user or "")
        leg = self._new_leg(call)
        await leg.open()
        session = Session(call, leg, request, incoming.peer, local_tag=secrets.token_hex(6), incoming=incoming)
        if offer is not None:
            try:
                answer, media = sdp.negotiate(offer, self.stack.public_address, leg.port,
                                              supported=self.codecs, telephone_event=self.telephone_event,
                                              session_id=session.sdp_session_id)
            except sdp.NoCommonCodec:
                leg.close()
                self.log_event("call_rejected", reason="no_common_codec", sip_call_id=request.call_id)
                self.stack.respond(incoming, tx.make_response(request, 488, to_tag=session.local_tag))
                return
            session.media = media
            session.data["answer_sdp"] = answer
        self._register_session(session)
        self.log_event("call_incoming", session, sip_call_id=request.call_id, from_=call.remote_uri, to=request.uri,
                  transport=incoming.peer.transport)
        try:
            await self.application.incoming(self, session)
        except Exception:
            log.exception("event=application_incoming_failed call_id=%s", session.call_id)
            if call.state is not CallState.ANSWERED and call.active:
                self.reject(session, 500)

    def ringing(self, session: Session) -> None:
        assert session.incoming is not None
        session.call.ringing()
        self.stack.respond(session.incoming, tx.make_response(session.invite, 180, to_tag=session.local_tag))

    def reject(self, session: Session, status: int = 486, reason: EndReason = EndReason.GENERAL_ERROR) -> None:
        assert session.incoming is not None
        self.stack.respond(session.incoming, tx.make_response(session.invite, status, to_tag=session.local_tag))
        result, _ = outcome_for_status(status)
        self._finish(session, reason, result=result, sip_status=status)

    def answer(self, session: Session) -> None:
        """Answer an inbound call with our SDP answer (or an offer when the INVITE had none)."""
        assert session.incoming is not None
        if not session.call.active:
            return
        request = session.invite
        contact = self.stack.contact(transport=session.peer.transport)
        session.dialog = Dialog.from_uas_request(request, session.local_tag, contact, confirmed=True)
        if session.media is not None:
            body = session.data["answer_sdp"].serialize()  # type: ignore[union-attr]
            session.leg.configure(session.media)
        else:
            body = self._offer(session).serialize()
        response = tx.make_response(request, 200, to_tag=session.local_tag, body=body,
                                    content_type="application/sdp")
        response.headers.set("Contact", contact)
        response.headers.set("Allow", ALLOW)
        session.call.answered(self.now())
        self.stack.respond(session.incoming, response)
        self.clock.legs.add(session.leg)
        self.log_event("call_answered", session)
        self.spawn(self._retransmit_2xx(session, response))
        session.answered_event.set()
        self.application.on_answered(self, session)

    async def _retransmit_2xx(self, session: Session, response: Response) -> None:
        """The UAS core re-sends its 2xx until the ACK comes (RFC 3261 §13.3.1.4); no ACK in 64*T1: BYE."""
        if session.peer.reliable:
            interval_cap = None
        else:
            interval_cap = T2
        interval = T1
        deadline = self.now() + 64 * T1
        while not session.ack_event.is_set():
            timeout = min(interval, max(0.0, deadline - self.now()))
            try:
                await asyncio.wait_for(session.ack_event.wait(), timeout)
                return
            except TimeoutError:
                pass
            if self.now() >= deadline:
                self.log_event("ack_timeout", session)
                await self.hangup(session, EndReason.GENERAL_ERROR)
                return
            if interval_cap is not None and session.call.active:
                self.stack.transport.send(response, self.stack.transport.response_peer(session.invite, session.peer))
                interval = min(interval * 2, interval_cap)

    def _on_ack(self, request: Request, peer: Peer) -> None:
        session = self._by_sip_call_id.get(request.call_id)
        if session is None:
            return
        session.ack_event.set()
        if request.body and session.media is None and session.local_offer is not None:
            # The offer was in our 200, the answer comes in the ACK (§13.2.1).
            try:
                session.media = sdp.apply_answer(session.local_offer, sdp.SessionDescription.parse(request.body))
                session.leg.configure(session.media)
            except (sdp.SdpError, sdp.NoCommonCodec) as exc:
                self.log_event("ack_sdp_rejected", session, reason=repr(str(exc)))
                self.spawn(self.hangup(session, EndReason.GENERAL_ERROR))

    def _in_dialog(self, incoming: IncomingRequest) -> Session | None:
        session = self._by_sip_call_id.get(incoming.request.call_id)
        if session is None or session.dialog is None or not session.call.active:
            self.stack.respond(incoming, tx.make_response(incoming.request, 481))
            return None
        try:
            in_order = session.dialog.receive_request(incoming.request)
        except DialogError:
            self.stack.respond(incoming, tx.make_response(incoming.request, 481))
            return None
        if not in_order:
            self.stack.respond(incoming, tx.make_response(incoming.request, 500, "Server Internal Error - CSeq out of order"))
            return None
        return session

    def _reinvite(self, incoming: IncomingRequest) -> None:
        session = self._in_dialog(incoming)
        if session is None:
            return
        request = incoming.request
        assert session.dialog is not None
        session.dialog.update_target(request)
        if not request.body:
            body = self._offer(session).serialize()
        else:
            offer = sdp.SessionDescription.parse(request.body)
            try:
                answer, media = sdp.negotiate(offer, self.stack.public_address, session.leg.port,
                                              supported=self.codecs, telephone_event=self.telephone_event,
                                              session_id=session.sdp_session_id,
                                              version=session.sdp_version + 1)
            except sdp.NoCommonCodec:
                self.stack.respond(incoming, tx.make_response(request, 488))
                return
            session.sdp_version += 1
            session.media = media
            session.leg.configure(media)
            session.call.on_hold = media.direction != "sendrecv"
            body = answer.serialize()
            self.log_event("call_media_updated", session, direction=media.direction, on_hold=session.call.on_hold)
        response = tx.make_response(request, 200, to_tag=session.local_tag, body=body, content_type="application/sdp")
        response.headers.set("Contact", self.stack.contact(transport=session.peer.transport))
        session.ack_event.clear()
        self.stack.respond(incoming, response)
        self.spawn(self._retransmit_2xx(session, response))

    def _bye(self, incoming: IncomingRequest) -> None:
        session = self._in_dialog(incoming)
        if session is None:
            return
        self.stack.respond(incoming, tx.make_response(incoming.request, 200))
        reason = EndReason.CALLER_HANGUP if session.call.direction is Direction.INBOUND else EndReason.CALLEE_HANGUP
        self._finish(session, reason)

    def _cancel(self, incoming: IncomingRequest) -> None:
        request = incoming.request
        session = self._by_sip_call_id.get(request.call_id)
        if session is None or session.incoming is None or session.call.state is CallState.ANSWERED \
                or not session.call.active:
            self.stack.respond(incoming, tx.make_response(request, 481))
            return
        self.stack.respond(incoming, tx.make_response(request, 200))
        self.stack.respond(session.incoming, tx.make_response(session.invite, 487, to_tag=session.local_tag))
        self._finish(session, EndReason.CANCEL, result=CallResult.NOANSWER, sip_status=487)

    def _info(self, incoming: IncomingRequest) -> None:
        session = self._in_dialog(incoming)
        if session is None:
            return
        request = incoming.request
        digit = parse_dtmf_info(request.content_type, request.body)
        if request.content_type in ("application/dtmf-relay", "application/dtmf") and digit is None:
            self.stack.respond(incoming, tx.make_response(request, 400, "Bad Request - no valid Signal in DTMF body"))
            return
        if digit is None and request.body:
            self.stack.respond(incoming, tx.make_response(request, 415))
            return
        self.stack.respond(incoming, tx.make_response(request, 200))
        if digit is not None:
            now = self.now()
            self._press(session, Press(digit, "info", True, now))
            self._press(session, Press(digit, "info", False, now))

    def _on_stray_response(self, response: Response, peer: Peer) -> None:
        """A 2xx retransmitted after our ACK: ACK it again (§13.2.2.4)."""
        if response.status >= 300 or response.cseq.method != "INVITE":
            return
        session = self._by_sip_call_id.get(response.call_id)
        if session is None or session.dialog is None:
            return
        ack = session.dialog.create_ack(response.cseq.number)
        self.stack.send_ack(ack, self._dialog_peer(session))

    # Outbound calls ------------------------------------------------------------------------------------

    def resolve(self, destination: Destination) -> tuple[SipUri, Peer, TrunkConfig | None]:
        """The Request-URI and next hop for a destination (shared/spec/operations.md, Routing)."""
        kind = destination.type.lower()
        if kind == "number":
            if not self.config.trunks:
                raise LookupError("no trunk is configured for calls to numbers")
            trunk = self.config.trunks[0]
            trunk_uri = SipUri.parse(trunk.uri)
            uri = SipUri(host=trunk_uri.host, port=trunk_uri.port, user=destination.endpoint,
                         params=dict(trunk_uri.params))
            return uri, self.stack.peer_for_uri(trunk_uri), trunk
        if kind == "username":
            binding = self.registrar.lookup(destination.endpoint, self.now())
            if binding is None:
                raise LookupError(f"user {destination.endpoint!r} is not registered")
            transport, host, port = binding.source
            return SipUri.parse(binding.contact), Peer(transport, host, port), None
        if kind == "sip":
            uri = SipUri.parse(destination.endpoint if ":" in destination.endpoint.split("@")[0]
                               else f"sip:{destination.endpoint}")
            return uri, self.stack.peer_for_uri(uri), None
        raise ValueError(f"unknown destination type {destination.type!r}")

    async def originate(self, destination: Destination, *, cli: str = "", ring_timeout: float = 60.0,
                        direction: str = "sendrecv", data: dict[str, object] | None = None,
                        call_id: str | None = None) -> Session:
        """Place a call; returns at once with the session (await `session.wait_answered()`).

        `data` is attached to the session before anything can happen to it (an unreachable destination
        ends the call inside this method, and the application's `on_ended` sees it).
        """
        call = Call(Direction.OUTBOUND, remote_uri="", local_uri="", started_at=self.now(), cli=cli)
        if call_id:
            call.call_id = call_id
        leg = self._new_leg(call)
        try:
            uri, peer, trunk = self.resolve(destination)
        except (LookupError, ValueError) as exc:
            call.remote_uri = destination.endpoint
            session = Session(call, leg, Request("INVITE", f"sip:{destination.endpoint}@invalid"),
                              Peer("UDP", "0.0.0.0", 0), local_tag=secrets.token_hex(6))
            session.data.update(data or {})
            self.sessions[call.call_id] = session
            self.log_event("call_failed", session, reason=repr(str(exc)))
            self._finish(session, EndReason.USER_NOT_FOUND, result=CallResult.FAILED, sip_status=404)
            return session
        await leg.open()
        call.remote_uri = str(uri)
        local_tag = secrets.token_hex(6)
        from_user = cli or self.name
        headers = Headers()
        headers.add("From", f"<sip:{from_user}@{self.stack.public_address}>;tag={local_tag}")
        headers.add("To", f"<{uri}>")
        headers.add("Call-ID", f"{secrets.token_hex(12)}@{self.stack.public_address}")
        headers.add("CSeq", "1 INVITE")
        headers.add("Contact", self.stack.contact(transport=peer.transport))
        headers.add("Allow", ALLOW)
        headers.add("Content-Type", "application/sdp")
        invite = Request("INVITE", uri, headers)
        call.local_uri = f"sip:{from_user}@{self.stack.public_address}"
        session = Session(call, leg, invite, peer, local_tag=local_tag, trunk=trunk)
        session.data.update(data or {})
        invite.body = self._offer(session, direction).serialize()
        self._register_session(session)
        self.log_event("call_outgoing", session, to=str(uri), peer=f"{peer.host}:{peer.port}/{peer.transport}")
        self.spawn(self._run_outbound(session, ring_timeout))
        return session

    async def _run_outbound(self, session: Session, ring_timeout: float) -> None:
        invite = session.invite
        call = session.call
        authenticated = False
        while True:
            future = self.stack.send_request(invite, session.peer, lambda r, s=session: self._provisional(s, r))
            session.data["invite_future"] = future
            try:
                response = await asyncio.wait_for(asyncio.shield(future), ring_timeout)
            except TimeoutError:
                self.log_event("call_ring_timeout", session)
                self._send_cancel(session)
                try:
                    response = await asyncio.wait_for(future, 64 * T1)
                except TimeoutError:
                    self._finish(session, EndReason.TIMEOUT, result=CallResult.NOANSWER, sip_status=408)
                    return
                if response.status < 300:
                    self._confirm(session, response)
                    await self.hangup(session, EndReason.TIMEOUT)
                    return
                self._finish(session, EndReason.TIMEOUT, result=CallResult.NOANSWER, sip_status=response.status)
                return
            if response.status in (401, 407) and not authenticated and session.trunk and session.trunk.username:
                authenticated = True
                invite = self._with_credentials(invite, response, session.trunk)
                session.invite = invite
                continue
            break
        if session.data.get("cancelled"):
            if response.status < 300:
                self._confirm(session, response)
                await self.hangup(session, EndReason.CANCEL)
            else:
                self._finish(session, EndReason.CANCEL, result=CallResult.NOANSWER, sip_status=response.status)
            return
        if response.status >= 300:
            result, reason = outcome_for_status(response.status)
            self.log_event("call_refused", session, status=response.status)
            self._finish(session, reason, result=result, sip_status=response.status)
            return
        if not call.active:
            return
        self._confirm(session, response)
        if not call.active:
            return
        call.answered(self.now())
        self.clock.legs.add(session.leg)
        self.log_event("call_answered", session)
        session.answered_event.set()
        self.application.on_answered(self, session)

    def _provisional(self, session: Session, response: Response) -> None:
        if response.status > 100 and session.call.active:
            session.call.ringing()
            if response.to.tag and "early_tag" not in session.data:
                session.data["early_tag"] = response.to.tag
            self.log_event("call_ringing", session, status=response.status)

    def _confirm(self, session: Session, response: Response) -> None:
        """Build the dialog from the 2xx, ACK it, and apply the SDP answer."""
        dialog = Dialog.from_uac_response(session.invite, response)
        session.dialog = dialog
        ack = dialog.create_ack(session.invite.cseq.number)
        self.stack.send_ack(ack, self._dialog_peer(session))
        session.ack_event.set()
        if session.local_offer is None:
            return
        try:
            session.media = sdp.apply_answer(session.local_offer, sdp.SessionDescription.parse(response.body))
        except (sdp.SdpError, sdp.NoCommonCodec) as exc:
            self.log_event("answer_sdp_rejected", session, reason=repr(str(exc)))
            self.spawn(self.hangup(session, EndReason.GENERAL_ERROR))
            return
        session.leg.configure(session.media)

    def _with_credentials(self, invite: Request, challenge: Response, trunk: TrunkConfig) -> Request:
        header = "WWW-Authenticate" if challenge.status == 401 else "Proxy-Authenticate"
        answer = "Authorization" if challenge.status == 401 else "Proxy-Authorization"
        challenges = challenge.headers.get_all(header)
        headers = invite.headers.copy()
        headers.remove("Via")
        headers.set("CSeq", f"{invite.cseq.number + 1} INVITE")
        headers.set(answer, auth.digest_authorization(challenges, "INVITE", invite.uri, trunk.username, trunk.password))
        return Request("INVITE", invite.uri, headers, invite.body)

    def _send_cancel(self, session: Session) -> None:
        cancel = tx.make_cancel(session.invite)
        self.stack.send_request(cancel, session.peer)

    async def cancel(self, session: Session) -> None:
        """Withdraw an outbound call that is not answered yet."""
        if session.call.direction is not Direction.OUTBOUND or session.call.state is CallState.ANSWERED:
            raise ValueError("only an unanswered outbound call can be cancelled")
        session.data["cancelled"] = True
        self._send_cancel(session)
        await session.ended_event.wait()

    def _dialog_peer(self, session: Session) -> Peer:
        dialog = session.dialog
        if dialog is None:
            return session.peer
        if session.call.direction is Direction.INBOUND and not dialog.route_set:
            # Symmetric signalling: a caller behind NAT is reached where its requests came from.
            return self.stack.transport.response_peer(session.invite, session.peer)
        return self.stack.peer_for_uri(dialog.next_hop())

    async def request_in_dialog(self, session: Session, method: str, *, body: bytes = b"",
                                content_type: str | None = None, headers: Headers | None = None) -> Response:
        assert session.dialog is not None
        request = session.dialog.create_request(method, headers=headers, body=body, content_type=content_type)
        if method == "INVITE":
            request.headers.set("Contact", self.stack.contact(transport=session.peer.transport))
        response = await self.stack.send_request(request, self._dialog_peer(session))
        if method == "INVITE" and response.status < 300:
            session.dialog.update_target(response)
            ack = session.dialog.create_ack(request.cseq.number)
            self.stack.send_ack(ack, self._dialog_peer(session))
        return response

    # Operations on live calls ------------------------------------------------------------------------

    async def hangup(self, session: Session, reason: EndReason = EndReason.MANAGER_HANGUP) -> None:
        call = session.call
        if not call.active:
            return
        if call.state is not CallState.ANSWERED:
            if call.direction is Direction.OUTBOUND:
                session.data["cancelled"] = True
                self._send_cancel(session)
                await session.ended_event.wait()
            else:
                self.reject(session, 480, reason)
            return
        self._finish(session, reason)
        if session.dialog is not None:
            try:
                await asyncio.wait_for(self.request_in_dialog(session, "BYE"), 64 * T1)
            except TimeoutError:
                pass

    async def set_direction(self, session: Session, direction: str) -> Response:
        """Hold (`sendonly` / `inactive`) or resume (`sendrecv`) by re-INVITE (RFC 3264 §8.4)."""
        offer = self._offer(session, direction)
        response = await self.request_in_dialog(session, "INVITE", body=offer.serialize(),
                                                content_type="application/sdp")
        if response.status < 300 and response.body:
            session.media = sdp.apply_answer(offer, sdp.SessionDescription.parse(response.body))
            session.leg.configure(session.media)
            session.call.on_hold = direction != "sendrecv"
            self.log_event("call_media_updated", session, direction=direction, on_hold=session.call.on_hold)
        return response

    async def send_dtmf(self, session: Session, digits: str, method: str = "rfc4733",
                        duration_ms: int = 160) -> None:
        """Send digits as RFC 4733 events, SIP INFO or in-band tones, one after the other."""
        for digit in digits:
            if digit not in DTMF_DIGITS:
                raise ValueError(f"not a DTMF digit: {digit!r}")
        for digit in digits:
            if method == "info":
                body = f"Signal={digit}\r\nDuration={duration_ms}\r\n".encode()
                await self.request_in_dialog(session, "INFO", body=body, content_type="application/dtmf-relay")
            else:
                session.leg.send_digit(digit, duration_ms=duration_ms,
                                       method="rfc4733" if method == "rfc4733" else "inband")
                await self.clock.until(lambda: not session.leg.digits_pending or not session.call.active)

    def _finish(self, session: Session, reason: EndReason, *, result: CallResult | None = None,
                sip_status: int | None = None) -> None:
        if not session.call.ended(self.now(), reason, result=result, sip_status=sip_status):
            return
        self.clock.legs.discard(session.leg)
        session.leg.close()
        session.ack_event.set()
        session.ended_event.set()
        self._by_sip_call_id.pop(session.invite.call_id, None)
        lost, jitter = session.leg.loss_and_jitter if session.leg.stats.packets_received else (0, 0.0)
        self.log_event("call_ended", session, reason=reason.value, result=session.call.result.value,  # type: ignore[union-attr]
                  duration=session.call.duration(self.now()), rtp_in=session.leg.stats.packets_received,
                  rtp_out=session.leg.stats.packets_sent, lost=lost, jitter_ms=f"{jitter:.1f}")
        # The listeners (the conference room among them) go first: what the call's end completes there,
        # a collection's PIE, must reach the application before the call's own end (its DiCE).
        for listener in self.ended_listeners:
            try:
                listener(session)
            except Exception:
                log.exception("event=ended_listener_failed call_id=%s", session.call_id)
        try:
            self.application.on_ended(self, session)
        except Exception:
            log.exception("event=application_ended_failed call_id=%s", session.call_id)

    def forget(self, session: Session) -> None:
        self.sessions.pop(session.call_id, None)

    async def shutdown(self) -> None:
        """End every call (BYE or CANCEL or 480) and wait briefly for them to finish."""
        active = [s for s in self.sessions.values() if s.call.active]
        hangups = asyncio.gather(*(self.hangup(s, EndReason.MANAGER_HANGUP) for s in active),
                                 return_exceptions=True)
        try:
            # Each call is ended at once; waiting for the BYE answers is a courtesy bounded by this grace.
            await asyncio.wait_for(hangups, SHUTDOWN_GRACE)
        except TimeoutError:
            self.log_event("shutdown_grace_expired", unanswered=sum(1 for s in active if s.call.active))
        for task in list(self._tasks):
            task.cancel()

    @property
    def active_calls(self) -> int:
        return sum(1 for s in self.sessions.values() if s.call.active)


def parse_dtmf_info(content_type: str, body: bytes) -> str | None:
    """The digit of a SIP INFO body: `application/dtmf-relay` (`Signal=5`) or `application/dtmf` (`5`)."""
    try:
        text = body.decode("ascii").strip()
    except UnicodeDecodeError:
        return None
    if content_type == "application/dtmf-relay":
        for line in text.splitlines():
            name, _, value = line.partition("=")
            if name.strip().lower() == "signal":
                value = value.strip().upper()
                return value if value in DTMF_DIGITS else ("*" if value == "10" else "#" if value == "11" else None)
        return None
    if content_type == "application/dtmf":
        value = text.upper()
        return value if value in DTMF_DIGITS else None
    return None
