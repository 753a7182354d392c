"""SIP transactions (RFC 3261 §17, amended by RFC 6026): state machines fed messages and a clock.

Sans-IO in the manner of a protocol core with timers: a transaction is given the messages that match it and
the current time, and it answers with what to transmit (`pop_outgoing`), what happened (`pop_events`) and
when it next wants to be woken (`next_timer`). Nothing here reads a clock, sleeps or touches a socket, so
every timer of §17 (A to M) is driven in tests by passing `now`.

Timers are absolute deadlines in the same clock as `now`. A retransmission timer is re-armed from its own
deadline rather than from the `now` it was handled at, so a late wake-up does not stretch the schedule.
Timers that the §17 tables set to zero on reliable transports (D, I, J, K) are not armed at all: the
transaction moves straight to Terminated, which is what a zero-second timer amounts to.
"""

from __future__ import annotations

import heapq
import secrets
from collections.abc import Iterator
from dataclasses import dataclass
from enum import Enum
from typing import ClassVar

from tonebridge.sip.message import REASONS, Headers, NameAddress, Request, Response

# RFC 3261 §8.1.1.7: a branch starting with this cookie was built by an RFC 3261 element and is unique.
MAGIC_COOKIE = "z9hG4bK"


class TransactionError(Exception):
    """A transaction was used against its rules (wrong method, wrong message, response to a non-match)."""


@dataclass(frozen=True)
class TimerConfig:
    """The base timer values of RFC 3261 §17.1.1.1 and Table 4, in seconds.

    `d` is Timer D's UDP value, which §17.1.1.2 sets to "at least 32 seconds" independently of T1.
    """

    t1: float = 0.5
    t2: float = 4.0
    t4: float = 5.0
    d: float = 32.0


DEFAULT_TIMERS = TimerConfig()


class TransactionState(Enum):
    """The states of the four machines of §17 (Figures 5 to 8) with RFC 6026's Accepted.

    Client INVITE: Calling, Proceeding, Completed, Accepted, Terminated.
    Client non-INVITE: Trying, Proceeding, Completed, Terminated.
    Server INVITE: Proceeding, Completed, Confirmed, Accepted, Terminated.
    Server non-INVITE: Trying, Proceeding, Completed, Terminated.
    """

    CALLING = "calling"
    TRYING = "trying"
    PROCEEDING = "proceeding"
    COMPLETED = "completed"
    CONFIRMED = "confirmed"
    ACCEPTED = "accepted"
    TERMINATED = "terminated"


@dataclass(frozen=True)
class TransactionKey:
    """What a message is matched on (§17.1.3 for clients, §17.2.3 for servers).

    Client and server keys live in one table, so `server` keeps a UAS's server transaction apart from a
    client transaction that happens to share a branch (a request looped back to ourselves).
    """

    branch: str
    sent_by: str
    method: str
    server: bool


# Events -----------------------------------------------------------------------------------------------


@dataclass
class ResponseReceived:
    """A response for the TU: each provisional and final once, and every 2xx to INVITE (§13.2.2.4)."""

    response: Response


@dataclass
class RequestReceived:
    """A request for the TU: the first copy of the request, or an ACK matched in RFC 6026's Accepted."""

    request: Request


@dataclass
class Timeout:
    """The peer never answered (Timer B or F) or never acknowledged a final response (Timer H)."""

    timer: str = ""


@dataclass
class TransportError:
    """The transport reported a failure to send (§17.1.4, §17.2.4)."""

    reason: str = ""


@dataclass
class Terminated:
    """The transaction has ended; the table forgets it."""


Event = ResponseReceived | RequestReceived | Timeout | TransportError | Terminated


# Helpers ----------------------------------------------------------------------------------------------


def new_branch() -> str:
    """A fresh Via branch: the §8.1.1.7 magic cookie and 96 random bits."""
    return MAGIC_COOKIE + secrets.token_hex(12)


def new_tag() -> str:
    """A fresh From or To tag (§19.3 asks for at least 32 random bits; this has 64)."""
    return secrets.token_hex(8)


def client_key(message: Request | Response) -> TransactionKey:
    """The key a client transaction is filed under and a response is matched by (§17.1.3).

    The branch of the top Via and the CSeq method: a CANCEL and its INVITE share a branch, not a method.
    """
    branch = message.top_via.branch or ""
    return TransactionKey(branch, "", message.cseq.method, server=False)


def server_key(request: Request) -> TransactionKey:
    """The key a server transaction is filed under and a request is matched by (§17.2.3).

    Branch, sent-by and method, with ACK filed as INVITE so that the ACK for a non-2xx final response finds
    the INVITE's transaction. A branch without the magic cookie comes from an RFC 2543 element, whose
    branches are not unique; its key is built from the fields §17.2.3 lists for that case instead
    (Request-URI, From tag, Call-ID, CSeq number and the whole top Via; the To tag is left out since the ACK
    carries one the INVITE did not).
    """
    via = request.top_via
    method = "INVITE" if request.method == "ACK" else request.method
    sent_by = via.host.lower() + (f":{via.port}" if via.port else "")
    branch = via.branch or ""
    if not branch.startswith(MAGIC_COOKIE):
        from_tag = request.from_.tag or ""
        branch = "|".join(
            ("rfc2543", request.uri, from_tag, request.call_id, str(request.cseq.number), str(via))
        )
    return TransactionKey(branch, sent_by, method, server=True)


def _with_tag(value: str, tag: str) -> str:
    # Appending keeps the peer's own spelling of the header; a re-serialised NameAddress might not.
    return f"{value};tag={tag}"


def make_response(
    request: Request,
    status: int,
    reason: str | None = None,
    to_tag: str | None = None,
    body: bytes = b"",
    content_type: str | None = None,
) -> Response:
    """A response to `request` built per §8.2.6.

    Via (every value, in order), From, Call-ID and CSeq are copied; To is copied and given `to_tag` when
    it has no tag (a fresh tag when `to_tag` is None, except on a 100, §8.2.6.2). A 100 copies Timestamp
    (§8.2.6.1); a 101-299 copies Record-Route, which a dialog-creating response must carry (§12.1.1).
    Pass the same `to_tag` to every response of one INVITE: a different tag is a different dialog.
    """
    if not 100 <= status <= 699:
        raise ValueError(f"status {status} is not a SIP response code (100-699)")
    headers = Headers()
    for via in request.headers.get_all("Via"):
        headers.add("Via", via)
    if 100 < status < 300:
        for record_route in request.headers.get_all("Record-Route"):
            headers.add("Record-Route", record_route)
    headers.add("From", request.headers.get("From") or "")
    to = request.headers.get("To") or ""
    if NameAddress.parse(to).tag is None:
        if to_tag is not None:
            to = _with_tag(to, to_tag)
        elif status != 100:
            to = _with_tag(to, new_tag())
    headers.add("To", to)
    headers.add("Call-ID", request.call_id)
    headers.add("CSeq", request.headers.get("CSeq") or "")
    if status == 100 and request.headers.get("Timestamp") is not None:
        headers.add("Timestamp", request.headers.get("Timestamp") or "")
    if body and content_type:
        headers.add("Content-Type", content_type)
    return Response(status, reason if reason is not None else REASONS.get(status), headers, body)


def make_cancel(invite: Request) -> Request:
    """The CANCEL for a pending INVITE (§9.1).

    Request-URI, Call-ID, From, To and the CSeq number are the INVITE's; the one Via is the INVITE's top Via
    so that the CANCEL reaches the same server transaction's neighbour; Route is copied.
    """
    if invite.method != "INVITE":
        raise TransactionError(f"only an INVITE can be cancelled, not {invite.method}")
    return _hop_request("CANCEL", invite, invite.headers.get("To") or "")


def make_ack_for_non_2xx(invite: Request, response: Response) -> Request:
    """The ACK a client INVITE transaction sends for a 300-699 response (§17.1.1.3).

    Like a CANCEL, but To is the response's (with the tag the server added) and CSeq says ACK.
    """
    if invite.method != "INVITE":
        raise TransactionError(f"an ACK acknowledges an INVITE, not {invite.method}")
    if response.status < 300:
        raise TransactionError(
            f"the ACK for a {response.status} is the TU's job (§13.2.2.4), not the "
            "transaction's; use Dialog.create_ack"
        )
    return _hop_request("ACK", invite, response.headers.get("To") or "")


def _hop_request(method: str, invite: Request, to: str) -> Request:
    headers = Headers()
    headers.add("Via", invite.headers.values("Via")[0])
    for route in invite.headers.get_all("Route"):
        headers.add("Route", route)
    headers.add("Max-Forwards", "70")
    headers.add("From", invite.headers.get("From") or "")
    headers.add("To", to)
    headers.add("Call-ID", invite.call_id)
    headers.add("CSeq", f"{invite.cseq.number} {method}")
    return Request(method, invite.uri, headers)


# Transactions -----------------------------------------------------------------------------------------


class _Transaction:
    """What the four machines share: timers as data, outgoing messages and events as queues."""

    # Timers whose firing ends the transaction go first when two fall due at the same instant: a last
    # retransmission at the very moment of a timeout would be pointless.
    _FINAL_TIMERS: ClassVar[frozenset[str]] = frozenset("BDFHIJKLM")

    def __init__(self, request: Request, reliable: bool, config: TimerConfig | None) -> None:
        self.request = request
        self.reliable = reliable
        self.config = config or DEFAULT_TIMERS
        self.state: TransactionState = TransactionState.TERMINATED
        self._timers: dict[str, float] = {}
        self._outgoing: list[Request | Response] = []
        self._events: list[Event] = []
        self._interval = self.config.t1

    @property
    def key(self) -> TransactionKey:
        raise NotImplementedError

    @property
    def terminated(self) -> bool:
        return self.state is TransactionState.TERMINATED

    @property
    def timers(self) -> dict[str, float]:
        """The pending timers by letter (and, for a server INVITE, "trying" for its 100 and "2xx" for the
        retransmission of its 2xx), as absolute deadlines."""
        return dict(self._timers)

    def next_timer(self) -> float | None:
        """The absolute time of the earliest pending timer, or None when nothing is pending."""
        return min(self._timers.values(), default=None)

    def handle_timer(self, now: float) -> None:
        """Fire every timer due at `now`, earliest first; early calls do nothing."""
        while self._timers and not self.terminated:
            name, deadline = min(
                self._timers.items(), key=lambda item: (item[1], item[0] not in self._FINAL_TIMERS)
            )
            if deadline > now:
                return
            del self._timers[name]
            self._fire(name, deadline)

    def pop_outgoing(self) -> list[Request | Response]:
        """The messages to transmit now, in order; the queue is emptied."""
        outgoing, self._outgoing = self._outgoing, []
        return outgoing

    def pop_events(self) -> list[Event]:
        """What happened since the last call, in order; the queue is emptied."""
        events, self._events = self._events, []
        return events

    def sent(self, message: Request | Response) -> bool:
        """Whether `message` is one this transaction handed out for sending (the very object)."""
        return message is self.request

    def transport_error(self, now: float, reason: str = "") -> None:
        """The transport failed to send this transaction's message: inform the TU and end (§17.1.4, §17.2.4)."""
        if self.terminated:
            return
        self._events.append(TransportError(reason))
        self._terminate()

    def _fire(self, name: str, deadline: float) -> None:
        raise NotImplementedError

    def _arm(self, name: str, at: float) -> None:
        self._timers[name] = at

    def _cancel(self, *names: str) -> None:
        for name in names:
            self._timers.pop(name, None)

    def _terminate(self) -> None:
        if self.terminated:
            return
        self.state = TransactionState.TERMINATED
        self._timers.clear()
        self._events.append(Terminated())

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.request.method} {self.state.value} {self.key.branch}>"


class ClientTransaction(_Transaction):
    """Common ground of the client machines: the request's own key and response checks."""

    def __init__(self, request: Request, reliable: bool, config: TimerConfig | None) -> None:
        super().__init__(request, reliable, config)
        branch = request.top_via.branch if request.headers.get("Via") else None
        if not branch or not branch.startswith(MAGIC_COOKIE):
            raise TransactionError(
                "a client transaction needs a top Via whose branch starts with "
                f"{MAGIC_COOKIE} (§8.1.1.7); build one with new_branch()"
            )
        self._key = client_key(request)
        self._seen_provisional: set[tuple[int, str, str]] = set()

    @property
    def key(self) -> TransactionKey:
        return self._key

    def receive_response(self, response: Response, now: float) -> None:
        raise NotImplementedError

    def _check(self, response: Response) -> None:
        if client_key(response) != self._key:
            raise TransactionError(
                f"response {response.status} for {response.cseq.method} branch "
                f"{response.top_via.branch} does not match transaction {self._key}"
            )

    def _first_provisional(self, response: Response) -> bool:
        # The server re-sends its last provisional for every retransmitted request (§17.2.1); hand each
        # distinct one (status, To tag, RSeq of RFC 3262) to the TU once.
        mark = (response.status, response.to.tag or "", response.headers.get("RSeq") or "")
        if mark in self._seen_provisional:
            return False
        self._seen_provisional.add(mark)
        return True


class ClientInviteTransaction(ClientTransaction):
    """The INVITE client transaction (§17.1.1, Figure 5, with RFC 6026 §8.4's Accepted state).

    Calling: the INVITE is sent, and re-sent by Timer A (T1, doubling) on unreliable transports until a
    response arrives or Timer B (64*T1) gives up. A 1xx moves to Proceeding (no more retransmissions, no
    timeout: the INVITE may ring for as long as the callee likes). A 300-699 moves to Completed, where the
    transaction builds and sends the ACK and re-sends it for each retransmitted final until Timer D. A 2xx
    moves to Accepted, where every 2xx (retransmissions and other forks) goes to the TU, which ACKs them,
    until Timer M (64*T1).
    """

    def __init__(
        self, request: Request, reliable: bool, now: float, config: TimerConfig | None = None
    ) -> None:
        if request.method != "INVITE":
            raise TransactionError(f"ClientInviteTransaction carries an INVITE, not {request.method}")
        super().__init__(request, reliable, config)
        self.state = TransactionState.CALLING
        self.ack: Request | None = None
        self._outgoing.append(request)
        if not reliable:
            self._arm("A", now + self._interval)
        self._arm("B", now + 64 * self.config.t1)

    def sent(self, message: Request | Response) -> bool:
        return message is self.request or (self.ack is not None and message is self.ack)

    def receive_response(self, response: Response, now: float) -> None:
        self._check(response)
        state = self.state
        if state in (TransactionState.CALLING, TransactionState.PROCEEDING):
            if response.status < 200:
                self.state = TransactionState.PROCEEDING
                self._cancel("A", "B")
                if self._first_provisional(response):
                    self._events.append(ResponseReceived(response))
            elif response.status < 300:
                self.state = TransactionState.ACCEPTED
                self._cancel("A", "B")
                self._events.append(ResponseReceived(response))
                self._arm("M", now + 64 * self.config.t1)
            else:
                self.state = TransactionState.COMPLETED
                self._cancel("A", "B")
                self._events.append(ResponseReceived(response))
                self.ack = make_ack_for_non_2xx(self.request, response)
                self._outgoing.append(self.ack)
                if self.reliable:
                    self._terminate()
                else:
                    self._arm("D", now + self.config.d)
        elif state is TransactionState.COMPLETED:
            # §17.1.1.2: a retransmitted final means our ACK was lost; send it again, tell nobody.
            if response.status >= 300 and self.ack is not None:
                self._outgoing.append(self.ack)
        elif state is TransactionState.ACCEPTED:
            # RFC 6026 §8.4: every 2xx goes up, since only the TU can ACK it.
            if 200 <= response.status < 300:
                self._events.append(ResponseReceived(response))

    def _fire(self, name: str, deadline: float) -> None:
        if name == "A" and self.state is TransactionState.CALLING:
            self._outgoing.append(self.request)
            self._interval *= 2
            self._arm("A", deadline + self._interval)
        elif name == "B" and self.state is TransactionState.CALLING:
            self._events.append(Timeout("B"))
            self._terminate()
        elif name in ("D", "M"):
            self._terminate()


class ClientNonInviteTransaction(ClientTransaction):
    """The non-INVITE client transaction (§17.1.2, Figure 6).

    Trying: the request is sent, and on unreliable transports re-sent by Timer E (T1, doubling, capped at
    T2); once a provisional has arrived (Proceeding), each firing of E re-arms it at T2. Timer F (64*T1)
    ends an unanswered transaction in either state. A final response moves to Completed, which absorbs
    retransmitted finals until Timer K (T4; zero on reliable transports).
    """

    def __init__(
        self, request: Request, reliable: bool, now: float, config: TimerConfig | None = None
    ) -> None:
        if request.method in ("INVITE", "ACK"):
            raise TransactionError(
                f"{request.method} does not use a non-INVITE client transaction "
                "(§17.1.2; an ACK for a 2xx has no transaction at all)"
            )
        super().__init__(request, reliable, config)
        self.state = TransactionState.TRYING
        self._outgoing.append(request)
        if not reliable:
            self._arm("E", now + self._interval)
        self._arm("F", now + 64 * self.config.t1)

    def receive_response(self, response: Response, now: float) -> None:
        self._check(response)
        if self.state not in (TransactionState.TRYING, TransactionState.PROCEEDING):
            return  # Completed absorbs retransmitted finals; Terminated hears nothing.
        if response.status < 200:
            self.state = TransactionState.PROCEEDING
            if self._first_provisional(response):
                self._events.append(ResponseReceived(response))
            return
        self.state = TransactionState.COMPLETED
        self._cancel("E", "F")
        self._events.append(ResponseReceived(response))
        if self.reliable:
            self._terminate()
        else:
            self._arm("K", now + self.config.t4)

    def _fire(self, name: str, deadline: float) -> None:
        if name == "E" and self.state in (TransactionState.TRYING, TransactionState.PROCEEDING):
            self._outgoing.append(self.request)
            if self.state is TransactionState.PROCEEDING:
                self._interval = self.config.t2
            else:
                self._interval = min(2 * self._interval, self.config.t2)
            self._arm("E", deadline + self._interval)
        elif name == "F" and self.state in (TransactionState.TRYING, TransactionState.PROCEEDING):
            self._events.append(Timeout("F"))
            self._terminate()
        elif name == "K":
            self._terminate()


class ServerTransaction(_Transaction):
    """Common ground of the server machines: the key, the first copy passed up, response bookkeeping.

    The request that creates the transaction is passed to the TU at construction (`RequestReceived`).
    Passing that very object to `receive_request` again is harmless: it is recognised and ignored, so a
    caller may construct and then feed every copy it receives alike.
    """

    def __init__(self, request: Request, reliable: bool, config: TimerConfig | None) -> None:
        super().__init__(request, reliable, config)
        if not request.headers.get("Via"):
            raise TransactionError("a request without Via cannot be answered (§8.2.6.2)")
        self._key = server_key(request)
        self.last_response: Response | None = None
        # Every distinct response handed out: a report about an earlier one may arrive after a later one
        # went out (a TCP connect finishes in its own time).
        self._responses: list[Response] = []
        self._events.append(RequestReceived(request))

    @property
    def key(self) -> TransactionKey:
        return self._key

    def receive_request(self, request: Request, now: float) -> None:
        raise NotImplementedError

    def send_response(self, response: Response, now: float) -> None:
        raise NotImplementedError

    def _check_request(self, request: Request) -> None:
        if server_key(request) != self._key:
            raise TransactionError(
                f"{request.method} branch {request.top_via.branch} does not match transaction {self._key}"
            )

    def _check_response(self, response: Response) -> None:
        if not 100 <= response.status <= 699:
            raise TransactionError(f"status {response.status} is not a SIP response code")
        if response.headers.get("CSeq") and response.cseq.method != self.request.method:
            raise TransactionError(
                f"a response with CSeq method {response.cseq.method} cannot answer {self.request.method}"
            )

    def sent(self, message: Request | Response) -> bool:
        return any(message is response for response in self._responses)

    def _send(self, response: Response) -> None:
        self.last_response = response
        if not self.sent(response):
            self._responses.append(response)
        self._outgoing.append(response)


class ServerInviteTransaction(ServerTransaction):
    """The INVITE server transaction (§17.2.1, Figure 7, with RFC 6026 §7.1's Accepted state).

    Proceeding: the INVITE has gone to the TU. Unless the TU answers within 200 ms the transaction sends a
    100 itself (the "trying" timer; `trying_delay=None` leaves that to the TU); a retransmitted INVITE gets
    the latest provisional again. A 2xx moves to Accepted, which absorbs INVITE retransmissions and passes
    every ACK for the 2xx up, until Timer L (64*T1). A 300-699 moves to Completed: Timer G re-sends it (T1
    doubling to T2, unreliable transports only) until the ACK arrives (to Confirmed, which absorbs ACKs until
    Timer I: T4, zero on reliable transports) or Timer H (64*T1) reports a Timeout.

    The 2xx retransmission that §13.3.1.4 gives the UAS core is done here, on the core's behalf: in
    Accepted, on unreliable transports, the "2xx" timer re-sends the 2xx on Timer G's schedule (T1 doubling
    to T2) until an ACK for it is matched (`acknowledges`). The ACK for a 2xx carries a branch of its own,
    so it is matched by dialog (Call-ID, CSeq number, From tag, and the To tag of our 2xx), not by key.
    """

    def __init__(
        self,
        request: Request,
        reliable: bool,
        now: float,
        config: TimerConfig | None = None,
        trying_delay: float | None = 0.2,
    ) -> None:
        if request.method != "INVITE":
            raise TransactionError(f"ServerInviteTransaction answers an INVITE, not {request.method}")
        super().__init__(request, reliable, config)
        self.state = TransactionState.PROCEEDING
        self._last_provisional: Response | None = None
        self.accepted_response: Response | None = None
        if trying_delay is not None:
            self._arm("trying", now + trying_delay)

    def acknowledges(self, ack: Request) -> bool:
        """Whether `ack` is the ACK for this transaction's 2xx: the same Call-ID, CSeq number and From tag
        as the INVITE, and the To tag the 2xx gave (§13.2.2.4 builds it so, with a branch of its own)."""
        response = self.accepted_response
        if response is None or ack.method != "ACK":
            return False
        invite = self.request
        return (
            ack.call_id == invite.call_id
            and ack.cseq.number == invite.cseq.number
            and ack.from_.tag == invite.from_.tag
            and ack.to.tag == response.to.tag
        )

    def receive_request(self, request: Request, now: float) -> None:
        if request is self.request:
            return
        if not (self.state is TransactionState.ACCEPTED and self.acknowledges(request)):
            self._check_request(request)
        state = self.state
        if request.method == "ACK":
            if state is TransactionState.COMPLETED:
                self.state = TransactionState.CONFIRMED
                self._cancel("G", "H")
                if self.reliable:
                    self._terminate()
                else:
                    self._arm("I", now + self.config.t4)
            elif state is TransactionState.ACCEPTED:
                # RFC 6026 §7.1: an ACK matching the transaction in Accepted is the TU's business. It also
                # tells us the 2xx arrived, so its retransmission stops.
                self._cancel("2xx")
                self._events.append(RequestReceived(request))
            # Confirmed absorbs ACK retransmissions; an ACK before any final response is meaningless.
            return
        if state is TransactionState.PROCEEDING:
            if self._last_provisional is None:
                # §17.2.1: the client is retransmitting, so it has waited long enough for a 100.
                self._send_trying()
            else:
                self._outgoing.append(self._last_provisional)
        elif state is TransactionState.COMPLETED and self.last_response is not None:
            self._outgoing.append(self.last_response)
        # Accepted absorbs INVITE retransmissions (RFC 6026 §7.1); Confirmed and Terminated too.

    def send_response(self, response: Response, now: float) -> None:
        self._check_response(response)
        state = self.state
        if state is TransactionState.PROCEEDING:
            self._cancel("trying")
            if response.status < 200:
                self._last_provisional = response
                self._send(response)
            elif response.status < 300:
                self._send(response)
                self.state = TransactionState.ACCEPTED
                self.accepted_response = response
                if not self.reliable:
                    self._interval = self.config.t1
                    self._arm("2xx", now + self._interval)
                self._arm("L", now + 64 * self.config.t1)
            else:
                self._send(response)
                self.state = TransactionState.COMPLETED
                if not self.reliable:
                    self._interval = self.config.t1
                    self._arm("G", now + self._interval)
                self._arm("H", now + 64 * self.config.t1)
        elif state is TransactionState.ACCEPTED and 200 <= response.status < 300:
            # RFC 6026 §7.1: a 2xx the TU hands over in Accepted goes out as it is.
            self._send(response)
        # Anything else after a final response is dropped, as §17.2.2 says for the non-INVITE case.

    def transport_error(self, now: float, reason: str = "") -> None:
        if self.state is TransactionState.ACCEPTED:
            # The 2xx is sent; the TU decides what a failure to reach the peer means for the dialog (it
            # waits for the ACK): tell it, and let Timer L end the transaction.
            self._events.append(TransportError(reason))
            return
        super().transport_error(now, reason)

    def _send_trying(self) -> None:
        trying = make_response(self.request, 100)
        self._last_provisional = trying
        self._send(trying)

    def _fire(self, name: str, deadline: float) -> None:
        if name == "trying" and self.state is TransactionState.PROCEEDING:
            if self._last_provisional is None:
                self._send_trying()
        elif name == "G" and self.state is TransactionState.COMPLETED and self.last_response is not None:
            self._outgoing.append(self.last_response)
            self._interval = min(2 * self._interval, self.config.t2)
            self._arm("G", deadline + self._interval)
        elif name == "2xx" and self.state is TransactionState.ACCEPTED and self.accepted_response is not None:
            self._outgoing.append(self.accepted_response)
            self._interval = min(2 * self._interval, self.config.t2)
            self._arm("2xx", deadline + self._interval)
        elif name == "H" and self.state is TransactionState.COMPLETED:
            self._events.append(Timeout("H"))
            self._terminate()
        elif name in ("I", "L"):
            self._terminate()


class ServerNonInviteTransaction(ServerTransaction):
    """The non-INVITE server transaction (§17.2.2, Figure 8).

    Trying: the request has gone to the TU; retransmissions are dropped until the TU says something. A
    provisional moves to Proceeding, where retransmissions get the latest provisional again. A final moves
    to Completed, where retransmissions get the final again until Timer J (64*T1; zero on reliable
    transports). Further responses from the TU after the final are discarded.
    """

    def __init__(
        self, request: Request, reliable: bool, now: float, config: TimerConfig | None = None
    ) -> None:
        if request.method in ("INVITE", "ACK"):
            raise TransactionError(f"{request.method} does not use a non-INVITE server transaction")
        super().__init__(request, reliable, config)
        self.state = TransactionState.TRYING

    def receive_request(self, request: Request, now: float) -> None:
        if request is self.request:
            return
        self._check_request(request)
        if self.state in (TransactionState.PROCEEDING, TransactionState.COMPLETED) and self.last_response:
            self._outgoing.append(self.last_response)

    def send_response(self, response: Response, now: float) -> None:
        self._check_response(response)
        if self.state not in (TransactionState.TRYING, TransactionState.PROCEEDING):
            return
        self._send(response)
        if response.status < 200:
            self.state = TransactionState.PROCEEDING
            return
        self.state = TransactionState.COMPLETED
        if self.reliable:
            self._terminate()
        else:
            self._arm("J", now + 64 * self.config.t1)

    def _fire(self, name: str, deadline: float) -> None:
        if name == "J":
            self._terminate()


Transaction = (
    ClientInviteTransaction
    | ClientNonInviteTransaction
    | ServerInviteTransaction
    | ServerNonInviteTransaction
)


class TransactionTable:
    """Every live transaction by key: routes incoming messages and drives the timers of all of them.

    Terminated transactions are dropped when `handle_timers` runs and are never returned by a match, so a
    message arriving after its transaction ended is treated as new (or stray), as §17 intends.

    Deadlines are kept in a heap, so the earliest timer is found without visiting every transaction: a
    server under load holds thousands (Timers J and L keep each one for 32 s). Whoever drives a transaction
    calls `touch` afterwards so its new deadline is filed; stale heap entries are skipped when reached.
    `touch` also files an INVITE server transaction that has sent a 2xx under its dialog's identifiers, so
    the ACK for that 2xx, which has a branch of its own, finds it (`match_ack`).
    """

    def __init__(self) -> None:
        self._transactions: dict[TransactionKey, Transaction] = {}
        self._deadlines: list[tuple[float, int, Transaction]] = []
        self._filed: dict[int, float] = {}  # id(transaction) -> the deadline its newest heap entry holds
        self._sequence = 0
        self._accepted: dict[tuple[str, int, str], ServerInviteTransaction] = {}

    def touch(self, transaction: Transaction) -> None:
        """File the transaction's current deadline (after it was fed a message, a response or a timer)."""
        if isinstance(transaction, ServerInviteTransaction):
            self._file_accepted(transaction)
        if transaction.terminated:
            self._filed.pop(id(transaction), None)
            if self._transactions.get(transaction.key) is transaction:
                del self._transactions[transaction.key]
            return
        deadline = transaction.next_timer()
        if deadline is None:
            self._filed.pop(id(transaction), None)
            return
        if self._filed.get(id(transaction)) == deadline:
            return
        self._filed[id(transaction)] = deadline
        self._sequence += 1
        heapq.heappush(self._deadlines, (deadline, self._sequence, transaction))

    def __len__(self) -> int:
        return sum(1 for t in self._transactions.values() if not t.terminated)

    def __iter__(self) -> Iterator[Transaction]:
        return iter([t for t in self._transactions.values() if not t.terminated])

    def __contains__(self, key: object) -> bool:
        return isinstance(key, TransactionKey) and self.get(key) is not None

    def add(self, transaction: Transaction) -> None:
        """File a new transaction; a live one with the same key is a caller error."""
        existing = self._transactions.get(transaction.key)
        if existing is not None and not existing.terminated and existing is not transaction:
            raise TransactionError(f"a live transaction already holds key {transaction.key}")
        self._transactions[transaction.key] = transaction
        self.touch(transaction)

    def get(self, key: TransactionKey) -> Transaction | None:
        transaction = self._transactions.get(key)
        if transaction is None or transaction.terminated:
            return None
        return transaction

    def remove(self, key: TransactionKey) -> None:
        self._transactions.pop(key, None)

    def match_request(self, request: Request) -> ServerInviteTransaction | ServerNonInviteTransaction | None:
        """The server transaction a retransmitted request or an ACK for a non-2xx belongs to (§17.2.3)."""
        transaction = self.get(server_key(request))
        assert transaction is None or isinstance(
            transaction, ServerInviteTransaction | ServerNonInviteTransaction
        )
        return transaction

    def match_response(
        self, response: Response
    ) -> ClientInviteTransaction | ClientNonInviteTransaction | None:
        """The client transaction a response belongs to (§17.1.3)."""
        transaction = self.get(client_key(response))
        assert transaction is None or isinstance(
            transaction, ClientInviteTransaction | ClientNonInviteTransaction
        )
        return transaction

    def match_sent(self, message: Request | Response) -> Transaction | None:
        """The live transaction that sent `message`, so a transport's failure to send it reaches the machine
        that must hear of it (§17.1.4, §17.2.4). None for what no transaction sends: the ACK for a 2xx
        (§13.2.2.4), a stateless error response, or a message whose transaction has ended.

        A client sends its request and, for a non-2xx to INVITE, an ACK on the INVITE's branch; a server
        sends responses carrying the request's top Via and CSeq method.
        """
        try:
            via = message.top_via
            branch = via.branch or ""
            if isinstance(message, Request):
                method = "INVITE" if message.method == "ACK" else message.method
                key = TransactionKey(branch, "", method, server=False)
            else:
                sent_by = via.host.lower() + (f":{via.port}" if via.port else "")
                key = TransactionKey(branch, sent_by, message.cseq.method, server=True)
        except (ValueError, IndexError):
            return None
        transaction = self.get(key)
        if transaction is not None and transaction.sent(message):
            return transaction
        if isinstance(message, Response) and not branch.startswith(MAGIC_COOKIE):
            # An RFC 2543 server key holds request fields a response does not carry; such peers are rare
            # and transport errors rarer, so a scan is cheap enough.
            for candidate in self._transactions.values():
                if not candidate.terminated and candidate.sent(message):
                    return candidate
        return None

    def match_ack(self, ack: Request) -> ServerInviteTransaction | None:
        """The INVITE server transaction in Accepted whose 2xx `ack` acknowledges (RFC 6026 §7.1), or None."""
        if ack.method != "ACK":
            raise TransactionError(f"match_ack takes an ACK, not {ack.method}")
        transaction = self._accepted.get(_dialog_mark(ack))
        if transaction is None or transaction.terminated or not transaction.acknowledges(ack):
            return None
        return transaction

    def _file_accepted(self, transaction: ServerInviteTransaction) -> None:
        if transaction.accepted_response is None:
            return  # never sent a 2xx: no ACK of its own to wait for
        mark = _dialog_mark(transaction.request)
        if transaction.state is TransactionState.ACCEPTED:
            self._accepted[mark] = transaction
        elif self._accepted.get(mark) is transaction:
            del self._accepted[mark]

    def match_cancel(self, cancel: Request) -> ServerInviteTransaction | None:
        """The INVITE server transaction a CANCEL targets (§9.2): same branch and sent-by, method INVITE."""
        if cancel.method != "CANCEL":
            raise TransactionError(f"match_cancel takes a CANCEL, not {cancel.method}")
        key = server_key(cancel)
        # An RFC 2543 key is built from fields a CANCEL shares with its INVITE, so only the method differs.
        transaction = self.get(TransactionKey(key.branch, key.sent_by, "INVITE", server=True))
        return transaction if isinstance(transaction, ServerInviteTransaction) else None

    def next_timer(self) -> float | None:
        """The earliest deadline over every live transaction."""
        while self._deadlines:
            deadline, _, transaction = self._deadlines[0]
            if self._current(deadline, transaction):
                return deadline
            heapq.heappop(self._deadlines)
        return None

    def _current(self, deadline: float, transaction: Transaction) -> bool:
        """Whether a heap entry still holds the transaction's deadline (not superseded, not ended)."""
        return (
            not transaction.terminated
            and self._filed.get(id(transaction)) == deadline
            and transaction.next_timer() == deadline
        )

    def handle_timers(self, now: float) -> list[Transaction]:
        """Fire what is due; returns the transactions that acted (pump their output), drops ended ones."""
        fired: list[Transaction] = []
        while self._deadlines and self._deadlines[0][0] <= now:
            deadline, _, transaction = heapq.heappop(self._deadlines)
            if not self._current(deadline, transaction):
                continue
            self._filed.pop(id(transaction), None)
            transaction.handle_timer(now)
            fired.append(transaction)
            self.touch(transaction)
        return fired

    def purge(self) -> None:
        """Forget every terminated transaction."""
        for key in [k for k, t in self._transactions.items() if t.terminated]:
            del self._transactions[key]
        for mark in [m for m, t in self._accepted.items() if t.terminated]:
            del self._accepted[mark]


def _dialog_mark(request: Request) -> tuple[str, int, str]:
    """What an INVITE and the ACK for its 2xx share whatever their branches: Call-ID, CSeq number, From tag."""
    return request.call_id, request.cseq.number, request.from_.tag or ""
