"""The requests the engine answers outside any call: OPTIONS (RFC 3261 §11) and REGISTER (§10.3).

`Registration` owns the digest server that challenges a REGISTER and the registrar its bindings go to
(sip/registrar.py); the engine asks that registrar where a user is when a callout goes to a username. It
takes a request and `now` and hands back the response, which the engine sends through the request's server
transaction: nothing here touches the stack or reads a clock.
"""

from __future__ import annotations

import secrets
from collections import Counter
from collections.abc import Callable

from tonebridge.config import Config
from tonebridge.sip import auth
from tonebridge.sip import transaction as tx
from tonebridge.sip.message import Request, Response
from tonebridge.sip.registrar import IntervalTooBrief, Registrar
from tonebridge.sip.stack import ACCEPT, ALLOW
from tonebridge.sip.transport import Peer


class Registration:
    def __init__(
        self, config: Config, log_event: Callable[..., None], *, counters: Counter[str] | None = None
    ) -> None:
        self.config = config
        self.registrar = Registrar()
        # A key of this process's own: the nonces are stateless (their MAC is what proves them ours), so
        # nothing about them is stored, and after a restart a client is simply challenged again.
        self.digest = auth.DigestServer(
            realm=config.server.public_address,
            secret_key=secrets.token_bytes(32),
            algorithms=config.server.digest_algorithms,
        )
        # The engine's, so that REGISTER's log lines read as every call event's do.
        self._log_event = log_event
        # Failed REGISTER authentications per source address ([security], docs/operations.md "Security").
        security = config.security
        self.limiter = auth.FailureLimiter(
            security.register_max_failures,
            security.register_failure_window,
            security.register_lockout_seconds,
        )
        # `register_auth_failed` and `register_locked_out` go to the counters the engine passes: the SIP
        # transport's (the `sip` figures of /tonebridge/v1/metrics and Prometheus).
        self.counters: Counter[str] = counters if counters is not None else Counter()

    def options(self, request: Request) -> Response:
        """What we allow and accept (the methods, the bodies), to a peer that asks."""
        response = tx.make_response(request, 200, to_tag=secrets.token_hex(6))
        response.headers.set("Allow", ALLOW)
        response.headers.set("Accept", ACCEPT)
        response.headers.set("Supported", "")
        return response

    def register(self, request: Request, peer: Peer, now: float) -> Response:
        """A challenge, a refusal, or the user's bindings (with where `peer` sent it from) and their expiry."""
        user = request.to.uri.user or ""
        if self.limiter.locked(peer.host, now):
            # Locked out: refused without looking at the credentials, so guessing gains nothing.
            self.counters["register_locked_out"] += 1
            return tx.make_response(request, 403, "Forbidden - too many failed attempts")
        header = request.headers.get("Authorization")
        if header is None:
            return self._challenge(request, now)
        result = self.digest.verify("REGISTER", header, self._password, now)
        if not result.ok or result.username != user:
            if result.stale:
                return self._challenge(request, now, stale=True)
            self.counters["register_auth_failed"] += 1
            locked = self.limiter.failed(peer.host, now)
            self._log_event(
                "register_refused",
                user=user,
                source=peer.host,
                reason=repr(result.reason or "credentials"),
                **({"locked_out_seconds": int(self.limiter.lockout)} if locked else {}),
            )
            return tx.make_response(request, 403, "Forbidden - wrong credentials")
        self.limiter.succeeded(peer.host)
        try:
            bindings = self.registrar.register(user, request, (peer.transport, peer.host, peer.port), now)
        except IntervalTooBrief:
            response = tx.make_response(request, 423)
            response.headers.set("Min-Expires", "60")
            return response
        response = tx.make_response(request, 200, to_tag=secrets.token_hex(6))
        for binding in bindings:
            response.headers.add(
                "Contact", f"<{binding.contact}>;expires={max(0, int(binding.expires_at - now))}"
            )
        self._log_event("registered", user=user, contacts=len(bindings))
        return response

    def _password(self, username: str) -> str | None:
        user = self.config.user(username)
        return user.password if user else None

    def _challenge(self, request: Request, now: float, stale: bool = False) -> Response:
        response = tx.make_response(request, 401, to_tag=secrets.token_hex(6))
        for value in self.digest.challenge(now, stale=stale):
            response.headers.add("WWW-Authenticate", value)
        return response
