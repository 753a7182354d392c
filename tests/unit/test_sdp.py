"""Tests of SDP parsing and serialising (RFC 4566) and offer/answer (RFC 3264) for PCMU, PCMA and
telephone-event, including the SDP that SIPp and baresip send."""

from __future__ import annotations

import string

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tonebridge.sip.sdp import (
    Connection,
    MediaDescription,
    NegotiatedMedia,
    NoCommonCodec,
    Origin,
    SdpError,
    SessionDescription,
    apply_answer,
    build_offer,
    negotiate,
)


def sdp(*lines: str) -> bytes:
    return ("\r\n".join(lines) + "\r\n").encode()


# SIPp 3.6 built-in `uas`/`uac` scenarios: one PCMU stream, rtpmap written out.
SIPP = sdp(
    "v=0",
    "o=user1 53655765 2353687637 IN IP4 127.0.0.1",
    "s=-",
    "c=IN IP4 127.0.0.1",
    "t=0 0",
    "m=audio 6000 RTP/AVP 0",
    "a=rtpmap:0 PCMU/8000",
)

# SIPp `uac_pcap`: PCMA then telephone-event.
SIPP_PCAP = sdp(
    "v=0",
    "o=user1 53655765 2353687637 IN IP4 127.0.0.1",
    "s=-",
    "c=IN IP4 127.0.0.1",
    "t=0 0",
    "m=audio 6002 RTP/AVP 8 101",
    "a=rtpmap:8 PCMA/8000",
    "a=rtpmap:101 telephone-event/8000",
    "a=fmtp:101 0-11,16",
)

# The shape of a baresip offer: opus first, several codecs, telephone-event 0-15, extra attributes.
BARESIP = sdp(
    "v=0",
    "o=- 3812405934 3812405935 IN IP4 127.0.0.1",
    "s=-",
    "c=IN IP4 127.0.0.1",
    "t=0 0",
    "m=audio 10130 RTP/AVP 96 9 0 8 101",
    "b=AS:101",
    "a=rtpmap:96 opus/48000/2",
    "a=fmtp:96 stereo=1;sprop-stereo=1;maxaveragebitrate=64000",
    "a=rtpmap:9 G722/8000",
    "a=rtpmap:0 PCMU/8000",
    "a=rtpmap:8 PCMA/8000",
    "a=rtpmap:101 telephone-event/8000",
    "a=fmtp:101 0-15",
    "a=sendrecv",
    "a=label:1",
    "a=ssrc:1732847582 cname:5c1f0f6e-3d42-4b8a-9a6e-1c5e3f1a2b7d",
    "a=rtcp-rsize",
    "a=ptime:20",
)


def offer_with(*media_lines: str, session: tuple[str, ...] = ()) -> SessionDescription:
    return SessionDescription.parse(
        sdp(
            "v=0",
            "o=peer 1 1 IN IP4 192.0.2.50",
            "s=-",
            "c=IN IP4 192.0.2.50",
            "t=0 0",
            *session,
            *media_lines,
        )
    )


# --- parsing -----------------------------------------------------------------------------------------


def test_parse_sipp_sdp() -> None:
    session = SessionDescription.parse(SIPP)
    assert session.origin == Origin("user1", "53655765", 2353687637, "127.0.0.1")
    assert session.connection == Connection("127.0.0.1")
    (audio,) = session.media
    assert (audio.media, audio.port, audio.proto, audio.formats) == ("audio", 6000, "RTP/AVP", ["0"])
    assert audio.rtpmap == {0: "PCMU/8000"}
    assert session.direction_of(audio) == "sendrecv"
    assert SessionDescription.parse(session.serialize()) == session


def test_parse_baresip_offer() -> None:
    session = SessionDescription.parse(BARESIP)
    (audio,) = session.media
    assert audio.payload_types == [96, 9, 0, 8, 101]
    assert audio.fmtp == {96: "stereo=1;sprop-stereo=1;maxaveragebitrate=64000", 101: "0-15"}
    assert audio.direction == "sendrecv" and audio.ptime == 20
    assert audio.other == [("b", "AS:101")]
    assert ("rtcp-rsize", None) in audio.attributes and ("label", "1") in audio.attributes
    assert [audio.codec_of(pt) for pt in audio.payload_types] == [None, None, "PCMU", "PCMA", None]
    assert audio.telephone_event() == 101
    assert SessionDescription.parse(session.serialize()) == session


def test_parse_accepts_bytes_str_and_bare_lf() -> None:
    text = SIPP.decode()
    assert SessionDescription.parse(text) == SessionDescription.parse(SIPP)
    assert SessionDescription.parse(text.replace("\r\n", "\n")) == SessionDescription.parse(SIPP)
    assert SessionDescription.parse(SIPP + b"\r\n") == SessionDescription.parse(SIPP)
    cr_only = SessionDescription.parse(text.replace("\r\n", "\r"))
    assert cr_only == SessionDescription.parse(SIPP)
    assert SessionDescription.parse(cr_only.serialize()) == cr_only


def test_static_payload_types_need_no_rtpmap() -> None:
    (audio,) = offer_with("m=audio 4000 RTP/AVP 8 0").media
    assert [audio.codec_of(pt) for pt in audio.payload_types] == ["PCMA", "PCMU"]


def test_session_and_media_level_attributes() -> None:
    session = offer_with(
        "m=audio 4000 RTP/AVP 0",
        "c=IN IP4 192.0.2.99",
        "a=recvonly",
        "m=audio 4002 RTP/AVP 0",
        session=("a=sendonly", "a=tool:x"),
    )
    first, second = session.media
    assert session.direction == "sendonly" and session.attributes == [("tool", "x")]
    assert session.direction_of(first) == "recvonly" and session.direction_of(second) == "sendonly"
    assert session.connection_of(first) == Connection("192.0.2.99")
    assert session.connection_of(second) == Connection("192.0.2.50")
    assert SessionDescription.parse(session.serialize()) == session


@pytest.mark.parametrize(
    ("body", "fault"),
    [
        (b"", "empty SDP"),
        (b"o=x 1 1 IN IP4 1.2.3.4\r\n", "must start with v="),
        (b"v=1\r\n", "unsupported SDP version"),
        (sdp("v=0", "s=-", "c=IN IP4 1.2.3.4", "t=0 0"), "no o= line"),
        (sdp("v=0", "o=x 1 IN IP4 1.2.3.4"), "o= needs"),
        (sdp("v=0", "o=x 1 1 IN IP4 1.2.3.4", "x=what"), "unknown line type 'x'"),
        (sdp("v=0", "o=x 1 1 IN IP4 1.2.3.4", "garbage"), "not a <type>=<value> line"),
        (sdp("v=0", "o=x 1 1 IN IP4 1.2.3.4", "c=IN IP9 1.2.3.4"), "c= needs"),
        (sdp("v=0", "o=x 1 1 IN IP4 1.2.3.4", "m=audio 4000 RTP/AVP 0"), "has no c= line"),
        (sdp("v=0", "o=x 1 1 IN IP4 1.2.3.4", "c=IN IP4 1.2.3.4", "m=audio 70000 RTP/AVP 0"), "invalid port"),
        (
            sdp("v=0", "o=x 1 1 IN IP4 1.2.3.4", "c=IN IP4 1.2.3.4", "m=audio 4000 RTP/AVP"),
            "at least one format",
        ),
        (sdp("v=0", "o=x 1 1 IN IP4 1.2.3.4", "c=IN IP4 1.2.3.4", "m=audio 4000 RTP/AVP 128"), "not 0-127"),
        (
            sdp(
                "v=0",
                "o=x 1 1 IN IP4 1.2.3.4",
                "c=IN IP4 1.2.3.4",
                "m=audio 4000 RTP/AVP 0",
                "a=rtpmap:0 PCMU",
            ),
            "a=rtpmap needs",
        ),
        (
            sdp(
                "v=0", "o=x 1 1 IN IP4 1.2.3.4", "c=IN IP4 1.2.3.4", "m=audio 4000 RTP/AVP 0", "a=ptime:soon"
            ),
            "a=ptime needs",
        ),
        (
            sdp("v=0", "o=x 1 1 IN IP4 1.2.3.4", "c=IN IP4 1.2.3.4", "m=audio 4000 RTP/AVP 0", "t=0 0"),
            "t= is not allowed inside a media section",
        ),
        (b"v=0\r\no=\xff\r\n", "not valid UTF-8"),
    ],
)
def test_parse_errors_say_what_is_wrong(body: bytes, fault: str) -> None:
    with pytest.raises(SdpError, match=fault):
        SessionDescription.parse(body)


def test_parse_error_names_the_line() -> None:
    with pytest.raises(SdpError, match=r"SDP line 6 \('m=audio x RTP/AVP 0'\): invalid port"):
        SessionDescription.parse(SIPP.replace(b"6000", b"x"))


# --- offers ------------------------------------------------------------------------------------------


def test_build_offer_default() -> None:
    offer = build_offer("192.0.2.1", 40000, session_id=77)
    assert offer.serialize() == sdp(
        "v=0",
        "o=tonebridge 77 0 IN IP4 192.0.2.1",
        "s=tonebridge",
        "c=IN IP4 192.0.2.1",
        "t=0 0",
        "m=audio 40000 RTP/AVP 0 8 101",
        "a=rtpmap:0 PCMU/8000",
        "a=rtpmap:8 PCMA/8000",
        "a=rtpmap:101 telephone-event/8000",
        "a=fmtp:101 0-16",
        "a=ptime:20",
        "a=sendrecv",
    )
    assert SessionDescription.parse(offer.serialize()) == offer


def test_build_offer_options() -> None:
    offer = build_offer(
        "2001:db8::5",
        40002,
        codecs=("PCMA",),
        telephone_event_pt=None,
        direction="sendonly",
        session_id="9",
        version=4,
    )
    (audio,) = offer.media
    assert audio.formats == ["8"] and audio.telephone_event() is None and audio.direction == "sendonly"
    assert offer.connection == Connection("2001:db8::5", "IP6")
    assert (offer.origin.session_id, offer.session_version, offer.origin.addrtype) == ("9", 4, "IP6")
    assert build_offer("192.0.2.1", 1, codecs=["pcma", "PCMU"], telephone_event_pt=100).media[0].formats == [
        "8",
        "0",
        "100",
    ]
    for bad in ({"codecs": ("G729",)}, {"codecs": ()}, {"direction": "both"}, {"telephone_event_pt": 8}):
        with pytest.raises(ValueError):
            build_offer("192.0.2.1", 4000, **bad)  # type: ignore[arg-type]


def test_session_ids_differ_and_versions_increment() -> None:
    first = build_offer("192.0.2.1", 40000)
    assert first.origin.session_id != build_offer("192.0.2.1", 40000).origin.session_id
    second = first.next_version()
    assert second.origin.session_id == first.origin.session_id
    assert (first.session_version, second.session_version, second.next_version().session_version) == (0, 1, 2)
    assert first.media == second.media and first.media is not second.media


# --- answers (we are the answerer) ---------------------------------------------------------------------


def test_answer_sipp() -> None:
    answer, media = negotiate(SessionDescription.parse(SIPP), "127.0.0.1", 30000, session_id=5)
    assert media == NegotiatedMedia("127.0.0.1", 6000, "PCMU", 0, None, 20, "sendrecv")
    assert media.local_sends and media.local_receives
    (audio,) = answer.media
    assert (audio.port, audio.formats, audio.rtpmap, audio.fmtp) == (30000, ["0"], {0: "PCMU/8000"}, {})
    assert answer.connection == Connection("127.0.0.1")
    assert SessionDescription.parse(answer.serialize()) == answer


def test_answer_sipp_pcap_pcma_and_events() -> None:
    answer, media = negotiate(SessionDescription.parse(SIPP_PCAP), "127.0.0.1", 30002)
    assert (media.codec, media.payload_type, media.telephone_event_pt) == ("PCMA", 8, 101)
    assert answer.media[0].formats == ["8", "101"]
    assert answer.media[0].fmtp == {101: "0-11,16"}


def test_answer_baresip_picks_first_offered_g711_and_keeps_event_pt() -> None:
    answer, media = negotiate(SessionDescription.parse(BARESIP), "127.0.0.1", 30004)
    assert media == NegotiatedMedia("127.0.0.1", 10130, "PCMU", 0, 101, 20, "sendrecv")
    (audio,) = answer.media
    assert audio.formats == ["0", "101"]
    assert audio.rtpmap == {0: "PCMU/8000", 101: "telephone-event/8000"}
    assert audio.fmtp == {101: "0-15"}
    assert audio.direction == "sendrecv" and audio.ptime == 20
    text = answer.serialize().decode()
    assert "opus" not in text and "G722" not in text


def test_answer_respects_our_supported_list() -> None:
    _, media = negotiate(SessionDescription.parse(BARESIP), "127.0.0.1", 30004, supported=("PCMA",))
    assert (media.codec, media.payload_type) == ("PCMA", 8)


def test_telephone_event_only_when_offered_and_wanted() -> None:
    answer, media = negotiate(SessionDescription.parse(BARESIP), "127.0.0.1", 1, telephone_event=False)
    assert media.telephone_event_pt is None and answer.media[0].formats == ["0"]
    offer = offer_with(
        "m=audio 4000 RTP/AVP 0 96 97",
        "a=rtpmap:96 telephone-event/48000",
        "a=rtpmap:97 telephone-event/8000",
    )
    answer, media = negotiate(offer, "192.0.2.1", 1)
    assert media.telephone_event_pt == 97 and answer.media[0].formats == ["0", "97"]
    answer, media = negotiate(
        offer_with("m=audio 4000 RTP/AVP 0 96", "a=rtpmap:96 telephone-event/48000"), "192.0.2.1", 1
    )
    assert media.telephone_event_pt is None and answer.media[0].formats == ["0"]


def test_dynamic_payload_type_for_g711_is_kept() -> None:
    _, media = negotiate(offer_with("m=audio 4000 RTP/AVP 98 0", "a=rtpmap:98 pcma/8000"), "192.0.2.1", 1)
    assert (media.codec, media.payload_type) == ("PCMA", 98)


@pytest.mark.parametrize(
    ("offered", "answered"),
    [
        ("sendrecv", "sendrecv"),
        ("sendonly", "recvonly"),
        ("recvonly", "sendonly"),
        ("inactive", "inactive"),
    ],
)
def test_answer_direction_mirrors_offer(offered: str, answered: str) -> None:
    for session, media_lines in (((f"a={offered}",), ()), ((), (f"a={offered}",))):
        answer, media = negotiate(
            offer_with("m=audio 4000 RTP/AVP 0", *media_lines, session=session), "192.0.2.1", 1
        )
        assert answer.media[0].direction == answered == media.direction


def test_direction_policy_limits_what_we_do() -> None:
    answer, media = negotiate(
        offer_with("m=audio 4000 RTP/AVP 0"), "192.0.2.1", 1, direction_policy="sendonly"
    )
    assert (answer.media[0].direction, media.local_sends, media.local_receives) == ("sendonly", True, False)
    _, media = negotiate(
        offer_with("m=audio 4000 RTP/AVP 0", "a=sendonly"), "192.0.2.1", 1, direction_policy="sendonly"
    )
    assert media.direction == "inactive"
    with pytest.raises(ValueError):
        negotiate(offer_with("m=audio 4000 RTP/AVP 0"), "192.0.2.1", 1, direction_policy="upward")


def test_old_style_hold_means_we_do_not_send() -> None:
    offer = offer_with("m=audio 4000 RTP/AVP 0", "c=IN IP4 0.0.0.0")
    answer, media = negotiate(offer, "192.0.2.1", 1)
    assert media.remote_address == "0.0.0.0" and not media.local_sends and media.local_receives
    assert answer.media[0].direction == "recvonly"


def test_media_level_connection_wins() -> None:
    _, media = negotiate(offer_with("m=audio 4000 RTP/AVP 0", "c=IN IP4 198.51.100.7/127"), "192.0.2.1", 1)
    assert media.remote_address == "198.51.100.7"


def test_non_audio_and_extra_streams_are_declined_in_place() -> None:
    offer = offer_with(
        "m=video 5000 RTP/AVP 31 34",
        "a=rtpmap:31 H261/90000",
        "m=audio 0 RTP/AVP 0",
        "m=audio 4000 RTP/SAVP 0",
        "m=audio 4002 RTP/AVP 9 8",
        "m=image 6000 udptl t38",
        "m=audio 4004 RTP/AVP 0",
    )
    answer, media = negotiate(offer, "192.0.2.1", 30000)
    assert len(answer.media) == len(offer.media)
    assert [(m.media, m.port, m.proto, m.formats) for m in answer.media] == [
        ("video", 0, "RTP/AVP", ["31", "34"]),
        ("audio", 0, "RTP/AVP", ["0"]),
        ("audio", 0, "RTP/SAVP", ["0"]),
        ("audio", 30000, "RTP/AVP", ["8"]),
        ("image", 0, "udptl", ["t38"]),
        ("audio", 0, "RTP/AVP", ["0"]),
    ]
    assert (media.remote_port, media.codec) == (4002, "PCMA")
    assert SessionDescription.parse(answer.serialize()) == answer


def test_no_common_codec() -> None:
    offer = offer_with("m=audio 4000 RTP/AVP 96 9", "a=rtpmap:96 opus/48000/2", "m=video 5000 RTP/AVP 96")
    with pytest.raises(NoCommonCodec, match=r"offered: opus/48000/2, G722/8000"):
        negotiate(offer, "192.0.2.1", 1)
    with pytest.raises(NoCommonCodec):
        negotiate(SessionDescription.parse(SIPP), "127.0.0.1", 1, supported=("PCMA",))
    with pytest.raises(NoCommonCodec, match="no audio stream"):
        negotiate(offer_with(), "192.0.2.1", 1)
    with pytest.raises(NoCommonCodec):  # PCMU at 16 kHz is not G.711
        negotiate(offer_with("m=audio 4000 RTP/AVP 96", "a=rtpmap:96 PCMU/16000"), "192.0.2.1", 1)


def test_ptime() -> None:
    _, media = negotiate(offer_with("m=audio 4000 RTP/AVP 8", "a=ptime:30"), "192.0.2.1", 1)
    assert media.ptime_ms == 30
    _, media = negotiate(offer_with("m=audio 4000 RTP/AVP 8", session=("a=ptime:40",)), "192.0.2.1", 1)
    assert media.ptime_ms == 40
    answer, media = negotiate(offer_with("m=audio 4000 RTP/AVP 8", "a=ptime:20.0"), "192.0.2.1", 1)
    assert media.ptime_ms == 20 and answer.media[0].ptime == 20


# --- answers to our offers (we are the offerer) ----------------------------------------------------------


def answer_with(*media_lines: str, session: tuple[str, ...] = ()) -> SessionDescription:
    return SessionDescription.parse(
        sdp(
            "v=0",
            "o=peer 9 9 IN IP4 192.0.2.60",
            "s=-",
            "c=IN IP4 192.0.2.60",
            "t=0 0",
            *session,
            *media_lines,
        )
    )


def test_apply_answer_round_trip_with_our_own_negotiate() -> None:
    offer = build_offer("192.0.2.1", 40000)
    answer, theirs = negotiate(
        SessionDescription.parse(offer.serialize()), "192.0.2.2", 41000, supported=("PCMA", "PCMU")
    )
    ours = apply_answer(offer, SessionDescription.parse(answer.serialize()))
    assert ours == NegotiatedMedia("192.0.2.2", 41000, "PCMU", 0, 101, 20, "sendrecv")
    assert theirs.codec == ours.codec and theirs.telephone_event_pt == ours.telephone_event_pt


def test_apply_answer_uses_the_answers_event_pt_and_first_codec() -> None:
    offer = build_offer("192.0.2.1", 40000)
    media = apply_answer(
        offer, answer_with("m=audio 5000 RTP/AVP 8 0 100", "a=rtpmap:100 telephone-event/8000", "a=ptime:30")
    )
    assert (media.codec, media.payload_type, media.telephone_event_pt, media.ptime_ms) == ("PCMA", 8, 100, 30)
    media = apply_answer(
        build_offer("192.0.2.1", 40000, telephone_event_pt=None),
        answer_with("m=audio 5000 RTP/AVP 0 101", "a=rtpmap:101 telephone-event/8000"),
    )
    assert media.telephone_event_pt is None


@pytest.mark.parametrize(
    ("ours", "answered", "result"),
    [
        ("sendrecv", "sendrecv", "sendrecv"),
        ("sendrecv", "recvonly", "sendonly"),
        ("sendrecv", "sendonly", "recvonly"),
        ("sendrecv", "inactive", "inactive"),
        ("sendonly", "recvonly", "sendonly"),
        ("sendonly", "sendrecv", "sendonly"),
        ("inactive", "inactive", "inactive"),
    ],
)
def test_apply_answer_direction(ours: str, answered: str, result: str) -> None:
    media = apply_answer(
        build_offer("192.0.2.1", 40000, direction=ours),
        answer_with("m=audio 5000 RTP/AVP 0", f"a={answered}"),
    )
    assert media.direction == result


def test_apply_answer_hold_address() -> None:
    media = apply_answer(
        build_offer("192.0.2.1", 40000), answer_with("m=audio 5000 RTP/AVP 0", "c=IN IP4 0.0.0.0")
    )
    assert not media.local_sends and media.local_receives


def test_apply_answer_refusals() -> None:
    offer = build_offer("192.0.2.1", 40000, codecs=("PCMU",))
    with pytest.raises(NoCommonCodec, match="accepts no audio stream"):
        apply_answer(offer, answer_with("m=audio 0 RTP/AVP 0"))
    with pytest.raises(NoCommonCodec):
        apply_answer(offer, answer_with("m=audio 5000 RTP/AVP 8"))
    with pytest.raises(SdpError, match="2 m= lines for the offer's 1"):
        apply_answer(offer, answer_with("m=audio 5000 RTP/AVP 0", "m=audio 5002 RTP/AVP 0"))
    with pytest.raises(SdpError, match="turned a audio stream into video"):
        apply_answer(offer, answer_with("m=video 5000 RTP/AVP 0"))


# --- properties ------------------------------------------------------------------------------------------

SETTINGS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
words = st.text(string.ascii_letters + string.digits + "-_.", min_size=1, max_size=8)
addresses = st.one_of(
    st.tuples(*[st.integers(0, 255)] * 4).map(lambda t: ".".join(map(str, t))),
    st.sampled_from(["2001:db8::1", "::1"]),
)
directions = st.one_of(st.none(), st.sampled_from(["sendrecv", "sendonly", "recvonly", "inactive"]))
attributes = st.lists(
    st.tuples(
        words, st.one_of(st.none(), st.text(st.characters(blacklist_categories=("Cs", "Cc")), max_size=12))
    ),
    max_size=3,
).map(
    lambda attrs: [
        (n, v)
        for n, v in attrs
        if n not in ("sendrecv", "sendonly", "recvonly", "inactive", "rtpmap", "fmtp", "ptime")
    ]
)


@st.composite
def media_descriptions(draw: st.DrawFn) -> MediaDescription:
    pts = draw(st.lists(st.integers(0, 127), min_size=1, max_size=5, unique=True))
    rtpmap = {
        pt: draw(st.sampled_from(["PCMU/8000", "PCMA/8000", "telephone-event/8000", "opus/48000/2"]))
        for pt in pts
        if draw(st.booleans())
    }
    fmtp = {pt: draw(words) for pt in pts if draw(st.booleans())}
    connection = draw(st.one_of(st.none(), addresses.map(Connection.for_address)))
    return MediaDescription(
        draw(st.sampled_from(["audio", "video"])),
        draw(st.integers(0, 65535)),
        draw(st.sampled_from(["RTP/AVP", "RTP/AVPF"])),
        [str(pt) for pt in pts],
        rtpmap,
        fmtp,
        draw(directions),
        draw(st.one_of(st.none(), st.integers(1, 200))),
        connection,
        attributes=draw(attributes),
    )


@st.composite
def descriptions(draw: st.DrawFn) -> SessionDescription:
    address = draw(addresses)
    origin = Origin(
        draw(words),
        str(draw(st.integers(0, 2**63))),
        draw(st.integers(0, 2**32)),
        address,
        Connection.for_address(address).addrtype,
    )
    return SessionDescription(
        origin,
        draw(words),
        Connection.for_address(address),
        draw(st.lists(media_descriptions(), max_size=3)),
        draw(directions),
        attributes=draw(attributes),
    )


@SETTINGS
@given(descriptions())
def test_generated_descriptions_round_trip(session: SessionDescription) -> None:
    assert SessionDescription.parse(session.serialize()) == session


@SETTINGS
@given(descriptions(), st.booleans())
def test_negotiate_keeps_shape_and_payload_types(offer: SessionDescription, events: bool) -> None:
    try:
        answer, media = negotiate(offer, "192.0.2.9", 30000, telephone_event=events)
    except NoCommonCodec:
        assert not any(
            m.media == "audio" and m.port and any(m.codec_of(pt) for pt in m.payload_types)
            for m in offer.media
        )
        return
    assert len(answer.media) == len(offer.media)
    accepted = [(o, a) for o, a in zip(offer.media, answer.media, strict=True) if a.port]
    assert len(accepted) == 1
    offered, answered = accepted[0]
    assert answered.media == "audio" and offered.media == "audio"
    assert set(answered.payload_types) <= set(offered.payload_types)
    assert answered.payload_types[0] == media.payload_type
    if media.telephone_event_pt is not None:
        assert events and offered.rtpmap[media.telephone_event_pt] == "telephone-event/8000"
    assert all(a.port == 0 for o, a in zip(offer.media, answer.media, strict=True) if a is not answered)
    reparsed = SessionDescription.parse(answer.serialize())
    assert apply_answer(offer, reparsed).payload_type == media.payload_type


@SETTINGS
@given(
    st.one_of(
        st.binary(max_size=400),
        st.text(max_size=400),
        st.lists(
            st.sampled_from(SIPP.split(b"\r\n") + BARESIP.split(b"\r\n") + [b"m=", b"a=", b"\xff"]),
            max_size=25,
        ).map(b"\r\n".join),
    )
)
def test_parse_raises_only_sdp_error(data: bytes | str) -> None:
    try:
        session = SessionDescription.parse(data)
    except SdpError:
        return
    assert SessionDescription.parse(session.serialize()) == session
