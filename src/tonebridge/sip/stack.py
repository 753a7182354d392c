"""The asyncio edge of the SIP core: feeds the transport's messages and the clock into the sans-IO
transaction table, sends what the transactions ask to send, and hands requests and final responses to
the transaction user (the call engine).

The only waiting done here is one loop timer armed for the earliest transaction deadline, so every SIP
timeout stays a property of transaction.py, testable without sleeping.

Requests the transaction user could not act on are answered here, through their server transaction, before
the TU sees them: an INVITE whose Contact cannot be a remote target gets a 400 (§8.1.1.8). A new INVITE its
source may not send now (sip/admission.py) gets a 503 with Retry-After, sent statelessly before any
transaction exists, so a flood costs one parse and one send per refused INVITE. A message the
transport fails to send fails its transaction at once; a client transaction's waiter then gets a 503, as
§8.1.3.1 says a transport error is to be treated.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from tonebridge.looptimer import LoopTimer
from tonebridge.sip import transaction as tx
from tonebridge.sip.admission import InviteAdmission
from tonebridge.sip.dialog import contact_problem
from tonebridge.sip.message import Message, Request, Response, SipUri, Via
from tonebridge.sip.transport import Peer, SipTransport

log = logging.getLogger("tonebridge.sip")

USER_AGENT = "Tonebridge/0.1"
ALLOW = "INVITE, ACK, CANCEL, BYE, OPTIONS, INFO, REGISTER"
ACCEPT = "application/sdp, application/dtmf-relay, application/dtmf"

# Requests whose Contact the stack checks before the TU sees them: INVITE is the only dialog-creating
# method served (the rest get 405). A re-INVITE (To tag set) may leave its Contact out (§12.2.2 refreshes
# the target "if present"), but one it carries must be usable, as in a new INVITE.
CONTACT_CHECKED = frozenset({"INVITE"})

# The reason phrase of a throttled INVITE's 503, by sip/admission.py's reason.
THROTTLED = {
    "rate": "Too Many INVITEs From This Source",
    "source_setting_up": "Too Many Calls Being Set Up From This Source",
    "setting_up": "Too Many Calls Being Set Up",
}


@dataclass
class IncomingRequest:
    """A new request and the server transaction that answers it."""

    request: Request
    peer: Peer
    transaction: tx.ServerInviteTransaction | tx.ServerNonInviteTransaction


class SipStack:
    def __init__(
        self,
        host: str,
        port: int,
        public_address: str | None = None,
        timers: tx.TimerConfig = tx.DEFAULT_TIMERS,
    ) -> None:
        # Every transaction of this stack, and the calls above it (the wait for a 2xx's ACK), run on these.
        self.timers = timers
        self.transport = SipTransport(host, port, self._on_message, on_send_error=self._on_send_error)
        self.public_address = public_address or host
        self.table = tx.TransactionTable()
        self._peers: dict[object, Peer] = {}
        self._waiters: dict[object, asyncio.Future[Response]] = {}
        self._provisional: dict[object, Callable[[Response], None]] = {}
        self._timer = LoopTimer(self.now, self._on_timer)
        self.on_request: Callable[[IncomingRequest], Awaitable[None] | None] = self._default_request
        self.on_ack: Callable[[Request, Peer], None] = lambda request, peer: None
        self.on_stray_response: Callable[[Response, Peer], None] = lambda response, peer: None
        self._tasks: set[asyncio.Task[None]] = set()
        # New INVITEs are admitted per source when set (the engine sets it from `[limits]`).
        self.admission: InviteAdmission | None = None
        # When set and answering a number, this node takes no new call now: new INVITEs (and OPTIONS
        # probes, so a SIP front stops choosing it) get 503 with that Retry-After (the cluster directory).
        self.unavailable: Callable[[], int | None] | None = None

    @staticmethod
    def now() -> float:
        return time.monotonic()

    async def start(self) -> None:
        await self.transport.start()

    async def close(self) -> None:
        self._timer.cancel()
        for task in list(self._tasks):
            task.cancel()
        await self.transport.close()

    @property
    def port(self) -> int:
        return self.transport.port

    def contact(self, user: str | None = None, transport: str = "UDP") -> str:
        userpart = f"{user}@" if user else ""
        suffix = ";transport=tcp" if transport == "TCP" else ""
        return f"<sip:{userpart}{self.public_address}:{self.port}{suffix}>"

    def via(self, transport: str = "UDP", branch: str | None = None) -> str:
        return str(
            Via(
                transport,
                self.public_address,
                self.port,
                {"branch": branch or tx.new_branch(), "rport": None},
            )
        )

    # Outgoing -----------------------------------------------------------------------------------------

    def send_request(
        self, request: Request, peer: Peer, on_provisional: Callable[[Response], None] | None = None
    ) -> asyncio.Future[Response]:
        """Start a client transaction; the future resolves with the final response (408 on timeout)."""
        if request.headers.get("Via") is None:
            request.headers.prepend("Via", self.via(peer.transport))
        request.headers.set("Max-Forwards", request.headers.get("Max-Forwards") or "70")
        request.headers.set("User-Agent", USER_AGENT)
        now = self.now()
        cls = tx.ClientInviteTransaction if request.method == "INVITE" else tx.ClientNonInviteTransaction
        transaction = cls(request, reliable=peer.reliable, now=now, config=self.timers)
        self.table.add(transaction)
        future: asyncio.Future[Response] = asyncio.get_running_loop().create_future()
        self._peers[transaction.key] = peer
        self._waiters[transaction.key] = future
        if on_provisional:
            self._provisional[transaction.key] = on_provisional
        self._pump(transaction)
        return future

    def send_ack(self, ack: Request, peer: Peer) -> None:
        """An ACK for a 2xx is its own transaction-less request (RFC 3261 §13.2.2.4)."""
        if ack.headers.get("Via") is None:
            ack.headers.prepend("Via", self.via(peer.transport))
        ack.headers.set("Max-Forwards", "70")
        self.transport.send(ack, peer)

    def respond(self, incoming: IncomingRequest, response: Response) -> None:
        response.headers.set("Server", USER_AGENT)
        incoming.transaction.send_response(response, self.now())
        self._pump(incoming.transaction)

    def peer_for_uri(self, uri: SipUri | str) -> Peer:
        """Where a request for `uri` goes (RFC 3263 reduced to literal hosts: no DNS on loopback)."""
        if isinstance(uri, str):
            uri = SipUri.parse(uri)
        transport = "TCP" if uri.transport == "tcp" else "UDP"
        return Peer(transport, uri.params.get("maddr") or uri.host, uri.port or 5060)

    # Incoming -----------------------------------------------------------------------------------------

    def _on_message(self, message: Message, peer: Peer) -> None:
        now = self.now()
        if isinstance(message, Response):
            client = self.table.match_response(message)
            if client is None:
                self.on_stray_response(message, peer)
                return
            client.receive_response(message, now)
            self._pump(client)
            return
        server = self.table.match_request(message)
        if server is None and message.method == "ACK":
            # The ACK for a 2xx has a branch of its own; the INVITE's transaction in Accepted still takes
            # it, to stop re-sending the 2xx, and passes it up (RFC 6026 §7.1).
            server = self.table.match_ack(message)
        if server is not None:
            server.receive_request(message, now)
            self._pump(server, incoming_peer=peer)
            return
        if message.method == "ACK":
            # No transaction claims it (Timer L has ended the INVITE's): the TU may still want it.
            self.on_ack(message, peer)
            return
        if message.method == "INVITE" and self._throttled(message, peer, now):
            return
        reliable = peer.reliable
        cls = tx.ServerInviteTransaction if message.method == "INVITE" else tx.ServerNonInviteTransaction
        server = cls(message, reliable=reliable, now=now, config=self.timers)
        self.table.add(server)
        self._peers[server.key] = self.transport.response_peer(message, peer)
        server.receive_request(message, now)
        self._pump(server, incoming_peer=peer)

    def _pump(self, transaction: tx.Transaction, incoming_peer: Peer | None = None) -> None:
        """Send what a transaction produced and act on its events."""
        key = transaction.key
        peer = self._peers.get(key)
        self.table.touch(transaction)
        if (
            self.admission is not None
            and isinstance(transaction, tx.ServerInviteTransaction)
            and transaction.state is not tx.TransactionState.PROCEEDING
        ):
            # A final response (or the transaction's end) finishes the call's setting up.
            self.admission.finished(key)
        for outgoing in transaction.pop_outgoing():
            if peer is not None:
                self.transport.send(outgoing, peer)
        for event in transaction.pop_events():
            if isinstance(event, tx.ResponseReceived):
                self._deliver_response(key, event.response)
            elif isinstance(event, tx.RequestReceived) and event.request.method == "ACK":
                # An ACK for our 2xx, passed up by the INVITE server transaction (RFC 6026 Accepted state).
                self.on_ack(event.request, incoming_peer or peer or Peer("UDP", "0.0.0.0", 0))
            elif isinstance(event, tx.RequestReceived):
                assert isinstance(transaction, tx.ServerInviteTransaction | tx.ServerNonInviteTransaction)
                incoming = IncomingRequest(
                    event.request, incoming_peer or peer or Peer("UDP", "0.0.0.0", 0), transaction
                )
                self._dispatch(incoming)
            elif isinstance(event, tx.TransportError):
                self._transport_failed(transaction, key, event.reason)
            elif isinstance(event, tx.Timeout):
                future = self._waiters.pop(key, None)
                if future is not None and not future.done():
                    request = transaction.request
                    future.set_result(tx.make_response(request, 408, "Request Timeout"))
            elif isinstance(event, tx.Terminated):
                self._peers.pop(key, None)
                self._provisional.pop(key, None)
                future = self._waiters.pop(key, None)
                if future is not None and not future.done():
                    request = transaction.request
                    future.set_result(tx.make_response(request, 503, "Transport Failure"))
        self._schedule_timer()

    def _on_send_error(self, peer: Peer, message: Message, reason: str) -> None:
        transaction = self.table.match_sent(message)
        if transaction is None:
            # An ACK for a 2xx, a stateless answer, or a transaction already over: nobody waits on it.
            log.info(
                "event=sip_send_failed_untracked peer=%s:%s/%s message=%r reason=%r",
                peer.host,
                peer.port,
                peer.transport,
                message,
                reason,
            )
            return
        transaction.transport_error(self.now(), reason)
        self._pump(transaction)

    def _transport_failed(self, transaction: tx.Transaction, key: tx.TransactionKey, reason: str) -> None:
        request = transaction.request
        peer = self._peers.get(key)
        where = f"{peer.host}:{peer.port}/{peer.transport}" if peer else "?"
        log.warning(
            "event=sip_transport_error method=%s call_id=%s peer=%s reason=%r",
            request.method,
            request.call_id,
            where,
            reason,
        )
        future = self._waiters.pop(key, None)
        if future is not None and not future.done():
            # §8.1.3.1: the TU treats a transport error like a 503; the reason phrase says which it was.
            future.set_result(tx.make_response(request, 503, f"Service Unavailable - {reason}"[:120]))

    def _deliver_response(self, key: object, response: Response) -> None:
        if response.status < 200:
            callback = self._provisional.get(key)
            if callback:
                callback(response)
            return
        # The final response ends what the provisional callback was for; the transaction itself may live on
        # for 64*T1 (Timer M, D), and must not keep the caller's call alive meanwhile.
        self._provisional.pop(key, None)
        future = self._waiters.pop(key, None)
        if future is not None and not future.done():
            future.set_result(response)
        elif response.status < 300:
            # A retransmitted 2xx to INVITE: the dialog's owner must ACK it again (§13.2.2.4).
            self.on_stray_response(response, self._peers.get(key) or Peer("UDP", "0.0.0.0", 0))

    def _dispatch(self, incoming: IncomingRequest) -> None:
        if self._refused_at_edge(incoming):
            return
        result = self.on_request(incoming)
        if asyncio.iscoroutine(result):
            task = asyncio.get_running_loop().create_task(result)
            self._tasks.add(task)
            task.add_done_callback(self._task_done)

    def _refused_at_edge(self, incoming: IncomingRequest) -> bool:
        """Answer what the TU could only fail on, so it never allocates anything for it."""
        request = incoming.request
        if request.method not in CONTACT_CHECKED:
            return False
        problem = contact_problem(request, required=not request.to.tag)
        if problem is None:
            return False
        self.transport.stats.count("rejected_contact")
        peer = incoming.peer
        log.info(
            "event=sip_rejected peer=%s:%s/%s method=%s call_id=%s status=400 reason=%r",
            peer.host,
            peer.port,
            peer.transport,
            request.method,
            request.call_id,
            problem,
        )
        self.respond(incoming, tx.make_response(request, 400, f"Bad Request - {problem}"))
        return True

    def _throttled(self, request: Request, peer: Peer, now: float) -> bool:
        """Refuse a new INVITE its source may not send now: 503 with Retry-After (§21.5.4), stateless."""
        if self.admission is None and self.unavailable is None:
            return False
        try:
            if request.to.tag:
                return False  # a re-INVITE belongs to a call already set up
        except ValueError:
            return False  # a To the TU will refuse anyway
        if self.unavailable is not None and (retry_after := self.unavailable()) is not None:
            self.transport.stats.count("refused_unavailable")
            response = tx.make_response(request, 503, "Service Unavailable - Node Cannot Take Calls")
            response.headers.set("Retry-After", str(retry_after))
            response.headers.set("Server", USER_AGENT)
            self.transport.send(response, self.transport.response_peer(request, peer))
            return True
        if self.admission is None:
            return False
        refusal = self.admission.admit(peer.host, tx.server_key(request), now)
        if refusal is None:
            return False
        self.transport.stats.count("throttled_invites")
        log.debug(
            "event=sip_throttled peer=%s:%s/%s call_id=%s reason=%s",
            peer.host,
            peer.port,
            peer.transport,
            request.call_id,
            refusal.reason,
        )
        response = tx.make_response(request, 503, f"Service Unavailable - {THROTTLED[refusal.reason]}")
        response.headers.set("Retry-After", str(refusal.retry_after))
        response.headers.set("Server", USER_AGENT)
        self.transport.send(response, self.transport.response_peer(request, peer))
        return True

    def _task_done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("event=request_handler_failed error=%r", task.exception())

    def _default_request(self, incoming: IncomingRequest) -> None:
        self.respond(incoming, tx.make_response(incoming.request, 501))

    def _schedule_timer(self) -> None:
        """Keep one loop timer armed for the earliest transaction deadline."""
        self._timer.arm(self.table.next_timer())

    def _on_timer(self) -> None:
        for transaction in self.table.handle_timers(self.now()):
            self._pump(transaction)
        self._schedule_timer()
