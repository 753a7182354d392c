"""Request and callback signing: the published vectors (sinch-voice-v1.md §5), verification rules (§1)."""

from __future__ import annotations

import base64
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tonebridge.callbacks.signing import (
    AuthError,
    callback_headers,
    content_md5,
    format_timestamp,
    parse_timestamp,
    signature,
    string_to_sign,
    verify_request,
)

API_KEY = "5F5C418A0F914BBC8234A9BF5EDDAD97"
API_SECRET = "JViE5vDor0Sw3WllZka15Q=="
API_BODY = b'{"message":"Hello world"}'
API_TS = "2014-06-04T13:41:58Z"
API_SIG = "qDXMwzfaxCRS849c/2R0hg0nphgdHciTo7OdM6MsdnM="

CB_KEY = "669E367E-6BBA-48AB-AF15-266871C28135"
CB_SECRET = "BeIukql3pTKJ8RGL5zo0DA=="
CB_BODY = (
    b'{"event":"ace","callid":"822aa4b7-05b4-4d83-87c7-1f835ee0b6f6_257",'
    b'"timestamp":"2014-09-24T10:59:41Z","version":1}'
)
CB_SIG = "Tg6fMyo8mj9pYfWQ9ssbx3Tc1BNC87IEygAfLbJqZb4="

SECRETS = {API_KEY: API_SECRET, CB_KEY: CB_SECRET}
API_NOW = datetime(2014, 6, 4, 13, 41, 58, tzinfo=UTC)


def lookup(key: str) -> str | None:
    return SECRETS.get(key)


def api_headers(**extra: str) -> dict[str, str]:
    headers = {
        "Authorization": f"Application {API_KEY}:{API_SIG}",
        "Content-Type": "application/json",
        "x-timestamp": API_TS,
    }
    headers.update(extra)
    return headers


def auth_error(**kwargs: object) -> AuthError:
    args: dict[str, object] = {
        "method": "POST",
        "raw_path": "/v1/sms/+46700000000",
        "headers": api_headers(),
        "body": API_BODY,
        "lookup_secret": lookup,
        "now": API_NOW,
    }
    args.update(kwargs)
    with pytest.raises(AuthError) as info:
        verify_request(**args)  # type: ignore[arg-type]
    assert info.value.status == 401
    return info.value


def sign(method: str, path: str, body: bytes, content_type: str, ts: str, secret: str = API_SECRET) -> str:
    return signature(secret, string_to_sign(method, content_md5(body), content_type, ts, path))


# -- published vectors --------------------------------------------------------------------------------


def test_api_vector_md5_and_signature() -> None:
    assert content_md5(API_BODY) == "jANzQ+rgAHyf1MWQFSwvYw=="
    text = string_to_sign("POST", content_md5(API_BODY), "application/json", API_TS, "/v1/sms/+46700000000")
    assert (
        text
        == "POST\njANzQ+rgAHyf1MWQFSwvYw==\napplication/json\nx-timestamp:2014-06-04T13:41:58Z\n/v1/sms/+46700000000"
    )
    assert signature(API_SECRET, text) == API_SIG


def test_api_vector_verifies() -> None:
    key = verify_request("POST", "/v1/sms/+46700000000", api_headers(), API_BODY, lookup, API_NOW)
    assert key == API_KEY


def test_callback_vector_md5_string_and_signature() -> None:
    assert content_md5(CB_BODY) == "REWF+X220L4/Gw1spXOU7g=="
    text = string_to_sign(
        "POST", content_md5(CB_BODY), "application/json", "2014-09-24T10:59:41Z", "/sinch/callback/ace"
    )
    assert (
        text
        == "POST\nREWF+X220L4/Gw1spXOU7g==\napplication/json\nx-timestamp:2014-09-24T10:59:41Z\n/sinch/callback/ace"
    )
    assert signature(CB_SECRET, text) == CB_SIG


def test_callback_headers_reproduce_the_vector() -> None:
    now = datetime(2014, 9, 24, 10, 59, 41, 999_000, tzinfo=UTC)  # fraction dropped: whole seconds
    headers = callback_headers(CB_KEY, CB_SECRET, "/sinch/callback/ace", CB_BODY, now)
    assert headers == {
        "Content-Type": "application/json",
        "x-timestamp": "2014-09-24T10:59:41Z",
        "Authorization": f"application {CB_KEY}:{CB_SIG}",
    }


def test_callback_headers_take_the_path_of_a_full_url_and_convert_to_utc() -> None:
    now = datetime(2014, 9, 24, 12, 59, 41, tzinfo=datetime.fromisoformat("2000-01-01T00:00:00+02:00").tzinfo)
    headers = callback_headers(
        CB_KEY, CB_SECRET, "https://callbacks.yourdomain.com/sinch/callback/ace?x=1", CB_BODY, now
    )
    assert headers["x-timestamp"] == "2014-09-24T10:59:41Z"
    assert headers["Authorization"] == f"application {CB_KEY}:{CB_SIG}"


def test_callback_headers_verify_with_our_own_verifier() -> None:
    now = datetime(2024, 6, 6, 17, 20, 14, tzinfo=UTC)
    body = '{"event":"dice","callid":"c1","note":"ünïcode"}'.encode()
    headers = callback_headers(CB_KEY, CB_SECRET, "/cb/dice", body, now)
    assert verify_request("POST", "/cb/dice", headers, body, lookup, now) == CB_KEY


def test_empty_body_has_empty_md5() -> None:
    assert content_md5(b"") == ""
    ts = "2024-01-01T12:00:00Z"
    sig = sign("GET", "/calling/v1/calls/id/abc", b"", "", ts)
    headers = {"authorization": f"Application {API_KEY}:{sig}", "X-Timestamp": ts}
    now = datetime(2024, 1, 1, 12, 0, tzinfo=UTC)
    assert verify_request("get", "/calling/v1/calls/id/abc", headers, b"", lookup, now) == API_KEY


def test_signature_rejects_a_secret_that_is_not_base64() -> None:
    with pytest.raises(ValueError):
        signature("app-secret", "x")


# -- header forms and errors --------------------------------------------------------------------------


@pytest.mark.parametrize("scheme", ["Application", "application", "APPLICATION", "aPpLiCaTiOn"])
def test_scheme_word_in_any_case(scheme: str) -> None:
    headers = api_headers(Authorization=f"{scheme} {API_KEY}:{API_SIG}")
    assert verify_request("POST", "/v1/sms/+46700000000", headers, API_BODY, lookup, API_NOW) == API_KEY


def test_header_names_in_any_case() -> None:
    headers = {
        "AUTHORIZATION": f"Application {API_KEY}:{API_SIG}",
        "content-TYPE": "application/json",
        "X-TIMESTAMP": API_TS,
    }
    assert verify_request("POST", "/v1/sms/+46700000000", headers, API_BODY, lookup, API_NOW) == API_KEY


def test_missing_authorization_is_40100() -> None:
    headers = api_headers()
    del headers["Authorization"]
    assert auth_error(headers=headers).error_code == 40100


@pytest.mark.parametrize(
    "value",
    [
        "Application",
        "Application ",
        f"Application {API_KEY}",
        f"Application {API_KEY}:",
        f"Application :{API_SIG}",
        f"Bearer {API_KEY}:{API_SIG}",
        f"{API_KEY}:{API_SIG}",
    ],
)
def test_malformed_authorization_is_40100(value: str) -> None:
    assert auth_error(headers=api_headers(Authorization=value)).error_code == 40100


@pytest.mark.parametrize(
    "value", [None, "", "yesterday", "2014-06-04", "2014-13-04T13:41:58Z", "2014-06-04T13:41:58+25:00"]
)
def test_bad_or_missing_timestamp_is_40101(value: str | None) -> None:
    headers = api_headers()
    if value is None:
        del headers["x-timestamp"]
    else:
        headers["x-timestamp"] = value
    assert auth_error(headers=headers).error_code == 40101


def test_wrong_signature_is_40102() -> None:
    bad = API_SIG[:-2] + "A="
    assert auth_error(headers=api_headers(Authorization=f"Application {API_KEY}:{bad}")).error_code == 40102


def test_signature_over_a_different_body_or_method_is_40102() -> None:
    assert auth_error(body=b'{"message":"Hello World"}').error_code == 40102
    assert auth_error(method="PUT").error_code == 40102
    assert (
        auth_error(headers=api_headers(**{"Content-Type": "application/json; charset=utf-8"})).error_code
        == 40102
    )


def test_non_ascii_signature_is_40102_not_a_crash() -> None:
    assert auth_error(headers=api_headers(Authorization=f"Application {API_KEY}:ñø")).error_code == 40102


def test_unknown_key_is_40108() -> None:
    err = auth_error(
        headers=api_headers(Authorization=f"Application 00000000000000000000000000000000:{API_SIG}")
    )
    assert err.error_code == 40108


def test_wrong_secret_is_40102() -> None:
    err = auth_error(lookup_secret=lambda key: CB_SECRET if key == API_KEY else None)
    assert err.error_code == 40102


def test_content_type_is_signed_exactly_as_sent() -> None:
    for content_type in ("application/json; charset=UTF-8", "application/json; charset=utf-8"):
        sig = sign("POST", "/calling/v1/callouts", b"{}", content_type, API_TS)
        headers = api_headers(Authorization=f"Application {API_KEY}:{sig}", **{"Content-Type": content_type})
        assert verify_request("POST", "/calling/v1/callouts", headers, b"{}", lookup, API_NOW) == API_KEY


# -- skew window --------------------------------------------------------------------------------------


@pytest.mark.parametrize("offset", [timedelta(minutes=15), -timedelta(minutes=15), timedelta(0)])
def test_skew_boundary_is_accepted(offset: timedelta) -> None:
    now = API_NOW + offset
    assert verify_request("POST", "/v1/sms/+46700000000", api_headers(), API_BODY, lookup, now) == API_KEY


@pytest.mark.parametrize("offset", [timedelta(minutes=15, microseconds=1), -timedelta(minutes=15, seconds=1)])
def test_beyond_skew_is_40101(offset: timedelta) -> None:
    assert auth_error(now=API_NOW + offset).error_code == 40101


def test_skew_is_configurable() -> None:
    now = API_NOW + timedelta(seconds=31)
    assert auth_error(now=now, skew=timedelta(seconds=30)).error_code == 40101
    assert (
        verify_request(
            "POST", "/v1/sms/+46700000000", api_headers(), API_BODY, lookup, now, skew=timedelta(seconds=31)
        )
        == API_KEY
    )


def test_naive_now_is_taken_as_utc() -> None:
    naive = API_NOW.replace(tzinfo=None)
    assert verify_request("POST", "/v1/sms/+46700000000", api_headers(), API_BODY, lookup, naive) == API_KEY


# -- ISO 8601 forms -----------------------------------------------------------------------------------

ISO_FORMS = [
    ("2024-01-01T12:00:00Z", 0),
    ("2024-01-01T12:00:00z", 0),
    ("2024-01-01T12:00:00+00:00", 0),
    ("2024-01-01T12:00:00-00:00", 0),
    ("2024-01-01T12:00:00+0000", 0),
    ("2024-01-01T12:00:00+00", 0),
    ("2024-01-01T12:00:00", 0),
    ("2024-01-01 12:00:00Z", 0),
    ("20240101T120000Z", 0),
    ("2024-01-01T12:00:00.1Z", 100_000),
    ("2024-01-01T12:00:00.123Z", 123_000),  # JavaScript toISOString
    ("2024-01-01T12:00:00.123456+00:00", 123_456),  # Python isoformat
    ("2024-01-01T12:00:00.1234567Z", 123_456),  # .NET "O"
    ("2024-01-01T12:00:00.123456789Z", 123_456),  # Java Instant, nanoseconds
    ("2024-01-01T12:00:00,5Z", 500_000),
    ("2024-01-01T14:00:00+02:00", 0),
    ("2024-01-01T06:30:00-05:30", 0),
]


@pytest.mark.parametrize(("text", "micro"), ISO_FORMS)
def test_parse_every_iso_form(text: str, micro: int) -> None:
    assert parse_timestamp(text) == datetime(2024, 1, 1, 12, 0, 0, micro, tzinfo=UTC)


@pytest.mark.parametrize(("text", "_micro"), ISO_FORMS)
def test_every_iso_form_verifies_as_signed(text: str, _micro: int) -> None:
    # The string signed is the header exactly as sent, whatever its form.
    sig = sign("POST", "/calling/v1/callouts", b"{}", "application/json", text)
    headers = api_headers(Authorization=f"Application {API_KEY}:{sig}", **{"x-timestamp": text})
    now = datetime(2024, 1, 1, 12, 5, tzinfo=UTC)
    assert verify_request("POST", "/calling/v1/callouts", headers, b"{}", lookup, now) == API_KEY


@given(st.datetimes(min_value=datetime(1970, 1, 2), max_value=datetime(9998, 12, 31), timezones=st.just(UTC)))
def test_format_then_parse_round_trips_to_whole_seconds(when: datetime) -> None:
    text = format_timestamp(when)
    assert text.endswith("Z") and len(text) == 20
    assert parse_timestamp(text) == when.replace(microsecond=0)


# -- raw and decoded paths ----------------------------------------------------------------------------

CONF_RAW = "/calling/v1/conferences/id/myconf%231"
CONF_DECODED = "/calling/v1/conferences/id/myconf#1"


@pytest.mark.parametrize("signed_path", [CONF_RAW, CONF_DECODED])
def test_raw_or_decoded_path_signature_is_accepted(signed_path: str) -> None:
    sig = sign("DELETE", signed_path, b"", "", API_TS)
    headers = {"Authorization": f"Application {API_KEY}:{sig}", "x-timestamp": API_TS}
    assert verify_request("DELETE", CONF_RAW, headers, b"", lookup, API_NOW) == API_KEY


def test_other_path_is_rejected() -> None:
    sig = sign("DELETE", "/calling/v1/conferences/id/myconf", b"", "", API_TS)
    headers = {"Authorization": f"Application {API_KEY}:{sig}", "x-timestamp": API_TS}
    assert auth_error(method="DELETE", raw_path=CONF_RAW, headers=headers, body=b"").error_code == 40102


def test_query_is_ignored_but_a_path_and_query_signature_is_also_accepted() -> None:
    headers_path = {
        "Authorization": f"Application {API_KEY}:{sign('GET', '/v1/x', b'', '', API_TS)}",
        "x-timestamp": API_TS,
    }
    headers_pq = {
        "Authorization": f"Application {API_KEY}:{sign('GET', '/v1/x?a=1', b'', '', API_TS)}",
        "x-timestamp": API_TS,
    }
    assert verify_request("GET", "/v1/x?a=1", headers_path, b"", lookup, API_NOW) == API_KEY
    assert verify_request("GET", "/v1/x?a=1", headers_pq, b"", lookup, API_NOW) == API_KEY


# -- Basic --------------------------------------------------------------------------------------------


def basic(text: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(text.encode()).decode()}


@pytest.mark.parametrize("scheme", ["Basic", "basic", "BASIC"])
def test_basic_accepts_key_and_secret_without_timestamp(scheme: str) -> None:
    token = base64.b64encode(f"{API_KEY}:{API_SECRET}".encode()).decode()
    headers = {"Authorization": f"{scheme} {token}"}
    assert verify_request("GET", "/calling/v1/calls/id/x", headers, b"", lookup, API_NOW) == API_KEY


def test_basic_wrong_secret_or_key_is_40108() -> None:
    assert auth_error(headers=basic(f"{API_KEY}:{CB_SECRET}")).error_code == 40108
    assert auth_error(headers=basic(f"{API_KEY}:")).error_code == 40108
    assert auth_error(headers=basic(f"NOPE:{API_SECRET}")).error_code == 40108


def test_basic_secret_is_compared_as_issued_not_decoded() -> None:
    decoded = base64.b64decode(API_SECRET).decode("latin-1")
    assert auth_error(headers=basic(f"{API_KEY}:{decoded}")).error_code == 40108


@pytest.mark.parametrize(
    "token", ["!!!", base64.b64encode(b"no-colon").decode(), base64.b64encode(b":secret").decode(), ""]
)
def test_basic_malformed_is_40100(token: str) -> None:
    assert auth_error(headers={"Authorization": f"Basic {token}"}).error_code == 40100


def test_error_messages_say_what_to_fix() -> None:
    err = auth_error(now=API_NOW + timedelta(hours=1))
    assert err.error_code == 40101 and "clock" in err.message
    assert "x-timestamp" in auth_error(headers={"Authorization": f"Application {API_KEY}:{API_SIG}"}).message


# -- security review (issue 12) -------------------------------------------------------------------------


def test_a_replay_outside_the_skew_window_is_refused_even_with_its_valid_signature() -> None:
    # The very request that verified at API_NOW, captured and sent again 16 minutes later.
    assert verify_request("POST", "/v1/sms/+46700000000", api_headers(), API_BODY, lookup, API_NOW) == API_KEY
    error = auth_error(now=API_NOW + timedelta(minutes=16))
    assert error.error_code == 40101
    # Moving the timestamp forward breaks the signature instead.
    later = api_headers(**{"x-timestamp": "2014-06-04T13:57:58Z"})
    assert auth_error(headers=later, now=API_NOW + timedelta(minutes=16)).error_code == 40102


def test_signatures_and_basic_secrets_are_compared_in_constant_time(monkeypatch: pytest.MonkeyPatch) -> None:
    import hmac

    from tonebridge.callbacks import signing

    calls: list[tuple[bytes, bytes]] = []
    real = hmac.compare_digest

    def spy(a: bytes, b: bytes) -> bool:
        calls.append((a, b))
        return real(a, b)

    monkeypatch.setattr(signing.hmac, "compare_digest", spy)
    assert verify_request("POST", "/v1/sms/+46700000000", api_headers(), API_BODY, lookup, API_NOW) == API_KEY
    assert (API_SIG.encode(), API_SIG.encode()) in calls
    calls.clear()
    assert auth_error(headers=api_headers(Authorization=f"Application {API_KEY}:AAAA")).error_code == 40102
    assert calls and all(sent == b"AAAA" for _, sent in calls)
    calls.clear()
    basic = base64.b64encode(f"{API_KEY}:wrong".encode()).decode()
    assert auth_error(headers={"Authorization": f"Basic {basic}"}).error_code == 40108
    assert calls == [(API_SECRET.encode(), b"wrong")]


def test_error_messages_never_carry_the_secret_or_the_expected_signature() -> None:
    for error in (
        auth_error(headers=api_headers(Authorization=f"Application {API_KEY}:AAAA")),
        auth_error(now=API_NOW + timedelta(hours=1)),
        auth_error(headers={"Authorization": "Basic " + base64.b64encode(f"{API_KEY}:x".encode()).decode()}),
    ):
        assert API_SECRET not in error.message and API_SIG not in error.message
