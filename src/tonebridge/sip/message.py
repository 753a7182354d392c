"""SIP messages: parse bytes into requests and responses, and serialise them back (RFC 3261 §7, §20, §25).

Sans-IO: nothing here touches a socket. Parsing is strict about structure and bounded in size (a message
over `MAX_MESSAGE_BYTES`, more than `MAX_HEADERS` header fields or a line over `MAX_LINE_BYTES` is refused
before any further work), and every refusal is a `SipParseError` naming the fault, with the SIP status a
server should answer and, when enough of a request was read, the headers needed to build that answer.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

MAX_MESSAGE_BYTES = 65_536
MAX_HEADERS = 256
MAX_LINE_BYTES = 8_192
MAX_BODY_BYTES = 60_000

SIP_VERSION = "SIP/2.0"

# RFC 3261 §7.3.3 and later RFCs: single-letter compact forms.
COMPACT_FORMS = {
    "i": "Call-ID",
    "m": "Contact",
    "e": "Content-Encoding",
    "l": "Content-Length",
    "c": "Content-Type",
    "f": "From",
    "s": "Subject",
    "k": "Supported",
    "t": "To",
    "v": "Via",
    "o": "Event",
    "u": "Allow-Events",
    "r": "Refer-To",
    "b": "Referred-By",
    "x": "Session-Expires",
    "a": "Accept-Contact",
    "j": "Reject-Contact",
    "d": "Request-Disposition",
    "y": "Identity",
}

_CANONICAL = {
    name.lower(): name
    for name in (
        "Accept", "Accept-Contact", "Accept-Encoding", "Accept-Language", "Alert-Info", "Allow",
        "Allow-Events", "Authentication-Info", "Authorization", "Call-ID", "Call-Info", "Contact",
        "Content-Disposition", "Content-Encoding", "Content-Language", "Content-Length", "Content-Type",
        "CSeq", "Date", "Error-Info", "Event", "Expires", "From", "Identity", "In-Reply-To",
        "Max-Forwards", "Min-Expires", "MIME-Version", "Organization", "P-Asserted-Identity", "Priority",
        "Proxy-Authenticate", "Proxy-Authorization", "Proxy-Require", "RAck", "Reason", "Record-Route",
        "Refer-To", "Referred-By", "Reject-Contact", "Reply-To", "Request-Disposition", "Require",
        "Retry-After", "Route", "RSeq", "Server", "Session-Expires", "Subject", "Subscription-State",
        "Supported", "Timestamp", "To", "Unsupported", "User-Agent", "Via", "Warning",
        "WWW-Authenticate",
    )
}

# Headers whose value is a comma-separated list that may also be split across several fields (§7.3.1).
# Authorization-type headers are excluded: their commas separate parameters, not values.
LIST_HEADERS = frozenset(
    {"via", "contact", "route", "record-route", "allow", "supported", "require", "proxy-require",
     "unsupported", "accept", "accept-encoding", "accept-language", "allow-events"}
)

_TOKEN_RE = re.compile(r"^[A-Za-z0-9\-.!%*_+`'~]+$")
_STATUS_LINE_RE = re.compile(r"^SIP/(\d+)\.(\d+) (\d{3}) ?(.*)$")


class SipParseError(Exception):
    """A message that could not be accepted.

    `status` is the response a server should send for a request (400 by default); `headers` holds the
    header fields read before the fault so that response can be built, or None when the input is garbage
    that deserves no answer.
    """

    def __init__(self, reason: str, *, status: int = 400, headers: Headers | None = None,
                 method: str | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.status = status
        self.headers = headers
        self.method = method

    @property
    def answerable(self) -> bool:
        """True when the request carried enough (Via, From, To, Call-ID, CSeq) to send an error response."""
        if self.headers is None or self.method is None:
            return False
        return all(self.headers.get(name) for name in ("Via", "From", "To", "Call-ID", "CSeq"))


def canonical_name(name: str) -> str:
    """The long, conventionally capitalised form of a header name (compact forms expanded)."""
    lower = name.lower()
    if lower in COMPACT_FORMS:
        return COMPACT_FORMS[lower]
    return _CANONICAL.get(lower, name)


class Headers:
    """An ordered multi-map of header fields with case-insensitive names."""

    __slots__ = ("_fields",)

    def __init__(self, fields: Iterable[tuple[str, str]] = ()) -> None:
        self._fields: list[tuple[str, str]] = [(canonical_name(n), v) for n, v in fields]

    def __iter__(self) -> Iterator[tuple[str, str]]:
        return iter(self._fields)

    def __len__(self) -> int:
        return len(self._fields)

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and self.get(name) is not None

    def __repr__(self) -> str:
        return f"Headers({self._fields!r})"

    def copy(self) -> Headers:
        copy = Headers()
        copy._fields = list(self._fields)
        return copy

    def get(self, name: str, default: str | None = None) -> str | None:
        """The first field of that name."""
        key = canonical_name(name).lower()
        for n, v in self._fields:
            if n.lower() == key:
                return v
        return default

    def get_all(self, name: str) -> list[str]:
        """Every field of that name, as written (not split at commas)."""
        key = canonical_name(name).lower()
        return [v for n, v in self._fields if n.lower() == key]

    def values(self, name: str) -> list[str]:
        """Every value of a list header, fields split at top-level commas (§7.3.1)."""
        out: list[str] = []
        for value in self.get_all(name):
            if canonical_name(name).lower() in LIST_HEADERS:
                out.extend(v for v in split_list(value) if v)
            else:
                out.append(value)
        return out

    def add(self, name: str, value: str) -> None:
        self._fields.append((canonical_name(name), value))

    def prepend(self, name: str, value: str) -> None:
        self._fields.insert(0, (canonical_name(name), value))

    def set(self, name: str, value: str) -> None:
        """Replace every field of that name by one, at the position of the first."""
        key = canonical_name(name).lower()
        for index, (n, _) in enumerate(self._fields):
            if n.lower() == key:
                self._fields[index] = (canonical_name(name), value)
                self._fields = [
                    f for i, f in enumerate(self._fields) if i <= index or f[0].lower() != key
                ]
                return
        self.add(name, value)

    def remove(self, name: str) -> None:
        key = canonical_name(name).lower()
        self._fields = [f for f in self._fields if f[0].lower() != key]


def split_list(value: str, separator: str = ",") -> list[str]:
    """Split at separators that are outside quoted strings and angle brackets."""
    parts: list[str] = []
    current: list[str] = []
    quoted = False
    angle = 0
    escaped = False
    for char in value:
        if escaped:
            current.append(char)
            escaped = False
            continue
        if quoted and char == "\\":
            escaped = True
            current.append(char)
            continue
        if char == '"':
            quoted = not quoted
        elif not quoted and char == "<":
            angle += 1
        elif not quoted and char == ">" and angle:
            angle -= 1
        if char == separator and not quoted and not angle:
            parts.append("".join(current).strip())
            current = []
            continue
        current.append(char)
    parts.append("".join(current).strip())
    return parts


def parse_params(text: str) -> dict[str, str | None]:
    """`;a=b;c` parameters into an ordered dict; names are lower-cased, a bare name maps to None."""
    params: dict[str, str | None] = {}
    for part in split_list(text, ";"):
        if not part:
            continue
        name, eq, value = part.partition("=")
        name = name.strip().lower()
        if not name:
            continue
        params[name] = value.strip() if eq else None
    return params


def format_params(params: dict[str, str | None]) -> str:
    return "".join(f";{k}" if v is None else f";{k}={v}" for k, v in params.items())


@dataclass
class SipUri:
    """A sip:, sips: or tel: URI (RFC 3261 §19.1, RFC 3966)."""

    host: str
    user: str | None = None
    port: int | None = None
    scheme: str = "sip"
    password: str | None = None
    params: dict[str, str | None] = field(default_factory=dict)
    headers: str | None = None

    @classmethod
    def parse(cls, text: str) -> SipUri:
        text = text.strip()
        scheme, colon, rest = text.partition(":")
        scheme = scheme.lower()
        if not colon or scheme not in ("sip", "sips", "tel"):
            raise ValueError(f"unsupported URI scheme in {text[:80]!r}")
        if scheme == "tel":
            number, _, params = rest.partition(";")
            if not number:
                raise ValueError("tel URI without a number")
            return cls(host="", user=number, scheme="tel", params=parse_params(params))
        rest, _, uri_headers = rest.partition("?")
        user = password = None
        if "@" in rest:
            userinfo, _, rest = rest.rpartition("@")
            user, _, pw = userinfo.partition(":")
            password = pw or None
        hostport, _, params = rest.partition(";")
        if hostport.startswith("["):
            end = hostport.find("]")
            if end < 0:
                raise ValueError(f"unterminated IPv6 reference in {text[:80]!r}")
            host, port_text = hostport[: end + 1], hostport[end + 1:].lstrip(":")
        else:
            host, _, port_text = hostport.partition(":")
        if not host or not re.fullmatch(r"[A-Za-z0-9.\-_\[\]:]+", host):
            raise ValueError(f"invalid host in URI {text[:80]!r}")
        port: int | None = None
        if port_text:
            if not port_text.isdigit() or not 0 < int(port_text) < 65536:
                raise ValueError(f"invalid port in URI {text[:80]!r}")
            port = int(port_text)
        return cls(host=host.lower(), user=user, port=port, scheme=scheme, password=password,
                   params=parse_params(params), headers=uri_headers or None)

    def __str__(self) -> str:
        if self.scheme == "tel":
            return f"tel:{self.user}{format_params(self.params)}"
        userinfo = ""
        if self.user is not None:
            userinfo = self.user + (f":{self.password}" if self.password else "") + "@"
        port = f":{self.port}" if self.port else ""
        headers = f"?{self.headers}" if self.headers else ""
        return f"{self.scheme}:{userinfo}{self.host}{port}{format_params(self.params)}{headers}"

    @property
    def transport(self) -> str:
        return (self.params.get("transport") or "udp").lower()


@dataclass
class NameAddress:
    """`"Display" <uri>;params` as in From, To, Contact, Route and Record-Route (RFC 3261 §20)."""

    uri: SipUri
    display_name: str | None = None
    params: dict[str, str | None] = field(default_factory=dict)

    @classmethod
    def parse(cls, text: str) -> NameAddress:
        text = text.strip()
        if "<" in text:
            before, _, rest = text.partition("<")
            uri_text, closed, after = rest.partition(">")
            if not closed:
                raise ValueError(f"unterminated <...> in {text[:80]!r}")
            display = before.strip()
            if display.startswith('"') and display.endswith('"') and len(display) >= 2:
                display = display[1:-1].replace('\\"', '"')
            return cls(uri=SipUri.parse(uri_text), display_name=display or None,
                       params=parse_params(after))
        # addr-spec form: URI parameters are header parameters here (§20.10).
        uri_text, _, params = text.partition(";")
        return cls(uri=SipUri.parse(uri_text), params=parse_params(params))

    @property
    def tag(self) -> str | None:
        return self.params.get("tag")

    def __str__(self) -> str:
        display = f'"{self.display_name}" ' if self.display_name else ""
        return f"{display}<{self.uri}>{format_params(self.params)}"


@dataclass
class Via:
    """One Via value: `SIP/2.0/UDP host:port;branch=...` (RFC 3261 §20.42, RFC 3581 rport)."""

    transport: str
    host: str
    port: int | None = None
    params: dict[str, str | None] = field(default_factory=dict)

    @classmethod
    def parse(cls, text: str) -> Via:
        text = text.strip()
        match = re.match(r"^SIP\s*/\s*2\.0\s*/\s*([A-Za-z]+)\s+([^;\s]+)\s*(.*)$", text, re.IGNORECASE)
        if not match:
            raise ValueError(f"malformed Via {text[:80]!r}")
        transport, hostport, params = match.groups()
        if hostport.startswith("["):
            end = hostport.find("]")
            host, port_text = hostport[: end + 1], hostport[end + 1:].lstrip(":")
        else:
            host, _, port_text = hostport.partition(":")
        port = None
        if port_text:
            if not port_text.isdigit() or not 0 < int(port_text) < 65536:
                raise ValueError(f"invalid port in Via {text[:80]!r}")
            port = int(port_text)
        return cls(transport=transport.upper(), host=host, port=port, params=parse_params(params))

    @property
    def branch(self) -> str | None:
        return self.params.get("branch")

    def __str__(self) -> str:
        port = f":{self.port}" if self.port else ""
        return f"SIP/2.0/{self.transport} {self.host}{port}{format_params(self.params)}"


@dataclass(frozen=True)
class CSeq:
    number: int
    method: str

    @classmethod
    def parse(cls, text: str) -> CSeq:
        parts = text.split()
        if len(parts) != 2 or not parts[0].isdigit() or not _TOKEN_RE.match(parts[1]):
            raise ValueError(f"malformed CSeq {text[:80]!r}")
        number = int(parts[0])
        if number >= 2**31:
            raise ValueError("CSeq number out of range (must be below 2**31)")
        return cls(number, parts[1])

    def __str__(self) -> str:
        return f"{self.number} {self.method}"


@dataclass
class _Message:
    headers: Headers
    body: bytes

    @property
    def call_id(self) -> str:
        return self.headers.get("Call-ID") or ""

    @property
    def cseq(self) -> CSeq:
        return CSeq.parse(self.headers.get("CSeq") or "")

    @property
    def from_(self) -> NameAddress:
        return NameAddress.parse(self.headers.get("From") or "")

    @property
    def to(self) -> NameAddress:
        return NameAddress.parse(self.headers.get("To") or "")

    @property
    def vias(self) -> list[Via]:
        return [Via.parse(v) for v in self.headers.values("Via")]

    @property
    def top_via(self) -> Via:
        return Via.parse(self.headers.values("Via")[0])

    @property
    def content_type(self) -> str:
        return (self.headers.get("Content-Type") or "").split(";")[0].strip().lower()

    def _serialise(self, start_line: str) -> bytes:
        lines = [start_line]
        lines.extend(f"{name}: {value}" for name, value in self.headers if name != "Content-Length")
        lines.append(f"Content-Length: {len(self.body)}")
        return ("\r\n".join(lines) + "\r\n\r\n").encode("utf-8") + self.body


@dataclass
class Request(_Message):
    method: str = "OPTIONS"
    uri: str = ""

    def __init__(self, method: str, uri: str | SipUri, headers: Headers | None = None,
                 body: bytes = b"") -> None:
        self.method = method
        self.uri = str(uri)
        self.headers = headers if headers is not None else Headers()
        self.body = body

    @property
    def request_uri(self) -> SipUri:
        return SipUri.parse(self.uri)

    def to_bytes(self) -> bytes:
        return self._serialise(f"{self.method} {self.uri} {SIP_VERSION}")

    def __repr__(self) -> str:
        return f"<Request {self.method} {self.uri} call-id={self.call_id}>"


@dataclass
class Response(_Message):
    status: int = 200
    reason: str = "OK"

    def __init__(self, status: int, reason: str | None = None, headers: Headers | None = None,
                 body: bytes = b"") -> None:
        self.status = status
        self.reason = reason if reason is not None else REASONS.get(status, "Unknown")
        self.headers = headers if headers is not None else Headers()
        self.body = body

    def to_bytes(self) -> bytes:
        return self._serialise(f"{SIP_VERSION} {self.status} {self.reason}")

    def __repr__(self) -> str:
        return f"<Response {self.status} {self.reason} call-id={self.call_id}>"


Message = Request | Response

REASONS = {
    100: "Trying", 180: "Ringing", 181: "Call Is Being Forwarded", 182: "Queued",
    183: "Session Progress", 200: "OK", 202: "Accepted", 400: "Bad Request", 401: "Unauthorized",
    403: "Forbidden", 404: "Not Found", 405: "Method Not Allowed", 407: "Proxy Authentication Required",
    408: "Request Timeout", 413: "Request Entity Too Large", 415: "Unsupported Media Type",
    416: "Unsupported URI Scheme", 420: "Bad Extension", 423: "Interval Too Brief",
    480: "Temporarily Unavailable", 481: "Call/Transaction Does Not Exist", 482: "Loop Detected",
    483: "Too Many Hops", 486: "Busy Here", 487: "Request Terminated", 488: "Not Acceptable Here",
    491: "Request Pending", 500: "Server Internal Error", 501: "Not Implemented",
    503: "Service Unavailable", 504: "Server Time-out", 505: "Version Not Supported",
    513: "Message Too Large", 600: "Busy Everywhere", 603: "Decline",
}


def parse_message(data: bytes, *, stream: bool = False) -> Message:
    """Parse one whole message.

    `stream` says the bytes came framed from a stream transport, where Content-Length is mandatory
    (RFC 3261 §18.3); on datagrams a missing Content-Length means the body runs to the end.
    """
    if len(data) > MAX_MESSAGE_BYTES:
        raise SipParseError(f"message of {len(data)} bytes exceeds the {MAX_MESSAGE_BYTES}-byte limit",
                            status=513)
    # Leading CRLFs are keep-alives or stray line ends (RFC 3261 §7.5); ignore them.
    data = data.lstrip(b"\r\n")
    head, sep, body = _split_head(data)
    if not sep:
        raise SipParseError("no empty line ends the header section")
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise SipParseError(f"header section is not valid UTF-8 (byte {exc.start})") from None
    lines = text.replace("\r\n", "\n").split("\n")
    start_line = lines[0]
    if len(start_line) > MAX_LINE_BYTES:
        raise SipParseError("start line too long")
    headers, header_fault = _parse_header_lines(lines[1:])

    if start_line.startswith("SIP/"):
        match = _STATUS_LINE_RE.match(start_line)
        if not match:
            raise SipParseError(f"malformed status line {start_line[:80]!r}")
        if header_fault:
            raise SipParseError(header_fault)
        major, minor, status, reason = match.groups()
        if (major, minor) != ("2", "0"):
            raise SipParseError(f"unsupported SIP version SIP/{major}.{minor}", status=505)
        response = Response(int(status), reason, headers, b"")
        if not 100 <= response.status <= 699:
            raise SipParseError(f"status code {status} out of range")
        response.body = _take_body(body, headers, stream, None)
        _check_required(response, None)
        return response

    parts = start_line.split(" ")
    if len(parts) != 3 or not all(parts):
        raise SipParseError(f"malformed request line {start_line[:80]!r}", headers=headers,
                            method=parts[0] if parts and _TOKEN_RE.match(parts[0]) else None)
    method, uri, version = parts
    if not _TOKEN_RE.match(method):
        raise SipParseError(f"invalid method token {method[:40]!r}")
    if header_fault:
        raise SipParseError(header_fault, headers=headers, method=method)
    if version.upper() != SIP_VERSION:
        raise SipParseError(f"unsupported SIP version {version[:20]!r}", status=505, headers=headers,
                            method=method)
    try:
        SipUri.parse(uri)
    except ValueError as exc:
        status = 416 if ":" in uri and uri.split(":")[0].lower() not in ("sip", "sips", "tel") else 400
        raise SipParseError(f"bad Request-URI: {exc}", status=status, headers=headers,
                            method=method) from None
    request = Request(method, uri, headers, b"")
    request.body = _take_body(body, headers, stream, method)
    _check_required(request, method)
    return request


def _split_head(data: bytes) -> tuple[bytes, bytes, bytes]:
    crlf = data.find(b"\r\n\r\n")
    lf = data.find(b"\n\n")
    if crlf >= 0 and (lf < 0 or crlf < lf):
        return data[:crlf], b"\r\n\r\n", data[crlf + 4:]
    if lf >= 0:
        return data[:lf], b"\n\n", data[lf + 2:]
    return data, b"", b""


def _parse_header_lines(lines: list[str]) -> tuple[Headers, str | None]:
    """Unfold and split header lines; returns the headers read and the first fault found, if any."""
    fields: list[tuple[str, str]] = []
    fault: str | None = None
    for line in lines:
        if len(line) > MAX_LINE_BYTES:
            fault = fault or f"header line longer than {MAX_LINE_BYTES} bytes"
            continue
        if line[:1] in (" ", "\t"):
            if not fields:
                fault = fault or "continuation line before any header"
                continue
            name, value = fields[-1]
            # §7.3.1: a folded line is the same as one with the line break replaced by a space.
            fields[-1] = (name, f"{value} {line.strip()}".strip())
            continue
        name, colon, value = line.partition(":")
        name = name.strip()
        if not colon or not name or not _TOKEN_RE.match(name):
            fault = fault or f"malformed header line {line[:60]!r}"
            continue
        if len(fields) >= MAX_HEADERS:
            fault = f"more than {MAX_HEADERS} header fields"
            break
        fields.append((name, value.strip()))
    return Headers(fields), fault


def _take_body(body: bytes, headers: Headers, stream: bool, method: str | None) -> bytes:
    length_text = headers.get("Content-Length")
    if length_text is None:
        if stream:
            return b""
        return body
    length_text = length_text.strip()
    if not length_text.isdigit():
        raise SipParseError(f"invalid Content-Length {length_text[:20]!r}", headers=headers, method=method)
    length = int(length_text)
    if length > MAX_BODY_BYTES:
        raise SipParseError(f"Content-Length {length} exceeds the {MAX_BODY_BYTES}-byte limit", status=413,
                            headers=headers, method=method)
    if len(body) < length:
        raise SipParseError(f"Content-Length {length} larger than the {len(body)} body bytes received",
                            headers=headers, method=method)
    # §18.3: bytes beyond Content-Length in a datagram are discarded.
    return body[:length]


def _check_required(message: Message, method: str | None) -> None:
    headers = message.headers
    for name in ("Via", "From", "To", "Call-ID", "CSeq"):
        if not headers.get(name):
            raise SipParseError(f"missing {name} header", headers=headers, method=method)
    try:
        cseq = CSeq.parse(headers.get("CSeq") or "")
    except ValueError as exc:
        raise SipParseError(str(exc), headers=headers, method=method) from None
    if method is not None and cseq.method != method and not (method == "ACK" and cseq.method == "ACK"):
        raise SipParseError(f"CSeq method {cseq.method} does not match request method {method}",
                            headers=headers, method=method)
    for name in ("From", "To"):
        try:
            NameAddress.parse(headers.get(name) or "")
        except ValueError as exc:
            raise SipParseError(f"malformed {name} header: {exc}", headers=headers, method=method) from None
    try:
        vias = message.vias
    except ValueError as exc:
        raise SipParseError(f"malformed Via header: {exc}", headers=headers, method=method) from None
    if not vias:
        raise SipParseError("missing Via header", headers=headers, method=method)
    max_forwards = headers.get("Max-Forwards")
    if max_forwards is not None and not max_forwards.strip().isdigit():
        raise SipParseError(f"invalid Max-Forwards {max_forwards[:20]!r}", headers=headers, method=method)


def error_response(error: SipParseError) -> Response | None:
    """The response a server sends for a request that failed to parse, or None if it cannot answer."""
    if not error.answerable or error.method == "ACK":
        return None
    assert error.headers is not None
    headers = Headers()
    for via in error.headers.get_all("Via"):
        headers.add("Via", via)
    for name in ("From", "To", "Call-ID", "CSeq"):
        headers.add(name, error.headers.get(name) or "")
    # The reason phrase names the fault (RFC 3261 §21.4.1 lets it carry detail); keep it one clean line.
    reason = REASONS.get(error.status, "Bad Request") + " - " + re.sub(r"[\x00-\x1f\x7f]", " ", error.reason)
    return Response(error.status, reason[:200], headers)


class FramingError(Exception):
    """A stream that cannot be framed into SIP messages; the connection should be closed."""


class StreamFramer:
    """Cuts a TCP byte stream into whole messages (RFC 3261 §18.3), with bounded buffering."""

    def __init__(self, max_message: int = MAX_MESSAGE_BYTES) -> None:
        self._buffer = bytearray()
        self._max = max_message

    def feed(self, data: bytes) -> list[bytes]:
        self._buffer += data
        messages: list[bytes] = []
        while True:
            # CRLF keep-alives between messages (RFC 5626 §3.5.1).
            while self._buffer[:2] == b"\r\n":
                del self._buffer[:2]
            end = self._buffer.find(b"\r\n\r\n")
            if end < 0:
                if len(self._buffer) > self._max:
                    raise FramingError(f"header section exceeds {self._max} bytes without an end")
                return messages
            head = bytes(self._buffer[:end])
            match = re.search(rb"(?im)^(?:content-length|l)[ \t]*:[ \t]*(\d+)[ \t]*$", head)
            length = int(match.group(1)) if match else 0
            total = end + 4 + length
            if total > self._max:
                raise FramingError(f"message of {total} bytes exceeds {self._max}")
            if len(self._buffer) < total:
                return messages
            messages.append(bytes(self._buffer[:total]))
            del self._buffer[:total]

    @property
    def buffered(self) -> int:
        return len(self._buffer)
