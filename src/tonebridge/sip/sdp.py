"""SDP for call legs: parse and serialise session descriptions (RFC 4566) and run the offer/answer model
(RFC 3264) for G.711 audio (PCMU, PCMA) with RFC 4733 telephone-event.

Sans-IO and pure: `negotiate` turns a remote offer into our answer plus the `NegotiatedMedia` a media leg
is configured with; `apply_answer` does the same on the offering side. Anything we cannot use is declined
the RFC 3264 way (the stream's port set to 0), and `NoCommonCodec` (the caller answers 488) is raised only
when no audio stream at all can be used.
"""

from __future__ import annotations

import copy
import re
import secrets
from dataclasses import dataclass, field

from tonebridge.media.g711 import CODEC_OF_PAYLOAD_TYPE, CODECS

DIRECTIONS = ("sendrecv", "sendonly", "recvonly", "inactive")
STATIC_PAYLOAD_TYPES = CODEC_OF_PAYLOAD_TYPE
DEFAULT_PTIME_MS = 20
# RFC 3551 §6 static audio payload types, to name what an offer had when nothing matched.
_STATIC_NAMES = {
    0: "PCMU/8000",
    3: "GSM/8000",
    4: "G723/8000",
    5: "DVI4/8000",
    6: "DVI4/16000",
    7: "LPC/8000",
    8: "PCMA/8000",
    9: "G722/8000",
    10: "L16/44100/2",
    11: "L16/44100",
    12: "QCELP/8000",
    13: "CN/8000",
    14: "MPA/90000",
    15: "G728/8000",
    16: "DVI4/11025",
    17: "DVI4/22050",
    18: "G729/8000",
}
# RFC 4566 §5: the order lines must appear in; the letters a parser knows.
_SESSION_ORDER = "vosiuepcbtrzkam"
_MEDIA_ORDER = "micbka"
_TOKEN_RE = re.compile(r"[A-Za-z0-9\-.!%*_+`'~]+")


class SdpError(ValueError):
    """A session description that cannot be read or used; the message says which line and why."""


class NoCommonCodec(Exception):
    """No audio stream of the SDP has a codec in common with ours: the caller answers 488 (RFC 3264 §6)."""


@dataclass
class Connection:
    """`c=IN IP4 192.0.2.1` (RFC 4566 §5.7). `address` keeps any `/ttl/count` suffix as written."""

    address: str
    addrtype: str = "IP4"
    nettype: str = "IN"

    @classmethod
    def for_address(cls, address: str) -> Connection:
        return cls(address, "IP6" if ":" in address else "IP4")

    @property
    def host(self) -> str:
        return self.address.split("/")[0]

    @property
    def is_hold(self) -> bool:
        """0.0.0.0: the RFC 2543 way of saying "send me nothing" (RFC 3264 §8.4)."""
        return self.host == "0.0.0.0"

    def __str__(self) -> str:
        return f"{self.nettype} {self.addrtype} {self.address}"


@dataclass
class Origin:
    """`o=username sess-id sess-version IN IP4 address` (RFC 4566 §5.2)."""

    username: str
    session_id: str
    version: int
    address: str
    addrtype: str = "IP4"
    nettype: str = "IN"

    def __str__(self) -> str:
        return (
            f"{self.username} {self.session_id} {self.version} {self.nettype} {self.addrtype} {self.address}"
        )


@dataclass
class MediaDescription:
    """One `m=` section. `rtpmap` and `fmtp` are keyed by payload type; `direction` and `ptime` are None
    when the section does not state them (the session's value, then sendrecv, applies)."""

    media: str
    port: int
    proto: str
    formats: list[str]
    rtpmap: dict[int, str] = field(default_factory=dict)
    fmtp: dict[int, str] = field(default_factory=dict)
    direction: str | None = None
    ptime: int | None = None
    connection: Connection | None = None
    port_count: int | None = None
    attributes: list[tuple[str, str | None]] = field(default_factory=list)
    other: list[tuple[str, str]] = field(default_factory=list)  # i=, b=, k= lines, in order

    @property
    def payload_types(self) -> list[int]:
        """The formats as RTP payload types (non-numeric formats of other protocols are skipped)."""
        return [int(f) for f in self.formats if f.isascii() and f.isdigit() and len(f) <= 3]

    def encoding(self, payload_type: int) -> str | None:
        """`NAME/rate[/channels]` for a payload type: its rtpmap, else the RFC 3551 static assignment."""
        if payload_type in self.rtpmap:
            return self.rtpmap[payload_type]
        return _STATIC_NAMES.get(payload_type)

    def codec_of(self, payload_type: int) -> str | None:
        """ "PCMU" or "PCMA" when that payload type carries G.711 at 8 kHz mono, else None."""
        encoding = self.encoding(payload_type)
        if encoding is None:
            return None
        parts = encoding.split("/")
        name = parts[0].upper()
        if name not in CODECS or len(parts) < 2 or parts[1] != "8000" or (len(parts) > 2 and parts[2] != "1"):
            return None
        return name

    def telephone_event(self, clock: str = "8000") -> int | None:
        """The payload type of telephone-event at `clock` Hz (RFC 4733 §7.1.1), if offered."""
        for payload_type in self.payload_types:
            encoding = self.rtpmap.get(payload_type, "")
            parts = encoding.split("/")
            if parts[0].lower() == "telephone-event" and len(parts) > 1 and parts[1] == clock:
                return payload_type
        return None


@dataclass
class SessionDescription:
    """A whole SDP body (RFC 4566)."""

    origin: Origin
    session_name: str = "-"
    connection: Connection | None = None
    media: list[MediaDescription] = field(default_factory=list)
    direction: str | None = None
    timing: list[tuple[str, str]] = field(default_factory=lambda: [("t", "0 0")])
    attributes: list[tuple[str, str | None]] = field(default_factory=list)
    other: list[tuple[str, str]] = field(default_factory=list)  # i= u= e= p= b= k= lines, in order

    # --- parsing -------------------------------------------------------------------------------------

    @classmethod
    def parse(cls, text: str | bytes) -> SessionDescription:
        """Parse an SDP body; raises `SdpError` naming the line and the fault."""
        if isinstance(text, (bytes, bytearray, memoryview)):
            try:
                text = bytes(text).decode("utf-8")
            except UnicodeDecodeError as exc:
                raise SdpError(f"SDP is not valid UTF-8 (byte {exc.start})") from None
        # RFC 4566 §5 asks for CRLF; a bare LF or CR is accepted as most parsers do. Blank lines are skipped.
        lines = [(n, line) for n, line in enumerate(re.split(r"\r\n|\r|\n", text), 1) if line.strip()]
        if not lines:
            raise SdpError("empty SDP")
        session: SessionDescription | None = None
        current: MediaDescription | None = None
        seen_origin = False
        for number, line in lines:
            kind, eq, value = line[:1], line[1:2], line[2:]
            where = f"SDP line {number} ({line[:40]!r})"
            if eq != "=" or not kind.isascii() or not kind.islower():
                raise SdpError(f"{where}: not a <type>=<value> line")
            if session is None:
                if kind != "v":
                    raise SdpError(f"{where}: SDP must start with v=")
                if value.strip() != "0":
                    raise SdpError(f"{where}: unsupported SDP version {value[:10]!r}")
                session = cls(origin=Origin("-", "0", 0, "0.0.0.0"), timing=[])
                continue
            if kind == "v":
                raise SdpError(f"{where}: a second v= line")
            if kind not in _SESSION_ORDER:
                raise SdpError(f"{where}: unknown line type {kind!r} (RFC 4566 §5)")
            if kind == "m":
                current = _parse_media_line(value, where)
                session.media.append(current)
            elif current is None:
                seen_origin = seen_origin or kind == "o"
                session._parse_session_line(kind, value, where)
            else:
                _parse_media_attribute_line(current, kind, value, where)
        assert session is not None
        if not seen_origin:
            raise SdpError("SDP has no o= line")
        if not session.timing:
            # t= is required (RFC 4566 §5.9) and what serialize() writes when absent: read it so, too.
            session.timing = [("t", "0 0")]
        for index, media in enumerate(session.media, 1):
            if media.port != 0 and media.connection is None and session.connection is None:
                raise SdpError(f"m= section {index} ({media.media}) has no c= line and the session has none")
        return session

    def _parse_session_line(self, kind: str, value: str, where: str) -> None:
        if kind == "o":
            parts = value.split()
            if (
                len(parts) != 6
                or not parts[1].isascii()
                or not parts[1].isdigit()
                or not parts[2].isascii()
                or not parts[2].isdigit()
                or len(parts[2]) > 20
            ):
                raise SdpError(
                    f"{where}: o= needs <username> <sess-id> <sess-version> IN <addrtype> <address>"
                )
            self.origin = Origin(parts[0], parts[1], int(parts[2]), parts[5], parts[4], parts[3])
        elif kind == "s":
            # s= is required (§5.3), but a missing or empty one costs nothing: both read as "-".
            self.session_name = value or "-"
        elif kind == "c":
            self.connection = _parse_connection(value, where)
        elif kind in "trz":
            self.timing.append((kind, value))
        elif kind == "a":
            name, value_or_none = _split_attribute(value)
            if name in DIRECTIONS and value_or_none is None:
                self.direction = name
            else:
                self.attributes.append((name, value_or_none))
        else:  # i u e p b k
            self.other.append((kind, value))

    # --- views ---------------------------------------------------------------------------------------

    def direction_of(self, media: MediaDescription) -> str:
        """The direction that applies to a stream: its own, else the session's, else sendrecv (§6)."""
        return media.direction or self.direction or "sendrecv"

    def connection_of(self, media: MediaDescription) -> Connection | None:
        return media.connection or self.connection

    @property
    def session_version(self) -> int:
        return self.origin.version

    def next_version(self) -> SessionDescription:
        """A copy for a re-offer: same session id, version one higher (RFC 3264 §8)."""
        renewed = copy.deepcopy(self)
        renewed.origin.version += 1
        return renewed

    # --- serialising ---------------------------------------------------------------------------------

    def serialize(self) -> bytes:
        """The SDP body, CRLF line ends, lines in the order RFC 4566 §5 requires."""
        lines = ["v=0", f"o={self.origin}", f"s={self.session_name or '-'}"]
        lines += [f"{k}={v}" for k, v in self.other if k in "iuep"]
        if self.connection is not None:
            lines.append(f"c={self.connection}")
        lines += [f"{k}={v}" for k, v in self.other if k == "b"]
        lines += [f"{k}={v}" for k, v in (self.timing or [("t", "0 0")])]
        lines += [f"{k}={v}" for k, v in self.other if k == "k"]
        if self.direction:
            lines.append(f"a={self.direction}")
        lines += [_format_attribute(n, v) for n, v in self.attributes]
        for media in self.media:
            lines += _media_lines(media)
        text = "\r\n".join(lines) + "\r\n"
        if any("\r" in line or "\n" in line for line in lines):
            raise SdpError("an SDP value contains CR or LF")
        return text.encode("utf-8")


def _split_attribute(value: str) -> tuple[str, str | None]:
    name, colon, rest = value.partition(":")
    return name, (rest if colon else None)


def _format_attribute(name: str, value: str | None) -> str:
    return f"a={name}" if value is None else f"a={name}:{value}"


def _parse_connection(value: str, where: str) -> Connection:
    parts = value.split()
    if len(parts) != 3 or parts[0] != "IN" or parts[1] not in ("IP4", "IP6"):
        raise SdpError(f"{where}: c= needs IN IP4|IP6 <address>")
    return Connection(parts[2], parts[1], parts[0])


def _parse_media_line(value: str, where: str) -> MediaDescription:
    parts = value.split()
    if len(parts) < 4:
        raise SdpError(f"{where}: m= needs <media> <port> <proto> and at least one format")
    media, port_text, proto, formats = parts[0], parts[1], parts[2], parts[3:]
    port_text, slash, count_text = port_text.partition("/")
    if not re.fullmatch(r"[0-9]{1,5}", port_text) or int(port_text) > 65535:
        raise SdpError(f"{where}: invalid port {port_text[:10]!r}")
    if slash and not re.fullmatch(r"[0-9]{1,5}", count_text):
        raise SdpError(f"{where}: invalid port count {count_text[:10]!r}")
    if not _TOKEN_RE.fullmatch(media) or not re.fullmatch(r"[A-Za-z0-9/\-_.]+", proto):
        raise SdpError(f"{where}: invalid media or protocol")
    if proto.upper().startswith("RTP/"):
        for fmt in formats:
            if not re.fullmatch(r"[0-9]{1,3}", fmt) or int(fmt) > 127:
                raise SdpError(f"{where}: RTP payload type {fmt[:10]!r} is not 0-127")
    return MediaDescription(
        media, int(port_text), proto, formats, port_count=int(count_text) if slash else None
    )


def _parse_payload_attribute(value: str, where: str, name: str) -> tuple[int, str]:
    pt_text, _, rest = value.partition(" ")
    if not re.fullmatch(r"[0-9]{1,3}", pt_text) or int(pt_text) > 127 or not rest.strip():
        raise SdpError(f"{where}: a={name} needs <payload type 0-127> <value>")
    return int(pt_text), rest.strip()


def _parse_media_attribute_line(media: MediaDescription, kind: str, value: str, where: str) -> None:
    if kind == "c":
        media.connection = _parse_connection(value, where)
        return
    if kind in "ibk":
        media.other.append((kind, value))
        return
    if kind != "a":
        raise SdpError(f"{where}: {kind}= is not allowed inside a media section")
    name, attr = _split_attribute(value)
    if name in DIRECTIONS and attr is None:
        media.direction = name
    elif name == "rtpmap" and attr is not None:
        payload_type, encoding = _parse_payload_attribute(attr, where, name)
        if not re.fullmatch(r"[A-Za-z0-9\-_.]+/[0-9]+(/[0-9]+)?", encoding):
            raise SdpError(f"{where}: a=rtpmap needs <encoding>/<clock rate>[/<channels>]")
        media.rtpmap[payload_type] = encoding
    elif name == "fmtp" and attr is not None:
        payload_type, params = _parse_payload_attribute(attr, where, name)
        media.fmtp[payload_type] = params
    elif name == "ptime" and attr is not None:
        # Some agents write "20.0"; the value is milliseconds of media per packet (RFC 4566 §6).
        try:
            ptime = round(float(attr))
        except (ValueError, OverflowError):
            raise SdpError(f"{where}: a=ptime needs a number of milliseconds") from None
        if not 1 <= ptime <= 1000:
            raise SdpError(f"{where}: a=ptime {attr[:10]!r} out of range")
        media.ptime = ptime
    else:
        media.attributes.append((name, attr))


def _media_lines(media: MediaDescription) -> list[str]:
    port = f"{media.port}/{media.port_count}" if media.port_count is not None else str(media.port)
    lines = [f"m={media.media} {port} {media.proto} {' '.join(media.formats)}"]
    lines += [f"{k}={v}" for k, v in media.other if k == "i"]
    if media.connection is not None:
        lines.append(f"c={media.connection}")
    lines += [f"{k}={v}" for k, v in media.other if k in "bk"]
    for payload_type in [*media.payload_types, *(pt for pt in media.rtpmap if pt not in media.payload_types)]:
        if payload_type in media.rtpmap:
            lines.append(f"a=rtpmap:{payload_type} {media.rtpmap[payload_type]}")
        if payload_type in media.fmtp:
            lines.append(f"a=fmtp:{payload_type} {media.fmtp[payload_type]}")
    lines += [
        f"a=fmtp:{pt} {v}"
        for pt, v in media.fmtp.items()
        if pt not in media.payload_types and pt not in media.rtpmap
    ]
    if media.ptime is not None:
        lines.append(f"a=ptime:{media.ptime}")
    if media.direction:
        lines.append(f"a={media.direction}")
    lines += [_format_attribute(n, v) for n, v in media.attributes]
    return lines


# --- offer / answer -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class NegotiatedMedia:
    """What a media leg needs from an offer/answer exchange, seen from our side.

    `codec` and `payload_type` are what both sides send audio with; `telephone_event_pt` is the RFC 4733
    payload type, or None when it was not agreed; `ptime_ms` is the packet time the remote side asked to
    receive; `direction` is ours (sendonly means we send and do not receive)."""

    remote_address: str
    remote_port: int
    codec: str
    payload_type: int
    telephone_event_pt: int | None
    ptime_ms: int
    direction: str

    @property
    def local_sends(self) -> bool:
        return self.direction in ("sendrecv", "sendonly")

    @property
    def local_receives(self) -> bool:
        return self.direction in ("sendrecv", "recvonly")


def _flags(direction: str) -> tuple[bool, bool]:
    """(sends, receives) for a direction attribute, from the view of the side that wrote it."""
    return direction in ("sendrecv", "sendonly"), direction in ("sendrecv", "recvonly")


def _direction(sends: bool, receives: bool) -> str:
    return {
        (True, True): "sendrecv",
        (True, False): "sendonly",
        (False, True): "recvonly",
        (False, False): "inactive",
    }[(sends, receives)]


def _check_direction(direction: str) -> None:
    if direction not in DIRECTIONS:
        raise ValueError(f"direction must be one of {', '.join(DIRECTIONS)}, not {direction!r}")


def _new_session_id() -> str:
    # RFC 4566 §5.2 suggests an NTP timestamp; any number unique enough will do.
    return str(secrets.randbelow(2**62) + 1)


def build_offer(
    address: str,
    port: int,
    codecs: tuple[str, ...] | list[str] = CODECS,
    telephone_event_pt: int | None = 101,
    direction: str = "sendrecv",
    session_id: str | int | None = None,
    version: int = 0,
) -> SessionDescription:
    """Our offer: one audio stream with `codecs` in preference order (static payload types 0 and 8),
    telephone-event 0-16 on `telephone_event_pt` unless it is None, 20 ms packets and `direction`.
    A re-offer passes the same `session_id` and a higher `version` (RFC 3264 §8)."""
    _check_direction(direction)
    if not codecs:
        raise ValueError("an offer needs at least one codec")
    payload_types: list[int] = []
    rtpmap: dict[int, str] = {}
    for codec in codecs:
        name = codec.upper()
        if name not in CODECS:
            raise ValueError(f"unsupported codec {codec!r}; choose from {', '.join(CODECS)}")
        payload_type = 0 if name == "PCMU" else 8
        if payload_type not in payload_types:
            payload_types.append(payload_type)
            rtpmap[payload_type] = f"{name}/8000"
    fmtp: dict[int, str] = {}
    if telephone_event_pt is not None:
        if not 96 <= telephone_event_pt <= 127:
            raise ValueError("telephone-event needs a dynamic payload type (96-127)")
        payload_types.append(telephone_event_pt)
        rtpmap[telephone_event_pt] = "telephone-event/8000"
        fmtp[telephone_event_pt] = "0-16"
    audio = MediaDescription(
        "audio",
        port,
        "RTP/AVP",
        [str(pt) for pt in payload_types],
        rtpmap,
        fmtp,
        direction=direction,
        ptime=DEFAULT_PTIME_MS,
    )
    connection = Connection.for_address(address)
    origin = Origin(
        "tonebridge",
        str(session_id) if session_id is not None else _new_session_id(),
        version,
        address,
        connection.addrtype,
    )
    return SessionDescription(origin=origin, session_name="tonebridge", connection=connection, media=[audio])


def _offered(offer: SessionDescription) -> str:
    names = []
    for media in offer.media:
        if media.media == "audio":
            names += [media.encoding(pt) or str(pt) for pt in media.payload_types]
    return ", ".join(dict.fromkeys(names)) or "no audio stream"


def _usable_audio(media: MediaDescription) -> bool:
    return media.media == "audio" and media.port != 0 and media.proto.upper() in ("RTP/AVP", "RTP/AVPF")


def negotiate(
    offer: SessionDescription,
    address: str,
    port: int,
    supported: tuple[str, ...] | list[str] = CODECS,
    telephone_event: bool = True,
    direction_policy: str | None = None,
    *,
    session_id: str | int | None = None,
    version: int = 0,
) -> tuple[SessionDescription, NegotiatedMedia]:
    """Answer `offer` (RFC 3264 §6) with one audio stream on `address`:`port`.

    The answer has one m= line per offered one, in order. The first usable audio stream is accepted with
    the first offered codec we support (keeping the offer's payload type number) and, when `telephone_event`
    and offered at 8 kHz, telephone-event on the offer's payload type; every other stream is declined with
    port 0. Our direction is what the offer allows and `direction_policy` (our own wish, default sendrecv)
    asks: sendonly is answered recvonly, recvonly sendonly, inactive inactive. Raises `NoCommonCodec`.
    """
    wanted = [c.upper() for c in supported]
    local_sends, local_receives = _flags(direction_policy or "sendrecv")
    if direction_policy is not None:
        _check_direction(direction_policy)
    answer_media: list[MediaDescription] = []
    negotiated: NegotiatedMedia | None = None
    for offered in offer.media:
        chosen = None
        if negotiated is None and _usable_audio(offered):
            chosen = next((pt for pt in offered.payload_types if offered.codec_of(pt) in wanted), None)
        if chosen is None:
            # §6: a declined stream keeps its media, protocol and formats, with port 0.
            answer_media.append(MediaDescription(offered.media, 0, offered.proto, list(offered.formats)))
            continue
        codec = offered.codec_of(chosen)
        assert codec is not None
        connection = offer.connection_of(offered)
        assert connection is not None  # parse() guarantees one for every stream with a port
        remote_sends, remote_receives = _flags(offer.direction_of(offered))
        if connection.is_hold:
            remote_receives = False
        sends, receives = local_sends and remote_receives, local_receives and remote_sends
        event_pt = offered.telephone_event() if telephone_event else None
        formats = [str(chosen)] + ([str(event_pt)] if event_pt is not None else [])
        rtpmap = {chosen: f"{codec}/8000"}
        fmtp: dict[int, str] = {}
        if chosen in offered.fmtp:
            fmtp[chosen] = offered.fmtp[chosen]
        if event_pt is not None:
            rtpmap[event_pt] = offered.rtpmap[event_pt]
            if event_pt in offered.fmtp:
                fmtp[event_pt] = offered.fmtp[event_pt]
        direction = _direction(sends, receives)
        answer_media.append(
            MediaDescription(
                "audio",
                port,
                offered.proto,
                formats,
                rtpmap,
                fmtp,
                direction=direction,
                ptime=DEFAULT_PTIME_MS,
            )
        )
        negotiated = NegotiatedMedia(
            connection.host,
            offered.port,
            codec,
            chosen,
            event_pt,
            offered.ptime or _session_ptime(offer) or DEFAULT_PTIME_MS,
            direction,
        )
    if negotiated is None:
        raise NoCommonCodec(
            f"no audio stream offers {' or '.join(wanted) or 'a codec we support'} "
            f"(offered: {_offered(offer)})"
        )
    connection = Connection.for_address(address)
    origin = Origin(
        "tonebridge",
        str(session_id) if session_id is not None else _new_session_id(),
        version,
        address,
        connection.addrtype,
    )
    answer = SessionDescription(
        origin=origin, session_name="tonebridge", connection=connection, media=answer_media
    )
    return answer, negotiated


def _session_ptime(session: SessionDescription) -> int | None:
    # ptime is a media attribute, but some agents put it at session level; honour it there as a default.
    for name, value in session.attributes:
        if name == "ptime" and value and value.strip().isascii() and value.strip().isdigit():
            return int(value.strip())
    return None


def apply_answer(offer_we_sent: SessionDescription, answer_received: SessionDescription) -> NegotiatedMedia:
    """The media an answer to our offer settles on (RFC 3264 §7), for the offering side.

    We send with the first codec in the answer that we offered, and with the answer's telephone-event
    payload type (the answerer's mapping is what it receives with). Raises `SdpError` when the answer does
    not match the offer's shape and `NoCommonCodec` when it accepts no audio stream we can use."""
    if len(answer_received.media) != len(offer_we_sent.media):
        raise SdpError(
            f"the answer has {len(answer_received.media)} m= lines for the offer's "
            f"{len(offer_we_sent.media)} (RFC 3264 §6)"
        )
    for ours, theirs in zip(offer_we_sent.media, answer_received.media, strict=True):
        if ours.media != theirs.media:
            raise SdpError(f"the answer turned a {ours.media} stream into {theirs.media}")
        if not _usable_audio(ours) or not _usable_audio(theirs):
            continue
        ours_codecs = {ours.codec_of(pt) for pt in ours.payload_types} - {None}
        chosen = next((pt for pt in theirs.payload_types if theirs.codec_of(pt) in ours_codecs), None)
        if chosen is None:
            continue
        codec = theirs.codec_of(chosen)
        assert codec is not None
        connection = answer_received.connection_of(theirs)
        assert connection is not None
        local_sends, local_receives = _flags(offer_we_sent.direction_of(ours))
        remote_sends, remote_receives = _flags(answer_received.direction_of(theirs))
        if connection.is_hold:
            remote_receives = False
        event_pt = theirs.telephone_event() if ours.telephone_event() is not None else None
        return NegotiatedMedia(
            connection.host,
            theirs.port,
            codec,
            chosen,
            event_pt,
            theirs.ptime or _session_ptime(answer_received) or DEFAULT_PTIME_MS,
            _direction(local_sends and remote_receives, local_receives and remote_sends),
        )
    raise NoCommonCodec(
        f"the answer accepts no audio stream with {' or '.join(CODECS)} "
        f"(answered: {_offered(answer_received)})"
    )
