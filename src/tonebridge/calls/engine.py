"""The call engine: the asyncio driver of the call cores, and the transaction user of the SIP stack.

Every INVITE, in or out, becomes a call core (calls/core.py) that the engine feeds with what the stack
delivers and the clock, executing what the core asks: SIP messages through the stack, media through the
call's leg, and what happens to calls as typed events (calls/events.py) to its observers. OPTIONS and
REGISTER, which belong to no call, it hands to calls/registration.py. Like sip/stack.py it waits on nothing
itself but one loop timer (calls/timers.py), armed for the earliest deadline among all cores and the
applications' call timers (`call_at`, `wait_until`, `limit_duration`). What a call does once answered (play,
join a room, collect digits) is the application's business.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from collections.abc import Callable, Coroutine
from typing import Any, assert_never

from tonebridge.calls.call import Call, CallResult, CallState, Direction, EndReason
from tonebridge.calls.core import (
    Action,
    Answered,
    CallStateError,
    ConfigureMedia,
    Declined,
    Ended,
    InboundCall,
    LocalEnd,
    MediaUpdated,
    Noted,
    OutboundCall,
    PressDetected,
    RequestCompleted,
    Respond,
    Ringing,
    SendAck,
    SendRequest,
    answer_without_call,
)
from tonebridge.calls.events import CallAnswered, CallEnded, CallEvent, KeyPressed, Observer
from tonebridge.calls.registration import Registration
from tonebridge.calls.session import CallHandler, Destination, Session
from tonebridge.calls.timers import CallTimer, Scheduler, TimerCallback, first_set
from tonebridge.config import Config, TrunkConfig
from tonebridge.histogram import Histogram
from tonebridge.keys import DTMF_KEYS, PressSource
from tonebridge.media.clock import MediaClock
from tonebridge.media.endpoint import MediaLeg, Press
from tonebridge.media.g711 import CODECS
from tonebridge.media.ports import PortPool
from tonebridge.sip import transaction as tx
from tonebridge.sip.admission import AdmissionLimits, InviteAdmission
from tonebridge.sip.message import Headers, Request, Response, SipUri
from tonebridge.sip.stack import ALLOW, IncomingRequest, SipStack
from tonebridge.sip.transport import Peer

# Re-exported: applications, the softphone and the tests import the call's types and the timers' from here.
__all__ = [
    "CallEngine",
    "CallHandler",
    "CallTimer",
    "Destination",
    "Session",
    "TimerCallback",
    "first_set",
]

log = logging.getLogger("tonebridge.calls")

SHUTDOWN_GRACE = 2.0
# The requests a call core takes; an INVITE without a To tag starts a call instead.
CALL_METHODS = frozenset({"INVITE", "BYE", "INFO", "CANCEL"})
# A call's interarrival jitter at its end, in milliseconds: under 20 is a healthy network, 100 is trouble.
JITTER_BOUNDS_MS = (1, 2, 5, 10, 20, 30, 50, 100, 200, 500)


def _ignore_press(press: Press) -> None:
    """An ended call's leg takes no more presses."""


class CallEngine:
    def __init__(
        self,
        config: Config,
        stack: SipStack,
        clock: MediaClock,
        application: CallHandler,
        *,
        user_agent_name: str = "tonebridge",
    ) -> None:
        self.config = config
        self.stack = stack
        self.clock = clock
        self.application = application
        self.name = user_agent_name
        low, high = config.server.rtp_ports
        self.ports = PortPool(low, high)
        self.registration = Registration(config, self.log_event, counters=stack.transport.stats.counters)
        # Where a callout to a username goes (`resolve`); the registration keeps it up to date.
        self.registrar = self.registration.registrar
        self.sessions: dict[str, Session] = {}  # by Tonebridge call id
        self._by_sip_call_id: dict[str, Session] = {}
        self._tasks: set[asyncio.Task[object]] = set()
        # Told of every call event, in this order: wired by the server (the conference service, then the
        # application) or by the softphone.
        self.observers: list[Observer] = []
        # What this user agent offers and accepts; the softphone narrows these to act as other peers.
        self.codecs: tuple[str, ...] = CODECS
        self.telephone_event = True
        self.record_calls = False
        # The id an inbound call arrives with when another node of a cluster moved it here (set by the
        # server in cluster mode: cluster/moves.py); None for every other call.
        self.moved_call_id: Callable[[Request], str | None] = lambda request: None
        # Through a lambda, not the bound method, so that a `now` replaced on the instance (a test's clock)
        # is the one the timers read.
        self.scheduler = Scheduler(lambda: self.now(), self._run)
        # In-dialog requests an operation awaits the final response of, by id() (the request is kept alive).
        self._completions: dict[int, tuple[Request, asyncio.Future[Response]]] = {}
        # Of ended calls, for the metrics: how they ended (the enums keep the label sets small), the RTP
        # packets they lost and their jitter at the end.
        self.ended_calls: Counter[tuple[Direction, CallResult, EndReason]] = Counter()
        self.packets_lost = 0
        self.jitter_ms = Histogram(JITTER_BOUNDS_MS)
        limits = config.limits
        stack.admission = InviteAdmission(
            AdmissionLimits(
                limits.invites_per_second_per_source,
                limits.invite_burst_per_source,
                limits.max_setting_up_per_source,
                limits.max_setting_up,
            )
        )
        clock.sweep_hooks.append(self._check_media)
        stack.on_request = self._on_request
        stack.on_ack = self._on_ack
        stack.on_stray_response = self._on_stray_response

    # Helpers -------------------------------------------------------------------------------------------

    @staticmethod
    def now() -> float:
        return time.monotonic()

    def spawn(self, coro: Coroutine[Any, Any, object]) -> asyncio.Task[object]:
        """Run a call's background work; the engine keeps it, logs its failure, cancels it at shutdown."""
        task = asyncio.get_running_loop().create_task(coro)
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
        return MediaLeg(
            self.stack.transport.host,
            self.ports,
            call_id=call.call_id,
            record=self.record_calls,
            clock=self.clock,
        )

    def _local_end(self, leg: MediaLeg, peer: Peer) -> LocalEnd:
        return LocalEnd(
            self.stack.public_address,
            self.stack.contact(transport=peer.transport),
            leg.port,
            codecs=self.codecs,
            telephone_event=self.telephone_event,
            allow=ALLOW,
        )

    def _register_session(self, session: Session) -> None:
        self.sessions[session.call_id] = session
        self._by_sip_call_id[session.invite.call_id] = session
        leg = session.leg
        leg.on_press = lambda press, s=session: self._press(s, press)

    def _press(self, session: Session, press: Press) -> None:
        if press.started:
            self.log_event("dtmf", session, digit=press.digit, source=press.source)
        self.publish(KeyPressed(session, press))

    def publish(self, event: CallEvent) -> None:
        """Tell every observer, in order; one that fails is logged and does not stop the others."""
        for observer in self.observers:
            try:
                observer(event)
            except Exception:
                log.exception("event=observer_failed observer=%r event=%s", observer, type(event).__name__)

    def find(self, call_id: str) -> Session | None:
        return self.sessions.get(call_id)

    # Driving the cores ---------------------------------------------------------------------------------

    def _run(
        self, session: Session, actions: list[Action], incoming: IncomingRequest | None = None
    ) -> list[asyncio.Future[Response]]:
        """Execute what a core asked, in order; returns the completions of the in-dialog requests it sent.

        `incoming` is the request just fed to the core, whose answer goes through its own server transaction.
        """
        completions: list[asyncio.Future[Response]] = []
        for action in actions:
            match action:
                case Respond():
                    self.stack.respond(self._server_side(session, action.request, incoming), action.response)
                case SendRequest():
                    completion = self._send(session, action.request, action.in_dialog)
                    if completion is not None:
                        completions.append(completion)
                case SendAck():
                    self.stack.send_ack(action.ack, self._dialog_peer(session))
                case ConfigureMedia():
                    session.leg.configure(action.media)
                case Ringing():
                    self.log_event("call_ringing", session, status=action.status)
                case Answered():
                    self._answered(session)
                case Ended():
                    self._ended(session)
                case Declined():
                    session.leg.close()
                    self.log_event(
                        "call_rejected",
                        status=action.status,
                        reason=action.reason,
                        sip_call_id=session.invite.call_id,
                    )
                case PressDetected():
                    now = self.now()
                    self._press(session, Press(action.digit, PressSource.INFO, True, now))
                    self._press(session, Press(action.digit, PressSource.INFO, False, now))
                case MediaUpdated():
                    self.log_event(
                        "call_media_updated", session, direction=action.direction, on_hold=action.on_hold
                    )
                case RequestCompleted():
                    waiter = self._completions.pop(id(action.request), None)
                    if waiter is not None and not waiter[1].done():
                        waiter[1].set_result(action.response)
                case Noted():
                    self.log_event(action.event, session, **dict(action.fields))
                case _:
                    assert_never(action)
        self.scheduler.file(session)
        return completions

    def _server_side(
        self, session: Session, request: Request, incoming: IncomingRequest | None
    ) -> IncomingRequest:
        if incoming is not None and request is incoming.request:
            return incoming
        if session.incoming is not None and request is session.incoming.request:
            return session.incoming
        raise RuntimeError(f"no server transaction for {request!r}")

    def _send(self, session: Session, request: Request, in_dialog: bool) -> asyncio.Future[Response] | None:
        core = session.core
        assert core is not None
        peer = self._dialog_peer(session) if in_dialog else session.peer
        sent = self.stack.send_request(
            request, peer, lambda response: self._run(session, core.receive_response(response, self.now()))
        )
        sent.add_done_callback(lambda final: self._final_response(session, final))
        if not in_dialog:
            return None
        completion: asyncio.Future[Response] = asyncio.get_running_loop().create_future()
        self._completions[id(request)] = (request, completion)
        return completion

    def _final_response(self, session: Session, final: asyncio.Future[Response]) -> None:
        if final.cancelled() or session.core is None:
            return
        self._run(session, session.core.receive_response(final.result(), self.now()))

    def _answered(self, session: Session) -> None:
        self.clock.add_leg(session.leg)
        self.log_event("call_answered", session)
        session.answered_event.set()
        self.publish(CallAnswered(session))

    def _ended(self, session: Session) -> None:
        # The leg's row and its room membership end together (the room leaves on CallEnded): no media
        # tick may run between them and mix a member whose row is gone.
        with self.clock.lock:
            self.clock.remove_leg(session.leg)
            session.leg.close()
            # The leg's press handler holds the session, which holds the leg: undone here, so an ended call
            # is freed by reference counting, not left for a full garbage collection (which the media
            # thread's GC policy makes rare).
            session.leg.on_press = _ignore_press
            session.ended_event.set()
            if self._by_sip_call_id.get(session.invite.call_id) is session:
                del self._by_sip_call_id[session.invite.call_id]
            call = session.call
            assert call.reason is not None and call.result is not None  # an ended call has both
            lost, jitter = session.leg.loss_and_jitter if session.leg.stats.packets_received else (0, 0.0)
            self.log_event(
                "call_ended",
                session,
                reason=call.reason.value,
                result=call.result.value,
                duration=call.duration(self.now()),
                rtp_in=session.leg.stats.packets_received,
                rtp_out=session.leg.stats.packets_sent,
                lost=lost,
                jitter_ms=f"{jitter:.1f}",
            )
            self.ended_calls[(call.direction, call.result, call.reason)] += 1
            # RFC 3550's cumulative loss goes negative when duplicates outnumber losses; none were lost then.
            self.packets_lost += max(0, lost)
            if session.leg.stats.packets_received:
                self.jitter_ms.observe(jitter)
            self.publish(CallEnded(session))

    def _dialog_peer(self, session: Session) -> Peer:
        dialog = session.dialog
        if dialog is None:
            return session.peer
        if session.call.direction is Direction.INBOUND and not dialog.route_set:
            # Symmetric signalling: a caller behind NAT is reached where its requests came from.
            return self.stack.transport.response_peer(session.invite, session.peer)
        return self.stack.peer_for_uri(dialog.next_hop())

    # Vanished peers --------------------------------------------------------------------------------------

    def _check_media(self, monotonic: float) -> None:
        """The clock's once-a-second sweep: a vanished peer's call ends within a second of its timeout."""
        timeout = self.config.media.rtp_timeout_seconds
        if timeout > 0:
            self.end_silent_calls(timeout, monotonic)

    def end_silent_calls(self, timeout: float, monotonic: float) -> list[Session]:
        """End (BYE, DiCE GENERALERROR) every answered call whose peer sent no RTP and no RTCP for
        `timeout` seconds up to `monotonic` (time.monotonic(): the plane's and the RTCP receiver's clock,
        not the engine's `now`); returns them. A call on hold in either direction is skipped: RFC 3264 lets
        a held peer send nothing at all, and phones differ on whether they keep RTCP going meanwhile."""
        with self.clock.lock:
            legs = [self.clock.leg_at(row) for row in self.clock.plane.silent_rows(monotonic, timeout)]
        ended = []
        for leg in legs:
            session = self.sessions.get(leg.call_id) if leg is not None else None
            if session is None or session.leg is not leg or session.core is None:
                continue
            call = session.call
            if call.state is not CallState.ANSWERED or call.on_hold:
                continue
            # From the answer on: ringing (and early media) has its own timeout.
            if call.answered_at is not None and self.now() - call.answered_at < timeout:
                continue
            heard = leg.last_rtcp_received
            if heard is not None and monotonic - heard < timeout:
                continue
            self.log_event(
                "call_media_timeout", session, timeout=f"{timeout:g}", rtp_in=leg.stats.packets_received
            )
            self.spawn(self.hangup(session, EndReason.GENERAL_ERROR))
            ended.append(session)
        return ended

    # Call timers -----------------------------------------------------------------------------------------

    def call_at(self, session: Session, deadline: float, callback: TimerCallback) -> CallTimer:
        """Run `callback` at `deadline` (on the clock of `now()`), unless the call ends first."""
        return self.scheduler.call_at(session, deadline, callback)

    async def wait_until(self, session: Session, deadline: float) -> bool:
        """Wait for `deadline`: True when it came, False when the call ended first."""
        return await self.scheduler.wait_until(session, deadline)

    def limit_duration(self, session: Session, seconds: float) -> None:
        """End the call with reason TIMEOUT `seconds` from now, or from its answer if it is not answered
        yet: a timer of the call's core, since how long a call may last is the call's own state."""
        if session.core is not None:
            self._run(session, session.core.limit_duration(seconds, self.now()))

    # Incoming requests ----------------------------------------------------------------------------------

    def _options(self, request: Request) -> Response:
        """200 with our capabilities; 503 while this node takes no new calls, so that a SIP front probing
        with OPTIONS sends them elsewhere."""
        if self.stack.unavailable is not None and (retry_after := self.stack.unavailable()) is not None:
            response = tx.make_response(request, 503, "Service Unavailable - Node Cannot Take Calls")
            response.headers.set("Retry-After", str(retry_after))
            return response
        return self.registration.options(request)

    async def _on_request(self, incoming: IncomingRequest) -> None:
        request = incoming.request
        method = request.method
        try:
            if method == "OPTIONS":
                self.stack.respond(incoming, self._options(request))
            elif method == "REGISTER":
                self.stack.respond(incoming, self.registration.register(request, incoming.peer, self.now()))
            elif method == "INVITE" and not request.to.tag:
                await self._new_invite(incoming)
            elif method in CALL_METHODS:
                self._in_call(incoming)
            else:
                response = tx.make_response(request, 405)
                response.headers.set("Allow", ALLOW)
                self.stack.respond(incoming, response)
        except ValueError as exc:
            # A header that parsed structurally but cannot be used (bad SDP, bad Contact...).
            self.log_event("request_rejected", method=method, reason=repr(str(exc)))
            self.stack.respond(incoming, tx.make_response(request, 400, f"Bad Request - {exc}"[:120]))

    async def _new_invite(self, incoming: IncomingRequest) -> None:
        request = incoming.request
        if request.call_id in self._by_sip_call_id:
            # A second INVITE with the same Call-ID and no To tag: a merged request (§8.2.2.2).
            self.stack.respond(incoming, tx.make_response(request, 482))
            return
        from_ = request.from_
        call = Call(
            Direction.INBOUND,
            remote_uri=str(from_.uri),
            local_uri=request.uri,
            started_at=self.now(),
            cli=from_.uri.user or "",
        )
        if (moved := self.moved_call_id(request)) is not None and moved not in self.sessions:
            # A call another node of the cluster sent here: it keeps the id its application already knows
            # (the application checks the move itself, and refuses a forged one).
            call.call_id = moved
        leg = self._new_leg(call)
        await leg.open()
        core = InboundCall(request, call, self._local_end(leg, incoming.peer), timers=self.stack.timers)
        session = Session(call, leg, incoming.peer, core, incoming=incoming)
        self._run(session, core.start(self.now()), incoming)
        if core.declined:
            return
        self._register_session(session)
        self.log_event(
            "call_incoming",
            session,
            sip_call_id=request.call_id,
            from_=call.remote_uri,
            to=request.uri,
            transport=incoming.peer.transport,
        )
        try:
            await self.application.incoming(self, session)
        except Exception:
            log.exception("event=application_incoming_failed call_id=%s", session.call_id)
            if call.state is not CallState.ANSWERED and call.active:
                self.reject(session, 500)

    def _in_call(self, incoming: IncomingRequest) -> None:
        """A re-INVITE, BYE, INFO or CANCEL: to the core of its call, or a 481 when there is none."""
        request = incoming.request
        session = self._by_sip_call_id.get(request.call_id)
        if session is None or session.core is None:
            response = answer_without_call(request)
            if response is not None:
                self.stack.respond(incoming, response)
            return
        self._run(session, session.core.receive_request(request, self.now()), incoming)

    def _on_ack(self, request: Request, peer: Peer) -> None:
        session = self._by_sip_call_id.get(request.call_id)
        if session is None or session.core is None:
            return
        self._run(session, session.core.receive_request(request, self.now()))

    def _on_stray_response(self, response: Response, peer: Peer) -> None:
        """A 2xx retransmitted after our ACK: its core ACKs it again (§13.2.2.4)."""
        if response.status >= 300 or response.cseq.method != "INVITE":
            return
        session = self._by_sip_call_id.get(response.call_id)
        if session is None or session.core is None:
            return
        self._run(session, session.core.receive_response(response, self.now()))

    # Operations on inbound calls -------------------------------------------------------------------------

    def _inbound(self, session: Session) -> InboundCall:
        if not isinstance(session.core, InboundCall):
            raise CallStateError(f"call {session.call_id} is not an inbound call")
        return session.core

    def ringing(self, session: Session) -> None:
        self._run(session, self._inbound(session).ringing(self.now()))

    def reject(
        self, session: Session, status: int = 486, reason: EndReason = EndReason.GENERAL_ERROR
    ) -> None:
        self._run(session, self._inbound(session).reject(status, reason, self.now()))

    def redirect(self, session: Session, contact: str) -> None:
        """Send an unanswered inbound call elsewhere with a 302 naming `contact`."""
        self._run(session, self._inbound(session).redirect(contact, self.now()))

    def answer(self, session: Session) -> None:
        """Answer an inbound call with our SDP answer (or an offer when the INVITE had none)."""
        self._run(session, self._inbound(session).answer(self.now()))

    # Outbound calls ------------------------------------------------------------------------------------

    def resolve(self, destination: Destination) -> tuple[SipUri, Peer, TrunkConfig | None]:
        """The Request-URI and next hop for a destination (shared/spec/operations.md, Routing)."""
        kind = destination.type.lower()
        if kind == "number":
            if not self.config.trunks:
                raise LookupError("no trunk is configured for calls to numbers")
            trunk = self.config.trunks[0]
            trunk_uri = SipUri.parse(trunk.uri)
            uri = SipUri(
                host=trunk_uri.host,
                port=trunk_uri.port,
                user=destination.endpoint,
                params=dict(trunk_uri.params),
            )
            return uri, self.stack.peer_for_uri(trunk_uri), trunk
        if kind == "username":
            binding = self.registrar.lookup(destination.endpoint, self.now())
            if binding is None:
                raise LookupError(f"user {destination.endpoint!r} is not registered")
            transport, host, port = binding.source
            return SipUri.parse(binding.contact), Peer(transport, host, port), None
        if kind == "sip":
            uri = SipUri.parse(
                destination.endpoint
                if ":" in destination.endpoint.split("@")[0]
                else f"sip:{destination.endpoint}"
            )
            return uri, self.stack.peer_for_uri(uri), None
        raise ValueError(f"unknown destination type {destination.type!r}")

    async def originate(
        self,
        destination: Destination,
        *,
        cli: str = "",
        ring_timeout: float = 60.0,
        direction: str = "sendrecv",
        call_id: str | None = None,
    ) -> Session:
        """Place a call; returns at once with the session (await `session.wait_answered()`).

        An unreachable destination ends the call inside this method (observers see its `CallEnded`): pass
        `call_id` to know the call before then.
        """
        call = Call(Direction.OUTBOUND, remote_uri="", local_uri="", started_at=self.now(), cli=cli)
        if call_id:
            call.call_id = call_id
        leg = self._new_leg(call)
        try:
            uri, peer, trunk = self.resolve(destination)
        except (LookupError, ValueError) as exc:
            call.remote_uri = destination.endpoint
            session = Session(
                call,
                leg,
                Peer("UDP", "0.0.0.0", 0),
                placeholder_invite=Request("INVITE", f"sip:{destination.endpoint}@invalid"),
            )
            self.sessions[call.call_id] = session
            self.log_event("call_failed", session, reason=repr(str(exc)))
            call.ended(self.now(), EndReason.USER_NOT_FOUND, result=CallResult.FAILED, sip_status=404)
            self._ended(session)
            return session
        await leg.open()
        call.remote_uri = str(uri)
        from_user = cli or self.name
        call.local_uri = f"sip:{from_user}@{self.stack.public_address}"
        credentials = (trunk.username, trunk.password) if trunk is not None and trunk.username else None
        core = OutboundCall(
            call,
            uri,
            self._local_end(leg, peer),
            from_user=from_user,
            ring_timeout=ring_timeout,
            direction=direction,
            credentials=credentials,
            timers=self.stack.timers,
        )
        session = Session(call, leg, peer, core, trunk=trunk)
        self._register_session(session)
        self.log_event(
            "call_outgoing", session, to=str(uri), peer=f"{peer.host}:{peer.port}/{peer.transport}"
        )
        self._run(session, core.start(self.now()))
        return session

    async def cancel(self, session: Session) -> None:
        """Withdraw an outbound call that is not answered yet."""
        if session.call.direction is not Direction.OUTBOUND or session.call.state is CallState.ANSWERED:
            raise ValueError("only an unanswered outbound call can be cancelled")
        if isinstance(session.core, OutboundCall):
            self._run(session, session.core.cancel(self.now()))
        # The core ends the call when the INVITE's final response comes, or gives up 64*T1 after the CANCEL.
        await session.ended_event.wait()

    async def request_in_dialog(
        self,
        session: Session,
        method: str,
        *,
        body: bytes = b"",
        content_type: str | None = None,
        headers: Headers | None = None,
    ) -> Response:
        if session.core is None:
            raise CallStateError(f"call {session.call_id} never reached SIP")
        completions = self._run(
            session,
            session.core.request(method, self.now(), body=body, content_type=content_type, headers=headers),
        )
        return await completions[0]

    # Operations on live calls ------------------------------------------------------------------------

    async def hangup(self, session: Session, reason: EndReason = EndReason.MANAGER_HANGUP) -> None:
        """End the call (BYE, or CANCEL or 480 before an answer); returns once the far end has heard."""
        if session.core is None or not session.call.active:
            return
        completions = self._run(session, session.core.hangup(reason, self.now()))
        if completions:
            await asyncio.gather(*completions)  # the BYE's answer, or the core's 408 after 64*T1
        elif session.call.active:
            await session.ended_event.wait()  # a CANCEL is out: the core ends the call within 64*T1

    async def set_direction(self, session: Session, direction: str) -> Response:
        """Hold (`sendonly` / `inactive`) or resume (`sendrecv`) by re-INVITE (RFC 3264 §8.4)."""
        if session.core is None:
            raise CallStateError(f"call {session.call_id} never reached SIP")
        completions = self._run(session, session.core.reoffer(direction, self.now()))
        return await completions[0]

    async def send_dtmf(
        self, session: Session, digits: str, method: str = "rfc4733", duration_ms: int = 160
    ) -> None:
        """Send digits as RFC 4733 events, SIP INFO or in-band tones, one after the other."""
        for digit in digits:
            if digit not in DTMF_KEYS:
                raise ValueError(f"not a DTMF digit: {digit!r}")
        for digit in digits:
            if not session.call.active:
                return
            if method == "info":
                body = f"Signal={digit}\r\nDuration={duration_ms}\r\n".encode()
                await self.request_in_dialog(
                    session, "INFO", body=body, content_type="application/dtmf-relay"
                )
            else:
                session.leg.send_digit(
                    digit, duration_ms=duration_ms, method="rfc4733" if method == "rfc4733" else "inband"
                )
                sent = asyncio.Event()
                session.leg.when_digits_sent(sent.set)
                await first_set(sent, session.ended_event)

    def forget(self, session: Session) -> None:
        self.sessions.pop(session.call_id, None)

    async def shutdown(self) -> None:
        """End every call (BYE or CANCEL or 480) and wait briefly for them to finish."""
        active = [s for s in self.sessions.values() if s.call.active]
        hangups = [asyncio.ensure_future(self.hangup(s, EndReason.MANAGER_HANGUP)) for s in active]
        if hangups:
            # Each call is ended at once; waiting for the BYE answers is a courtesy bounded by this grace.
            done, pending = await asyncio.wait(hangups, timeout=SHUTDOWN_GRACE)
            for task in done:
                if not task.cancelled() and task.exception() is not None:
                    log.error("event=shutdown_hangup_failed error=%r", task.exception())
            if pending:
                self.log_event("shutdown_grace_expired", unanswered=sum(1 for s in active if s.call.active))
                for task in pending:
                    task.cancel()
        for task in list(self._tasks):
            task.cancel()
        self.scheduler.close()

    @property
    def active_calls(self) -> int:
        return sum(1 for s in self.sessions.values() if s.call.active)
