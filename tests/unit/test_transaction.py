"""SIP transactions (RFC 3261 §17, RFC 6026): every timer driven by the clock passed in, never by sleeping."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tonebridge.sip.message import Headers, Request, Response, parse_message
from tonebridge.sip.transaction import (
    MAGIC_COOKIE,
    ClientInviteTransaction,
    ClientNonInviteTransaction,
    RequestReceived,
    ResponseReceived,
    ServerInviteTransaction,
    ServerNonInviteTransaction,
    Terminated,
    Timeout,
    TimerConfig,
    TransactionError,
    TransactionState,
    TransactionTable,
    TransportError,
    make_ack_for_non_2xx,
    make_cancel,
    make_response,
    new_branch,
)

S = TransactionState


def request(method: str = "INVITE", branch: str | None = None, cseq: int = 1, route: bool = False) -> Request:
    headers = Headers(
        [
            ("Via", f"SIP/2.0/UDP 192.0.2.10:5060;branch={branch or new_branch()};rport"),
            ("Via", "SIP/2.0/UDP 192.0.2.99:5062;branch=z9hG4bKfirsthop"),
            ("Max-Forwards", "70"),
            ("From", '"Alice" <sip:alice@a.example>;tag=fromtag1'),
            ("To", "<sip:bob@b.example>"),
            ("Call-ID", "call-1@a.example"),
            ("CSeq", f"{cseq} {method}"),
            ("Contact", "<sip:alice@192.0.2.10:5060>"),
        ]
    )
    if route:
        headers.add("Route", "<sip:proxy.example;lr>")
    return Request(method, "sip:bob@b.example", headers)


def copy(message: Request | Response) -> Request | Response:
    """A retransmission: the same bytes arriving again, parsed into a new object."""
    return parse_message(message.to_bytes())


def response_to(req: Request, status: int, to_tag: str = "totag1") -> Response:
    return make_response(req, status, to_tag=to_tag)


def drive(transaction, until: float) -> list[tuple[float, object]]:  # type: ignore[no-untyped-def]
    """Wake the transaction at each timer deadline up to `until`; returns (time, message) of every send."""
    sent: list[tuple[float, object]] = []
    while True:
        deadline = transaction.next_timer()
        if deadline is None or deadline > until:
            return sent
        transaction.handle_timer(deadline)
        sent.extend((deadline, m) for m in transaction.pop_outgoing())


def event_types(transaction) -> list[type]:  # type: ignore[no-untyped-def]
    return [type(e) for e in transaction.pop_events()]


# Client INVITE (§17.1.1, RFC 6026 §8.4) ---------------------------------------------------------------


def test_timer_a_doubles_until_timer_b_on_udp() -> None:
    invite = request()
    t = ClientInviteTransaction(invite, reliable=False, now=0.0)
    assert t.pop_outgoing() == [invite]
    assert t.state is S.CALLING
    assert t.timers == {"A": 0.5, "B": 32.0}
    sent = drive(t, until=40.0)
    # A fires after 0.5, 1, 2, 4, 8, 16 s: six retransmissions before B at 64*T1 = 32 s.
    assert [time for time, _ in sent] == [0.5, 1.5, 3.5, 7.5, 15.5, 31.5]
    assert all(message is invite for _, message in sent)
    events = t.pop_events()
    assert events == [Timeout("B"), Terminated()]
    assert t.state is S.TERMINATED
    assert t.next_timer() is None


def test_timer_a_does_not_fire_early() -> None:
    t = ClientInviteTransaction(request(), reliable=False, now=10.0)
    t.pop_outgoing()
    t.handle_timer(10.49)
    assert t.pop_outgoing() == []
    t.handle_timer(10.5)
    assert len(t.pop_outgoing()) == 1


def test_client_invite_on_tcp_never_retransmits_and_times_out_at_b() -> None:
    t = ClientInviteTransaction(request(), reliable=True, now=0.0)
    assert len(t.pop_outgoing()) == 1
    assert t.timers == {"B": 32.0}
    assert drive(t, until=100.0) == []
    assert t.pop_events() == [Timeout("B"), Terminated()]


def test_late_wakeup_keeps_the_schedule() -> None:
    t = ClientInviteTransaction(request(), reliable=False, now=0.0)
    t.pop_outgoing()
    t.handle_timer(4.0)  # one late wake catches up A at 0.5, 1.5 and 3.5
    assert len(t.pop_outgoing()) == 3
    assert t.next_timer() == 7.5
    t.handle_timer(100.0)
    assert len(t.pop_outgoing()) == 3  # 7.5, 15.5, 31.5; then B ends it before A at 63.5
    assert t.pop_events() == [Timeout("B"), Terminated()]


def test_provisional_stops_retransmission_and_timeout() -> None:
    invite = request()
    t = ClientInviteTransaction(invite, reliable=False, now=0.0)
    t.pop_outgoing()
    ringing = response_to(invite, 180)
    t.receive_response(ringing, 0.3)
    assert t.state is S.PROCEEDING
    assert t.next_timer() is None
    assert t.pop_events() == [ResponseReceived(ringing)]
    # The same 180 again (the server re-sends it for each INVITE copy) goes up once; a new one goes up.
    t.receive_response(copy(ringing), 0.6)
    assert t.pop_events() == []
    progress = response_to(invite, 183)
    t.receive_response(progress, 0.7)
    assert t.pop_events() == [ResponseReceived(progress)]
    assert drive(t, until=1000.0) == []


def test_non_2xx_final_is_acked_by_the_transaction_and_timer_d_ends_it() -> None:
    invite = request(route=True)
    t = ClientInviteTransaction(invite, reliable=False, now=0.0)
    t.pop_outgoing()
    busy = response_to(invite, 486)
    t.receive_response(busy, 2.0)
    assert t.state is S.COMPLETED
    assert t.pop_events() == [ResponseReceived(busy)]
    (ack,) = t.pop_outgoing()
    assert isinstance(ack, Request) and ack.method == "ACK"
    assert ack.uri == invite.uri
    assert ack.headers.values("Via") == [invite.headers.values("Via")[0]]  # §17.1.1.3: top Via only
    assert ack.to.tag == "totag1"
    assert ack.headers.get("CSeq") == "1 ACK"
    assert ack.headers.get_all("Route") == ["<sip:proxy.example;lr>"]
    assert ack.headers.get("From") == invite.headers.get("From")
    assert t.timers == {"D": 34.0}
    # A retransmitted 486 means the ACK was lost: the ACK goes again, the TU hears nothing.
    t.receive_response(copy(busy), 3.0)
    assert t.pop_outgoing() == [ack]
    assert t.pop_events() == []
    t.handle_timer(33.99)
    assert not t.terminated
    t.handle_timer(34.0)
    assert t.pop_events() == [Terminated()]


def test_non_2xx_final_on_tcp_terminates_at_once() -> None:
    invite = request()
    t = ClientInviteTransaction(invite, reliable=True, now=0.0)
    t.pop_outgoing()
    t.receive_response(response_to(invite, 503), 1.0)
    assert [m.method for m in t.pop_outgoing()] == ["ACK"]  # type: ignore[union-attr]
    assert event_types(t) == [ResponseReceived, Terminated]


def test_2xx_moves_to_accepted_and_every_2xx_goes_up_until_timer_m() -> None:
    invite = request()
    t = ClientInviteTransaction(invite, reliable=False, now=0.0)
    t.pop_outgoing()
    ok = response_to(invite, 200)
    t.receive_response(ok, 1.0)
    assert t.state is S.ACCEPTED
    assert t.pop_outgoing() == []  # the ACK for a 2xx is the TU's (§13.2.2.4)
    assert t.timers == {"M": 33.0}
    assert t.pop_events() == [ResponseReceived(ok)]
    retransmitted = copy(ok)
    other_fork = response_to(invite, 200, to_tag="fork2")
    t.receive_response(retransmitted, 1.5)
    t.receive_response(other_fork, 1.6)
    t.receive_response(response_to(invite, 486), 1.7)  # not a 2xx: ignored in Accepted
    assert t.pop_events() == [ResponseReceived(retransmitted), ResponseReceived(other_fork)]
    t.handle_timer(33.0)
    assert t.pop_events() == [Terminated()]


def test_timer_m_applies_on_tcp_too() -> None:
    invite = request()
    t = ClientInviteTransaction(invite, reliable=True, now=0.0)
    t.receive_response(response_to(invite, 200), 5.0)
    assert t.timers == {"M": 37.0}


def test_client_transaction_rejects_a_foreign_response() -> None:
    t = ClientInviteTransaction(request(), reliable=False, now=0.0)
    with pytest.raises(TransactionError):
        t.receive_response(response_to(request(), 200), 0.1)


def test_client_transaction_needs_a_magic_cookie_branch() -> None:
    with pytest.raises(TransactionError, match="z9hG4bK"):
        ClientInviteTransaction(request(branch="oldstyle"), reliable=False, now=0.0)
    with pytest.raises(TransactionError):
        ClientInviteTransaction(request("OPTIONS"), reliable=False, now=0.0)


def test_transport_error_informs_tu_and_terminates() -> None:
    t = ClientInviteTransaction(request(), reliable=True, now=0.0)
    t.transport_error(0.0, "connection refused")
    assert t.pop_events() == [TransportError("connection refused"), Terminated()]


@pytest.mark.parametrize("state", ["calling", "proceeding", "completed"])
def test_transport_error_ends_the_client_invite_without_waiting_for_timers(state: str) -> None:
    # §17.1.1.2, Figure 5: from Calling, Proceeding and Completed alike (there, the ACK failed to go).
    invite = request()
    t = ClientInviteTransaction(invite, reliable=False, now=0.0)
    if state == "proceeding":
        t.receive_response(response_to(invite, 180), 0.1)
    elif state == "completed":
        t.receive_response(response_to(invite, 503), 0.1)
    t.pop_events()
    t.pop_outgoing()
    t.transport_error(0.2, "connect failed: Connection refused")
    assert t.pop_events() == [TransportError("connect failed: Connection refused"), Terminated()]
    assert t.state is S.TERMINATED
    assert t.next_timer() is None
    assert t.pop_outgoing() == []


@pytest.mark.parametrize("provisional", [False, True])
def test_transport_error_ends_the_client_non_invite(provisional: bool) -> None:
    # §17.1.2.2, Figure 6: from Trying and Proceeding, before Timer F.
    options = request("OPTIONS")
    t = ClientNonInviteTransaction(options, reliable=True, now=0.0)
    if provisional:
        t.receive_response(response_to(options, 100), 0.1)
    t.pop_events()
    t.transport_error(0.2, "connection closed")
    assert t.pop_events() == [TransportError("connection closed"), Terminated()]
    assert t.next_timer() is None


def test_transport_error_after_the_end_is_ignored() -> None:
    invite = request()
    t = ClientInviteTransaction(invite, reliable=True, now=0.0)
    t.receive_response(response_to(invite, 486), 0.1)  # TCP: Completed lasts zero seconds
    t.pop_events()
    t.transport_error(0.2, "late report")
    assert t.pop_events() == []


# Client non-INVITE (§17.1.2) --------------------------------------------------------------------------


def test_timer_e_doubles_capped_at_t2_until_timer_f() -> None:
    options = request("OPTIONS")
    t = ClientNonInviteTransaction(options, reliable=False, now=0.0)
    assert t.pop_outgoing() == [options]
    assert t.timers == {"E": 0.5, "F": 32.0}
    sent = drive(t, until=40.0)
    assert [time for time, _ in sent] == [0.5, 1.5, 3.5, 7.5, 11.5, 15.5, 19.5, 23.5, 27.5, 31.5]
    gaps = [b - a for (a, _), (b, _) in zip(sent, sent[1:], strict=False)]
    assert max(gaps) == 4.0
    assert t.pop_events() == [Timeout("F"), Terminated()]


def test_timer_e_goes_to_t2_after_a_provisional() -> None:
    bye = request("BYE", cseq=2)
    t = ClientNonInviteTransaction(bye, reliable=False, now=0.0)
    t.pop_outgoing()
    t.handle_timer(0.5)  # E: next at 1.5 (1 s)
    t.pop_outgoing()
    trying = response_to(bye, 100)
    t.receive_response(trying, 1.0)
    assert t.state is S.PROCEEDING
    assert t.pop_events() == [ResponseReceived(trying)]
    sent = drive(t, until=40.0)
    assert [time for time, _ in sent] == [1.5, 5.5, 9.5, 13.5, 17.5, 21.5, 25.5, 29.5]
    assert t.pop_events() == [Timeout("F"), Terminated()]


def test_non_invite_final_then_timer_k() -> None:
    options = request("OPTIONS")
    t = ClientNonInviteTransaction(options, reliable=False, now=0.0)
    t.pop_outgoing()
    ok = response_to(options, 200)
    t.receive_response(ok, 0.7)
    assert t.state is S.COMPLETED
    assert t.timers == {"K": 5.7}
    assert t.pop_events() == [ResponseReceived(ok)]
    t.receive_response(copy(ok), 1.0)  # absorbed
    assert t.pop_events() == [] and t.pop_outgoing() == []
    t.handle_timer(5.69)
    assert not t.terminated
    t.handle_timer(5.7)
    assert t.pop_events() == [Terminated()]


def test_non_invite_on_tcp_no_retransmission_and_k_is_zero() -> None:
    options = request("OPTIONS")
    t = ClientNonInviteTransaction(options, reliable=True, now=0.0)
    assert len(t.pop_outgoing()) == 1
    assert t.timers == {"F": 32.0}
    assert drive(t, until=20.0) == []
    t.receive_response(response_to(options, 200), 20.0)
    assert event_types(t) == [ResponseReceived, Terminated]


def test_non_invite_on_tcp_times_out_at_f() -> None:
    t = ClientNonInviteTransaction(request("REGISTER"), reliable=True, now=3.0)
    t.handle_timer(35.0)
    assert t.pop_events() == [Timeout("F"), Terminated()]


def test_non_invite_client_refuses_invite_and_ack() -> None:
    for method in ("INVITE", "ACK"):
        with pytest.raises(TransactionError):
            ClientNonInviteTransaction(request(method), reliable=False, now=0.0)


@settings(max_examples=60, deadline=None)
@given(provisional_at=st.floats(min_value=0.01, max_value=31.0), t1=st.sampled_from([0.1, 0.5, 1.0]))
def test_timer_e_never_exceeds_t2(provisional_at: float, t1: float) -> None:
    config = TimerConfig(t1=t1, t2=4.0, t4=5.0)
    req = request("OPTIONS")
    t = ClientNonInviteTransaction(req, reliable=False, now=0.0, config=config)
    t.pop_outgoing()
    times = [0.0]
    times += [time for time, _ in drive(t, until=provisional_at)]
    t.receive_response(response_to(req, 180), provisional_at)
    times += [time for time, _ in drive(t, until=1000.0)]
    gaps = [b - a for a, b in zip(times, times[1:], strict=False)]
    assert all(gap <= 4.0 + 1e-9 for gap in gaps)
    assert times[-1] < 64 * t1
    assert t.pop_events()[-2:] == [Timeout("F"), Terminated()]


# Server INVITE (§17.2.1, RFC 6026 §7.1) ---------------------------------------------------------------


def test_server_invite_passes_the_first_copy_up_once() -> None:
    invite = request()
    t = ServerInviteTransaction(invite, reliable=False, now=0.0)
    t.receive_request(invite, 0.0)  # the creating copy fed again, as a stack may do: ignored
    assert t.pop_events() == [RequestReceived(invite)]
    assert t.pop_outgoing() == []
    assert t.state is S.PROCEEDING


def test_server_invite_sends_100_after_200_ms_of_silence() -> None:
    invite = request()
    invite.headers.add("Timestamp", "54")
    t = ServerInviteTransaction(invite, reliable=False, now=0.0)
    assert t.timers == {"trying": 0.2}
    t.handle_timer(0.19)
    assert t.pop_outgoing() == []
    t.handle_timer(0.2)
    (trying,) = t.pop_outgoing()
    assert isinstance(trying, Response) and trying.status == 100
    assert trying.to.tag is None
    assert trying.headers.get("Timestamp") == "54"  # §8.2.6.1
    # A retransmitted INVITE gets the latest provisional again.
    t.receive_request(copy(invite), 0.5)  # type: ignore[arg-type]
    assert t.pop_outgoing() == [trying]
    assert [type(e) for e in t.pop_events()] == [RequestReceived]


def test_server_invite_no_automatic_100_when_tu_answers_first() -> None:
    invite = request()
    t = ServerInviteTransaction(invite, reliable=False, now=0.0)
    ringing = response_to(invite, 180)
    t.send_response(ringing, 0.05)
    assert t.pop_outgoing() == [ringing]
    assert t.next_timer() is None
    t.receive_request(copy(invite), 0.5)  # type: ignore[arg-type]
    assert t.pop_outgoing() == [ringing]


def test_retransmitted_invite_before_any_response_gets_a_100() -> None:
    invite = request()
    t = ServerInviteTransaction(invite, reliable=False, now=0.0, trying_delay=None)
    assert t.next_timer() is None
    t.receive_request(copy(invite), 0.5)  # type: ignore[arg-type]
    (out,) = t.pop_outgoing()
    assert isinstance(out, Response) and out.status == 100


def test_timer_g_doubles_to_t2_and_timer_h_times_out_without_ack() -> None:
    invite = request()
    t = ServerInviteTransaction(invite, reliable=False, now=0.0)
    busy = response_to(invite, 486)
    t.send_response(busy, 1.0)
    assert t.state is S.COMPLETED
    assert t.pop_outgoing() == [busy]
    assert t.timers == {"G": 1.5, "H": 33.0}
    sent = drive(t, until=40.0)
    times = [time for time, _ in sent]
    # G: 0.5, 1, 2, 4 then capped at T2 = 4 s.
    assert times[:6] == [1.5, 2.5, 4.5, 8.5, 12.5, 16.5]
    assert times[-1] == 32.5 and len(times) == 10
    assert all(message is busy for _, message in sent)
    assert t.pop_events()[-2:] == [Timeout("H"), Terminated()]


def test_retransmitted_invite_in_completed_resends_the_final() -> None:
    invite = request()
    t = ServerInviteTransaction(invite, reliable=False, now=0.0)
    busy = response_to(invite, 486)
    t.send_response(busy, 0.1)
    t.pop_outgoing()
    t.receive_request(copy(invite), 0.3)  # type: ignore[arg-type]
    assert t.pop_outgoing() == [busy]


def test_ack_confirms_and_timer_i_absorbs_ack_retransmissions() -> None:
    invite = request()
    t = ServerInviteTransaction(invite, reliable=False, now=0.0)
    busy = response_to(invite, 486)
    t.send_response(busy, 0.0)
    assert t.pop_outgoing() == [busy]
    t.pop_events()
    ack = make_ack_for_non_2xx(invite, copy(busy))  # type: ignore[arg-type]
    table = TransactionTable()
    table.add(t)
    assert table.match_request(ack) is t  # the ACK for a non-2xx matches the INVITE (§17.2.3)
    t.receive_request(ack, 2.0)
    assert t.state is S.CONFIRMED
    assert t.timers == {"I": 7.0}  # G and H are gone, I = T4
    t.receive_request(copy(ack), 3.0)  # type: ignore[arg-type]
    assert t.pop_events() == [] and t.pop_outgoing() == []  # the ACK is absorbed
    t.handle_timer(7.0)
    assert t.pop_events() == [Terminated()]


def test_server_invite_on_tcp_has_no_g_and_zero_i() -> None:
    invite = request()
    t = ServerInviteTransaction(invite, reliable=True, now=0.0, trying_delay=None)
    t.send_response(response_to(invite, 404), 0.0)
    assert t.timers == {"H": 32.0}  # H runs on every transport
    t.receive_request(make_ack_for_non_2xx(invite, response_to(invite, 404)), 0.1)
    assert event_types(t) == [RequestReceived, Terminated]


def test_server_invite_on_tcp_timer_h() -> None:
    invite = request()
    t = ServerInviteTransaction(invite, reliable=True, now=0.0, trying_delay=None)
    t.send_response(response_to(invite, 404), 1.0)
    assert len(t.pop_outgoing()) == 1
    assert drive(t, until=100.0) == []
    assert event_types(t) == [RequestReceived, Timeout, Terminated]


def ack_for_2xx(invite: Request, ok: Response) -> Request:
    """The ACK a UAC core builds for a 2xx (§13.2.2.4): a branch of its own, the 2xx's To tag."""
    ack = request("ACK")
    ack.headers.set("To", ok.headers.get("To") or "")
    ack.headers.set("CSeq", f"{invite.cseq.number} ACK")
    return ack


@pytest.mark.parametrize("reliable", [False, True])
def test_2xx_moves_server_to_accepted_then_timer_l(reliable: bool) -> None:
    invite = request()
    t = ServerInviteTransaction(invite, reliable=reliable, now=0.0)
    t.pop_events()
    ok = response_to(invite, 200)
    t.send_response(ok, 2.0)
    assert t.state is S.ACCEPTED
    assert t.pop_outgoing() == [ok]
    assert t.timers == ({"L": 34.0} if reliable else {"2xx": 2.5, "L": 34.0})
    # INVITE retransmissions are absorbed: no new request for the TU, nothing re-sent.
    t.receive_request(copy(invite), 2.1)  # type: ignore[arg-type]
    assert t.pop_outgoing() == [] and t.pop_events() == []
    # A non-2xx after the 2xx is dropped; a 2xx handed over again goes out as it is.
    t.send_response(response_to(invite, 500), 2.2)
    assert t.pop_outgoing() == []
    t.send_response(ok, 2.3)
    assert t.pop_outgoing() == [ok]
    # An ACK that matches the transaction in Accepted goes up to the TU, and ends the 2xx's retransmission.
    ack = request("ACK", branch=invite.top_via.branch)
    t.receive_request(ack, 2.4)
    assert t.pop_events() == [RequestReceived(ack)]
    assert t.timers == {"L": 34.0}
    assert drive(t, until=33.9) == []
    t.handle_timer(34.0)
    assert t.pop_events() == [Terminated()]


def test_2xx_is_retransmitted_t1_doubling_to_t2_until_timer_l_on_udp() -> None:
    # §13.3.1.4's schedule, kept by the transaction in Accepted on the UAS core's behalf.
    invite = request()
    t = ServerInviteTransaction(invite, reliable=False, now=0.0)
    ok = response_to(invite, 200)
    t.send_response(ok, 0.0)
    assert t.pop_outgoing() == [ok]
    sends = drive(t, until=40.0)
    assert [at for at, _ in sends] == [0.5, 1.5, 3.5, 7.5, 11.5, 15.5, 19.5, 23.5, 27.5, 31.5]
    assert all(message is ok for _, message in sends)
    assert t.terminated  # Timer L at 32 s, with no ACK ever matched


def test_2xx_on_tcp_is_not_retransmitted() -> None:
    invite = request()
    t = ServerInviteTransaction(invite, reliable=True, now=0.0)
    t.send_response(response_to(invite, 200), 0.0)
    t.pop_outgoing()
    assert drive(t, until=40.0) == []
    assert t.terminated


def test_ack_with_its_own_branch_stops_the_2xx_and_goes_up() -> None:
    invite = request()
    t = ServerInviteTransaction(invite, reliable=False, now=0.0)
    t.pop_events()
    ok = response_to(invite, 200)
    t.send_response(ok, 0.0)
    t.pop_outgoing()
    assert [at for at, _ in drive(t, until=2.0)] == [0.5, 1.5]
    ack = ack_for_2xx(invite, ok)
    assert ack.top_via.branch != invite.top_via.branch
    assert t.acknowledges(ack)
    t.receive_request(ack, 2.0)
    assert t.pop_events() == [RequestReceived(ack)]
    assert drive(t, until=31.0) == []
    # A retransmitted ACK goes up too: the TU recognises it as one.
    again = copy(ack)
    t.receive_request(again, 3.0)  # type: ignore[arg-type]
    assert [type(e) for e in t.pop_events()] == [RequestReceived]
    # An ACK for another 2xx (another To tag, another CSeq) is not this transaction's.
    other = ack_for_2xx(invite, response_to(invite, 200, to_tag="elsewhere"))
    assert not t.acknowledges(other)
    with pytest.raises(TransactionError):
        t.receive_request(other, 4.0)


def test_table_matches_the_ack_for_a_2xx_by_dialog() -> None:
    table = TransactionTable()
    invite = request("INVITE", branch="z9hG4bKaccepted")
    server = ServerInviteTransaction(invite, reliable=False, now=0.0)
    table.add(server)
    ok = response_to(invite, 200)
    ack = ack_for_2xx(invite, ok)
    assert table.match_ack(ack) is None  # nothing acknowledged before the 2xx goes out
    server.send_response(ok, 0.0)
    table.touch(server)
    assert table.match_request(ack) is None  # its own branch: no key match
    assert table.match_ack(ack) is server
    stale = ack_for_2xx(invite, ok)
    stale.headers.set("CSeq", "2 ACK")
    assert table.match_ack(stale) is None
    table.handle_timers(32.0)  # Timer L
    assert table.match_ack(ack) is None
    with pytest.raises(TransactionError):
        table.match_ack(invite)


def test_transport_error_in_accepted_keeps_the_transaction() -> None:
    invite = request()
    t = ServerInviteTransaction(invite, reliable=True, now=0.0)
    t.pop_events()
    t.send_response(response_to(invite, 200), 0.0)
    t.transport_error(0.0)
    assert t.pop_events() == [TransportError()]
    assert t.state is S.ACCEPTED


def test_server_rejects_a_response_for_another_method() -> None:
    invite = request()
    t = ServerInviteTransaction(invite, reliable=False, now=0.0)
    with pytest.raises(TransactionError):
        t.send_response(response_to(request("OPTIONS"), 200), 0.0)


# Server non-INVITE (§17.2.2) --------------------------------------------------------------------------


def test_server_non_invite_absorbs_retransmissions_in_trying() -> None:
    options = request("OPTIONS")
    t = ServerNonInviteTransaction(options, reliable=False, now=0.0)
    assert t.pop_events() == [RequestReceived(options)]
    t.receive_request(copy(options), 0.5)  # type: ignore[arg-type]
    assert t.pop_outgoing() == [] and t.pop_events() == []
    assert t.next_timer() is None


def test_server_non_invite_resends_last_response_then_timer_j() -> None:
    register = request("REGISTER")
    t = ServerNonInviteTransaction(register, reliable=False, now=0.0)
    trying = response_to(register, 100)
    t.send_response(trying, 0.1)
    assert t.state is S.PROCEEDING
    t.receive_request(copy(register), 0.5)  # type: ignore[arg-type]
    assert t.pop_outgoing() == [trying, trying]
    ok = response_to(register, 200)
    t.send_response(ok, 1.0)
    assert t.state is S.COMPLETED
    assert t.timers == {"J": 33.0}
    t.receive_request(copy(register), 1.5)  # type: ignore[arg-type]
    t.send_response(response_to(register, 500), 1.6)  # after the final: discarded (§17.2.2)
    assert t.pop_outgoing() == [ok, ok]
    t.handle_timer(32.99)
    assert not t.terminated
    t.handle_timer(33.0)
    assert t.pop_events() == [RequestReceived(register), Terminated()]


def test_server_non_invite_on_tcp_j_is_zero() -> None:
    bye = request("BYE", cseq=2)
    t = ServerNonInviteTransaction(bye, reliable=True, now=0.0)
    t.send_response(response_to(bye, 200), 0.0)
    assert len(t.pop_outgoing()) == 1
    assert event_types(t) == [RequestReceived, Terminated]


# Helpers ----------------------------------------------------------------------------------------------


def test_new_branch_has_magic_cookie_and_is_unique() -> None:
    branches = {new_branch() for _ in range(200)}
    assert len(branches) == 200
    assert all(b.startswith(MAGIC_COOKIE) and len(b) > len(MAGIC_COOKIE) + 16 for b in branches)


def test_make_response_copies_what_8_2_6_says() -> None:
    invite = request()
    invite.headers.add("Record-Route", "<sip:proxy.example;lr>")
    ringing = make_response(invite, 180, to_tag="abc")
    assert ringing.reason == "Ringing"
    assert ringing.headers.get_all("Via") == invite.headers.get_all("Via")
    assert ringing.headers.get("From") == invite.headers.get("From")
    assert ringing.headers.get("To") == "<sip:bob@b.example>;tag=abc"
    assert ringing.call_id == invite.call_id and ringing.headers.get("CSeq") == "1 INVITE"
    assert ringing.headers.get_all("Record-Route") == ["<sip:proxy.example;lr>"]
    busy = make_response(invite, 486, "Busy Here", to_tag="abc")
    assert busy.headers.get("Record-Route") is None
    assert make_response(invite, 100).to.tag is None
    assert make_response(invite, 500).to.tag  # a tag is made up when none was given
    body = make_response(invite, 200, to_tag="abc", body=b"v=0\r\n", content_type="application/sdp")
    assert body.headers.get("Content-Type") == "application/sdp" and body.body == b"v=0\r\n"
    # A request that already has a To tag keeps it.
    inside = request("BYE")
    inside.headers.set("To", "<sip:bob@b.example>;tag=existing")
    assert make_response(inside, 200, to_tag="other").to.tag == "existing"
    with pytest.raises(ValueError):
        make_response(invite, 99)


def test_make_cancel_follows_9_1() -> None:
    invite = request(route=True, cseq=7)
    cancel = make_cancel(invite)
    assert cancel.method == "CANCEL" and cancel.uri == invite.uri
    assert cancel.headers.values("Via") == [invite.headers.values("Via")[0]]
    assert cancel.headers.get("CSeq") == "7 CANCEL"
    for name in ("From", "To", "Call-ID"):
        assert cancel.headers.get(name) == invite.headers.get(name)
    assert cancel.headers.get_all("Route") == invite.headers.get_all("Route")
    # It parses back as a valid request.
    assert parse_message(cancel.to_bytes()).method == "CANCEL"  # type: ignore[union-attr]
    with pytest.raises(TransactionError):
        make_cancel(request("OPTIONS"))


def test_make_ack_refuses_2xx() -> None:
    invite = request()
    with pytest.raises(TransactionError, match="TU"):
        make_ack_for_non_2xx(invite, response_to(invite, 200))


# The table --------------------------------------------------------------------------------------------


def test_table_routes_messages_and_drives_all_timers() -> None:
    table = TransactionTable()
    invite = request()
    client = ClientInviteTransaction(invite, reliable=False, now=0.0)
    options = request("OPTIONS")
    client2 = ClientNonInviteTransaction(options, reliable=True, now=0.0)
    incoming = request("INVITE", branch="z9hG4bKincoming")
    server = ServerInviteTransaction(incoming, reliable=False, now=0.0)
    for t in (client, client2, server):
        table.add(t)
    assert len(table) == 3
    with pytest.raises(TransactionError):
        table.add(ClientInviteTransaction(invite, reliable=False, now=0.0))

    assert table.match_response(response_to(invite, 180)) is client
    assert table.match_response(response_to(options, 200)) is client2
    # A response to the CANCEL shares the INVITE's branch but not its method (§17.1.3).
    assert table.match_response(response_to(make_cancel(invite), 200)) is None
    assert table.match_request(copy(incoming)) is server  # type: ignore[arg-type]
    assert table.match_request(copy(invite)) is None  # type: ignore[arg-type]  # our own INVITE is a client
    assert table.match_cancel(make_cancel(incoming)) is server
    # Another sent-by with the same branch is another transaction (§17.2.3).
    other = copy(incoming)
    other.headers.set("Via", "SIP/2.0/UDP 198.51.100.7:5060;branch=z9hG4bKincoming")
    assert table.match_request(other) is None  # type: ignore[arg-type]

    assert table.next_timer() == 0.2  # the server's 100 Trying
    assert table.handle_timers(0.2) == [server]
    assert table.next_timer() == 0.5
    client2.receive_response(response_to(options, 200), 0.3)  # TCP: terminated at once
    fired = table.handle_timers(0.5)
    assert fired == [client]
    assert len(table) == 2  # client2 was dropped
    table.handle_timers(40.0)  # B fires for the INVITE; the server waits on its TU forever
    assert len(table) == 1
    assert table.match_response(response_to(invite, 200)) is None


def test_table_finds_the_transaction_that_sent_a_message() -> None:
    # What a transport error report is routed by (§17.1.4, §17.2.4): the message the transport failed on.
    table = TransactionTable()
    invite = request()
    client = ClientInviteTransaction(invite, reliable=False, now=0.0)
    options = request("OPTIONS")
    client2 = ClientNonInviteTransaction(options, reliable=True, now=0.0)
    incoming = request("INVITE", branch="z9hG4bKincoming")
    server = ServerInviteTransaction(incoming, reliable=False, now=0.0)
    for t in (client, client2, server):
        table.add(t)
    assert table.match_sent(invite) is client
    assert table.match_sent(options) is client2
    assert table.match_sent(copy(options)) is None  # an equal message is not one the transaction sent

    client.receive_response(response_to(invite, 486), 0.1)
    assert client.ack is not None
    assert table.match_sent(client.ack) is client  # the ACK for a non-2xx rides the INVITE's transaction

    ringing = response_to(incoming, 180)
    final = response_to(incoming, 200)
    server.send_response(ringing, 0.0)
    server.send_response(final, 0.1)
    # A report about the 180 may come after the 200 went out: it still belongs to the server transaction.
    assert table.match_sent(ringing) is server
    assert table.match_sent(final) is server
    assert table.match_sent(response_to(incoming, 200)) is None  # not sent by it (a stateless answer)

    # The ACK for a 2xx has no transaction (§13.2.2.4): nobody to tell.
    ack_2xx = request("ACK")
    assert table.match_sent(ack_2xx) is None

    client2.transport_error(0.2, "connection closed")
    table.touch(client2)
    assert table.match_sent(options) is None  # ended: the report has nowhere to go


def test_rfc2543_server_responses_are_found_by_scan() -> None:
    table = TransactionTable()
    invite = request(branch="1")
    server = ServerInviteTransaction(invite, reliable=True, now=0.0)
    table.add(server)
    busy = response_to(invite, 486)
    server.send_response(busy, 0.0)
    assert table.match_sent(busy) is server


def test_rfc2543_requests_match_without_magic_cookie() -> None:
    table = TransactionTable()
    invite = request(branch="1")
    server = ServerInviteTransaction(invite, reliable=False, now=0.0)
    table.add(server)
    assert table.match_request(copy(invite)) is server  # type: ignore[arg-type]
    final = response_to(invite, 486)
    server.send_response(final, 0.0)
    ack = make_ack_for_non_2xx(invite, final)
    assert table.match_request(ack) is server
    other = request(branch="1", cseq=2)
    assert table.match_request(other) is None
