"""Who may use the operator console: operator password hashes, logins (an operator, or an application by
its key and secret), in-memory sessions held in a cookie, and the CSRF token every session action carries.

A session belongs to a `Viewer`: an operator sees and acts on every application's rooms, an application
only on its own. `session_viewer(request, server)` is how any route asks who is looking; state-changing
requests must also carry the session's CSRF token in `X-CSRF-Token` (`acting_viewer`).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import secrets
import time
import weakref
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

if TYPE_CHECKING:
    from starlette.requests import Request

    from tonebridge.server import Server

__all__ = [
    "COOKIE",
    "CSRF_HEADER",
    "SAFE_METHODS",
    "ConsoleAccess",
    "Refused",
    "Session",
    "Viewer",
    "access_for",
    "acting_viewer",
    "hash_password",
    "session_cookie",
    "session_viewer",
    "verify_password",
]

COOKIE = "tonebridge_console"
CSRF_HEADER = "X-CSRF-Token"
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
SESSION_SECONDS = 8 * 3600
# scrypt's cost: about 16 MiB and 50 ms per hash, which makes guessing slow without making logins slow.
SCRYPT_N, SCRYPT_R, SCRYPT_P = 2**14, 8, 1
_SCRYPT_MAXMEM = 64 * 1024 * 1024


# Password hashes -----------------------------------------------------------------------------------------


def hash_password(password: str, *, n: int = SCRYPT_N, r: int = SCRYPT_R, p: int = SCRYPT_P) -> str:
    """`scrypt$n=16384,r=8,p=1$SALT$HASH` (base64): the string names its own parameters, so that a
    stronger cost later still verifies the hashes already configured."""
    salt = secrets.token_bytes(16)
    digest = hashlib.scrypt(password.encode(), salt=salt, n=n, r=r, p=p, maxmem=_SCRYPT_MAXMEM, dklen=32)
    return f"scrypt$n={n},r={r},p={p}${_b64(salt)}${_b64(digest)}"


@dataclass(frozen=True, slots=True)
class _ScryptHash:
    n: int
    r: int
    p: int
    salt: bytes
    digest: bytes


def parse_password_hash(text: str) -> _ScryptHash:
    """The parts of a hash made by `hash_password`; ValueError naming what is wrong."""
    parts = text.split("$")
    if len(parts) != 4 or parts[0] != "scrypt":
        raise ValueError(
            "password_hash must look like scrypt$n=N,r=R,p=P$SALT$HASH (tonebridge hash-password)"
        )
    try:
        params = dict(item.split("=", 1) for item in parts[1].split(","))
        n, r, p = int(params["n"]), int(params["r"]), int(params["p"])
        salt = base64.b64decode(parts[2], validate=True)
        digest = base64.b64decode(parts[3], validate=True)
    except (ValueError, KeyError, binascii.Error):
        raise ValueError("password_hash: unreadable parameters, salt or hash") from None
    if n < 2 or n & (n - 1) or not 1 <= r <= 64 or not 1 <= p <= 16 or 128 * n * r > _SCRYPT_MAXMEM:
        raise ValueError("password_hash: scrypt n must be a power of two and n, r, p within limits")
    if len(salt) < 8 or len(digest) < 16:
        raise ValueError("password_hash: salt or hash too short")
    return _ScryptHash(n, r, p, salt, digest)


def verify_password(password: str, stored: str) -> bool:
    try:
        parsed = parse_password_hash(stored)
    except ValueError:
        return False
    digest = hashlib.scrypt(
        password.encode(),
        salt=parsed.salt,
        n=parsed.n,
        r=parsed.r,
        p=parsed.p,
        maxmem=_SCRYPT_MAXMEM,
        dklen=len(parsed.digest),
    )
    return hmac.compare_digest(digest, parsed.digest)


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


# Viewers and sessions ------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Viewer:
    """Who a session belongs to. `app_key` None: an operator, who sees every application's rooms."""

    name: str
    app_key: str | None = None

    @property
    def is_operator(self) -> bool:
        return self.app_key is None

    def sees(self, owner: str | None) -> bool:
        """Whether a room or call owned by `owner` (None: the demo application's) is visible."""
        return self.app_key is None or owner == self.app_key


@dataclass(frozen=True, slots=True)
class Session:
    token: str
    csrf: str
    viewer: Viewer
    expires_at: float


class Refused(Exception):
    """A console request that may not proceed: 401 (no valid session) or 403 (no valid CSRF token)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


class ConsoleAccess:
    """One server's operators, application logins and live sessions.

    `secret_for(key)` is the application's secret (None for an unknown key); `owner_of(conference_id,
    call_id)` is the key of the application that owns the conference, else the call (None when neither
    is known), which is whom an operator's action on them acts as."""

    def __init__(
        self,
        operators: dict[str, str],
        secret_for: Callable[[str], str | None],
        owner_of: Callable[[str | None, str | None], str | None],
        *,
        lifetime: float = SESSION_SECONDS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.operators = operators
        self.secret_for = secret_for
        self.owner_of = owner_of
        self.lifetime = lifetime
        self.clock = clock
        self._sessions: dict[str, Session] = {}

    def check_login(self, name: str, password: str) -> Viewer | None:
        """The viewer these credentials log in as, or None. Blocking (scrypt): run it off the loop."""
        stored = self.operators.get(name)
        if stored is not None:
            return Viewer(name) if verify_password(password, stored) else None
        secret = self.secret_for(name) if name else None
        if secret is not None and hmac.compare_digest(password.encode(), secret.encode()):
            return Viewer(name, app_key=name)
        # The same work for an unknown name, so that timing does not tell which names exist.
        verify_password(password, _DUMMY_HASH)
        return None

    def open(self, viewer: Viewer) -> Session:
        self._expire()
        session = Session(
            secrets.token_urlsafe(32), secrets.token_urlsafe(32), viewer, self.clock() + self.lifetime
        )
        self._sessions[session.token] = session
        return session

    def find(self, token: str | None) -> Session | None:
        if not token:
            return None
        session = self._sessions.get(token)
        if session is None:
            return None
        if session.expires_at <= self.clock():
            del self._sessions[token]
            return None
        return session

    def close(self, token: str) -> None:
        self._sessions.pop(token, None)

    def _expire(self) -> None:
        now = self.clock()
        for token in [t for t, s in self._sessions.items() if s.expires_at <= now]:
            del self._sessions[token]

    def __len__(self) -> int:
        return len(self._sessions)


_DUMMY_HASH = f"scrypt$n={SCRYPT_N},r={SCRYPT_R},p={SCRYPT_P}${_b64(bytes(16))}${_b64(bytes(32))}"


# One access per server, found from the server or from its calling API -------------------------------

_by_server: weakref.WeakKeyDictionary[object, ConsoleAccess] = weakref.WeakKeyDictionary()
_by_calling_api: weakref.WeakKeyDictionary[object, ConsoleAccess] = weakref.WeakKeyDictionary()


def access_for(server: Server) -> ConsoleAccess:
    """The server's console access, made on first use from its configuration."""
    access = _by_server.get(server)
    if access is None:
        access = ConsoleAccess(
            {o.name: o.password_hash for o in server.config.operators},
            server.sinch_api.secret_for if server.sinch_api is not None else lambda key: None,
            _owner_lookup(server),
        )
        _by_server[server] = access
        if server.sinch_api is not None:
            _by_calling_api[server.sinch_api] = access
    return access


def access_for_calling_api(api: object) -> ConsoleAccess | None:
    """The console access of the server whose calling routes `api` answers (None before the console has
    been set up, or for a calling API no server owns, as in unit tests)."""
    return _by_calling_api.get(api)


def _owner_lookup(server: Server) -> Callable[[str | None, str | None], str | None]:
    def owner_of(conference_id: str | None, call_id: str | None) -> str | None:
        sinch = server.sinch
        if sinch is None:
            return None
        if conference_id is not None:
            return sinch.conference_owner.get(conference_id)
        if call_id is not None:
            call = sinch.calls.get(call_id)
            return call.app_key if call is not None else None
        return None

    return owner_of


# Requests ------------------------------------------------------------------------------------------------


def request_session(request: Request, access: ConsoleAccess) -> Session | None:
    return access.find(request.cookies.get(COOKIE))


def session_viewer(request: Request, server: Server) -> Viewer | None:
    """Who the request's console session belongs to, or None without a live session. Enough for reads;
    a state-changing request must pass `acting_viewer` instead."""
    session = request_session(request, access_for(server))
    return session.viewer if session is not None else None


def acting_viewer(request: Request, access: ConsoleAccess) -> Viewer:
    """The session's viewer when the request may act: a live session and, for anything but a read, the
    session's CSRF token in `X-CSRF-Token`. Raises Refused otherwise."""
    session = request_session(request, access)
    if session is None:
        raise Refused(401, "no console session: log in at /console")
    if request.method not in SAFE_METHODS:
        sent = request.headers.get(CSRF_HEADER, "")
        if not hmac.compare_digest(sent.encode(), session.csrf.encode()):
            raise Refused(403, f"missing or wrong {CSRF_HEADER} for this session")
    return session.viewer


def same_origin(request: Request) -> bool:
    """Whether a browser's form post comes from this server's own pages: its Origin (or, without one, its
    Referer) names the scheme and host the request was sent to. The login form's CSRF defence."""
    claimed = request.headers.get("origin") or request.headers.get("referer")
    if not claimed or claimed == "null":
        return False
    parts = urlsplit(claimed)
    return (parts.scheme, parts.netloc) == (request.url.scheme, request.headers.get("host", ""))


def session_cookie(request: Request, value: str, max_age: int) -> str:
    """The Set-Cookie value: never readable by scripts, never sent by other sites, Secure over https."""
    secure = "; Secure" if request.url.scheme == "https" else ""
    return f"{COOKIE}={value}; Max-Age={max_age}; Path=/; HttpOnly; SameSite=Strict{secure}"
