"""The call core (calls/core.py): a caller's core and a callee's core joined in memory, the clock passed in.

Every message crosses as bytes (serialised and parsed again). The callee's INVITE server transaction is the
real one from sip/transaction.py, so the 2xx is retransmitted and its ACK matched as on the wire; the line
plays the caller's INVITE client transaction only where a core relies on it (the ACK for a non-2xx).
Nothing moves until the test delivers, so messages can be made to cross, and be lost.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest

from tonebridge.calls.call import Call, CallResult, CallState, Direction, EndReason, InvalidTransition
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
    parse_dtmf_info,
)
from tonebridge.sip import auth, sdp
from tonebridge.sip.message import Headers, Message, Request, Response, parse_message
from tonebridge.sip.transaction import (
    DEFAULT_TIMERS,
    RequestReceived,
    ServerInviteTransaction,
    make_ack_for_non_2xx,
    make_response,
    new_branch,
    server_key,
)

T1 = DEFAULT_TIMERS.t1
CALLER = LocalEnd("192.0.2.1", "<sip:alice@192.0.2.1:5060>", 40000)
CALLEE = LocalEnd("192.0.2.2", "<sip:bob@192.0.2.2:5060>", 50000)
HOSTS = {"caller": "192.0.2.1", "callee": "192.0.2.2"}


def summary(message: Message) -> str:
    if isinstance(message, Request):
        return message.method
    return f"{message.status} {message.cseq.method}"


class Line:
    """The caller's core and the callee's core, and what travels between them."""

    def __init__(
        self, *, caller: LocalEnd = CALLER, callee: LocalEnd = CALLEE, ring_timeout: float = 60.0
    ) -> None:
        self.now = 0.0
        call = Call(
            Direction.OUTBOUND,
            remote_uri="sip:bob@192.0.2.2",
            local_uri="sip:alice@192.0.2.1",
            started_at=0.0,
        )
        self.caller = OutboundCall(
            call, "sip:bob@192.0.2.2:5060", caller, from_user="alice", ring_timeout=ring_timeout
        )
        self.callee_local = callee
        self.callee: InboundCall | None = None
        self.invite_transaction: ServerInviteTransaction | None = None
        self.actions: dict[str, list[Action]] = {"caller": [], "callee": []}
        self.in_flight: list[tuple[str, Message]] = []
        self.wire: list[tuple[float, str, str]] = []  # (time, to, summary) of everything sent, lost or not
        self.lose: Callable[[Message], bool] = lambda message: False

    # Driving ---------------------------------------------------------------------------------------

    def start(self) -> None:
        self.did("caller", self.caller.start(self.now))
        self.deliver()

    def did(self, side: str, actions: list[Action]) -> list[Action]:
        """Carry out what a core asked, as the engine would; returns the actions for the test to look at."""
        self.actions[side].extend(actions)
        other = "callee" if side == "caller" else "caller"
        for action in actions:
            if isinstance(action, (SendRequest, SendAck)):
                request = action.request if isinstance(action, SendRequest) else action.ack
                if request.headers.get("Via") is None:
                    request.headers.prepend("Via", f"SIP/2.0/UDP {HOSTS[side]}:5060;branch={new_branch()}")
                self.send(other, request)
            elif isinstance(action, Respond):
                transaction = self.invite_transaction
                if side == "callee" and transaction is not None and action.request is transaction.request:
                    transaction.send_response(action.response, self.now)
                    self.pump()
                else:
                    self.send(other, action.response)
        return actions

    def send(self, to: str, message: Message) -> None:
        self.wire.append((self.now, to, summary(message)))
        if not self.lose(message):
            self.in_flight.append((to, parse_message(message.to_bytes())))

    def pump(self) -> None:
        assert self.invite_transaction is not None
        for response in self.invite_transaction.pop_outgoing():
            self.send("caller", response)

    def deliver(self) -> None:
        while self.in_flight:
            to, message = self.in_flight.pop(0)
            if to == "callee":
                self.arrive_at_callee(message)
            else:
                self.arrive_at_caller(message)

    def arrive_at_callee(self, message: Message) -> None:
        if isinstance(message, Response):
            assert self.callee is not None
            self.did("callee", self.callee.receive_response(message, self.now))
            return
        if message.method == "INVITE" and not message.to.tag and self.callee is None:
            call = Call(
                Direction.INBOUND,
                remote_uri=str(message.from_.uri),
                local_uri=message.uri,
                started_at=self.now,
            )
            self.callee = InboundCall(message, call, self.callee_local)
            self.invite_transaction = ServerInviteTransaction(
                message, reliable=False, now=self.now, trying_delay=None
            )
            self.invite_transaction.pop_events()
            self.did("callee", self.callee.start(self.now))
            return
        assert self.callee is not None
        transaction = self.invite_transaction
        if (
            message.method == "ACK"
            and transaction is not None
            and not transaction.terminated
            and (transaction.acknowledges(message) or server_key(message) == transaction.key)
        ):
            transaction.receive_request(message, self.now)
            for event in transaction.pop_events():
                if isinstance(event, RequestReceived):
                    self.did("callee", self.callee.receive_request(event.request, self.now))
            return
        self.did("callee", self.callee.receive_request(message, self.now))

    def arrive_at_caller(self, message: Message) -> None:
        if isinstance(message, Request):
            self.did("caller", self.caller.receive_request(message, self.now))
            return
        invite = self.caller.invite
        if (
            message.cseq.method == "INVITE"
            and message.status >= 300
            and message.cseq.number == invite.cseq.number
        ):
            self.send("callee", make_ack_for_non_2xx(invite, message))  # the client transaction's ACK
        self.did("caller", self.caller.receive_response(message, self.now))

    def advance(self, to: float) -> None:
        """Let time pass to `to`, waking every core and the transaction at each deadline on the way."""
        while True:
            deadlines = [self.caller.next_timer()]
            if self.callee is not None:
                deadlines.append(self.callee.next_timer())
            if self.invite_transaction is not None:
                deadlines.append(self.invite_transaction.next_timer())
            due = min((d for d in deadlines if d is not None), default=None)
            if due is None or due > to:
                break
            self.now = max(self.now, due)
            self.did("caller", self.caller.handle_timer(self.now))
            if self.callee is not None:
                self.did("callee", self.callee.handle_timer(self.now))
            if self.invite_transaction is not None:
                self.invite_transaction.handle_timer(self.now)
                self.pump()
                self.invite_transaction.pop_events()
            self.deliver()
        self.now = max(self.now, to)

    # Looking -----------------------------------------------------------------------------------------

    def of(self, side: str, kind: type) -> list:  # type: ignore[type-arg]
        return [a for a in self.actions[side] if isinstance(a, kind)]

    def ladder(self, since: int = 0) -> list[str]:
        return [f"{'->' if to == 'callee' else '<-'} {what}" for _, to, what in self.wire[since:]]

    def answered(self) -> InboundCall:
        """Ring and answer; the ACK arrives. Returns the callee's core."""
        self.start()
        callee = self.callee
        assert callee is not None
        self.did("callee", callee.ringing(self.now))
        self.did("callee", callee.answer(self.now))
        self.deliver()
        return callee


def test_answer() -> None:
    line = Line()
    line.start()
    callee = line.callee
    assert callee is not None and callee.call.state is CallState.INITIATING
    line.did("callee", callee.ringing(0.1))
    line.deliver()
    assert line.of("caller", Ringing) == [Ringing(180)]
    assert line.caller.call.state is CallState.RINGING
    line.now = 2.0
    line.did("callee", callee.answer(2.0))
    line.deliver()
    assert line.ladder() == ["-> INVITE", "<- 100 INVITE", "<- 180 INVITE", "<- 200 INVITE", "-> ACK"]
    for side, core in (("caller", line.caller), ("callee", callee)):
        assert core.call.state is CallState.ANSWERED and core.call.answered_at == 2.0
        assert line.of(side, Answered) == [Answered()]
        (configured,) = line.of(side, ConfigureMedia)
        assert configured.media.codec == "PCMU"
        assert core.media == configured.media
        assert core.next_timer() is None  # no ring timeout, no ACK wait
    assert line.of("caller", ConfigureMedia)[0].media.remote_port == CALLEE.media_port
    assert line.of("callee", ConfigureMedia)[0].media.remote_port == CALLER.media_port
    assert line.caller.dialog is not None and callee.dialog is not None
    assert line.caller.dialog.key.local_tag == callee.dialog.key.remote_tag
    # The ACK ended the 2xx's retransmission: only Timer L is left on the transaction.
    assert line.invite_transaction is not None and line.invite_transaction.timers == {"L": 2.0 + 64 * T1}
    line.advance(100.0)
    assert line.ladder()[-1] == "-> ACK"  # nothing more on the wire


def test_cancel_before_the_answer_gets_487() -> None:
    line = Line()
    line.start()
    callee = line.callee
    assert callee is not None
    line.did("callee", callee.ringing(0.0))
    line.deliver()
    line.now = 1.0
    line.did("caller", line.caller.cancel(1.0))
    assert line.caller.deadlines == {"cancel": 1.0 + 64 * T1}
    line.deliver()
    assert line.ladder(3) == ["-> CANCEL", "<- 200 CANCEL", "<- 487 INVITE", "-> ACK"]
    assert line.of("callee", Ended) == [Ended(EndReason.CANCEL, CallResult.NOANSWER, 487)]
    assert line.of("caller", Ended) == [Ended(EndReason.CANCEL, CallResult.NOANSWER, 487)]
    assert line.caller.next_timer() is None
    assert line.invite_transaction is not None and line.invite_transaction.state.value == "confirmed"


def test_cancel_crossing_the_200_ends_the_call_with_a_bye() -> None:
    line = Line()
    line.start()
    callee = line.callee
    assert callee is not None
    # The callee answers and the caller cancels before either hears of the other.
    line.did("callee", callee.answer(1.0))
    line.did("caller", line.caller.cancel(1.0))
    line.deliver()
    assert line.ladder(2) == ["<- 200 INVITE", "-> CANCEL", "-> ACK", "-> BYE", "<- 200 CANCEL", "<- 200 BYE"]
    # The 2xx wins (§9.1): the caller ACKs it, then ends the call it never wanted.
    assert line.of("caller", Answered) == []
    assert line.of("caller", Ended) == [Ended(EndReason.CANCEL, CallResult.NOANSWER, None)]
    assert [type(a) for a in line.of("caller", RequestCompleted)] == [RequestCompleted]
    assert line.of("callee", Ended) == [Ended(EndReason.CALLER_HANGUP, CallResult.ANSWERED, None)]
    assert line.caller.next_timer() is None and callee.next_timer() is None


@pytest.mark.parametrize("who", ["caller", "callee"])
def test_bye_from_either_side(who: str) -> None:
    line = Line()
    callee = line.answered()
    cores = {"caller": line.caller, "callee": callee}
    other = "callee" if who == "caller" else "caller"
    line.now = 10.0
    actions = line.did(who, cores[who].hangup(EndReason.MANAGER_HANGUP, 10.0))
    assert [type(a) for a in actions] == [Ended, SendRequest]
    assert cores[who].deadlines == {"bye": 10.0 + 64 * T1}
    line.deliver()
    assert line.ladder()[-2:] == [
        "-> BYE" if who == "caller" else "<- BYE",
        "<- 200 BYE" if who == "caller" else "-> 200 BYE",
    ]
    assert line.of(who, Ended) == [Ended(EndReason.MANAGER_HANGUP, CallResult.ANSWERED, None)]
    hangup_by_far_end = EndReason.CALLER_HANGUP if who == "caller" else EndReason.CALLEE_HANGUP
    assert line.of(other, Ended) == [Ended(hangup_by_far_end, CallResult.ANSWERED, None)]
    (completed,) = line.of(who, RequestCompleted)
    assert completed.request.method == "BYE" and completed.response.status == 200
    assert cores[who].next_timer() is None
    # A second BYE finds no call.
    bye = cores[who].dialog.create_request("BYE")  # type: ignore[union-attr]
    bye.headers.prepend("Via", f"SIP/2.0/UDP {HOSTS[who]}:5060;branch={new_branch()}")
    (refusal,) = cores[other].receive_request(parse_message(bye.to_bytes()), 11.0)  # type: ignore[arg-type]
    assert isinstance(refusal, Respond) and refusal.response.status == 481


def test_unanswered_bye_is_given_up_after_64_t1() -> None:
    line = Line()
    line.answered()
    line.lose = lambda message: isinstance(message, Request) and message.method == "BYE"
    line.now = 5.0
    line.did("caller", line.caller.hangup(EndReason.MANAGER_HANGUP, 5.0))
    line.deliver()
    line.advance(5.0 + 64 * T1 - 0.01)
    assert line.of("caller", RequestCompleted) == []
    line.advance(5.0 + 64 * T1)
    (completed,) = line.of("caller", RequestCompleted)
    assert completed.response.status == 408
    assert line.caller.next_timer() is None


@pytest.mark.parametrize("who", ["caller", "callee"])
def test_reinvite_hold_and_resume(who: str) -> None:
    line = Line()
    callee = line.answered()
    cores = {"caller": line.caller, "callee": callee}
    other = "callee" if who == "caller" else "caller"
    start = len(line.wire)
    for direction, far_direction, on_hold in (
        ("sendonly", "recvonly", True),
        ("inactive", "inactive", True),
        ("sendrecv", "sendrecv", False),
    ):
        line.did(who, cores[who].reoffer(direction, line.now))
        line.deliver()
        assert line.of(who, MediaUpdated)[-1] == MediaUpdated(direction, on_hold)
        assert line.of(other, MediaUpdated)[-1] == MediaUpdated(far_direction, on_hold)
        assert cores[who].call.on_hold is on_hold and cores[other].call.on_hold is on_hold
        assert line.of(who, ConfigureMedia)[-1].media.direction == direction
        assert line.of(other, ConfigureMedia)[-1].media.direction == far_direction
        assert line.of(who, RequestCompleted)[-1].response.status == 200
        assert cores[other].next_timer() is None  # the ACK came
    arrow = "->" if who == "caller" else "<-"
    back = "<-" if who == "caller" else "->"
    assert line.ladder(start) == [f"{arrow} INVITE", f"{back} 200 INVITE", f"{arrow} ACK"] * 3
    # Each offer is a new version of our session description (RFC 3264 §8).
    offers = [sdp.SessionDescription.parse(a.request.body) for a in line.of(who, RequestCompleted)]
    versions = [offer.origin.version for offer in offers]
    assert versions == sorted(set(versions)) and len(versions) == 3
    assert len({offer.origin.session_id for offer in offers}) == 1


def test_retransmitted_reinvite_2xx_is_acked_again() -> None:
    line = Line()
    line.answered()
    line.did("caller", line.caller.reoffer("sendonly", line.now))
    line.deliver()
    (completed,) = line.of("caller", RequestCompleted)
    first_ack = line.of("caller", SendAck)[-1].ack
    # §13.2.2.4: the copy that arrives after our ACK (the callee's transaction re-sent it) gets the same ACK.
    again = line.caller.receive_response(parse_message(completed.response.to_bytes()), line.now)  # type: ignore[arg-type]
    assert again == [SendAck(first_ack)]
    assert first_ack.cseq.number == completed.request.cseq.number


def test_lost_ack_the_2xx_is_retransmitted_then_the_callee_gives_up_with_a_bye() -> None:
    line = Line()
    line.lose = lambda message: isinstance(message, Request) and message.method == "ACK"
    line.start()
    callee = line.callee
    assert callee is not None
    line.did("callee", callee.answer(0.0))
    line.deliver()
    assert callee.deadlines == {"ack": 64 * T1}
    line.advance(64 * T1 - 0.01)
    # The transaction re-sent the 2xx on T1 doubling to T2 (§13.3.1.4); the caller ACKed each copy again.
    resent = [at for at, to, what in line.wire if what == "200 INVITE"]
    assert resent == [0.0, 0.5, 1.5, 3.5, 7.5, 11.5, 15.5, 19.5, 23.5, 27.5, 31.5]
    acks = [a for a in line.of("caller", SendAck)]
    assert len(acks) == len(resent) and all(a.ack is acks[0].ack for a in acks)
    assert callee.call.active and line.of("callee", Ended) == []
    line.advance(64 * T1)
    assert line.of("callee", Noted) == [Noted("ack_timeout")]
    assert line.of("callee", Ended) == [Ended(EndReason.GENERAL_ERROR, CallResult.ANSWERED, None)]
    assert line.ladder()[-2:] == ["<- BYE", "-> 200 BYE"]
    assert line.of("caller", Ended) == [Ended(EndReason.CALLEE_HANGUP, CallResult.ANSWERED, None)]


def test_2xx_retransmission_stops_when_a_later_ack_arrives() -> None:
    line = Line()
    lost: list[Message] = []

    def lose_first_ack(message: Message) -> bool:
        if isinstance(message, Request) and message.method == "ACK" and not lost:
            lost.append(message)
            return True
        return False

    line.lose = lose_first_ack
    line.start()
    callee = line.callee
    assert callee is not None
    line.did("callee", callee.answer(0.0))
    line.deliver()
    assert callee.call.state is CallState.ANSWERED and "ack" in callee.deadlines
    line.advance(40.0)
    assert [at for at, _, what in line.wire if what == "200 INVITE"] == [0.0, 0.5]
    assert [at for at, _, what in line.wire if what == "ACK"] == [0.0, 0.5]
    assert callee.next_timer() is None and callee.call.active


def test_ring_timeout_sends_cancel() -> None:
    line = Line(ring_timeout=30.0)
    line.start()
    callee = line.callee
    assert callee is not None
    line.did("callee", callee.ringing(0.0))
    line.deliver()
    assert line.caller.deadlines == {"ring": 30.0}
    line.advance(29.9)
    assert line.of("caller", Ended) == []
    line.advance(30.0)
    assert line.of("caller", Noted) == [Noted("call_ring_timeout")]
    assert line.ladder(3) == ["-> CANCEL", "<- 200 CANCEL", "<- 487 INVITE", "-> ACK"]
    assert line.of("caller", Ended) == [Ended(EndReason.TIMEOUT, CallResult.NOANSWER, 487)]


def test_ring_timeout_gives_up_64_t1_after_an_unanswered_cancel() -> None:
    line = Line(ring_timeout=30.0)
    line.start()
    line.lose = lambda message: True  # the callee is gone
    line.advance(30.0)
    assert line.ladder()[-1] == "-> CANCEL"
    assert line.caller.deadlines == {"cancel": 30.0 + 64 * T1}
    line.advance(30.0 + 64 * T1)
    assert line.of("caller", Ended) == [Ended(EndReason.TIMEOUT, CallResult.NOANSWER, 408)]
    assert line.caller.next_timer() is None


@pytest.mark.parametrize("who", ["caller", "callee"])
def test_max_duration_set_before_the_answer_counts_from_it(who: str) -> None:
    line = Line()
    line.start()
    callee = line.callee
    assert callee is not None
    cores = {"caller": line.caller, "callee": callee}
    assert line.did(who, cores[who].limit_duration(30.0, 0.0)) == []
    assert "max_duration" not in cores[who].deadlines  # not answered: nothing to time yet
    line.now = 4.0
    line.did("callee", callee.answer(4.0))
    line.deliver()
    assert cores[who].deadlines["max_duration"] == 34.0
    line.advance(33.9)
    assert cores[who].call.active
    line.advance(34.0)
    assert line.of(who, Noted) == [Noted("call_max_duration")]
    assert line.of(who, Ended) == [Ended(EndReason.TIMEOUT, CallResult.ANSWERED, None)]
    far_end = EndReason.CALLER_HANGUP if who == "caller" else EndReason.CALLEE_HANGUP
    other = "callee" if who == "caller" else "caller"
    assert line.of(other, Ended) == [Ended(far_end, CallResult.ANSWERED, None)]
    assert line.ladder()[-2:] == (["-> BYE", "<- 200 BYE"] if who == "caller" else ["<- BYE", "-> 200 BYE"])
    assert cores[who].call.ended_at == 34.0 and cores[who].next_timer() is None


def test_max_duration_on_an_answered_call_counts_from_now_and_a_new_limit_replaces_it() -> None:
    line = Line()
    callee = line.answered()
    line.now = 10.0
    line.did("callee", callee.limit_duration(60.0, 10.0))
    line.did("callee", callee.limit_duration(5.0, 12.0))
    assert callee.deadlines == {"max_duration": 17.0}
    line.advance(17.0)
    assert line.of("callee", Ended) == [Ended(EndReason.TIMEOUT, CallResult.ANSWERED, None)]


def test_max_duration_goes_with_the_call() -> None:
    line = Line()
    callee = line.answered()
    line.did("caller", line.caller.limit_duration(30.0, 0.0))
    line.now = 5.0
    line.did("callee", callee.hangup(EndReason.MANAGER_HANGUP, 5.0))
    line.deliver()
    assert "max_duration" not in line.caller.deadlines
    line.advance(100.0)
    assert line.of("caller", Noted) == [] and len(line.of("caller", Ended)) == 1
    assert line.caller.limit_duration(30.0, 100.0) == [] and line.caller.next_timer() is None
    # Limited before an answer that never came, a refused call times nothing either.
    refused = Line()
    refused.start()
    refused.did("caller", refused.caller.limit_duration(30.0, 0.0))
    assert refused.callee is not None
    refused.did("callee", refused.callee.reject(486, EndReason.BUSY, 1.0))
    refused.deliver()
    assert refused.caller.next_timer() is None


def test_info_digit_is_a_press() -> None:
    line = Line()
    callee = line.answered()
    line.did(
        "caller",
        line.caller.request(
            "INFO", line.now, body=b"Signal=5\r\nDuration=160\r\n", content_type="application/dtmf-relay"
        ),
    )
    line.deliver()
    assert line.of("callee", PressDetected) == [PressDetected("5")]
    assert line.of("caller", RequestCompleted)[-1].response.status == 200
    for body, content_type, status in (
        (b"Signal=Z\r\n", "application/dtmf-relay", 400),
        (b"hello", "text/plain", 415),
        (b"", None, 200),
    ):
        line.did("caller", line.caller.request("INFO", line.now, body=body, content_type=content_type))
        line.deliver()
        assert line.of("caller", RequestCompleted)[-1].response.status == status
    assert len(line.of("callee", PressDetected)) == 1
    assert callee.call.active


@pytest.mark.parametrize(
    ("content_type", "body", "digit"),
    [
        ("application/dtmf-relay", b"Signal=10\r\n", "*"),
        ("application/dtmf-relay", b"Signal=11\r\n", "#"),
        ("application/dtmf-relay", b"signal= a\r\n", "A"),
        ("application/dtmf", b"7", "7"),
        ("application/dtmf", b"77", None),
        ("text/plain", b"Signal=5", None),
    ],
)
def test_parse_dtmf_info(content_type: str, body: bytes, digit: str | None) -> None:
    assert parse_dtmf_info(content_type, body) == digit


def test_bye_on_an_unknown_dialog_gets_481() -> None:
    line = Line()
    callee = line.answered()
    assert callee.dialog is not None
    # No call at all: the engine answers from the request alone.
    stray = Request(
        "BYE",
        "sip:bob@192.0.2.2",
        Headers(
            [
                ("Via", f"SIP/2.0/UDP 192.0.2.9:5060;branch={new_branch()}"),
                ("From", "<sip:eve@192.0.2.9>;tag=e1"),
                ("To", "<sip:bob@192.0.2.2>;tag=nope"),
                ("Call-ID", "unknown@192.0.2.9"),
                ("CSeq", "1 BYE"),
            ]
        ),
    )
    response = answer_without_call(stray)
    assert response is not None and response.status == 481
    ack = Request("ACK", "sip:bob@192.0.2.2", stray.headers.copy())
    ack.headers.set("CSeq", "1 ACK")
    assert answer_without_call(ack) is None
    # The call's Call-ID but another dialog's tags: 481 too, and the call goes on.
    bye = line.caller.dialog.create_request("BYE")  # type: ignore[union-attr]
    bye.headers.set("To", f"<sip:bob@192.0.2.2>;tag=not-{callee.dialog.local_tag}")
    bye.headers.prepend("Via", f"SIP/2.0/UDP 192.0.2.1:5060;branch={new_branch()}")
    (refusal,) = callee.receive_request(bye, line.now)
    assert isinstance(refusal, Respond) and refusal.response.status == 481
    assert callee.call.active
    # Our dialog, but a CSeq already used: 500 (§12.2.2).
    info = line.caller.dialog.create_request("INFO")  # type: ignore[union-attr]
    info.headers.prepend("Via", f"SIP/2.0/UDP 192.0.2.1:5060;branch={new_branch()}")
    callee.receive_request(info, line.now)
    (refusal,) = callee.receive_request(info, line.now)
    assert isinstance(refusal, Respond) and refusal.response.status == 500


def test_cancel_for_another_invite_or_long_after_the_answer_gets_481() -> None:
    line = Line()
    line.start()
    callee = line.callee
    assert callee is not None
    cancel = line.caller.cancel(0.0)[0].request  # type: ignore[attr-defined]
    other = Request("CANCEL", cancel.uri, cancel.headers.copy())
    other.headers.set("CSeq", "9 CANCEL")
    (refusal,) = callee.receive_request(other, 0.0)
    assert isinstance(refusal, Respond) and refusal.response.status == 481
    callee.answer(0.0)
    # Within 64*T1 of the 2xx the INVITE's transaction is still there (Accepted): the CANCEL matches it, so
    # it gets a 200 and changes nothing (§9.2); after that there is nothing for it to match.
    (answer,) = callee.receive_request(cancel, 64 * T1)
    assert isinstance(answer, Respond) and answer.response.status == 200
    assert callee.call.state is CallState.ANSWERED
    (refusal,) = callee.receive_request(cancel, 64 * T1 + 0.1)
    assert isinstance(refusal, Respond) and refusal.response.status == 481


def test_no_common_codec_is_declined_with_488() -> None:
    line = Line(
        caller=LocalEnd(CALLER.address, CALLER.contact, CALLER.media_port, codecs=("PCMA",)),
        callee=LocalEnd(CALLEE.address, CALLEE.contact, CALLEE.media_port, codecs=("PCMU",)),
    )
    line.start()
    assert line.callee is not None and line.callee.declined
    assert line.of("callee", Declined) == [Declined(488, "no_common_codec")]
    assert line.ladder() == ["-> INVITE", "<- 100 INVITE", "<- 488 INVITE", "-> ACK"]
    assert line.of("caller", Noted) == [Noted("call_refused", (("status", 488),))]
    assert line.of("caller", Ended) == [Ended(EndReason.GENERAL_ERROR, CallResult.FAILED, 488)]


@pytest.mark.parametrize(
    ("body", "content_type", "status"),
    [
        (b"<xml/>", "application/xml", 415),
        (b"v=0\r\nnot sdp at all\r\n", "application/sdp", 400),
    ],
)
def test_unusable_offer_is_declined(body: bytes, content_type: str, status: int) -> None:
    invite = Request(
        "INVITE",
        "sip:bob@192.0.2.2",
        Headers(
            [
                ("Via", f"SIP/2.0/UDP 192.0.2.1:5060;branch={new_branch()}"),
                ("From", "<sip:alice@192.0.2.1>;tag=a1"),
                ("To", "<sip:bob@192.0.2.2>"),
                ("Call-ID", "declined@192.0.2.1"),
                ("CSeq", "1 INVITE"),
                ("Contact", "<sip:alice@192.0.2.1>"),
                ("Content-Type", content_type),
            ]
        ),
        body,
    )
    core = InboundCall(invite, Call(Direction.INBOUND, "sip:alice@192.0.2.1", invite.uri, 0.0), CALLEE)
    actions = core.start(0.0)
    assert [a.response.status for a in actions if isinstance(a, Respond)] == [100, status]
    assert [type(a) for a in actions][-1] is Declined
    assert core.declined and not core.call.active


def test_offerless_invite_gets_an_offer_and_the_ack_brings_the_answer() -> None:
    invite = Request(
        "INVITE",
        "sip:bob@192.0.2.2",
        Headers(
            [
                ("Via", f"SIP/2.0/UDP 192.0.2.1:5060;branch={new_branch()}"),
                ("From", "<sip:alice@192.0.2.1>;tag=a1"),
                ("To", "<sip:bob@192.0.2.2>"),
                ("Call-ID", "late@192.0.2.1"),
                ("CSeq", "1 INVITE"),
                ("Contact", "<sip:alice@192.0.2.1>"),
            ]
        ),
    )
    core = InboundCall(invite, Call(Direction.INBOUND, "sip:alice@192.0.2.1", invite.uri, 0.0), CALLEE)
    core.start(0.0)
    actions = core.answer(0.0)
    assert not any(isinstance(a, ConfigureMedia) for a in actions)
    ok = next(a.response for a in actions if isinstance(a, Respond))
    answer, _ = sdp.negotiate(sdp.SessionDescription.parse(ok.body), CALLER.address, CALLER.media_port)
    ack = Request(
        "ACK",
        "sip:bob@192.0.2.2",
        Headers(
            [
                ("Via", f"SIP/2.0/UDP 192.0.2.1:5060;branch={new_branch()}"),
                ("From", "<sip:alice@192.0.2.1>;tag=a1"),
                ("To", ok.headers.get("To") or ""),
                ("Call-ID", "late@192.0.2.1"),
                ("CSeq", "1 ACK"),
                ("Content-Type", "application/sdp"),
            ]
        ),
        answer.serialize(),
    )
    (configured,) = core.receive_request(ack, 1.0)
    assert isinstance(configured, ConfigureMedia) and configured.media.remote_port == CALLER.media_port
    assert core.media == configured.media and core.next_timer() is None


def test_digest_challenge_is_answered_once() -> None:
    call = Call(
        Direction.OUTBOUND, remote_uri="sip:+1555@trunk", local_uri="sip:alice@192.0.2.1", started_at=0.0
    )
    core = OutboundCall(
        call, "sip:+1555@192.0.2.7", CALLER, from_user="alice", credentials=("user", "secret")
    )
    (first,) = core.start(0.0)
    assert isinstance(first, SendRequest)
    first.request.headers.prepend("Via", f"SIP/2.0/UDP 192.0.2.1:5060;branch={new_branch()}")
    server = auth.DigestServer(realm="trunk", secret_key=b"k" * 32)

    def challenge(invite: Request) -> Response:
        response = make_response(invite, 401)
        for value in server.challenge(0.0):
            response.headers.add("WWW-Authenticate", value)
        return response

    (retry,) = core.receive_response(challenge(first.request), 0.1)
    assert isinstance(retry, SendRequest) and retry.request is core.invite
    assert retry.request.cseq.number == 2 and retry.request.headers.get("Via") is None
    assert server.verify(
        "INVITE",
        retry.request.headers.get("Authorization") or "",
        lambda user: "secret" if user == "user" else None,
        0.2,
    ).ok
    retry.request.headers.prepend("Via", f"SIP/2.0/UDP 192.0.2.1:5060;branch={new_branch()}")
    # A second challenge means the credentials are wrong: the call fails with it.
    actions = core.receive_response(challenge(retry.request), 0.3)
    assert actions[-1] == Ended(EndReason.GENERAL_ERROR, CallResult.FAILED, 401)


def test_transport_error_fails_the_callout() -> None:
    line = Line()
    line.lose = lambda message: True
    line.start()
    # The stack answers a failed connect with a 503 of its own (§8.1.3.1).
    actions = line.caller.receive_response(make_response(line.caller.invite, 503, "Service Unavailable"), 0.1)
    assert actions[-1] == Ended(EndReason.GENERAL_ERROR, CallResult.FAILED, 503)
    assert line.caller.next_timer() is None


def test_operations_the_state_does_not_allow() -> None:
    line = Line()
    with pytest.raises(CallStateError):
        line.caller.reoffer("sendonly", 0.0)  # no dialog yet
    callee = line.answered()
    with pytest.raises(InvalidTransition):
        callee.answer(0.5)  # answered already
    line.did("caller", line.caller.hangup(EndReason.MANAGER_HANGUP, 1.0))
    line.deliver()
    with pytest.raises(CallStateError):
        line.caller.request("INFO", 1.0)  # the call has ended
    assert line.caller.hangup(EndReason.MANAGER_HANGUP, 1.0) == []
    assert callee.answer(1.0) == [] and callee.reject(486, EndReason.BUSY, 1.0) == []


def test_unanswered_inbound_hangup_is_a_480() -> None:
    line = Line()
    line.start()
    callee = line.callee
    assert callee is not None
    line.did("callee", callee.hangup(EndReason.MANAGER_HANGUP, 1.0))
    line.deliver()
    assert line.ladder()[-2:] == ["<- 480 INVITE", "-> ACK"]
    assert line.of("callee", Ended) == [Ended(EndReason.MANAGER_HANGUP, CallResult.NOANSWER, 480)]
    assert line.of("caller", Ended) == [Ended(EndReason.NO_ANSWER, CallResult.NOANSWER, 480)]
