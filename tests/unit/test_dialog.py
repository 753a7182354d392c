"""SIP dialogs (RFC 3261 §12-§15): route sets through record-routing proxies, CSeq order, target refresh."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tonebridge.sip.dialog import Dialog, DialogError, DialogKey, DialogState, contact_problem
from tonebridge.sip.message import Headers, Request, Response, Via, parse_message
from tonebridge.sip.transaction import MAGIC_COOKIE, make_response, new_branch

# Two kamailio-like proxies between Alice (us, the UAC) and Bob: P1 near Alice, P2 near Bob. Each inserts
# its Record-Route on top, so the request reaching Bob lists P2 then P1.
P1 = "sip:10.0.0.1;lr"
P2 = "sip:p2.example.net;lr;ftag=a1b2;did=7f.2"
ALICE_CONTACT = "<sip:alice@192.0.2.10:5060>"
BOB_CONTACT = "<sip:bob@198.51.100.20:5070;transport=udp>"


def invite(record_route: bool = False, contact: str = ALICE_CONTACT, cseq: int = 101) -> Request:
    headers = Headers(
        [
            ("Via", f"SIP/2.0/UDP 192.0.2.10:5060;branch={new_branch()}"),
            ("Max-Forwards", "70"),
            ("From", '"Alice" <sip:alice@a.example>;tag=alicetag'),
            ("To", "<sip:bob@b.example>"),
            ("Call-ID", "dialog-call-1"),
            ("CSeq", f"{cseq} INVITE"),
            ("Contact", contact),
        ]
    )
    if record_route:
        # As it reaches Bob: P2's on top; here split as one field holding both, kamailio-style.
        headers.add("Record-Route", f"<{P2}>, <{P1}>")
    return Request("INVITE", "sip:bob@b.example", headers)


def answer(
    request: Request,
    status: int = 200,
    to_tag: str = "bobtag",
    contact: str | None = BOB_CONTACT,
    record_route: list[str] | None = None,
) -> Response:
    response = make_response(request, status, to_tag=to_tag)
    if record_route is not None:
        response.headers.remove("Record-Route")
        for uri in record_route:
            response.headers.add("Record-Route", f"<{uri}>")
    if contact:
        response.headers.add("Contact", contact)
    return response


def uac_dialog(**kwargs: object) -> tuple[Request, Dialog]:
    inv = invite(record_route=True)
    return inv, Dialog.from_uac_response(inv, answer(inv), **kwargs)  # type: ignore[arg-type]


# UAC side ---------------------------------------------------------------------------------------------


def test_uac_dialog_from_2xx() -> None:
    inv, dialog = uac_dialog()
    assert dialog.state is DialogState.CONFIRMED
    assert dialog.call_id == "dialog-call-1"
    assert (dialog.local_tag, dialog.remote_tag) == ("alicetag", "bobtag")
    assert dialog.local_uri == "sip:alice@a.example"
    assert dialog.remote_uri == "sip:bob@b.example"
    assert dialog.remote_target == "sip:bob@198.51.100.20:5070;transport=udp"
    # §12.1.2: the UAC reverses the Record-Route of the response; URIs are kept as the proxies wrote them.
    assert dialog.route_set == [P1, P2]
    assert dialog.local_cseq == 101 and dialog.remote_cseq is None
    assert dialog.key == DialogKey("dialog-call-1", "alicetag", "bobtag")
    assert not dialog.secure


def test_in_dialog_request_through_loose_routers() -> None:
    _, dialog = uac_dialog()
    bye = dialog.create_request("BYE")
    assert bye.uri == "sip:bob@198.51.100.20:5070;transport=udp"  # remote target, not the first proxy
    assert bye.headers.get_all("Route") == [f"<{P1}>", f"<{P2}>"]
    assert bye.headers.get("CSeq") == "102 BYE"
    assert bye.from_.tag == "alicetag" and bye.to.tag == "bobtag"
    assert bye.call_id == "dialog-call-1"
    assert bye.headers.get("Contact") is None  # BYE is no target refresh
    assert bye.headers.get("Via") is None  # no via_factory: the sender adds it
    info = dialog.create_request(
        "INFO", body=b"Signal=5\r\nDuration=160\r\n", content_type="application/dtmf-relay"
    )
    assert info.headers.get("CSeq") == "103 INFO"
    assert info.headers.get("Content-Type") == "application/dtmf-relay"
    # It is a well-formed message once a Via is added.
    info.headers.prepend("Via", f"SIP/2.0/UDP 192.0.2.10:5060;branch={new_branch()}")
    parsed = parse_message(info.to_bytes())
    assert isinstance(parsed, Request) and parsed.body == info.body
    assert dialog.next_hop().host == "10.0.0.1"


def test_reinvite_carries_contact_and_extra_headers() -> None:
    _, dialog = uac_dialog()
    reinvite = dialog.create_request(
        "INVITE", headers=[("Supported", "timer")], body=b"v=0\r\n", content_type="application/sdp"
    )
    assert reinvite.headers.get("Contact") == ALICE_CONTACT
    assert reinvite.headers.get("Supported") == "timer"
    override = dialog.create_request("UPDATE", headers=[("Contact", "<sip:alice@203.0.113.5>")])
    assert override.headers.get_all("Contact") == ["<sip:alice@203.0.113.5>"]


def test_ack_for_2xx_uses_the_invite_cseq_and_a_fresh_branch() -> None:
    branches: list[str] = []

    def via(branch: str) -> str:
        branches.append(branch)
        return str(Via("UDP", "192.0.2.10", 5060, {"branch": branch, "rport": None}))

    _, dialog = uac_dialog(via_factory=via)
    ack = dialog.create_ack(101)
    assert ack.method == "ACK" and ack.headers.get("CSeq") == "101 ACK"
    assert dialog.local_cseq == 101  # an ACK does not count
    assert ack.headers.get_all("Route") == [f"<{P1}>", f"<{P2}>"]
    assert ack.top_via.branch == branches[0] and branches[0].startswith(MAGIC_COOKIE)
    again = dialog.create_ack(101)
    assert again.top_via.branch != ack.top_via.branch
    assert dialog.create_request("BYE").headers.get("CSeq") == "102 BYE"
    with pytest.raises(DialogError):
        dialog.create_request("ACK")
    with pytest.raises(DialogError):
        dialog.create_request("CANCEL")


def test_strict_router_first_in_route_set() -> None:
    inv = invite()
    # An RFC 2543 proxy without ;lr nearest to us (last in the response's Record-Route).
    response = answer(inv, record_route=[P2, "sip:strict.example.org;method=INVITE;transport=udp"])
    dialog = Dialog.from_uac_response(inv, response)
    assert dialog.route_set == ["sip:strict.example.org;method=INVITE;transport=udp", P2]
    bye = dialog.create_request("BYE")
    # §12.2.1.1: the strict router's URI becomes the Request-URI (less parameters a Request-URI may not
    # carry), the rest of the route set follows, and the remote target goes last.
    assert bye.uri == "sip:strict.example.org;transport=udp"
    assert bye.headers.get_all("Route") == [f"<{P2}>", "<sip:bob@198.51.100.20:5070;transport=udp>"]
    assert dialog.next_hop().host == "strict.example.org"


def test_no_record_route_means_direct_requests() -> None:
    inv = invite()
    dialog = Dialog.from_uac_response(inv, answer(inv))
    assert dialog.route_set == []
    bye = dialog.create_request("BYE")
    assert bye.headers.get("Route") is None
    assert bye.uri == dialog.remote_target
    assert dialog.next_hop().port == 5070


def test_early_dialog_confirmed_by_2xx_recomputes_route_set_and_target() -> None:
    inv = invite()
    ringing = answer(inv, 180, contact="<sip:bob@198.51.100.20:5999>", record_route=[P1])
    dialog = Dialog.from_uac_response(inv, ringing)
    assert dialog.state is DialogState.EARLY
    assert dialog.route_set == [P1]
    ok = answer(inv, 200, record_route=[P2, P1])
    dialog.confirm(ok)
    assert dialog.state is DialogState.CONFIRMED
    assert dialog.route_set == [P1, P2]
    assert dialog.remote_target == "sip:bob@198.51.100.20:5070;transport=udp"
    with pytest.raises(DialogError):
        dialog.confirm(answer(inv, 200, to_tag="someone-else"))


def test_uac_response_that_cannot_make_a_dialog() -> None:
    inv = invite()
    with pytest.raises(DialogError, match="100"):
        Dialog.from_uac_response(inv, answer(inv, 100))
    no_tag = answer(inv, 180)
    no_tag.headers.set("To", "<sip:bob@b.example>")
    with pytest.raises(DialogError, match="To tag"):
        Dialog.from_uac_response(inv, no_tag)
    with pytest.raises(DialogError, match="Contact"):
        Dialog.from_uac_response(inv, answer(inv, 200, contact=None))
    # A 1xx without Contact still makes an early dialog, aimed at the Request-URI.
    early = Dialog.from_uac_response(inv, answer(inv, 183, contact=None))
    assert early.remote_target == "sip:bob@b.example"


def test_sips_request_uri_makes_a_secure_dialog() -> None:
    inv = invite()
    inv.uri = "sips:bob@b.example"
    assert Dialog.from_uac_response(inv, answer(inv)).secure


# UAS side ---------------------------------------------------------------------------------------------


def test_uas_dialog_keeps_record_route_order() -> None:
    inv = invite(record_route=True)
    dialog = Dialog.from_uas_request(inv, "bobtag", BOB_CONTACT)
    assert dialog.state is DialogState.EARLY
    assert dialog.route_set == [P2, P1]  # §12.1.1: as is
    assert dialog.remote_target == "sip:alice@192.0.2.10:5060"
    assert (dialog.local_tag, dialog.remote_tag) == ("bobtag", "alicetag")
    assert dialog.local_uri == "sip:bob@b.example" and dialog.remote_uri == "sip:alice@a.example"
    assert dialog.remote_cseq == 101 and dialog.local_cseq is None
    dialog.confirm()
    assert dialog.state is DialogState.CONFIRMED
    bye = dialog.create_request("BYE")
    first = bye.cseq.number
    assert 0 < first < 2**31
    assert bye.uri == "sip:alice@192.0.2.10:5060"
    assert bye.headers.get_all("Route") == [f"<{P2}>", f"<{P1}>"]
    assert bye.from_.tag == "bobtag" and bye.to.tag == "alicetag"
    assert dialog.create_request("INFO").cseq.number == first + 1
    # The dialog the caller's in-dialog requests look up.
    incoming_bye = dialog_request_from_alice(dialog, "BYE", 102)
    assert DialogKey.for_incoming_request(incoming_bye) == dialog.key


def dialog_request_from_alice(dialog: Dialog, method: str, cseq: int, contact: str | None = None) -> Request:
    headers = Headers(
        [
            ("Via", f"SIP/2.0/UDP 192.0.2.10:5060;branch={new_branch()}"),
            ("From", f"<sip:alice@a.example>;tag={dialog.remote_tag}"),
            ("To", f"<sip:bob@b.example>;tag={dialog.local_tag}"),
            ("Call-ID", dialog.call_id),
            ("CSeq", f"{cseq} {method}"),
        ]
    )
    if contact:
        headers.add("Contact", contact)
    return Request(method, dialog.local_contact.strip("<>") if dialog.local_contact else "sip:x@y", headers)


def test_remote_cseq_must_increase() -> None:
    inv = invite(record_route=True)
    dialog = Dialog.from_uas_request(inv, "bobtag", BOB_CONTACT, confirmed=True)
    assert dialog.receive_request(dialog_request_from_alice(dialog, "ACK", 101))  # ACK shares the number
    assert dialog.receive_request(dialog_request_from_alice(dialog, "INFO", 102))
    assert dialog.remote_cseq == 102
    # §12.2.2: lower (or repeated) is out of order; the caller answers 500.
    assert not dialog.receive_request(dialog_request_from_alice(dialog, "INFO", 101))
    assert not dialog.receive_request(dialog_request_from_alice(dialog, "INFO", 102))
    assert dialog.remote_cseq == 102
    assert dialog.receive_request(dialog_request_from_alice(dialog, "BYE", 250))  # gaps are fine
    assert dialog.remote_cseq == 250
    stranger = dialog_request_from_alice(dialog, "BYE", 300)
    stranger.headers.set("Call-ID", "another-call")
    with pytest.raises(DialogError):
        dialog.receive_request(stranger)


def test_uac_dialog_takes_the_first_remote_cseq_as_given() -> None:
    _, dialog = uac_dialog()
    request = Request(
        "BYE",
        "sip:alice@192.0.2.10",
        Headers(
            [
                ("Via", "SIP/2.0/UDP 198.51.100.20:5070;branch=z9hG4bKx"),
                ("From", "<sip:bob@b.example>;tag=bobtag"),
                ("To", "<sip:alice@a.example>;tag=alicetag"),
                ("Call-ID", "dialog-call-1"),
                ("CSeq", "1 BYE"),
            ]
        ),
    )
    assert dialog.receive_request(request)  # §12.2.2: empty remote sequence number takes any value
    assert dialog.remote_cseq == 1


@given(st.lists(st.integers(min_value=1, max_value=2**31 - 1), min_size=1, max_size=30))
def test_cseq_acceptance_is_strictly_increasing(numbers: list[int]) -> None:
    inv = invite(cseq=1)
    dialog = Dialog.from_uas_request(inv, "bobtag", BOB_CONTACT)
    highest = 1
    for number in numbers:
        accepted = dialog.receive_request(dialog_request_from_alice(dialog, "INFO", number))
        assert accepted == (number > highest)
        highest = max(highest, number)
        assert dialog.remote_cseq == highest


def test_reinvite_refreshes_the_remote_target_but_not_the_route_set() -> None:
    inv = invite(record_route=True)
    dialog = Dialog.from_uas_request(inv, "bobtag", BOB_CONTACT, confirmed=True)
    moved = "<sip:alice@203.0.113.77:5062>"
    reinvite = dialog_request_from_alice(dialog, "INVITE", 102, contact=moved)
    assert dialog.receive_request(reinvite)
    assert dialog.update_target(reinvite)
    assert dialog.remote_target == "sip:alice@203.0.113.77:5062"
    assert dialog.route_set == [P2, P1]
    assert dialog.create_request("BYE").uri == "sip:alice@203.0.113.77:5062"
    # A BYE's Contact is no refresh; the same target again is no change.
    assert not dialog.update_target(dialog_request_from_alice(dialog, "BYE", 103, contact="<sip:z@z>"))
    assert not dialog.update_target(reinvite)


def test_2xx_to_our_reinvite_refreshes_the_target() -> None:
    _, dialog = uac_dialog()
    reinvite = dialog.create_request("INVITE")
    reinvite.headers.prepend("Via", f"SIP/2.0/UDP 192.0.2.10:5060;branch={new_branch()}")
    assert not dialog.update_target(answer(reinvite, 491, contact="<sip:bob@192.0.2.200>"))
    assert dialog.update_target(answer(reinvite, 200, contact="<sip:bob@192.0.2.200>"))
    assert dialog.remote_target == "sip:bob@192.0.2.200"
    assert dialog.route_set == [P1, P2]
    assert dialog.create_ack(reinvite.cseq.number).uri == "sip:bob@192.0.2.200"


def test_terminated_dialog_refuses_requests() -> None:
    _, dialog = uac_dialog()
    dialog.terminate()
    with pytest.raises(DialogError):
        dialog.create_request("BYE")
    with pytest.raises(DialogError):
        dialog.create_ack(101)


def test_uas_needs_contact_and_tag() -> None:
    inv = invite()
    inv.headers.remove("Contact")
    with pytest.raises(DialogError, match="Contact"):
        Dialog.from_uas_request(inv, "t", BOB_CONTACT)
    with pytest.raises(DialogError):
        Dialog.from_uas_request(invite(), "", BOB_CONTACT)


@pytest.mark.parametrize(
    ("contacts", "problem"),
    [
        ([ALICE_CONTACT], None),
        (['"Alice" <sips:alice@192.0.2.10;transport=tcp>;expires=60'], None),
        (["sip:alice@192.0.2.10:5060;q=0.5"], None),
        ([], "Missing Contact"),
        ([ALICE_CONTACT, "<sip:alice@192.0.2.11>"], "More Than One Contact"),
        ([f"{ALICE_CONTACT}, <sip:alice@192.0.2.11>"], "More Than One Contact"),
        (["*"], "Contact * Outside REGISTER"),
        (["<sip:alice@>"], "Malformed Contact"),
        (["<tel:+15550001111>"], "Contact Is Not a SIP URI"),
    ],
)
def test_contact_problem_says_why_a_dialog_cannot_be_made(contacts: list[str], problem: str | None) -> None:
    inv = invite()
    inv.headers.remove("Contact")
    for value in contacts:
        inv.headers.add("Contact", value)
    assert contact_problem(inv) == problem
    if problem is None:
        Dialog.from_uas_request(inv, "bobtag", BOB_CONTACT)
    # A target refresh may leave Contact out (§12.2.2), but one it carries is judged alike.
    assert contact_problem(inv, required=False) == (None if problem == "Missing Contact" else problem)


def test_response_key_matches_uac_dialog() -> None:
    inv, dialog = uac_dialog()
    assert DialogKey.for_incoming_response(answer(inv)) == dialog.key
