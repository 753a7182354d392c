"""Sinch Voice v1 request signing: verify what applications send us, sign the callbacks we send them.

One formula serves both directions (sinch-voice-v1.md §1 and §2):

    signature    = Base64(HMAC-SHA256(Base64Decode(secret), UTF-8(stringToSign)))
    stringToSign = METHOD \\n ContentMD5 \\n ContentType \\n "x-timestamp:" timestamp \\n path

Pure functions: time comes in as an argument, secrets through a lookup callable.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import re
from collections.abc import Callable, Mapping
from datetime import UTC, datetime, timedelta
from urllib.parse import unquote, urlsplit

__all__ = [
    "AuthError",
    "DEFAULT_SKEW",
    "callback_headers",
    "content_md5",
    "format_timestamp",
    "parse_timestamp",
    "signature",
    "string_to_sign",
    "verify_request",
]

DEFAULT_SKEW = timedelta(minutes=15)

# Callbacks carry exactly this Content-Type: the SDK validators hash the header as received, and some
# applications compare it literally (sinch-voice-v1-sources.md §4.3).
CALLBACK_CONTENT_TYPE = "application/json"


class AuthError(Exception):
    """A request failed authentication; `status` and `error_code` go into the Sinch-style error body."""

    def __init__(self, status: int, error_code: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.error_code = error_code
        self.message = message

    def __repr__(self) -> str:
        return f"AuthError({self.status}, {self.error_code}, {self.message!r})"


def content_md5(body: bytes) -> str:
    """Base64 of the MD5 of the exact body bytes; "" for an empty body (no hash of nothing)."""
    if not body:
        return ""
    return base64.b64encode(hashlib.md5(body).digest()).decode("ascii")


def string_to_sign(method: str, content_md5: str, content_type: str, timestamp: str, path: str) -> str:
    return f"{method.upper()}\n{content_md5}\n{content_type}\nx-timestamp:{timestamp}\n{path}"


def signature(secret_b64: str, text: str) -> str:
    """Base64(HMAC-SHA256(key = Base64Decode(secret), text)). Raises ValueError for a secret that is not
    valid Base64 (Sinch issues secrets as Base64; a lenient decoder would silently sign with other bytes)."""
    try:
        key = base64.b64decode(secret_b64, validate=True)
    except binascii.Error as exc:
        raise ValueError("application secret is not valid Base64") from exc
    digest = hmac.new(key, text.encode("utf-8"), hashlib.sha256).digest()
    return base64.b64encode(digest).decode("ascii")


# ISO 8601 date-time, extended (2014-06-04T13:41:58Z) or basic (20140604T134158Z) format, with a fraction
# of any length (JavaScript 3 digits, Python 6, .NET 7, Java up to 9) and an offset written Z, ±hh:mm,
# ±hhmm or ±hh. A time without an offset is taken as UTC, the only zone Sinch clients use.
_ISO = re.compile(
    r"""^\s*
    (?P<y>\d{4})-?(?P<mo>\d{2})-?(?P<d>\d{2})
    [Tt ]
    (?P<h>\d{2}):?(?P<mi>\d{2}):?(?P<s>\d{2})
    (?:[.,](?P<frac>\d+))?
    (?P<tz>[Zz]|[+-]\d{2}(?::?\d{2})?)?
    \s*$""",
    re.VERBOSE,
)


def parse_timestamp(text: str) -> datetime:
    """Parse an ISO 8601 date-time into an aware UTC datetime. Raises ValueError on anything else."""
    m = _ISO.match(text)
    if m is None:
        raise ValueError(f"not an ISO 8601 date-time: {text!r}")
    frac = m["frac"] or ""
    micro = int((frac + "000000")[:6]) if frac else 0  # precision beyond microseconds is dropped
    try:
        base = datetime(int(m["y"]), int(m["mo"]), int(m["d"]), int(m["h"]), int(m["mi"]), int(m["s"]), micro)
    except ValueError as exc:
        raise ValueError(f"not a valid date-time: {text!r}") from exc
    tz = m["tz"]
    offset = timedelta(0)
    if tz and tz not in ("Z", "z"):
        sign = -1 if tz[0] == "-" else 1
        digits = tz[1:].replace(":", "")
        hours, minutes = int(digits[:2]), int(digits[2:] or 0)
        if hours > 23 or minutes > 59:
            raise ValueError(f"not a valid UTC offset: {text!r}")
        offset = sign * timedelta(hours=hours, minutes=minutes)
    return (base - offset).replace(tzinfo=UTC)


def format_timestamp(now: datetime) -> str:
    """UTC, whole seconds, `Z`: the form Sinch puts in callbacks (`2024-06-06T17:20:14Z`). A naive
    datetime is taken as UTC."""
    if now.tzinfo is None:
        now = now.replace(tzinfo=UTC)
    return now.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _lower_keys(headers: Mapping[str, str]) -> dict[str, str]:
    # HTTP header names are case-insensitive (RFC 9110 §5.1); the first value of a repeated header wins.
    out: dict[str, str] = {}
    for name, value in headers.items():
        out.setdefault(name.lower(), value)
    return out


def _path_candidates(raw_path: str) -> list[str]:
    # SDKs disagree on the signed path (sinch-voice-v1-sources.md §4.1): Python and Node sign it unencoded,
    # Java signs the decoded form of what it sends, .NET the encoded path with its query. Try the raw path,
    # then its percent-decoded form, then (only when a query was sent) the raw path with the query.
    path, sep, _query = raw_path.partition("?")
    candidates = [path]
    decoded = unquote(path)
    if decoded != path:
        candidates.append(decoded)
    if sep:
        candidates.append(raw_path)
    return candidates


def verify_request(
    method: str,
    raw_path: str,
    headers: Mapping[str, str],
    body: bytes,
    lookup_secret: Callable[[str], str | None],
    now: datetime,
    skew: timedelta = DEFAULT_SKEW,
) -> str:
    """Authenticate one API request; return its application key or raise AuthError (always 401).

    `raw_path` is the path as it came on the request line, still percent-encoded (for an ASGI app:
    `scope["raw_path"]` decoded as Latin-1, not the decoded `scope["path"]`). `headers` may use any case.
    Codes: 40100 Authorization header missing or malformed, 40101 x-timestamp missing, unparseable or
    further than `skew` from `now`, 40102 signature differs, 40108 unknown key or wrong Basic credentials.
    """
    h = _lower_keys(headers)
    authorization = h.get("authorization", "").strip()
    if not authorization:
        raise AuthError(
            401,
            40100,
            "missing Authorization header: send 'Application {key}:{signature}' "
            "or 'Basic base64(key:secret)'",
        )
    scheme, _, credentials = authorization.partition(" ")
    scheme = scheme.lower()
    credentials = credentials.strip()
    if scheme == "basic":
        return _verify_basic(credentials, lookup_secret)
    if scheme != "application":
        raise AuthError(
            401, 40100, f"unsupported Authorization scheme {scheme!r}: use 'Application' or 'Basic'"
        )

    app_key, colon, sent_signature = credentials.rpartition(":")
    if not colon or not app_key or not sent_signature:
        raise AuthError(
            401, 40100, "malformed Authorization header: expected 'Application {key}:{signature}'"
        )

    timestamp = h.get("x-timestamp", "").strip()
    if not timestamp:
        raise AuthError(
            401, 40101, "missing x-timestamp header (ISO 8601 UTC, for example 2024-01-01T12:00:00Z)"
        )
    try:
        sent_at = parse_timestamp(timestamp)
    except ValueError:
        raise AuthError(401, 40101, f"x-timestamp {timestamp!r} is not an ISO 8601 date-time") from None
    if now.tzinfo is None:
        now = now.replace(tzinfo=UTC)
    if abs(now - sent_at) > skew:
        raise AuthError(
            401,
            40101,
            f"x-timestamp {timestamp!r} is more than {int(skew.total_seconds())} s "
            "from the server's clock: check the client's clock",
        )

    secret = lookup_secret(app_key)
    if secret is None:
        raise AuthError(401, 40108, "invalid credentials: unknown application key")
    md5 = content_md5(body)
    content_type = h.get("content-type", "")
    sent = sent_signature.encode("utf-8", "surrogateescape")
    matched = False
    for path in _path_candidates(raw_path):
        try:
            expected = signature(secret, string_to_sign(method, md5, content_type, timestamp, path))
        except ValueError:
            raise AuthError(
                401, 40108, "invalid credentials: the application's secret is not valid Base64"
            ) from None
        # Every candidate is compared, each in constant time (hmac.compare_digest), so the time taken
        # does not say which one came close.
        matched |= hmac.compare_digest(expected.encode("ascii"), sent)
    if not matched:
        raise AuthError(
            401,
            40102,
            "invalid signature: sign METHOD, Content-MD5, Content-Type, "
            "x-timestamp and the path as described for Sinch request signing",
        )
    return app_key


def _verify_basic(credentials: str, lookup_secret: Callable[[str], str | None]) -> str:
    try:
        decoded = base64.b64decode(credentials, validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        raise AuthError(401, 40100, "malformed Basic credentials: expected base64(key:secret)") from None
    app_key, colon, secret_sent = decoded.partition(":")
    if not colon or not app_key:
        raise AuthError(401, 40100, "malformed Basic credentials: expected base64(key:secret)")
    secret = lookup_secret(app_key)
    # The secret is compared as issued (its Base64 text), never decoded (sinch-voice-v1-sources.md §4.1a).
    if secret is None or not hmac.compare_digest(secret.encode("utf-8"), secret_sent.encode("utf-8")):
        raise AuthError(401, 40108, "invalid credentials: unknown application key or wrong secret")
    return app_key


def callback_headers(
    app_key: str, secret_b64: str, url_path: str, body: bytes, now: datetime
) -> dict[str, str]:
    """Headers for one callback POST carrying exactly `body`.

    `url_path` is the callback URL's path (a full URL is accepted too; its path is taken, without query).
    The scheme word is lower case: the .NET SDK's validator accepts nothing else, the others ignore case.
    """
    if "://" in url_path:
        url_path = urlsplit(url_path).path
    path = url_path.partition("?")[0] or "/"  # an HTTP client sends "/" for an empty path
    timestamp = format_timestamp(now)
    sig = signature(
        secret_b64, string_to_sign("POST", content_md5(body), CALLBACK_CONTENT_TYPE, timestamp, path)
    )
    return {
        "Content-Type": CALLBACK_CONTENT_TYPE,
        "x-timestamp": timestamp,
        "Authorization": f"application {app_key}:{sig}",
    }
