"""Property tests of the SIP message parser: whatever the bytes, `parse_message` raises only
`SipParseError` and `StreamFramer` only `FramingError`; what parses serialises back to itself; generated
messages, URIs and addresses round-trip."""

from __future__ import annotations

import re
import string

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_sip_message import (  # tests/unit is on sys.path (rootdir-relative imports)
    EXPECTATIONS,
    load_fixture,
)

from tonebridge.sip.message import (
    MAX_MESSAGE_BYTES,
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

# Budgets sized for a shared 2-core machine: the whole file runs in well under a minute.
FAST = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
MUTATED = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
GENERATED = settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])

VALID_FIXTURES = [
    load_fixture(name) for name, entry in sorted(EXPECTATIONS.items()) if entry["expect"] == "valid"
]
ALL_FIXTURES = [load_fixture(name) for name in sorted(EXPECTATIONS)]

# --- value strategies (RFC 3261 §25.1 character classes) -----------------------------------------------

TOKEN_CHARS = string.ascii_letters + string.digits + "-.!%*_+`'~"
UNRESERVED = string.ascii_letters + string.digits + "-_.!~*'()"
tokens = st.text(TOKEN_CHARS, min_size=1, max_size=10)
lower_names = st.text(string.ascii_lowercase + string.digits + "-", min_size=1, max_size=8)
escapes = st.sampled_from(["%00", "%20", "%3A", "%40", "%ff", "%7E"])


def chars_or_escapes(alphabet: str, min_size: int = 1) -> st.SearchStrategy[str]:
    return st.lists(st.one_of(st.sampled_from(alphabet), escapes), min_size=min_size, max_size=10).map(
        "".join
    )


labels = st.text(string.ascii_lowercase + string.digits + "-", min_size=1, max_size=8)
hosts = st.one_of(
    st.lists(labels, min_size=1, max_size=3).map(".".join),
    st.tuples(*[st.integers(0, 255)] * 4).map(lambda t: ".".join(map(str, t))),
    st.sampled_from(["[2001:db8::1]", "[::1]", "[fe80::a:b:c]"]),
)
ports = st.one_of(st.none(), st.integers(1, 65535))
uri_params = st.dictionaries(
    lower_names, st.one_of(st.none(), chars_or_escapes(UNRESERVED + "[]/:&+$")), max_size=3
)


@st.composite
def sip_uris(draw: st.DrawFn) -> SipUri:
    user = draw(st.one_of(st.none(), chars_or_escapes(UNRESERVED + "&=+$,;?/")))
    password = draw(st.one_of(st.none(), chars_or_escapes(UNRESERVED + "&=+$,"))) if user else None
    headers = draw(
        st.one_of(
            st.none(),
            st.lists(
                st.tuples(chars_or_escapes(UNRESERVED), chars_or_escapes(UNRESERVED + "[]/?:+$", 0)),
                min_size=1,
                max_size=2,
            ).map(lambda pairs: "&".join(f"{k}={v}" for k, v in pairs)),
        )
    )
    return SipUri(
        host=draw(hosts),
        user=user,
        port=draw(ports),
        scheme=draw(st.sampled_from(["sip", "sips"])),
        password=password,
        params=draw(uri_params),
        headers=headers,
    )


quoted_strings = st.text(
    st.characters(blacklist_categories=("Cs",), blacklist_characters="\r\n"), max_size=12
).map(lambda s: '"' + re.sub(r'(["\\\x00-\x1f\x7f])', r"\\\1", s) + '"')
gen_values = st.one_of(st.none(), tokens, quoted_strings, hosts)
header_params = st.dictionaries(
    lower_names.filter(lambda n: n != "q") | tokens.map(str.lower), gen_values, max_size=3
)
display_names = st.one_of(
    st.none(),
    st.text(
        st.characters(blacklist_categories=("Cs",), blacklist_characters="\r\n"), min_size=1, max_size=15
    ),
)


@st.composite
def name_addresses(draw: st.DrawFn, tag: bool = False) -> NameAddress:
    params = draw(header_params)
    if tag:
        params["tag"] = draw(tokens)
    return NameAddress(uri=draw(sip_uris()), display_name=draw(display_names), params=params)


@st.composite
def vias(draw: st.DrawFn) -> Via:
    params = draw(header_params)
    params["branch"] = "z9hG4bK" + draw(tokens)
    return Via(
        transport=draw(st.sampled_from(["UDP", "TCP", "TLS", "SCTP", "WS"])),
        host=draw(hosts),
        port=draw(ports),
        params=params,
    )


WORD = TOKEN_CHARS + '()<>:\\"/[]?{}'
call_ids = st.tuples(
    st.text(WORD, min_size=1, max_size=20), st.one_of(st.none(), st.text(WORD, min_size=1, max_size=10))
).map(lambda t: t[0] if t[1] is None else f"{t[0]}@{t[1]}")
# Values of extension headers: any text without control characters, trimmed (the parser trims).
free_values = st.text(st.characters(blacklist_categories=("Cs", "Cc")), max_size=30).map(str.strip)
extension_headers = st.lists(
    st.tuples(
        st.text(string.ascii_letters + string.digits + "-", min_size=1, max_size=10).map(lambda s: "X-" + s),
        free_values,
    ),
    max_size=5,
)


@st.composite
def common_headers(draw: st.DrawFn, method: str) -> list[tuple[str, str]]:
    via_values = [str(v) for v in draw(st.lists(vias(), min_size=1, max_size=3))]
    # Vias as separate fields or comma-combined in one (§7.3.1): the same message either way.
    via_fields = [", ".join(via_values)] if draw(st.booleans()) else via_values
    fields = [("Via", v) for v in via_fields]
    fields += [
        ("From", str(draw(name_addresses(tag=True)))),
        ("To", str(draw(name_addresses()))),
        ("Call-ID", draw(call_ids)),
        ("CSeq", f"{draw(st.integers(0, 2**31 - 1))} {method}"),
        ("Max-Forwards", str(draw(st.integers(0, 255)))),
    ]
    if draw(st.booleans()):
        fields.append(
            ("Contact", ", ".join(str(c) for c in draw(st.lists(name_addresses(), min_size=1, max_size=2))))
        )
    fields += draw(extension_headers)
    return draw(st.permutations(fields))


@st.composite
def requests(draw: st.DrawFn) -> Request:
    method = draw(st.one_of(st.sampled_from(["INVITE", "ACK", "BYE", "OPTIONS", "INFO", "CANCEL"]), tokens))
    uri = draw(sip_uris().map(lambda u: SipUri(u.host, u.user, u.port, u.scheme, u.password, u.params, None)))
    body = draw(st.binary(max_size=200))
    fields = draw(common_headers(method))
    fields.insert(draw(st.integers(0, len(fields))), ("Content-Length", str(len(body))))
    return Request(method, uri, Headers(fields), body)


@st.composite
def responses(draw: st.DrawFn) -> Response:
    reason = draw(st.text(st.characters(blacklist_categories=("Cs", "Cc")), max_size=20))
    body = draw(st.binary(max_size=200))
    fields = draw(common_headers(draw(tokens)))
    fields.append(("Content-Length", str(len(body))))
    return Response(draw(st.integers(100, 699)), reason, Headers(fields), body)


messages = st.one_of(requests(), responses())

# --- mutation of real messages ----------------------------------------------------------------------------

INTERESTING = [
    b"\r\n",
    b"\n",
    b"\r",
    b" ",
    b"\t",
    b":",
    b";",
    b",",
    b"<",
    b">",
    b'"',
    b"\\",
    b"\x00",
    b"%",
    b"@",
    b"=",
    b"/",
    b"[",
    b"]",
    b"0",
    b"9" * 12,
    b"SIP/2.0",
    b"\r\n\r\n",
    b"\xff",
    b"\xc3",
    b"Content-Length: 99\r\n",
    b"l: -1\r\n",
    b"Via: ;;\r\n",
    b" folded\r\n",
    "²".encode(),
]


@st.composite
def mutated(draw: st.DrawFn, bases: list[bytes]) -> bytes:
    data = bytearray(draw(st.one_of(st.sampled_from(bases), messages.map(lambda m: m.to_bytes()))))
    for _ in range(draw(st.integers(1, 4))):
        kind = draw(st.sampled_from(["flip", "truncate", "duplicate", "insert", "delete", "replace"]))
        if not data:
            break
        at = draw(st.integers(0, len(data) - 1))
        if kind == "flip":
            data[at] ^= 1 << draw(st.integers(0, 7))
        elif kind == "truncate":
            del data[at:]
        elif kind == "duplicate":
            end = draw(st.integers(at, min(len(data), at + 200)))
            data[at:at] = data[at:end] * draw(st.integers(1, 3))
        elif kind == "insert":
            data[at:at] = draw(st.sampled_from(INTERESTING))
        elif kind == "delete":
            del data[at : at + draw(st.integers(1, 20))]
        else:
            data[at : at + 1] = draw(st.sampled_from(INTERESTING))
    return bytes(data)


def check_outcome(data: bytes, *, stream: bool = False) -> None:
    """The contract of parse_message for any input: a message that round-trips, or a SipParseError that
    names a fault and whose answer (if any) can be sent."""
    try:
        message = parse_message(data, stream=stream)
    except SipParseError as error:
        assert isinstance(error.reason, str) and error.reason
        assert error.status in (400, 413, 416, 505, 513)
        answer = error_response(error)
        if answer is not None:
            wire = answer.to_bytes()
            line = wire.split(b"\r\n", 1)[0]
            assert not re.search(rb"[\x00-\x1f\x7f]", line)
            assert answer.status == error.status
        return
    # Accepted: every typed view works and serialising gives back the same message.
    assert message.headers.get("Content-Length") == str(len(message.body))
    message.cseq, message.from_, message.to, message.vias, message.top_via  # noqa: B018
    if isinstance(message, Request):
        message.request_uri  # noqa: B018
    again = parse_message(message.to_bytes())
    assert again == message


# --- properties -------------------------------------------------------------------------------------------


@FAST
@given(st.binary(max_size=3000))
def test_any_bytes_raise_only_sip_parse_error(data: bytes) -> None:
    check_outcome(data)
    check_outcome(data, stream=True)


@MUTATED
@given(mutated(ALL_FIXTURES))
def test_mutated_messages_raise_only_sip_parse_error(data: bytes) -> None:
    check_outcome(data)
    check_outcome(data, stream=True)


@FAST
@given(st.sampled_from(VALID_FIXTURES), st.data())
def test_every_truncation_of_a_valid_message_is_handled(data: bytes, draw: st.DataObject) -> None:
    cut = draw.draw(st.integers(0, len(data)))
    check_outcome(data[:cut])


@FAST
@given(
    st.lists(
        st.sampled_from(INTERESTING + [b"a", b"A", b"INVITE ", b"sip:", b"Via: ", b"To: "]), max_size=60
    ).map(b"".join)
)
def test_token_soup_is_handled(data: bytes) -> None:
    check_outcome(data)


@GENERATED
@given(messages)
def test_generated_messages_round_trip(message: Request | Response) -> None:
    assert parse_message(message.to_bytes()) == message
    assert parse_message(message.to_bytes(), stream=True) == message


@MUTATED
@given(sip_uris())
def test_uris_round_trip(uri: SipUri) -> None:
    assert SipUri.parse(str(uri)) == uri


@MUTATED
@given(name_addresses(tag=True))
def test_name_addresses_round_trip(address: NameAddress) -> None:
    assert NameAddress.parse(str(address)) == address


@FAST
@given(vias())
def test_vias_round_trip(via: Via) -> None:
    assert Via.parse(str(via)) == via


@settings(GENERATED, max_examples=40)
@given(st.lists(messages, min_size=1, max_size=3), st.data())
def test_framer_cuts_generated_streams_at_any_chunking(
    batch: list[Request | Response], data: st.DataObject
) -> None:
    wire = [m.to_bytes() for m in batch]
    stream = b"".join(wire)
    cuts = sorted(data.draw(st.lists(st.integers(0, len(stream)), max_size=8)))
    framer = StreamFramer()
    got: list[bytes] = []
    for start, end in zip([0, *cuts], [*cuts, len(stream)], strict=True):
        got.extend(framer.feed(stream[start:end]))
    assert got == wire
    assert [parse_message(raw, stream=True) for raw in got] == batch


@FAST
@given(
    st.lists(
        st.one_of(
            st.binary(max_size=500),
            st.sampled_from(ALL_FIXTURES).map(lambda m: m[:400]),
            st.sampled_from(ALL_FIXTURES),
        ),
        max_size=6,
    )
)
def test_framer_raises_only_framing_error_and_stays_bounded(chunks: list[bytes]) -> None:
    framer = StreamFramer()
    for chunk in chunks:
        try:
            framed = framer.feed(chunk)
        except FramingError:
            return
        assert framer.buffered <= MAX_MESSAGE_BYTES + len(chunk)
        for raw in framed:
            check_outcome(raw, stream=True)
