"""Example tests of the SIP message parser: the RFC 4475 torture fixtures, header forms, bodies, limits,
error responses and stream framing."""

from __future__ import annotations

import re
import time
import tomllib
import tracemalloc
from pathlib import Path

import pytest

from tonebridge.sip.message import (
    MAX_HEADERS,
    MAX_MESSAGE_BYTES,
    CSeq,
    FramingError,
    Headers,
    NameAddress,
    Request,
    Response,
    SipParseError,
    SipUri,
    StreamFramer,
    Via,
    error_response,
    parse_message,
)

FIXTURES = Path(__file__).parent / "fixtures" / "sip"
EXPECTATIONS: dict[str, dict[str, object]] = tomllib.loads((FIXTURES / "expectations.toml").read_text())


def load_fixture(name: str) -> bytes:
    """Expand the notation of fixtures/sip/README.md into the bytes on the wire."""
    entry = EXPECTATIONS[name]
    text = (FIXTURES / f"{name}.sip").read_text(encoding="utf-8")
    text = re.sub(
        r"<repeat count=(\d+)>(.*?)</repeat>", lambda m: m.group(2) * int(m.group(1)), text, flags=re.DOTALL
    )
    if entry.get("line_ends", "crlf") == "crlf":
        text = text.replace("\n", "\r\n")
    data = b""
    for index, piece in enumerate(re.split(r"<hex>([0-9a-fA-F]*)</hex>", text)):
        data += bytes.fromhex(piece) if index % 2 else piece.encode("utf-8")
    if b"<body-length>" in data:
        end = re.search(rb"\r?\n\r?\n", data)
        assert end is not None
        data = data.replace(b"<body-length>", str(len(data) - end.end()).encode())
    return data


def parse_request(data: bytes, **kwargs: bool) -> Request:
    message = parse_message(data, **kwargs)
    assert isinstance(message, Request)
    return message


def parse_response(data: bytes) -> Response:
    message = parse_message(data)
    assert isinstance(message, Response)
    return message


# --- RFC 4475 fixtures -------------------------------------------------------------------------------


def test_every_fixture_has_an_expectation_and_every_expectation_a_fixture() -> None:
    files = {path.stem for path in FIXTURES.glob("*.sip")}
    assert files == set(EXPECTATIONS)
    assert len(files) >= 60


@pytest.mark.parametrize("name", sorted(EXPECTATIONS))
def test_fixture_meets_its_expectation(name: str) -> None:
    entry = EXPECTATIONS[name]
    data = load_fixture(name)
    if entry["expect"] == "valid":
        message = parse_message(data)
        # What was accepted serialises into bytes that parse to the same message.
        assert parse_message(message.to_bytes()) == message
        # Every typed view of a valid message works.
        assert message.cseq.number >= 0
        assert message.from_ and message.to and message.vias and message.call_id
        if isinstance(message, Request):
            message.request_uri  # noqa: B018
        return
    with pytest.raises(SipParseError) as caught:
        parse_message(data)
    error = caught.value
    assert str(entry["fault"]) in error.reason
    answer = error_response(error)
    if entry["expect"] == "drop":
        assert answer is None
        return
    assert entry["expect"] == "reject"
    assert error.answerable
    assert answer is not None
    assert answer.status == entry["status"] == error.status
    assert str(entry["fault"]) in answer.reason
    # The answer is one clean status line and goes back the way the request came.
    line = answer.to_bytes().split(b"\r\n", 1)[0].decode()
    assert line.startswith(f"SIP/2.0 {entry['status']} ")
    assert not re.search(r"[\x00-\x1f\x7f]", line)
    assert answer.headers.get_all("Via") == error.headers.get_all("Via")  # type: ignore[union-attr]


def test_wsinv_reads_through_whitespace_folding_and_compact_forms() -> None:
    request = parse_request(load_fixture("wsinv"))
    assert request.to.tag == "5512ab7q"
    assert request.from_.tag == "7hq2kz"
    assert request.from_.display_name == 'Bob \\"the builder\\"'
    assert request.headers.get("Max-Forwards") == "0042"
    assert request.cseq == CSeq(9, "INVITE")
    vias = request.vias
    assert [(v.transport, v.host, v.branch) for v in vias] == [
        ("UDP", "192.0.2.77", "z9hG4bKwsinv1"),
        ("TCP", "relay.example.net", "z9hG4bKwsinv2"),
        ("UDP", "192.168.40.10", "z9hG4bKwsinv3"),
    ]
    contact = NameAddress.parse(request.headers.values("Contact")[0])
    assert contact.display_name == 'Quoted ""'
    assert contact.params == {"newparam": "newvalue", "secondparam": None, "q": "0.5"}
    assert request.headers.get("NewFangledHeader") == "something new that goes on"
    assert request.headers.get("Subject") == ""
    assert request.body.startswith(b"v=0\r\n") and len(request.body) == int(request.headers.get("l") or -1)


def test_intmeth_keeps_every_token_character_and_quoted_pairs() -> None:
    request = parse_request(load_fixture("intmeth"))
    method = "~odd.Method-0987654321_*+`.%wow'!"
    assert request.method == method and request.cseq.method == method
    uri = request.request_uri
    assert uri.user == "2_strange.URI~(for-sure!)&isn't+it$/odd?,/;;*"
    assert uri.password == "&it+has=2,weird!*pa$$wo~d_too.(isn't-it)"
    assert uri.host == "example.net"
    assert request.to.display_name == "BEL:\x07 NUL:\x00 DEL:\x7f"
    assert request.from_.display_name == "word1~` word2'+_ word3*%!.-"
    assert request.from_.params["oddparam''~+*_!.-%"] == '"работает"'
    assert request.call_id == "intmeth.word%QZ-!.*_+'@word`~)(><:\\/\"][?}{"
    assert request.headers.get("extensionHeader-!.%*+_`'~") == "\ufeff停電中"


def test_escapes_stay_escaped() -> None:
    esc01 = parse_request(load_fixture("esc01"))
    assert esc01.request_uri.user == "sips%3Acarol%40example.org"
    assert esc01.request_uri.host == "example.net"
    escnull = parse_request(load_fixture("escnull"))
    assert b"\x00" not in escnull.to_bytes()
    assert escnull.headers.values("Contact") == [
        "<sip:%00@host7.example.org>",
        "<sip:%00%00@host7.example.org>",
    ]
    esc02 = parse_request(load_fixture("esc02"))
    assert esc02.method == "OP%54IO%4ES"


def test_lwsdisp_semiuri_transports() -> None:
    assert parse_request(load_fixture("lwsdisp")).from_.display_name == "me"
    semiuri = parse_request(load_fixture("semiuri")).request_uri
    assert (semiuri.user, semiuri.host, semiuri.params) == ("user;par=u%40example.org", "example.net", {})
    transports = [v.transport for v in parse_request(load_fixture("transports")).vias]
    assert transports == ["UDP", "SCTP", "TLS", "UNKNOWN", "TCP"]


def test_longreq_survives_intact() -> None:
    data = load_fixture("longreq")
    request = parse_request(data)
    assert len(request.vias) == 42
    name = "Unknown-" + "Long" * 40 + "-Name"
    value = request.headers.get(name)
    assert value is not None and value.encode() in data
    assert request.from_.tag == "one" + "really" * 60 + "longtag"
    assert request.to.uri.port == 6000


def test_dblreq_discards_the_second_request() -> None:
    request = parse_request(load_fixture("dblreq"))
    assert request.method == "REGISTER" and request.body == b""
    assert b"INVITE" not in request.to_bytes()


def test_mpart01_keeps_binary_body_bytes() -> None:
    data = load_fixture("mpart01")
    request = parse_request(data)
    assert data.endswith(request.body) and b"\xff\x00\xfe" in request.body
    assert request.content_type == "multipart/signed"


def test_reason_phrases() -> None:
    assert parse_response(load_fixture("unreason")).reason == "= 2**3 * 3**3 — это двести шестнадцать"
    noreason = parse_response(load_fixture("noreason"))
    assert (noreason.status, noreason.reason) == (100, "")
    assert noreason.to_bytes().startswith(b"SIP/2.0 100 \r\n")


def test_inv2543_without_content_length_takes_the_rest_of_the_datagram() -> None:
    request = parse_request(load_fixture("inv2543"))
    assert request.body.startswith(b"v=0") and request.body.endswith(b"a=rtpmap:0 PCMU/8000\r\n")
    assert request.headers.get("Content-Length") == str(len(request.body))
    assert request.top_via.branch is None


def test_toomany_and_a_64k_datagram_and_a_1000_header_message_stay_bounded() -> None:
    toomany = load_fixture("own-toomany")
    big_body = (
        b"MESSAGE sip:room@example.net SIP/2.0\r\nVia: SIP/2.0/UDP 192.0.2.1;branch=z9hG4bKbig\r\n"
        b"From: <sip:a@example.org>;tag=1\r\nTo: <sip:room@example.net>\r\nCall-ID: big.1\r\n"
        b"CSeq: 1 MESSAGE\r\nContent-Type: text/plain\r\n\r\n"
    )
    big_body += b"x" * (MAX_MESSAGE_BYTES - len(big_body))
    folded = b"OPTIONS sip:a@b SIP/2.0\r\nX-Folded: a\r\n" + b" b\r\n" * 16_000 + b"\r\n"
    lines = b"OPTIONS sip:a@b SIP/2.0\r\n" + b"X:y\r\n" * 13_000 + b"\r\n"
    for data in (toomany, big_body, folded, lines, b"\n" * MAX_MESSAGE_BYTES, b"A" * MAX_MESSAGE_BYTES):
        assert len(data) <= MAX_MESSAGE_BYTES
        tracemalloc.start()
        started = time.perf_counter()
        try:
            parse_message(data)
        except SipParseError:
            pass
        elapsed = time.perf_counter() - started
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        # A small constant times the input: nothing grows with what the sender chose to repeat.
        assert peak < 40 * MAX_MESSAGE_BYTES, (data[:30], peak)
        assert elapsed < 1.0, (data[:30], elapsed)
    with pytest.raises(SipParseError, match="bytes exceeds the 65536-byte limit") as caught:
        parse_message(b"x" * (MAX_MESSAGE_BYTES + 1))
    assert caught.value.status == 513 and not caught.value.answerable
    with pytest.raises(SipParseError, match=f"more than {MAX_HEADERS} header fields"):
        parse_message(toomany)


# --- header forms ------------------------------------------------------------------------------------

BASE = (
    "OPTIONS sip:room@tonebridge.example SIP/2.0\r\n"
    "Via: SIP/2.0/UDP 192.0.2.10:5060;branch=z9hG4bKbase\r\n"
    "Max-Forwards: 70\r\n"
    'From: "Base" <sip:base@192.0.2.10>;tag=b1\r\n'
    "To: <sip:room@tonebridge.example>\r\n"
    "Call-ID: base-call@192.0.2.10\r\n"
    "CSeq: 7 OPTIONS\r\n"
)


def with_headers(*extra: str, body: bytes = b"", base: str = BASE) -> bytes:
    return (base + "".join(h + "\r\n" for h in extra) + "\r\n").encode() + body


def test_compact_forms_expand_to_canonical_names() -> None:
    request = parse_request(load_fixture("own-compact"))
    names = [name for name, _ in request.headers]
    assert names[:5] == ["Via", "From", "To", "Call-ID", "CSeq"]
    assert {"Contact", "Supported", "Subject", "Content-Type", "Content-Length"} <= set(names)
    assert [v.transport for v in request.vias] == ["TCP", "UDP"]
    assert request.headers.values("Contact") == [
        "<sip:compact@192.0.2.62:5070;transport=tcp>",
        "<sip:compact@192.0.2.63>;q=0.1",
    ]
    assert request.headers.values("k") == ["timer", "replaces"]
    assert request.content_type == "application/sdp"


def test_folded_lines_join_with_one_space() -> None:
    request = parse_request(with_headers("Subject: first\r\n  second\r\n\tthird", "X-Empty:\r\n   value"))
    assert request.headers.get("Subject") == "first second third"
    assert request.headers.get("X-Empty") == "value"


def test_continuation_before_any_header_is_a_fault() -> None:
    data = b"OPTIONS sip:a@b SIP/2.0\r\n folded\r\n" + with_headers().split(b"\r\n", 1)[1]
    with pytest.raises(SipParseError, match="continuation line before any header") as caught:
        parse_message(data)
    assert caught.value.answerable


def test_comma_combined_via_contact_route_split_in_order() -> None:
    request = parse_request(
        with_headers(
            "Via: SIP/2.0/TCP p1.example.net;branch=z9hG4bK1, SIP/2.0/UDP [2001:db8::9]:5070;branch=z9hG4bK2",
            'Contact: "A, B" <sip:a@192.0.2.1>;q=0.5, <sip:b@192.0.2.2;lr>',
            "Route: <sip:p1.example.net;lr>, <sip:p2.example.net;lr>",
            "Route: <sip:p3.example.net;lr>",
        )
    )
    assert [v.host for v in request.vias] == ["192.0.2.10", "p1.example.net", "[2001:db8::9]"]
    assert request.vias[2].port == 5070
    contacts = [NameAddress.parse(v) for v in request.headers.values("Contact")]
    assert [c.display_name for c in contacts] == ["A, B", None]
    assert [str(NameAddress.parse(r).uri) for r in request.headers.values("Route")] == [
        "sip:p1.example.net;lr",
        "sip:p2.example.net;lr",
        "sip:p3.example.net;lr",
    ]


def test_route_outside_angle_brackets_is_refused() -> None:
    with pytest.raises(SipParseError, match="Route value 'sip:p1.example.net' must be in angle brackets"):
        parse_message(with_headers("Route: sip:p1.example.net"))


def test_bare_lf_line_ends_parse_like_crlf() -> None:
    crlf = with_headers("Content-Type: text/plain", body=b"hi\r\n")
    lf = crlf.replace(b"\r\n", b"\n")
    a, b = parse_request(crlf), parse_request(lf)
    assert b.body == b"hi\n" and b.headers.get("Content-Length") == "3"
    b.body = a.body
    b.headers.set("Content-Length", "4")
    assert a == b


def test_leading_crlfs_are_ignored() -> None:
    assert parse_request(b"\r\n\r\n" + with_headers()).method == "OPTIONS"


# --- bodies on datagrams and streams -----------------------------------------------------------------


def test_content_length_shorter_than_the_datagram_truncates_the_body() -> None:
    request = parse_request(load_fixture("own-shortcl"))
    assert request.body == b"hello"
    assert request.headers.get("Content-Length") == "5"


def test_content_length_longer_than_the_datagram_is_a_400() -> None:
    data = with_headers("Content-Length: 12", body=b"only ten..")
    with pytest.raises(SipParseError, match="Content-Length 12 larger than the 10 body bytes") as caught:
        parse_message(data)
    answer = error_response(caught.value)
    assert answer is not None and answer.status == 400


def test_missing_content_length_on_a_stream_means_no_body() -> None:
    data = with_headers(body=b"stray")
    assert parse_request(data).body == b"stray"
    assert parse_request(data, stream=True).body == b""


@pytest.mark.parametrize("value", ["²", "٣", "1e3", "0x10", " ", "1 2", "9" * 5000])
def test_odd_content_lengths_are_refused_without_escaping(value: str) -> None:
    with pytest.raises(SipParseError) as caught:
        parse_message(with_headers(f"Content-Length: {value}"))
    assert caught.value.status in (400, 413)


def test_parsed_content_length_always_matches_the_body() -> None:
    request = parse_request(with_headers("Content-Length: 0003", body=b"abcdef"))
    assert request.body == b"abc" and request.headers.get("Content-Length") == "3"


# --- start lines and values ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("line", "status"),
    [
        ("SIP/2.0 099 Too Low", None),
        ("SIP/2.0 700 Too High", None),
        ("SIP/2.0 4294967301 big", None),
        ("SIP/2.0 ٢٠٠ OK", None),
        ("SIP/3.0 200 OK", 505),
    ],
)
def test_bad_status_lines_are_dropped(line: str, status: int | None) -> None:
    data = with_headers(base=BASE.replace("OPTIONS sip:room@tonebridge.example SIP/2.0", line))
    with pytest.raises(SipParseError) as caught:
        parse_message(data)
    assert error_response(caught.value) is None
    if status:
        assert caught.value.status == status


def test_status_line_without_reason_and_with_lower_case_version() -> None:
    for line in ("SIP/2.0 180", "sip/2.0 180 Ringing"):
        response = parse_response(
            with_headers(
                base=BASE.replace("OPTIONS sip:room@tonebridge.example SIP/2.0", line).replace(
                    "7 OPTIONS", "7 INVITE"
                )
            )
        )
        assert response.status == 180


@pytest.mark.parametrize(
    ("uri", "status", "fault"),
    [
        ("mailto:someone@example.net", 416, "unsupported URI scheme 'mailto'"),
        ("<sip:a@b>", 400, "bad Request-URI"),
        ("sip:a b@host", 400, "malformed request line"),
        ("sip:us%zzer@host", 400, "invalid user part"),
        ("sip:host:99999", 400, "invalid port"),
        ("sip:host:²", 400, "invalid port"),
        ("sip:[::1", 400, "unterminated IPv6"),
        ("sip:host;;lr", 400, "invalid URI parameter"),
        ("sip:@host", 400, "invalid user part"),
    ],
)
def test_bad_request_uris(uri: str, status: int, fault: str) -> None:
    data = with_headers(base=BASE.replace("sip:room@tonebridge.example SIP", f"{uri} SIP", 1))
    with pytest.raises(SipParseError) as caught:
        parse_message(data)
    assert caught.value.status == status and fault in caught.value.reason
    assert caught.value.answerable


def test_tel_and_sips_request_uris_are_accepted() -> None:
    for uri in ("tel:+1-201-555-0123;phone-context=example.net", "sips:room@tonebridge.example:5061"):
        request = parse_request(
            with_headers(base=BASE.replace("sip:room@tonebridge.example SIP", f"{uri} SIP", 1))
        )
        assert request.uri == uri


@pytest.mark.parametrize(
    ("header", "fault"),
    [
        ("Max-Forwards: 70", "more than one Max-Forwards header"),
        ("CSeq: 8 OPTIONS", "more than one CSeq header"),
        ("Contact: <sip:a@b", "malformed Contact header: unterminated <...>"),
        ("Contact: <sip:a@b> junk", "malformed Contact header: unexpected text"),
        ('Contact: <sip:a@b>;p="unterminated', "malformed Contact header"),
        ("Via: SIP/2.0/UDP host:0;branch=z9hG4bKx", "malformed Via header: invalid port"),
        ("Via: SIP/2.0/UDP host;branch=a b", "malformed Via header"),
    ],
)
def test_header_faults_are_named(header: str, fault: str) -> None:
    with pytest.raises(SipParseError) as caught:
        parse_message(with_headers(header))
    assert fault in caught.value.reason
    answer = error_response(caught.value)
    assert answer is not None and fault in answer.reason


def test_contact_star_and_unusual_but_valid_headers_pass() -> None:
    request = parse_request(
        with_headers(
            "Contact: *",
            "X-Instance: <urn:uuid:00000000-0000-1000-8000-AABBCCDDEEFF>",
            'Accept-Contact: *;+sip.instance="<urn:uuid:1>"',
            "Via: SIP/2.0/UDP 192.0.2.1;received=2001:db8::1",
        )
    )
    assert request.headers.get("Contact") == "*"


def test_header_injection_is_refused_on_serialise() -> None:
    request = Request("OPTIONS", "sip:a@b", Headers([("Subject", "x\r\nVia: evil")]))
    with pytest.raises(ValueError, match="CR or LF"):
        request.to_bytes()


# --- objects --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text",
    [
        "sip:alice@example.net",
        "sips:alice:secret@example.net:5061;transport=tls;lr?subject=hi&priority=urgent",
        "sip:[2001:db8::1]:5070;maddr=192.0.2.1",
        "sip:+1-555@gw.example.net;user=phone",
        "tel:+15551234;ext=7",
    ],
)
def test_uri_round_trip(text: str) -> None:
    uri = SipUri.parse(text)
    assert SipUri.parse(str(uri)) == uri
    assert str(uri) == text


def test_name_address_quoting_round_trip() -> None:
    original = NameAddress(
        SipUri("example.net", user="x"), display_name='He said "hi" \\ <bye>', params={"tag": "9"}
    )
    text = str(original)
    assert text == '"He said \\"hi\\" \\\\ <bye>" <sip:x@example.net>;tag=9'
    assert NameAddress.parse(text) == original


def test_via_round_trip_and_other_protocol_versions() -> None:
    via = Via.parse("SIP/2.0/UDP 192.0.2.1:5060;rport;branch=z9hG4bK77")
    assert (via.transport, via.host, via.port, via.branch) == ("UDP", "192.0.2.1", 5060, "z9hG4bK77")
    assert Via.parse(str(via)) == via
    assert Via.parse("SIP/7.0/TLS-SCTP h.example.net").transport == "TLS-SCTP"
    for bad in ("SIP/2.0/UDP", "SIP/2.0/UDP :5060", "SIP/2.0/UDP host:", "SIP/2.0/UDP h junk"):
        with pytest.raises(ValueError):
            Via.parse(bad)


def test_headers_compare_by_content_and_case_insensitive_names() -> None:
    assert Headers([("x-a", "1"), ("Via", "v")]) == Headers([("X-A", "1"), ("v", "v")])
    assert Headers([("A", "1"), ("B", "2")]) != Headers([("B", "2"), ("A", "1")])


# --- error responses ------------------------------------------------------------------------------------


def test_error_response_copies_the_request_and_adds_a_stable_to_tag() -> None:
    data = with_headers("Via: SIP/2.0/TCP p1.example.net;branch=z9hG4bKp1", "CSeq: 9 OPTIONS")
    with pytest.raises(SipParseError) as caught:
        parse_message(data)
    first = error_response(caught.value)
    with pytest.raises(SipParseError) as again:
        parse_message(data)
    second = error_response(again.value)
    assert first is not None and second is not None
    assert first.reason == "Bad Request - more than one CSeq header"
    assert first.headers.get_all("Via") == [
        "SIP/2.0/UDP 192.0.2.10:5060;branch=z9hG4bKbase",
        "SIP/2.0/TCP p1.example.net;branch=z9hG4bKp1",
    ]
    assert first.headers.get("Call-ID") == "base-call@192.0.2.10"
    to_tag = first.to.tag
    assert to_tag and to_tag == second.to.tag
    assert parse_response(first.to_bytes()).status == 400


def test_garbage_and_responses_get_no_answer() -> None:
    for data in (
        b"\x00\x01\x02\r\n\r\n",
        b"hello\r\n\r\n",
        b"SIP/2.0 200 OK\r\n\r\n",
        with_headers(base=BASE.replace("Via: SIP/2.0/UDP 192.0.2.10:5060;branch=z9hG4bKbase\r\n", "")),
    ):
        with pytest.raises(SipParseError) as caught:
            parse_message(data)
        assert not caught.value.answerable and error_response(caught.value) is None


# --- stream framing --------------------------------------------------------------------------------------


def stream_messages() -> list[bytes]:
    one = with_headers("Content-Type: text/plain", "Content-Length: 11", body=b"hello\r\n\r\nyo")
    two = with_headers("l: 0").replace(b"OPTIONS", b"OPTIONS", 1)
    three = (
        BASE.replace("7 OPTIONS", "8 OPTIONS") + "Content-Length:\r\n 4\r\nX-After: 1\r\n\r\nbody"
    ).encode()
    lf = with_headers("content-length: 3", body=b"a\nb").replace(b"\r\n", b"\n")
    return [one, two, three, lf]


def test_framer_cuts_several_messages_in_one_chunk() -> None:
    messages = stream_messages()
    framer = StreamFramer()
    assert framer.feed(b"".join(messages)) == messages
    assert framer.buffered == 0
    assert [parse_request(m, stream=True).body for m in messages] == [
        b"hello\r\n\r\nyo",
        b"",
        b"body",
        b"a\nb",
    ]


def test_framer_cuts_the_same_at_every_split_position() -> None:
    stream = b"\r\n\r\n".join(stream_messages())  # keep-alive pings between messages
    expected = StreamFramer().feed(stream)
    assert len(expected) == 4
    for split in range(len(stream) + 1):
        framer = StreamFramer()
        got = framer.feed(stream[:split]) + framer.feed(stream[split:])
        assert got == expected, split
        assert framer.buffered == 0 and framer.pings == 3


def test_framer_one_byte_at_a_time() -> None:
    stream = b"".join(stream_messages())
    framer = StreamFramer()
    got: list[bytes] = []
    for index in range(len(stream)):
        got.extend(framer.feed(stream[index : index + 1]))
    assert got == stream_messages()


def test_framer_refuses_a_header_section_that_never_ends() -> None:
    framer = StreamFramer()
    framer.feed(b"INVITE sip:a@b SIP/2.0\r\n")
    chunk = b"X-Endless: " + b"z" * 1000 + b"\r\n"
    with pytest.raises(FramingError, match="without an end"):
        for _ in range(10_000):
            framer.feed(chunk)
            assert framer.buffered <= MAX_MESSAGE_BYTES + len(chunk)
    assert framer.buffered <= MAX_MESSAGE_BYTES + len(chunk)


def test_framer_refuses_oversized_and_untrustworthy_lengths() -> None:
    for head, fault in (
        (f"Content-Length: {MAX_MESSAGE_BYTES}", "exceeds"),
        ("Content-Length: -1", "invalid Content-Length"),
        ("Content-Length: 9" + "9" * 5000, "invalid Content-Length"),
        ("Content-Length: 1\r\nl: 2", "conflicting Content-Length"),
    ):
        with pytest.raises(FramingError, match=fault):
            StreamFramer().feed(with_headers(head))


def test_framer_waits_for_the_body() -> None:
    message = with_headers("Content-Length: 5", body=b"12345")
    framer = StreamFramer()
    assert framer.feed(message[:-1]) == []
    assert framer.feed(message[-1:]) == [message]
