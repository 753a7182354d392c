"""HTTP digest authentication for SIP (RFC 3261 §22.4, RFC 2617, RFC 7616, RFC 8760): challenge, verify, answer.

Algorithms MD5 and SHA-256 (and their -sess forms on the client side), qop=auth, and the qop-less form of
RFC 2069 for challenges that offer no qop. The server keeps no per-nonce state: a nonce carries the time
it was issued and an HMAC over it, so any node holding the secret key can check it, and an old one is
reported stale (RFC 7616 §3.3) rather than wrong.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
import struct
from collections.abc import Callable, Sequence
from dataclasses import dataclass

# Preference order when a peer offers several (RFC 8760 §2.4: SHA-256 first, MD5 kept for old peers).
_HASHES = {"SHA-256": "sha256", "MD5": "md5"}
_PREFERENCE = ("SHA-256", "SHA-256-SESS", "MD5", "MD5-SESS")

_NONCE_MAC_BYTES = 16
_NONCE_RANDOM_BYTES = 8
# A nonce from slightly ahead of our clock is tolerated (several nodes, one secret, clocks close).
_CLOCK_SLACK = 5.0


@dataclass(frozen=True)
class AuthResult:
    """The verdict on one Authorization value.

    `stale` is true when the credentials were right but the nonce is too old (or replayed): answer with a
    new challenge carrying stale=true, and the client retries without asking its user (RFC 7616 §3.3).
    """

    ok: bool
    username: str | None = None
    stale: bool = False
    reason: str = ""


# Parsing ----------------------------------------------------------------------------------------------


def _parse_auth_params(text: str) -> dict[str, str]:
    """`name=token` and `name="quoted"` pairs separated by commas (RFC 7235 §2.1 auth-param); names
    lower-cased, quoted values unescaped."""
    params: dict[str, str] = {}
    i, n = 0, len(text)
    while i < n:
        while i < n and text[i] in " \t\r\n,":
            i += 1
        if i >= n:
            break
        start = i
        while i < n and text[i] not in "= \t,":
            i += 1
        name = text[start:i].lower()
        while i < n and text[i] in " \t":
            i += 1
        if not name or i >= n or text[i] != "=":
            raise ValueError(f"malformed auth parameter near {text[start : start + 40]!r}")
        i += 1
        while i < n and text[i] in " \t":
            i += 1
        if i < n and text[i] == '"':
            i += 1
            value: list[str] = []
            while i < n and text[i] != '"':
                if text[i] == "\\" and i + 1 < n:
                    i += 1
                value.append(text[i])
                i += 1
            if i >= n:
                raise ValueError(f"unterminated quoted string in parameter {name!r}")
            i += 1
            params[name] = "".join(value)
        else:
            start = i
            while i < n and text[i] not in ", \t":
                i += 1
            params[name] = text[start:i]
    return params


def _split_scheme(value: str) -> tuple[str, str]:
    value = value.strip()
    scheme, _, rest = value.partition(" ")
    return scheme.lower(), rest


def parse_challenge(value: str) -> dict[str, str]:
    """The parameters of a `Digest ...` WWW-Authenticate or Proxy-Authenticate value, names lower-cased."""
    scheme, rest = _split_scheme(value)
    if scheme != "digest":
        raise ValueError(f"not a Digest challenge (scheme {scheme!r})")
    return _parse_auth_params(rest)


def parse_credentials(value: str) -> dict[str, str]:
    """The parameters of a `Digest ...` Authorization or Proxy-Authorization value, names lower-cased."""
    scheme, rest = _split_scheme(value)
    if scheme != "digest":
        raise ValueError(f"not Digest credentials (scheme {scheme!r})")
    return _parse_auth_params(rest)


def _quote(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


# The computation --------------------------------------------------------------------------------------


def _hash_for(algorithm: str) -> str:
    base = algorithm.upper().removesuffix("-SESS")
    if base not in _HASHES:
        raise ValueError(f"unsupported digest algorithm {algorithm!r} (supported: MD5, SHA-256 and -sess)")
    return _HASHES[base]


def digest_response(
    algorithm: str,
    username: str,
    realm: str,
    password: str,
    method: str,
    uri: str,
    nonce: str,
    qop: str | None = None,
    nc: str | None = None,
    cnonce: str | None = None,
) -> str:
    """The `response` value of RFC 7616 §3.4.1 (RFC 2617 §3.2.2.1; RFC 2069 §2.1.2 when qop is None)."""
    hash_name = _hash_for(algorithm)

    def h(text: str) -> str:
        return hashlib.new(hash_name, text.encode("utf-8")).hexdigest()

    ha1 = h(f"{username}:{realm}:{password}")
    if algorithm.upper().endswith("-SESS"):
        if cnonce is None:
            raise ValueError("a -sess algorithm needs a cnonce")
        ha1 = h(f"{ha1}:{nonce}:{cnonce}")
    ha2 = h(f"{method}:{uri}")
    if qop is None:
        return h(f"{ha1}:{nonce}:{ha2}")
    if qop != "auth":
        raise ValueError(f"unsupported qop {qop!r} (only auth)")
    return h(f"{ha1}:{nonce}:{nc}:{cnonce}:{qop}:{ha2}")


# Client -----------------------------------------------------------------------------------------------


def _choose(challenges: Sequence[str]) -> dict[str, str]:
    """The challenge to answer: the most preferred algorithm we support (SHA-256 over MD5)."""
    best: tuple[int, dict[str, str]] | None = None
    for value in challenges:
        try:
            params = parse_challenge(value)
        except ValueError:
            continue
        algorithm = params.get("algorithm", "MD5").upper()
        if algorithm not in _PREFERENCE:
            continue
        rank = _PREFERENCE.index(algorithm)
        if best is None or rank < best[0]:
            best = (rank, params)
    if best is None:
        raise ValueError("no Digest challenge with a supported algorithm (MD5 or SHA-256)")
    return best[1]


def digest_authorization(
    challenge_header_value: str | Sequence[str],
    method: str,
    uri: str,
    username: str,
    password: str,
    cnonce: str | None = None,
    nc: int = 1,
) -> str:
    """The Authorization (or Proxy-Authorization) value answering a challenge.

    `challenge_header_value` is one challenge or every challenge of a response; with several, SHA-256 is
    answered when offered (RFC 8760 §2.4). `uri` is the Request-URI. With qop=auth offered the answer
    carries `cnonce` (random when None) and `nc` (the count of requests sent with this nonce, from 1);
    without qop it is the RFC 2069 form.
    """
    challenges = (
        [challenge_header_value] if isinstance(challenge_header_value, str) else challenge_header_value
    )
    params = _choose(challenges)
    realm = params.get("realm", "")
    nonce = params.get("nonce")
    if nonce is None:
        raise ValueError("the challenge has no nonce")
    algorithm = params.get("algorithm", "MD5")
    qop: str | None = None
    if "qop" in params:
        options = [option.strip().lower() for option in params["qop"].split(",")]
        if "auth" not in options:
            raise ValueError(f"the challenge offers qop {params['qop']!r}; only auth is supported")
        qop = "auth"
    nc_text: str | None = None
    if qop is not None or algorithm.upper().endswith("-SESS"):
        cnonce = cnonce or secrets.token_hex(8)
    if qop is not None:
        nc_text = f"{nc:08x}"
    response = digest_response(algorithm, username, realm, password, method, uri, nonce, qop, nc_text, cnonce)
    parts = [
        f"username={_quote(username)}",
        f"realm={_quote(realm)}",
        f"nonce={_quote(nonce)}",
        f"uri={_quote(uri)}",
        f"response={_quote(response)}",
    ]
    if "algorithm" in params:
        parts.append(f"algorithm={algorithm}")
    if cnonce is not None:
        parts.append(f"cnonce={_quote(cnonce)}")
    if "opaque" in params:
        parts.append(f"opaque={_quote(params['opaque'])}")
    if qop is not None:
        parts.append(f"qop={qop}")
        parts.append(f"nc={nc_text}")
    return "Digest " + ", ".join(parts)


# Server -----------------------------------------------------------------------------------------------


class DigestServer:
    """Issues challenges and checks credentials for one realm, without per-nonce state.

    A nonce is base64url(issue time as a double, 8 random bytes, HMAC-SHA-256 over both and the realm,
    cut to 16 bytes). `now` must come from the same clock for `challenge` and `verify`.
    With `qop=True` (the default) challenges offer qop="auth" and only qop=auth answers are accepted;
    with `qop=False` they offer none and only RFC 2069 answers are. `replay_protection` remembers the
    highest nc seen per nonce (for a nonce's lifetime) and reports a repeat as stale.
    """

    def __init__(
        self,
        realm: str,
        secret_key: bytes,
        nonce_lifetime: float = 300,
        *,
        qop: bool = True,
        algorithms: Sequence[str] = ("SHA-256", "MD5"),
        replay_protection: bool = False,
    ) -> None:
        if len(secret_key) < 16:
            raise ValueError("the nonce secret should be at least 16 bytes of randomness")
        for algorithm in algorithms:
            if algorithm.upper() not in _HASHES:
                raise ValueError(f"unsupported server algorithm {algorithm!r} (MD5, SHA-256)")
        self.realm = realm
        self.nonce_lifetime = nonce_lifetime
        self.qop = qop
        self.algorithms = tuple(a.upper() for a in algorithms)
        self.replay_protection = replay_protection
        self._key = secret_key
        self._nc_seen: dict[str, tuple[int, float]] = {}
        self._purge_at = 1024

    # Nonces ------------------------------------------------------------------------------------------

    def _mac(self, payload: bytes) -> bytes:
        return hmac.new(self._key, payload + self.realm.encode("utf-8"), hashlib.sha256).digest()[
            :_NONCE_MAC_BYTES
        ]

    def make_nonce(self, now: float) -> str:
        payload = struct.pack(">d", now) + secrets.token_bytes(_NONCE_RANDOM_BYTES)
        return base64.urlsafe_b64encode(payload + self._mac(payload)).decode("ascii").rstrip("=")

    def nonce_time(self, nonce: str) -> float | None:
        """When a nonce was issued, or None if this server (this key and realm) did not issue it."""
        try:
            raw = base64.urlsafe_b64decode(nonce + "=" * (-len(nonce) % 4))
        except (ValueError, TypeError):
            return None
        if len(raw) != 8 + _NONCE_RANDOM_BYTES + _NONCE_MAC_BYTES:
            return None
        payload, mac = raw[:-_NONCE_MAC_BYTES], raw[-_NONCE_MAC_BYTES:]
        if not hmac.compare_digest(mac, self._mac(payload)):
            return None
        return float(struct.unpack(">d", payload[:8])[0])

    # Challenge and verify ----------------------------------------------------------------------------

    def challenge(self, now: float, stale: bool = False) -> list[str]:
        """WWW-Authenticate (or Proxy-Authenticate) values, most preferred algorithm first (RFC 8760 §2.4)."""
        nonce = self.make_nonce(now)
        values = []
        for algorithm in self.algorithms:
            parts = [f"realm={_quote(self.realm)}", f"nonce={_quote(nonce)}", f"algorithm={algorithm}"]
            if self.qop:
                parts.append('qop="auth"')
            if stale:
                parts.append("stale=true")
            values.append("Digest " + ", ".join(parts))
        return values

    def verify(
        self,
        method: str,
        authorization_header_value: str,
        lookup_password: Callable[[str], str | None],
        now: float,
        *,
        request_uri: str | None = None,
    ) -> AuthResult:
        """Check credentials against `method` (and, when given, the Request-URI they must name).

        `lookup_password` maps a username to its password, or None for an unknown user.
        """
        try:
            creds = parse_credentials(authorization_header_value)
        except ValueError as exc:
            return AuthResult(False, reason=str(exc))
        username = creds.get("username")
        missing = [name for name in ("username", "realm", "nonce", "uri", "response") if name not in creds]
        if missing or username is None:
            return AuthResult(False, username, reason=f"missing {', '.join(missing)}")
        if creds["realm"] != self.realm:
            return AuthResult(False, username, reason=f"realm {creds['realm']!r} is not {self.realm!r}")
        algorithm = creds.get("algorithm", "MD5").upper()
        if algorithm not in self.algorithms:
            return AuthResult(False, username, reason=f"algorithm {algorithm} was not offered")
        qop = creds.get("qop")
        nc_text = creds.get("nc")
        cnonce = creds.get("cnonce")
        nc_value = 0
        if self.qop:
            if qop is None or qop.lower() != "auth":
                return AuthResult(False, username, reason="qop=auth is required")
            qop = "auth"
            if cnonce is None or nc_text is None or len(nc_text) != 8:
                return AuthResult(False, username, reason="qop=auth needs cnonce and an 8-digit nc")
            try:
                nc_value = int(nc_text, 16)
            except ValueError:
                return AuthResult(False, username, reason=f"nc {nc_text!r} is not hexadecimal")
        elif qop is not None:
            return AuthResult(False, username, reason="qop was not offered")
        if request_uri is not None and creds["uri"] != request_uri:
            return AuthResult(False, username, reason="digest uri does not match the Request-URI")
        issued = self.nonce_time(creds["nonce"])
        if issued is None:
            return AuthResult(False, username, reason="nonce was not issued here")
        password = lookup_password(username)
        if password is None:
            return AuthResult(False, username, reason="unknown user")
        expected = digest_response(
            algorithm,
            username,
            self.realm,
            password,
            method,
            creds["uri"],
            creds["nonce"],
            qop,
            nc_text,
            cnonce,
        )
        if not hmac.compare_digest(expected, creds["response"].lower()):
            return AuthResult(False, username, reason="wrong response (password or method)")
        # Only now, with the credentials proven, may the answer be "stale" (RFC 7616 §3.3).
        if now - issued > self.nonce_lifetime or issued - now > _CLOCK_SLACK:
            return AuthResult(False, username, stale=True, reason="nonce expired")
        if self.replay_protection and self.qop:
            if not self._fresh_nc(creds["nonce"], nc_value, issued, now):
                return AuthResult(False, username, stale=True, reason=f"nc {nc_text} already used")
        return AuthResult(True, username)

    def _fresh_nc(self, nonce: str, nc: int, issued: float, now: float) -> bool:
        seen = self._nc_seen.get(nonce)
        if seen is not None and nc <= seen[0]:
            return False
        self._nc_seen[nonce] = (nc, issued)
        if len(self._nc_seen) > self._purge_at:
            horizon = now - self.nonce_lifetime
            self._nc_seen = {k: v for k, v in self._nc_seen.items() if v[1] >= horizon}
            self._purge_at = max(1024, 2 * len(self._nc_seen))
        return True


class FailureLimiter:
    """Failed authentications per source (an IP address): `max_failures` within `window` seconds lock the
    source out for `lockout` seconds, during which its requests are refused without being checked.
    `max_failures=0` never locks. Memory is bounded: sources quiet for a window are forgotten."""

    def __init__(self, max_failures: int = 10, window: float = 300.0, lockout: float = 900.0) -> None:
        self.max_failures = max_failures
        self.window = window
        self.lockout = lockout
        self._failures: dict[str, list[float]] = {}
        self._locked_until: dict[str, float] = {}
        self._purge_at = 1024

    def locked(self, source: str, now: float) -> bool:
        until = self._locked_until.get(source)
        if until is None:
            return False
        if now < until:
            return True
        del self._locked_until[source]
        return False

    def failed(self, source: str, now: float) -> bool:
        """Count a failure; True when it locks the source out."""
        if self.max_failures <= 0:
            return False
        recent = [t for t in self._failures.get(source, ()) if now - t < self.window]
        recent.append(now)
        if len(recent) >= self.max_failures:
            self._failures.pop(source, None)
            self._locked_until[source] = now + self.lockout
            return True
        self._failures[source] = recent
        if len(self._failures) + len(self._locked_until) > self._purge_at:
            self._purge(now)
        return False

    def succeeded(self, source: str) -> None:
        self._failures.pop(source, None)

    def _purge(self, now: float) -> None:
        self._failures = {s: ts for s, ts in self._failures.items() if ts and now - ts[-1] < self.window}
        self._locked_until = {s: u for s, u in self._locked_until.items() if u > now}
        self._purge_at = max(1024, 2 * (len(self._failures) + len(self._locked_until)))
