"""Digest authentication: RFC 2617 §3.5 and RFC 7616 §3.9.1 vectors, stateless nonces, RFC 8760 order."""

from __future__ import annotations

import hashlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tonebridge.sip.auth import (
    DigestServer,
    digest_authorization,
    digest_response,
    parse_challenge,
    parse_credentials,
)

KEY = b"0123456789abcdef0123456789abcdef"
USERS = {"alice": "s3cret", 'we"ird\\name': "pw"}


def lookup(user: str) -> str | None:
    return USERS.get(user)


# Published vectors ------------------------------------------------------------------------------------

RFC2617_CHALLENGE = (
    'Digest realm="testrealm@host.com", qop="auth,auth-int", '
    'nonce="dcd98b7102dd2f0e8b11d0f600bfb0c093", opaque="5ccc069c403ebaf9f0171e9517f40e41"'
)

RFC7616_NONCE = "7ypf/xlj9XXwfDPEoM4URrv/xwf94BcCAzFZH4GiTo0v"
RFC7616_CNONCE = "f2/wE4q74E6zIJEtWaHKaf5wv/H5QzzpXusqGemxURZJ"
RFC7616_OPAQUE = "FQhe/qaU925kfnzjCev0ciny7QMkPqMAFRtzCUYo5tdS"


def rfc7616_challenge(algorithm: str) -> str:
    return (
        f'Digest realm="http-auth@example.org", qop="auth, auth-int", algorithm={algorithm}, '
        f'nonce="{RFC7616_NONCE}", opaque="{RFC7616_OPAQUE}"'
    )


def test_rfc2617_section_3_5_example() -> None:
    value = digest_authorization(
        RFC2617_CHALLENGE, "GET", "/dir/index.html", "Mufasa", "Circle Of Life", cnonce="0a4f113b", nc=1
    )
    creds = parse_credentials(value)
    assert creds["response"] == "6629fae49393a05397450978507c4ef1"
    assert creds["qop"] == "auth" and creds["nc"] == "00000001" and creds["cnonce"] == "0a4f113b"
    assert creds["opaque"] == "5ccc069c403ebaf9f0171e9517f40e41"
    assert creds["realm"] == "testrealm@host.com" and creds["uri"] == "/dir/index.html"
    assert "algorithm" not in creds  # the challenge named none, so neither does the answer


@pytest.mark.parametrize(
    ("algorithm", "expected"),
    [
        ("MD5", "8ca523f5e9506fed4657c9700eebdbec"),
        ("SHA-256", "753927fa0e85d155564e2e272a28d1802ca10daf4496794697cf8db5856cb6c1"),
    ],
)
def test_rfc7616_section_3_9_1_example(algorithm: str, expected: str) -> None:
    value = digest_authorization(
        rfc7616_challenge(algorithm),
        "GET",
        "/dir/index.html",
        "Mufasa",
        "Circle of Life",
        cnonce=RFC7616_CNONCE,
        nc=1,
    )
    creds = parse_credentials(value)
    assert creds["response"] == expected
    assert creds["algorithm"] == algorithm
    assert creds["opaque"] == RFC7616_OPAQUE


def test_client_prefers_sha256_when_both_are_offered() -> None:
    both = [rfc7616_challenge("MD5"), rfc7616_challenge("SHA-256")]
    creds = parse_credentials(
        digest_authorization(
            both, "GET", "/dir/index.html", "Mufasa", "Circle of Life", cnonce=RFC7616_CNONCE
        )
    )
    assert creds["algorithm"] == "SHA-256"
    assert creds["response"] == "753927fa0e85d155564e2e272a28d1802ca10daf4496794697cf8db5856cb6c1"
    # An unknown algorithm alongside is skipped, not fatal.
    creds = parse_credentials(
        digest_authorization(
            [rfc7616_challenge("SHA-512-256"), rfc7616_challenge("MD5")], "GET", "/x", "u", "p"
        )
    )
    assert creds["algorithm"] == "MD5"
    with pytest.raises(ValueError):
        digest_authorization(rfc7616_challenge("SHA-512-256"), "GET", "/x", "u", "p")


def test_rfc2069_form_without_qop() -> None:
    challenge = 'Digest realm="testrealm@host.com", nonce="dcd98b7102dd2f0e8b11d0f600bfb0c093"'
    creds = parse_credentials(
        digest_authorization(challenge, "GET", "/dir/index.html", "Mufasa", "CircleOfLife")
    )
    assert "qop" not in creds and "nc" not in creds and "cnonce" not in creds

    def md5(text: str) -> str:
        return hashlib.md5(text.encode()).hexdigest()

    # RFC 2069 §2.1.2: KD(H(A1), nonce ":" H(A2)).
    ha1 = md5("Mufasa:testrealm@host.com:CircleOfLife")
    ha2 = md5("GET:/dir/index.html")
    assert creds["response"] == md5(f"{ha1}:dcd98b7102dd2f0e8b11d0f600bfb0c093:{ha2}")


def test_sess_algorithm_folds_nonce_and_cnonce_into_ha1() -> None:
    def sha(text: str) -> str:
        return hashlib.sha256(text.encode()).hexdigest()

    got = digest_response("SHA-256-sess", "u", "r", "p", "REGISTER", "sip:r", "n", "auth", "00000001", "c")
    ha1 = sha(f"{sha('u:r:p')}:n:c")
    assert got == sha(f"{ha1}:n:00000001:c:auth:{sha('REGISTER:sip:r')}")


def test_only_auth_int_offered_is_refused() -> None:
    with pytest.raises(ValueError, match="auth-int"):
        digest_authorization('Digest realm="r", nonce="n", qop="auth-int"', "INVITE", "sip:x", "u", "p")


def test_parse_challenge_handles_quotes_escapes_and_spacing() -> None:
    params = parse_challenge(
        'Digest  realm = "a \\"quoted\\" realm, with comma" ,nonce="n1",stale=TRUE,algorithm=MD5'
    )
    assert params == {
        "realm": 'a "quoted" realm, with comma',
        "nonce": "n1",
        "stale": "TRUE",
        "algorithm": "MD5",
    }
    with pytest.raises(ValueError):
        parse_challenge('Basic realm="x"')
    with pytest.raises(ValueError):
        parse_challenge('Digest realm="unterminated')


# Server -----------------------------------------------------------------------------------------------


def server(**kwargs: object) -> DigestServer:
    return DigestServer("tonebridge.example", KEY, **kwargs)  # type: ignore[arg-type]


def test_challenge_offers_sha256_then_md5() -> None:
    values = server().challenge(100.0)
    assert len(values) == 2
    first, second = (parse_challenge(v) for v in values)
    assert first["algorithm"] == "SHA-256" and second["algorithm"] == "MD5"  # RFC 8760 §2.4
    assert first["qop"] == "auth" and first["realm"] == "tonebridge.example"
    assert first["nonce"] == second["nonce"]
    assert "stale" not in first
    assert parse_challenge(server().challenge(0.0, stale=True)[0])["stale"] == "true"


@pytest.mark.parametrize("pick", [0, 1])
def test_round_trip_with_either_algorithm(pick: int) -> None:
    srv = server()
    challenge = srv.challenge(1000.0)[pick]
    value = digest_authorization(challenge, "REGISTER", "sip:tonebridge.example", "alice", "s3cret")
    result = srv.verify("REGISTER", value, lookup, 1010.0, request_uri="sip:tonebridge.example")
    assert result.ok and result.username == "alice" and not result.stale


def test_wrong_password_method_user_or_uri_fail() -> None:
    srv = server()
    challenge = srv.challenge(0.0)
    good = digest_authorization(challenge, "INVITE", "sip:room@tonebridge.example", "alice", "s3cret")
    assert srv.verify("INVITE", good, lookup, 1.0).ok
    bad_password = digest_authorization(challenge, "INVITE", "sip:room@tonebridge.example", "alice", "nope")
    result = srv.verify("INVITE", bad_password, lookup, 1.0)
    assert not result.ok and not result.stale and "wrong response" in result.reason
    assert not srv.verify("BYE", good, lookup, 1.0).ok  # the method is part of HA2
    unknown = digest_authorization(challenge, "INVITE", "sip:room@tonebridge.example", "mallory", "x")
    assert srv.verify("INVITE", unknown, lookup, 1.0).reason == "unknown user"
    assert not srv.verify("INVITE", good, lookup, 1.0, request_uri="sip:other@tonebridge.example").ok


def test_expired_nonce_is_stale_only_when_the_credentials_are_right() -> None:
    srv = server(nonce_lifetime=300)
    challenge = srv.challenge(0.0)[0]
    value = digest_authorization(challenge, "REGISTER", "sip:tonebridge.example", "alice", "s3cret")
    assert srv.verify("REGISTER", value, lookup, 300.0).ok
    late = srv.verify("REGISTER", value, lookup, 300.5)
    assert not late.ok and late.stale and late.username == "alice"
    wrong = digest_authorization(challenge, "REGISTER", "sip:tonebridge.example", "alice", "guess")
    assert not srv.verify("REGISTER", wrong, lookup, 300.5).stale


def test_forged_or_foreign_nonce_is_refused() -> None:
    srv = server()
    other = DigestServer("tonebridge.example", b"another-key-of-32-bytes-length!!")
    value = digest_authorization(other.challenge(0.0)[0], "REGISTER", "sip:t", "alice", "s3cret")
    result = srv.verify("REGISTER", value, lookup, 1.0)
    assert not result.ok and not result.stale and "nonce" in result.reason
    made_up = digest_authorization(
        'Digest realm="tonebridge.example", nonce="abc", qop="auth"', "REGISTER", "sip:t", "alice", "s3cret"
    )
    assert not srv.verify("REGISTER", made_up, lookup, 1.0).ok
    # A nonce of this server is bound to its realm.
    other_realm = DigestServer("elsewhere", KEY)
    assert other_realm.nonce_time(srv.make_nonce(5.0)) is None
    assert srv.nonce_time(srv.make_nonce(5.0)) == 5.0


def test_realm_algorithm_and_qop_rules() -> None:
    srv = server(algorithms=("SHA-256",))
    challenge = srv.challenge(0.0)
    assert len(challenge) == 1
    nonce = parse_challenge(challenge[0])["nonce"]
    md5 = digest_authorization(
        f'Digest realm="tonebridge.example", nonce="{nonce}", qop="auth", algorithm=MD5',
        "INVITE",
        "sip:x",
        "alice",
        "s3cret",
    )
    assert "not offered" in srv.verify("INVITE", md5, lookup, 1.0).reason
    no_qop = digest_authorization(
        f'Digest realm="tonebridge.example", nonce="{nonce}", algorithm=SHA-256',
        "INVITE",
        "sip:x",
        "alice",
        "s3cret",
    )
    assert "qop=auth is required" in srv.verify("INVITE", no_qop, lookup, 1.0).reason
    wrong_realm = digest_authorization(
        f'Digest realm="evil", nonce="{nonce}", qop="auth", algorithm=SHA-256',
        "INVITE",
        "sip:x",
        "alice",
        "s3cret",
    )
    assert "realm" in srv.verify("INVITE", wrong_realm, lookup, 1.0).reason
    assert not srv.verify("INVITE", "Basic YWxpY2U6czNjcmV0", lookup, 1.0).ok
    assert "missing" in srv.verify("INVITE", 'Digest username="alice"', lookup, 1.0).reason


def test_server_without_qop_speaks_rfc2069() -> None:
    srv = server(qop=False)
    challenge = srv.challenge(0.0)[1]
    assert "qop" not in parse_challenge(challenge)
    value = digest_authorization(challenge, "INVITE", "sip:x", "alice", "s3cret")
    assert "qop" not in parse_credentials(value)
    assert srv.verify("INVITE", value, lookup, 1.0).ok


def test_replay_protection_wants_a_growing_nc() -> None:
    srv = server(replay_protection=True)
    challenge = srv.challenge(0.0)[0]
    first = digest_authorization(challenge, "REGISTER", "sip:t", "alice", "s3cret", nc=1)
    assert srv.verify("REGISTER", first, lookup, 1.0).ok
    replay = srv.verify("REGISTER", first, lookup, 2.0)
    assert not replay.ok and replay.stale
    second = digest_authorization(challenge, "REGISTER", "sip:t", "alice", "s3cret", nc=2)
    assert srv.verify("REGISTER", second, lookup, 3.0).ok
    # Without the option, the same answer is accepted again (the default: stateless).
    plain = server()
    again = digest_authorization(plain.challenge(0.0)[0], "REGISTER", "sip:t", "alice", "s3cret")
    assert plain.verify("REGISTER", again, lookup, 1.0).ok and plain.verify("REGISTER", again, lookup, 2.0).ok


def test_usernames_with_quotes_survive_the_round_trip() -> None:
    srv = server()
    value = digest_authorization(srv.challenge(0.0)[0], "OPTIONS", "sip:t", 'we"ird\\name', "pw")
    assert srv.verify("OPTIONS", value, lookup, 0.0).username == 'we"ird\\name'
    assert srv.verify("OPTIONS", value, lookup, 0.0).ok


def test_short_secret_is_refused() -> None:
    with pytest.raises(ValueError):
        DigestServer("r", b"short")


@settings(max_examples=50, deadline=None)
@given(
    issued=st.floats(min_value=0, max_value=1e9, allow_nan=False),
    age=st.floats(min_value=0, max_value=600, allow_nan=False),
    password=st.text(min_size=1, max_size=20),
)
def test_nonce_lifetime_property(issued: float, age: float, password: str) -> None:
    srv = server(nonce_lifetime=300)
    value = digest_authorization(srv.challenge(issued)[0], "INVITE", "sip:t", "bob", password)
    now = issued + age
    result = srv.verify("INVITE", value, lambda user: password, now)
    assert result.ok == (now - issued <= 300)
    assert result.stale == (now - issued > 300)
