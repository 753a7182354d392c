"""OPTIONS and REGISTER (calls/registration.py): a request and `now` in, the response out; no stack, no
sockets, no clock."""

from __future__ import annotations

from tonebridge.calls.registration import Registration
from tonebridge.config import Config, SecurityConfig, UserConfig
from tonebridge.sip.auth import FailureLimiter, digest_authorization
from tonebridge.sip.message import Headers, Request
from tonebridge.sip.stack import ALLOW
from tonebridge.sip.transport import Peer

PEER = Peer("UDP", "127.0.0.1", 5070)


def new_registration() -> tuple[Registration, list[tuple[str, dict[str, object]]]]:
    logged: list[tuple[str, dict[str, object]]] = []
    config = Config(users=[UserConfig(name="alice", password="secret")])
    return Registration(config, lambda event, **fields: logged.append((event, fields))), logged


def request(method: str, user: str = "alice", contact: str = "<sip:alice@127.0.0.1:5070>") -> Request:
    headers = Headers(
        [
            ("Via", "SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bKr"),
            ("From", f"<sip:{user}@127.0.0.1>;tag=a"),
            ("To", f"<sip:{user}@127.0.0.1>"),
            ("Call-ID", "reg1"),
            ("CSeq", f"1 {method}"),
            ("Contact", contact),
        ]
    )
    return Request(method, "sip:127.0.0.1", headers)


def authorized(registration: Registration, password: str, now: float, **kwargs: str) -> Request:
    challenge = registration.register(request("REGISTER", **kwargs), PEER, now)
    assert challenge.status == 401
    answered = request("REGISTER", **kwargs)
    value = digest_authorization(
        challenge.headers.get_all("WWW-Authenticate"), "REGISTER", "sip:127.0.0.1", "alice", password
    )
    answered.headers.set("Authorization", value)
    return answered


def test_options_says_what_we_allow() -> None:
    registration, _ = new_registration()
    response = registration.options(request("OPTIONS"))
    assert response.status == 200 and response.headers.get("Allow") == ALLOW


def test_register_is_challenged_then_bound_where_it_came_from() -> None:
    registration, logged = new_registration()
    response = registration.register(authorized(registration, "secret", 0.0), PEER, 1.0)
    assert response.status == 200
    assert response.headers.get("Contact") == "<sip:alice@127.0.0.1:5070>;expires=3600"
    binding = registration.registrar.lookup("alice", 2.0)
    assert binding is not None and binding.source == ("UDP", "127.0.0.1", 5070)
    assert logged == [("registered", {"user": "alice", "contacts": 1})]


def test_wrong_credentials_are_refused_and_bind_nothing() -> None:
    registration, logged = new_registration()
    response = registration.register(authorized(registration, "wrong", 0.0), PEER, 1.0)
    assert response.status == 403 and registration.registrar.lookup("alice", 2.0) is None
    assert [event for event, _ in logged] == ["register_refused"]


def test_an_expired_nonce_is_challenged_again_as_stale() -> None:
    registration, _ = new_registration()
    response = registration.register(authorized(registration, "secret", 0.0), PEER, 10_000.0)
    assert response.status == 401
    assert all("stale=true" in value for value in response.headers.get_all("WWW-Authenticate"))


def test_too_brief_an_interval_is_answered_423() -> None:
    registration, _ = new_registration()
    brief = authorized(registration, "secret", 0.0, contact="<sip:alice@127.0.0.1:5070>;expires=10")
    response = registration.register(brief, PEER, 1.0)
    assert response.status == 423 and response.headers.get("Min-Expires") == "60"


def limited_registration(max_failures: int = 3) -> tuple[Registration, list[tuple[str, dict[str, object]]]]:
    logged: list[tuple[str, dict[str, object]]] = []
    config = Config(
        users=[UserConfig(name="alice", password="secret")],
        security=SecurityConfig(
            register_max_failures=max_failures, register_failure_window=60, register_lockout_seconds=120
        ),
    )
    return Registration(config, lambda event, **fields: logged.append((event, fields))), logged


def test_repeated_failures_lock_the_source_out_without_checking() -> None:
    registration, logged = limited_registration(3)
    for attempt in range(3):
        response = registration.register(
            authorized(registration, "wrong", 10.0 + attempt), PEER, 10.5 + attempt
        )
        assert response.status == 403
    assert logged[-1][1]["locked_out_seconds"] == 120
    # Locked: even the right password is refused, with no challenge, and so is an unauthenticated request.
    right = request("REGISTER")
    right.headers.set(
        "Authorization",
        digest_authorization(
            registration.digest.challenge(20.0), "REGISTER", "sip:127.0.0.1", "alice", "secret"
        ),
    )
    assert registration.register(right, PEER, 20.0).status == 403
    assert registration.register(request("REGISTER"), PEER, 21.0).status == 403
    assert registration.registrar.lookup("alice", 21.0) is None
    assert registration.counters["register_auth_failed"] == 3
    assert registration.counters["register_locked_out"] == 2
    # Another source is not affected; after the lockout the source may try again.
    other = Peer("UDP", "192.0.2.7", 5070)
    assert registration.register(request("REGISTER"), other, 21.0).status == 401
    assert registration.register(authorized(registration, "secret", 140.0), PEER, 140.5).status == 200


def test_failures_outside_the_window_do_not_add_up() -> None:
    registration, _ = limited_registration(3)
    for at in (0.0, 61.0, 122.0, 183.0):
        assert registration.register(authorized(registration, "wrong", at), PEER, at + 0.5).status == 403
    assert registration.register(request("REGISTER"), PEER, 184.0).status == 401
    assert registration.counters["register_locked_out"] == 0


def test_a_stale_nonce_is_not_a_failure() -> None:
    registration, _ = limited_registration(1)
    assert registration.register(authorized(registration, "secret", 0.0), PEER, 10_000.0).status == 401
    assert registration.counters["register_auth_failed"] == 0
    assert registration.register(authorized(registration, "secret", 10_001.0), PEER, 10_001.5).status == 200


def test_lockout_off_with_zero() -> None:
    limiter = FailureLimiter(max_failures=0)
    assert not any(limiter.failed("198.51.100.1", float(t)) for t in range(100))
    assert not limiter.locked("198.51.100.1", 100.0)
