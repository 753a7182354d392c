"""Callback bodies (tonebridge.callbacks.bodies): the common fields of every event, and each event's own
(sinch-voice-v1.md §2)."""

from __future__ import annotations

import json
import re

from tonebridge.callbacks import bodies
from tonebridge.callbacks.bodies import CallFields
from tonebridge.callbacks.outbox import encode_body

AT = "2024-06-06T17:20:14Z"
PLAIN = CallFields("c1", "app-key")
FULL = CallFields(
    "c2", "app-key", custom="order 7", conference_id="room#1", cookies={"lang": "sv", "step": "2"}
)


def test_timestamps_are_utc_whole_seconds_with_z() -> None:
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", bodies.iso_now())
    assert bodies.ace(PLAIN)["timestamp"].endswith("Z")


def test_common_fields_in_order_and_only_when_set() -> None:
    assert bodies.ace(PLAIN, timestamp=AT) == {
        "event": "ace",
        "callid": "c1",
        "timestamp": AT,
        "version": 1,
        "applicationKey": "app-key",
    }
    body = bodies.ace(FULL, timestamp=AT)
    assert list(body) == [
        "event",
        "callid",
        "timestamp",
        "version",
        "custom",
        "applicationKey",
        "conferenceId",
        "cookies",
    ]
    assert body["custom"] == "order 7" and body["conferenceId"] == "room#1"
    assert body["cookies"] == [{"key": "lang", "value": "sv"}, {"key": "step", "value": "2"}]


def test_an_empty_custom_string_is_still_sent() -> None:
    assert bodies.ace(CallFields("c1", "k", custom=""), timestamp=AT)["custom"] == ""


def test_ice() -> None:
    body = bodies.ice(
        PLAIN,
        number="+46700000000",
        cli="",
        call_resource_url="http://tb/calling/v1/calls/id/c1",
        timestamp=AT,
    )
    assert body == {
        "event": "ice",
        "callid": "c1",
        "timestamp": AT,
        "version": 1,
        "applicationKey": "app-key",
        "callResourceUrl": "http://tb/calling/v1/calls/id/c1",
        "cli": "private",
        "to": {"type": "did", "endpoint": "+46700000000"},
        "domain": "pstn",
        "originationType": "PSTN",
        "rdnis": "",
        "callHeaders": [],
        "userRate": {"currencyId": "USD", "amount": 0.0},
    }
    assert bodies.ice(PLAIN, number="1", cli="+1555", call_resource_url="u")["cli"] == "+1555"


def test_dice() -> None:
    body = bodies.dice(
        FULL,
        result="ANSWERED",
        reason="CALLERHANGUP",
        duration=12,
        to={"type": "number", "endpoint": "+1555"},
        cli="",
        timestamp=AT,
    )
    assert {
        k: body[k] for k in ("event", "result", "reason", "duration", "to", "from", "debit", "userRate")
    } == {
        "event": "dice",
        "result": "ANSWERED",
        "reason": "CALLERHANGUP",
        "duration": 12,
        "to": {"type": "number", "endpoint": "+1555"},
        "from": "private",
        "debit": {"currencyId": "USD", "amount": 0.0},
        "userRate": {"currencyId": "USD", "amount": 0.0},
    }
    assert list(body)[-7:] == ["result", "reason", "duration", "to", "from", "debit", "userRate"]
    assert (
        bodies.dice(PLAIN, result="FAILED", reason="N/A", duration=0, to={}, cli="+4670")["from"] == "+4670"
    )


def test_menu_pie() -> None:
    body = bodies.menu_pie(
        FULL, menu_id="main", kind="sequence", value="1234", input_method="dtmf", timestamp=AT
    )
    assert body["event"] == "pie" and body["conferenceId"] == "room#1"
    assert body["menuResult"] == {
        "menuId": "main",
        "type": "sequence",
        "value": "1234",
        "inputMethod": "dtmf",
    }


def test_conference_pie_names_the_collecting_conference() -> None:
    body = bodies.conference_pie(PLAIN, conference_id="room#1", digits="42", timestamp=AT)
    assert body["conferenceId"] == "room#1"
    assert body["menuResult"] == {
        "menuId": "room#1",
        "type": "sequence",
        "value": "42",
        "inputMethod": "dtmf",
    }
    # A call already bound for the conference keeps conferenceId where the common fields put it.
    bound = bodies.conference_pie(FULL, conference_id="room#1", digits="", timestamp=AT)
    assert list(bound).index("conferenceId") < list(bound).index("cookies")
    assert bound["menuResult"]["value"] == ""


def test_bodies_are_fresh_dicts_that_serialise() -> None:
    first = bodies.dice(
        PLAIN, result="N/A", reason="N/A", duration=0, to={"type": "did", "endpoint": "1"}, cli=""
    )
    first["debit"]["amount"] = 9.0
    first["to"]["endpoint"] = "changed"
    second = bodies.dice(
        PLAIN, result="N/A", reason="N/A", duration=0, to={"type": "did", "endpoint": "1"}, cli=""
    )
    assert second["debit"]["amount"] == 0.0 and second["to"]["endpoint"] == "1"
    assert json.loads(encode_body(bodies.ice(FULL, number="1", cli="", call_resource_url="u")))["cookies"]
