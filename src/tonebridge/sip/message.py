"""SIP messages: parse bytes into requests and responses, and serialise them back (RFC 3261 §7, §20, §25).

Sans-IO: nothing here touches a socket. Parsing is strict about structure and bounded in size (a message
over `MAX_MESSAGE_BYTES`, more than `MAX_HEADERS` header fields or a line over `MAX_LINE_BYTES` is refused
before any further work), and every refusal is a `SipParseError` naming the fault, with the SIP status a
server should answer and, when enough of a request was read, the headers needed to build that answer.
`parse_message` raises nothing else, whatever the bytes; `StreamFramer` raises only `FramingError`.
"""

from __future__ import annotations

import functools
import hashlib
import re
from collections import Counter
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
        "Accept",
        "Accept-Contact",
        "Accept-Encoding",
        "Accept-Language",
        "Alert-Info",
        "Allow",
        "Allow-Events",
        "Authentication-Info",
        "Authorization",
        "Call-ID",
        "Call-Info",
        "Contact",
        "Content-Disposition",
        "Content-Encoding",
        "Content-Language",
        "Content-Length",
        "Content-Type",
        "CSeq",
        "Date",
        "Error-Info",
        "Event",
        "Expires",
        "From",
        "Identity",
        "In-Reply-To",
        "Max-Forwards",
        "Min-Expires",
        "MIME-Version",
        "Organization",
        "P-Asserted-Identity",
        "Priority",
        "Proxy-Authenticate",
        "Proxy-Authorization",
        "Proxy-Require",
        "RAck",
        "Reason",
        "Record-Route",
        "Refer-To",
        "Referred-By",
        "Reject-Contact",
        "Reply-To",
        "Request-Disposition",
        "Require",
        "Retry-After",
        "Route",
        "RSeq",
        "Server",
        "Session-Expires",
        "Subject",
        "Subscription-State",
        "Supported",
        "Timestamp",
        "To",
        "Unsupported",
        "User-Agent",
        "Via",
        "Warning",
        "WWW-Authenticate",
    )
}

# Headers whose value is a comma-separated list that may also be split across several fields (§7.3.1).
# Authorization-type headers are excluded: their commas separate parameters, not values.
LIST_HEADERS = frozenset(
    {
        "via",
        "contact",
        "route",
        "record-route",
        "allow",
        "supported",
        "require",
        "proxy-require",
        "unsupported",
        "accept",
        "accept-encoding",
        "accept-language",
        "allow-events",
    }
)

# Headers that may appear once only (§20: their grammar has no list form); a second copy is a 400
# (RFC 4475 §3.3.8, §3.3.9).
SINGLE_HEADERS = ("Call-ID", "CSeq", "From", "To", "Max-Forwards", "Content-Length", "Content-Type")

# §25.1 character classes. Patterns are ASCII-only on purpose: `str.isdigit` and `\d` accept other
# scripts' digits, which `int` then refuses or reads differently.
_TOKEN = r"[A-Za-z0-9\-.!%*_+`'~]+"
_TOKEN_RE = re.compile(_TOKEN)
_DIGITS_RE = re.compile(r"[0-9]+")
_UNRESERVED = r"A-Za-z0-9\-_.!~*'()"
_ESCAPED = r"%[0-9A-Fa-f]{2}"
_USER_RE = re.compile(rf"(?:[{_UNRESERVED}&=+$,;?/]|{_ESCAPED})+")
_PASSWORD_RE = re.compile(rf"(?:[{_UNRESERVED}&=+$,]|{_ESCAPED})*")
_PARAMCHARS_RE = re.compile(rf"(?:[{_UNRESERVED}\[\]/:&+$]|{_ESCAPED})+")
_HNVCHARS_RE = re.compile(rf"(?:[{_UNRESERVED}\[\]/?:+$]|{_ESCAPED})*")
_HOST_RE = re.compile(r"\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9\-_.]+")
_TEL_NUMBER_RE = re.compile(r"[0-9A-Fa-f*#+\-.()]+")
_SCHEME_RE = re.compile(r"[A-Za-z][A-Za-z0-9+\-.]*")
# gen-value = token / host / quoted-string (§25.1); IPv6 addresses appear bare in `received` (RFC 5118).
_GEN_VALUE_RE = re.compile(r"[A-Za-z0-9\-.!%*_+`'~:\[\]]+|\"(?:[^\"\\]|\\.)*\"", re.DOTALL)
# word (§25.1) as in Call-ID = word [ "@" word ].
_CALL_ID_RE = re.compile(
    r"[A-Za-z0-9\-.!%*_+`'~()<>:\\\"/\[\]?{}]+(?:@[A-Za-z0-9\-.!%*_+`'~()<>:\\\"/\[\]?{}]+)?"
)

_STATUS_LINE_RE = re.compile(r"SIP/([0-9]+)\.([0-9]+) ([0-9]{3})(?: (.*))?", re.IGNORECASE | re.DOTALL)
_VERSION_RE = re.compile(r"SIP/([0-9]+)\.([0-9]+)", re.IGNORECASE)
# The empty line that ends the header section, with CRLF or bare-LF line ends (RFC 3261 §7.5 asks for
# CRLF; bare LF is accepted the way most deployed parsers do).
_HEAD_END_RE = re.compile(rb"\r?\n\r?\n")
_LINE_SPLIT_RE = re.compile(r"\r?\n")
# Control characters are allowed only as a quoted-pair (`\` then the character, §25.1); CR never.
_BARE_CTL_RE = re.compile(r"(?<!\\)[\x00-\x08\x0a-\x1f\x7f]|\r")


class SipParseError(Exception):
    """A message that could not be accepted.

    `status` is the response a server should send for a request (400 by default); `headers` holds the
    header fields read before the fault so that response can be built, or None when the input is garbage
    that deserves no answer. `reason` names the fault in words fit for a reason phrase.
    """

    def __init__(
        self, reason: str, *, status: int = 400, headers: Headers | None = None, method: str | None = None
    ) -> None:
        super().__init__(reason)
        self.reason = reason
        self.status = status
        self.headers = headers
        self.method = method

    @property
    def answerable(self) -> bool:
        """True when the request carried enough to route an error response back: a method and a top Via
        whose sent-by can be read (§18.2.2). From, To, Call-ID and CSeq are copied when present; RFC 4475
        §3.3.1 asks for a 400 even when they are missing."""
        if self.headers is None or self.method is None:
            return False
        vias = self.headers.values("Via")
        if not vias:
            return False
        try:
            Via.parse(vias[0])
        except ValueError:
            return False
        return True


def canonical_name(name: str) -> str:
    """The long, conventionally capitalised form of a header name (compact forms expanded)."""
    lower = name.lower()
    if lower in COMPACT_FORMS:
        return COMPACT_FORMS[lower]
    return _CANONICAL.get(lower, name)


@functools.lru_cache(maxsize=1024)
def _key(name: str) -> str:
    """The lookup key of a header name: canonical and lower-cased (cached: a handful of names recur)."""
    return canonical_name(name).lower()


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

    def __eq__(self, other: object) -> bool:
        # Field order matters (§7.3.1: the order of same-named fields is significant); name case does not.
        if not isinstance(other, Headers):
            return NotImplemented
        return [(n.lower(), v) for n, v in self._fields] == [(n.lower(), v) for n, v in other._fields]

    __hash__ = None  # type: ignore[assignment]  # mutable

    def __repr__(self) -> str:
        return f"Headers({self._fields!r})"

    def copy(self) -> Headers:
        copy = Headers()
        copy._fields = list(self._fields)
        return copy

    def get(self, name: str, default: str | None = None) -> str | None:
        """The first field of that name."""
        key = _key(name)
        for n, v in self._fields:
            if _key(n) == key:
                return v
        return default

    def get_all(self, name: str) -> list[str]:
        """Every field of that name, as written (not split at commas)."""
        key = _key(name)
        return [v for n, v in self._fields if _key(n) == key]

    def values(self, name: str) -> list[str]:
        """Every value of a list header, fields split at top-level commas (§7.3.1)."""
        out: list[str] = []
        is_list = _key(name) in LIST_HEADERS
        for value in self.get_all(name):
            if is_list:
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
        key = _key(name)
        for index, (n, _) in enumerate(self._fields):
            if n.lower() == key:
                self._fields[index] = (canonical_name(name), value)
                self._fields = [f for i, f in enumerate(self._fields) if i <= index or f[0].lower() != key]
                return
        self.add(name, value)

    def remove(self, name: str) -> None:
        key = _key(name)
        self._fields = [f for f in self._fields if f[0].lower() != key]


def split_list(value: str, separator: str = ",") -> list[str]:
    """Split at separators that are outside quoted strings and angle brackets."""
    if '"' not in value and "<" not in value:
        return [part.strip() for part in value.split(separator)]
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


def _check_generic_params(text: str, where: str) -> None:
    """Strict `*( SEMI generic-param )` (§25.1): what `parse_params` forgives, a received message may not."""
    text = text.strip()
    if not text:
        return
    if not text.startswith(";"):
        raise ValueError(f"unexpected text {text[:40]!r} where {where} parameters belong")
    for part in split_list(text[1:], ";"):
        name, eq, value = part.partition("=")
        name, value = name.strip(), value.strip()
        if not name:
            raise ValueError(f"empty parameter in {where}")
        if not _TOKEN_RE.fullmatch(name):
            raise ValueError(f"invalid parameter name {name[:40]!r} in {where}")
        if eq and not _GEN_VALUE_RE.fullmatch(value):
            raise ValueError(f"invalid value for parameter {name[:40]!r} in {where}")


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
        """Parse and check a URI against the §25.1 grammar; raises ValueError naming the fault."""
        text = text.strip()
        scheme, colon, rest = text.partition(":")
        scheme = scheme.lower()
        if not colon or scheme not in ("sip", "sips", "tel"):
            raise ValueError(f"unsupported URI scheme in {text[:80]!r}")
        if scheme == "tel":
            number, _, params = rest.partition(";")
            if not number:
                raise ValueError("tel URI without a number")
            if not _TEL_NUMBER_RE.fullmatch(number):
                raise ValueError(f"invalid tel number {number[:40]!r}")
            parsed = parse_params(params)
            _check_uri_params(params, text)
            return cls(host="", user=number, scheme="tel", params=parsed)
        # "@" may not appear in uri-parameters or headers, but "?" and ";" may appear in the user part
        # (§25.1 user-unreserved): so the last "@" ends the userinfo, before "?" and ";" are looked for.
        user = password = None
        if "@" in rest:
            userinfo, _, rest = rest.rpartition("@")
            user, _, pw = userinfo.partition(":")
            if not _USER_RE.fullmatch(user):
                raise ValueError(f"invalid user part in URI {text[:80]!r}")
            if not _PASSWORD_RE.fullmatch(pw):
                raise ValueError(f"invalid password in URI {text[:80]!r}")
            password = pw or None
        rest, question, uri_headers = rest.partition("?")
        if question and not _HNVCHARS_RE.fullmatch(uri_headers.replace("=", "").replace("&", "")):
            raise ValueError(f"invalid headers in URI {text[:80]!r}")
        hostport, _, params = rest.partition(";")
        if hostport.startswith("["):
            end = hostport.find("]")
            if end < 0:
                raise ValueError(f"unterminated IPv6 reference in {text[:80]!r}")
            host, port_text = hostport[: end + 1], hostport[end + 1 :]
            if port_text and not port_text.startswith(":"):
                raise ValueError(f"invalid host in URI {text[:80]!r}")
            port_text = port_text[1:]
        else:
            host, _, port_text = hostport.partition(":")
        if not host or not _HOST_RE.fullmatch(host):
            raise ValueError(f"invalid host in URI {text[:80]!r}")
        port = _parse_port(port_text, text) if port_text else None
        parsed = parse_params(params)
        _check_uri_params(params, text)
        return cls(
            host=host.lower(),
            user=user,
            port=port,
            scheme=scheme,
            password=password,
            params=parsed,
            headers=uri_headers or None,
        )

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


def _parse_port(port_text: str, context: str) -> int:
    # The length guard keeps int() away from huge digit strings (it refuses more than 4300 digits).
    if not _DIGITS_RE.fullmatch(port_text) or len(port_text) > 5 or not 0 < int(port_text) < 65536:
        raise ValueError(f"invalid port in {context[:80]!r}")
    return int(port_text)


def _check_uri_params(params: str, context: str) -> None:
    if not params:
        return
    for part in params.split(";"):
        name, eq, value = part.partition("=")
        if not _PARAMCHARS_RE.fullmatch(name) or (eq and not _PARAMCHARS_RE.fullmatch(value)):
            raise ValueError(f"invalid URI parameter {part[:40]!r} in {context[:80]!r}")


def _read_quoted(text: str, start: int) -> tuple[str, int]:
    """The unescaped content of the quoted-string opening at `start`, and the index just past it."""
    out: list[str] = []
    index = start + 1
    while index < len(text):
        char = text[index]
        if char == "\\":
            if index + 1 >= len(text):
                break
            out.append(text[index + 1])
            index += 2
            continue
        if char == '"':
            return "".join(out), index + 1
        out.append(char)
        index += 1
    raise ValueError(f"unterminated quoted string in {text[:80]!r}")


def _find_unquoted(text: str, char: str) -> int:
    """The index of the first `char` outside quoted strings, or -1."""
    quoted = escaped = False
    for index, c in enumerate(text):
        if escaped:
            escaped = False
        elif quoted and c == "\\":
            escaped = True
        elif c == '"':
            quoted = not quoted
        elif c == char and not quoted:
            return index
    return -1


def _quote(text: str) -> str:
    """A quoted-string for `text`: `"` and `\\` and control characters escaped as quoted-pairs (§25.1)."""
    # CR and LF cannot be quoted-pairs at all; they become spaces rather than break the header line.
    text = text.replace("\r", " ").replace("\n", " ")
    return '"' + re.sub(r'(["\\\x00-\x09\x0b\x0c\x0e-\x1f\x7f])', r"\\\1", text) + '"'


@dataclass
class NameAddress:
    """`"Display" <uri>;params` as in From, To, Contact, Route and Record-Route (RFC 3261 §20)."""

    uri: SipUri
    display_name: str | None = None
    params: dict[str, str | None] = field(default_factory=dict)

    @classmethod
    def parse(cls, text: str) -> NameAddress:
        """Parse name-addr or addr-spec with header parameters; raises ValueError naming the fault."""
        text = text.strip()
        display: str | None = None
        if text.startswith('"'):
            display, index = _read_quoted(text, 0)
            rest = text[index:].lstrip()
            if not rest.startswith("<"):
                raise ValueError(f"quoted display name not followed by <URI> in {text[:80]!r}")
        elif _find_unquoted(text, "<") >= 0:
            split = _find_unquoted(text, "<")
            before, after = text[:split], text[split + 1 :]
            # display-name = *(token LWS) / quoted-string (§25.1); non-ASCII is let through unquoted.
            words = before.split()
            for word in words:
                if not all(c.isalnum() or c in "-.!%*_+`'~" or ord(c) > 127 for c in word):
                    raise ValueError(f"display name {before.strip()[:40]!r} must be quoted")
            display = " ".join(words) or None
            rest = "<" + after
        else:
            # addr-spec form: URI parameters are header parameters here, and a URI with ",", "?" or
            # ";" of its own needs the <> form (§20.10).
            uri_text, _, params = text.partition(";")
            if "?" in uri_text or "," in uri_text:
                raise ValueError(f"URI with '?' or ',' must be enclosed in <> in {text[:80]!r}")
            _check_generic_params(";" + params if params else "", "header")
            return cls(uri=SipUri.parse(uri_text), params=parse_params(params))
        uri_text, closed, after = rest[1:].partition(">")
        if not closed:
            raise ValueError(f"unterminated <...> in {text[:80]!r}")
        _check_generic_params(after, "header")
        return cls(uri=SipUri.parse(uri_text), display_name=display or None, params=parse_params(after))

    @property
    def tag(self) -> str | None:
        return self.params.get("tag")

    def __str__(self) -> str:
        display = f"{_quote(self.display_name)} " if self.display_name else ""
        return f"{display}<{self.uri}>{format_params(self.params)}"


# sent-protocol = protocol-name SLASH protocol-version SLASH transport, each a token (§25.1), then
# sent-by = host [COLON port]; SLASH and COLON may carry LWS around them.
_VIA_RE = re.compile(
    rf"(?P<name>{_TOKEN})\s*/\s*(?P<version>{_TOKEN})\s*/\s*(?P<transport>{_TOKEN})\s+"
    r"(?P<host>\[[0-9A-Fa-f:.]*\]|[^\s;:\[\]]+)(?:\s*:\s*(?P<port>[^\s;]*))?\s*(?P<params>.*)",
    re.DOTALL,
)


@dataclass
class Via:
    """One Via value: `SIP/2.0/UDP host:port;branch=...` (RFC 3261 §20.42, RFC 3581 rport)."""

    transport: str
    host: str
    port: int | None = None
    params: dict[str, str | None] = field(default_factory=dict)

    @classmethod
    def parse(cls, text: str) -> Via:
        """Read sent-protocol, sent-by and parameters. Empty parameters (`;;`) are skipped here so that a
        malformed request can still be answered; `parse_message` refuses them (RFC 4475 §3.1.2.1)."""
        text = text.strip()
        match = _VIA_RE.fullmatch(text)
        if not match:
            raise ValueError(f"malformed Via {text[:80]!r}")
        transport, host, port_text, params = match.group("transport", "host", "port", "params")
        if not _HOST_RE.fullmatch(host):
            raise ValueError(f"invalid host in Via {text[:80]!r}")
        if params and not params.startswith(";"):
            raise ValueError(f"unexpected text after sent-by in Via {text[:80]!r}")
        port = _parse_port(port_text, text) if port_text is not None else None
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
        if len(parts) != 2 or not _DIGITS_RE.fullmatch(parts[0]) or not _TOKEN_RE.fullmatch(parts[1]):
            raise ValueError(f"malformed CSeq {text[:80]!r}")
        # §8.1.1.5: the number must be below 2**31; the length test spares int() a huge string.
        if len(parts[0].lstrip("0")) > 10 or int(parts[0]) >= 2**31:
            raise ValueError("CSeq number out of range (must be below 2**31)")
        return cls(int(parts[0]), parts[1])

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
        # Content-Length is always the body's true length: at the place of the first such field when
        # there is one (so parse and serialise round-trip), else last.
        lines = [start_line]
        length_written = False
        for name, value in self.headers:
            if name == "Content-Length":
                if length_written:
                    continue
                value = str(len(self.body))
                length_written = True
            lines.append(f"{name}: {value}")
        if not length_written:
            lines.append(f"Content-Length: {len(self.body)}")
        # A CR or LF inside a value would start a new header on the wire (header injection).
        if any("\r" in line or "\n" in line for line in lines):
            raise ValueError("a start line or header field contains CR or LF")
        return ("\r\n".join(lines) + "\r\n\r\n").encode("utf-8") + self.body


@dataclass
class Request(_Message):
    method: str = "OPTIONS"
    uri: str = ""

    def __init__(
        self, method: str, uri: str | SipUri, headers: Headers | None = None, body: bytes = b""
    ) -> None:
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

    def __init__(
        self, status: int, reason: str | None = None, headers: Headers | None = None, body: bytes = b""
    ) -> None:
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
    100: "Trying",
    180: "Ringing",
    181: "Call Is Being Forwarded",
    182: "Queued",
    183: "Session Progress",
    200: "OK",
    202: "Accepted",
    400: "Bad Request",
    401: "Unauthorized",
    403: "Forbidden",
    404: "Not Found",
    405: "Method Not Allowed",
    407: "Proxy Authentication Required",
    408: "Request Timeout",
    413: "Request Entity Too Large",
    415: "Unsupported Media Type",
    416: "Unsupported URI Scheme",
    420: "Bad Extension",
    423: "Interval Too Brief",
    480: "Temporarily Unavailable",
    481: "Call/Transaction Does Not Exist",
    482: "Loop Detected",
    483: "Too Many Hops",
    486: "Busy Here",
    487: "Request Terminated",
    488: "Not Acceptable Here",
    491: "Request Pending",
    500: "Server Internal Error",
    501: "Not Implemented",
    503: "Service Unavailable",
    504: "Server Time-out",
    505: "Version Not Supported",
    513: "Message Too Large",
    600: "Busy Everywhere",
    603: "Decline",
}


def parse_message(data: bytes, *, stream: bool = False) -> Message:
    """Parse one whole message; raises `SipParseError` (and nothing else) for anything it refuses.

    `stream` says the bytes came framed from a stream transport, where Content-Length is mandatory
    (RFC 3261 §18.3); on datagrams a missing Content-Length means the body runs to the end. The parsed
    message always carries a Content-Length equal to its body's length.
    """
    if len(data) > MAX_MESSAGE_BYTES:
        raise SipParseError(
            f"message of {len(data)} bytes exceeds the {MAX_MESSAGE_BYTES}-byte limit", status=513
        )
    # Leading CRLFs are keep-alives or stray line ends (RFC 3261 §7.5); ignore them.
    data = bytes(data).lstrip(b"\r\n")
    end = _HEAD_END_RE.search(data)
    if end is None:
        raise SipParseError("no empty line ends the header section")
    head, body = data[: end.start()], data[end.end() :]
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise SipParseError(f"header section is not valid UTF-8 (byte {exc.start})") from None
    lines = _LINE_SPLIT_RE.split(text)
    start_line = lines[0]
    if len(start_line) > MAX_LINE_BYTES:
        raise SipParseError("start line too long")
    start_fault = "control character in the start line" if _BARE_CTL_RE.search(start_line) else None
    headers, header_fault = _parse_header_lines(lines[1:])

    if start_line[:4].upper() == "SIP/":
        # A response that fails to parse is dropped, never answered (§16.7, §18.1.2).
        match = _STATUS_LINE_RE.fullmatch(start_line)
        if not match or start_fault:
            raise SipParseError(start_fault or f"malformed status line {start_line[:80]!r}")
        if header_fault:
            raise SipParseError(header_fault)
        major, minor, status, reason = match.groups()
        if (major, minor) != ("2", "0"):
            raise SipParseError(f"unsupported SIP version SIP/{major[:5]}.{minor[:5]}", status=505)
        response = Response(int(status), reason or "", headers, b"")
        if not 100 <= response.status <= 699:
            raise SipParseError(f"status code {status} out of range")
        response.body = _take_body(body, headers, stream, None)
        _check_required(response, None)
        return response

    parts = start_line.split(" ")
    method_ok = bool(parts) and _TOKEN_RE.fullmatch(parts[0]) is not None
    if len(parts) != 3 or not all(parts):
        raise SipParseError(
            f"malformed request line {start_line[:80]!r}",
            headers=headers,
            method=parts[0] if method_ok else None,
        )
    method, uri, version = parts
    if not method_ok:
        raise SipParseError(f"invalid method token {method[:40]!r}")
    if start_fault:
        raise SipParseError(start_fault, headers=headers, method=method)
    if header_fault:
        raise SipParseError(header_fault, headers=headers, method=method)
    if not _VERSION_RE.fullmatch(version):
        raise SipParseError(f"malformed SIP version {version[:20]!r}", headers=headers, method=method)
    if version.upper() != SIP_VERSION:
        raise SipParseError(
            f"unsupported SIP version {version[:20]!r}", status=505, headers=headers, method=method
        )
    scheme = uri.partition(":")[0]
    if ":" in uri and _SCHEME_RE.fullmatch(scheme) and scheme.lower() not in ("sip", "sips", "tel"):
        raise SipParseError(
            f"unsupported URI scheme {scheme[:20]!r} in the Request-URI",
            status=416,
            headers=headers,
            method=method,
        )
    try:
        request_uri = SipUri.parse(uri)
    except ValueError as exc:
        raise SipParseError(f"bad Request-URI: {exc}", headers=headers, method=method) from None
    if request_uri.headers is not None:
        # §19.1.1 table: headers are not allowed in a Request-URI (RFC 4475 §3.1.2.11).
        raise SipParseError("Request-URI carries URI headers", headers=headers, method=method)
    request = Request(method, uri, headers, b"")
    request.body = _take_body(body, headers, stream, method)
    _check_required(request, method)
    return request


def _parse_header_lines(lines: list[str]) -> tuple[Headers, str | None]:
    """Unfold and split header lines; returns the headers read and the first fault found, if any."""
    # Each field is a name and the list of its physical lines' pieces: joining once at the end keeps
    # thousands of continuation lines linear rather than quadratic.
    fields: list[tuple[str, list[str]]] = []
    fault: str | None = None
    for line in lines:
        if len(line) > MAX_LINE_BYTES:
            fault = fault or f"header line longer than {MAX_LINE_BYTES} bytes"
            continue
        if _BARE_CTL_RE.search(line):
            fault = fault or f"control character in header line {line[:40]!r}"
            continue
        if line[:1] in (" ", "\t"):
            if not fields:
                fault = fault or "continuation line before any header"
                continue
            # §7.3.1: a folded line is the same as one with the line break replaced by a space.
            fields[-1][1].append(line.strip())
            continue
        name, colon, value = line.partition(":")
        name = name.strip()
        if not colon or not name or not _TOKEN_RE.fullmatch(name):
            fault = fault or f"malformed header line {line[:60]!r}"
            continue
        if len(fields) >= MAX_HEADERS:
            fault = f"more than {MAX_HEADERS} header fields"
            break
        fields.append((name, [value.strip()]))
    return Headers((name, " ".join(p for p in pieces if p)) for name, pieces in fields), fault


def _take_body(body: bytes, headers: Headers, stream: bool, method: str | None) -> bytes:
    if len(headers.get_all("Content-Length")) > 1:
        # RFC 4475 §3.3.9: which one frames the body cannot be known.
        raise SipParseError("more than one Content-Length header", headers=headers, method=method)
    length_text = headers.get("Content-Length")
    if length_text is None:
        # §18.3: on a stream Content-Length is mandatory; treat its absence as an empty body.
        taken = b"" if stream else body
    else:
        length_text = length_text.strip()
        if not _DIGITS_RE.fullmatch(length_text):
            raise SipParseError(
                f"invalid Content-Length {length_text[:20]!r}", headers=headers, method=method
            )
        digits = length_text.lstrip("0") or "0"
        if len(digits) > 9 or int(digits) > MAX_BODY_BYTES:
            raise SipParseError(
                f"Content-Length {digits[:12]} exceeds the {MAX_BODY_BYTES}-byte limit",
                status=413,
                headers=headers,
                method=method,
            )
        length = int(digits)
        if len(body) < length:
            raise SipParseError(
                f"Content-Length {length} larger than the {len(body)} body bytes received",
                headers=headers,
                method=method,
            )
        # §18.3: bytes beyond Content-Length in a datagram are discarded.
        taken = body[:length]
    if len(taken) > MAX_BODY_BYTES:
        raise SipParseError(
            f"body of {len(taken)} bytes exceeds the {MAX_BODY_BYTES}-byte limit",
            status=413,
            headers=headers,
            method=method,
        )
    headers.set("Content-Length", str(len(taken)))
    return taken


def _check_required(message: Message, method: str | None) -> None:
    """The checks §8.2 and §20 ask of every message, each failing with a reason naming the header."""
    headers = message.headers

    def fail(reason: str) -> SipParseError:
        return SipParseError(reason, headers=headers, method=method)

    for name in ("Via", "From", "To", "Call-ID", "CSeq"):
        if not headers.get(name):
            raise fail(f"missing {name} header")
    counts = Counter(_key(name) for name, _ in headers)
    for name in SINGLE_HEADERS:
        if counts[_key(name)] > 1:
            raise fail(f"more than one {name} header")
    try:
        cseq = CSeq.parse(headers.get("CSeq") or "")
    except ValueError as exc:
        raise fail(str(exc)) from None
    if method is not None and cseq.method != method:
        raise fail(f"CSeq method {cseq.method[:40]} does not match request method {method[:40]}")
    vias = headers.values("Via")
    if not vias:
        raise fail("missing Via header")
    for value in vias:
        try:
            Via.parse(value)
            _check_via_params(value)
        except ValueError as exc:
            raise fail(f"malformed Via header: {exc}") from None
    for name in ("From", "To"):
        try:
            NameAddress.parse(headers.get(name) or "")
        except ValueError as exc:
            raise fail(f"malformed {name} header: {exc}") from None
    call_id = headers.get("Call-ID") or ""
    if not _CALL_ID_RE.fullmatch(call_id):
        raise fail(f"malformed Call-ID {call_id[:40]!r}")
    for name in ("Contact", "Route", "Record-Route"):
        for value in headers.values(name):
            if name == "Contact" and value == "*":
                continue
            try:
                address = NameAddress.parse(value)
            except ValueError as exc:
                raise fail(f"malformed {name} header: {exc}") from None
            if name != "Contact" and "<" not in value:
                # §20.30, §20.34: route = name-addr, always in angle brackets.
                raise fail(f"{name} value {str(address.uri)[:40]!r} must be in angle brackets")
    max_forwards = headers.get("Max-Forwards")
    if max_forwards is not None:
        text = max_forwards.strip()
        if not _DIGITS_RE.fullmatch(text) or len(text.lstrip("0")) > 3 or int(text) > 255:
            # §20.22 and RFC 4475 §3.1.2.4: 0 to 255.
            raise fail(f"invalid Max-Forwards {max_forwards[:20]!r}")


def _check_via_params(value: str) -> None:
    match = _VIA_RE.fullmatch(value.strip())
    if match:
        _check_generic_params(match.group("params"), "Via")


def error_response(error: SipParseError) -> Response | None:
    """The response a server sends for a request that failed to parse, or None if it cannot answer."""
    if not error.answerable or error.method == "ACK":
        return None
    assert error.headers is not None
    headers = Headers()
    for via in error.headers.get_all("Via"):
        headers.add("Via", via)
    for name in ("From", "To", "Call-ID", "CSeq"):
        value = error.headers.get(name)
        if value is not None:
            headers.add(name, value)
    to = headers.get("To")
    if to is not None:
        try:
            if NameAddress.parse(to).tag is None:
                # §8.2.6.2: a response adds a To tag. No state is kept for a refused request, so the tag
                # is derived from the request itself and a retransmission gets the same one.
                seed = f"{headers.get('Call-ID')}|{headers.get('Via')}|{headers.get('CSeq')}"
                headers.set("To", f"{to};tag={hashlib.sha1(seed.encode()).hexdigest()[:10]}")
        except ValueError:
            pass  # the To itself is the fault: it is echoed as sent
    # The reason phrase names the fault (RFC 3261 §21.4.1 lets it carry detail); keep it one clean line.
    reason = REASONS.get(error.status, "Bad Request") + " - " + re.sub(r"[\x00-\x1f\x7f]", " ", error.reason)
    return Response(error.status, reason[:200], headers)


class FramingError(Exception):
    """A stream that cannot be framed into SIP messages; the connection should be closed."""


class StreamFramer:
    """Cuts a TCP byte stream into whole messages (RFC 3261 §18.3), with bounded buffering.

    The buffer never holds more than `max_message` bytes plus the last chunk fed: a header section that
    does not end by then, or a Content-Length that would pass it, raises `FramingError`. Double-CRLF
    keep-alive pings between messages are consumed and counted in `pings` (RFC 5626 §3.5.1: the
    transport answers each with a single CRLF).
    """

    def __init__(self, max_message: int = MAX_MESSAGE_BYTES) -> None:
        self._buffer = bytearray()
        self._max = max_message
        self._scanned = 0  # the header-end search resumes here rather than rescanning the buffer
        self._crlfs = 0
        self.pings = 0

    def feed(self, data: bytes) -> list[bytes]:
        self._buffer += data
        messages: list[bytes] = []
        while True:
            self._strip_keepalives()
            end = _HEAD_END_RE.search(self._buffer, max(0, self._scanned - 3))
            if end is None:
                self._scanned = len(self._buffer)
                if len(self._buffer) > self._max:
                    raise FramingError(f"header section exceeds {self._max} bytes without an end")
                return messages
            self._scanned = end.start()
            length = _framing_length(bytes(self._buffer[: end.start()]))
            total = end.end() + length
            if total > self._max:
                raise FramingError(f"message of {total} bytes exceeds {self._max}")
            if len(self._buffer) < total:
                return messages
            messages.append(bytes(self._buffer[:total]))
            del self._buffer[:total]
            self._scanned = 0
            self._crlfs = 0

    def _strip_keepalives(self) -> None:
        while True:
            if self._buffer[:2] == b"\r\n":
                del self._buffer[:2]
            elif self._buffer[:1] == b"\n":
                del self._buffer[:1]
            else:
                return
            self._scanned = 0
            self._crlfs += 1
            if self._crlfs == 2:
                self.pings += 1
                self._crlfs = 0

    @property
    def buffered(self) -> int:
        return len(self._buffer)


def _framing_length(head: bytes) -> int:
    """The Content-Length of a header section, read the way `parse_message` reads it (folding, compact
    form, any letter case); 0 when absent. A value that cannot be trusted leaves the stream unframeable."""
    fields: list[list[bytes]] = []  # the pieces of each Content-Length field, continuation lines included
    in_length = False
    for line in re.split(rb"\r?\n", head)[1:]:
        if line[:1] in (b" ", b"\t"):
            if in_length:
                fields[-1].append(line.strip())
            continue
        name, colon, value = line.partition(b":")
        in_length = bool(colon) and name.strip().lower() in (b"content-length", b"l")
        if in_length:
            fields.append([value.strip()])
    lengths = {b" ".join(p for p in pieces if p) for pieces in fields}
    if not lengths:
        return 0
    if len(lengths) > 1:
        raise FramingError("conflicting Content-Length headers")
    text = lengths.pop()
    if not re.fullmatch(rb"[0-9]+", text) or len(text.lstrip(b"0")) > 9:
        raise FramingError(f"invalid Content-Length {text[:20]!r}")
    return int(text)
