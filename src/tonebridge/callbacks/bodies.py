"""Callback bodies (ICE, ACE, DiCE, PIE) as the application receives them (sinch-voice-v1.md §2).

Pure: each function builds the dict from what it is given; sending it (signed, through the outbox or as a
synchronous request) is the caller's business. `timestamp` defaults to now, in the one format Sinch uses.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

__all__ = ["CallFields", "ace", "conference_pie", "dice", "ice", "iso_now", "menu_pie"]

# Tonebridge bills nothing; the SDKs still expect these money fields.
_FREE = {"currencyId": "USD", "amount": 0.0}


def iso_now() -> str:
    """UTC, whole seconds, `Z`: `2024-06-06T17:20:14Z`."""
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass(frozen=True)
class CallFields:
    """What every callback about one call repeats."""

    call_id: str
    app_key: str
    custom: str | None = None
    conference_id: str | None = None
    cookies: Mapping[str, str] = field(default_factory=dict)


def _common(event: str, call: CallFields, timestamp: str | None) -> dict[str, Any]:
    body: dict[str, Any] = {
        "event": event,
        "callid": call.call_id,
        "timestamp": timestamp or iso_now(),
        "version": 1,
    }
    if call.custom is not None:
        body["custom"] = call.custom
    body["applicationKey"] = call.app_key
    if call.conference_id:
        body["conferenceId"] = call.conference_id
    if call.cookies:
        body["cookies"] = [{"key": k, "value": v} for k, v in call.cookies.items()]
    return body


def ice(
    call: CallFields, *, number: str, cli: str, call_resource_url: str, timestamp: str | None = None
) -> dict[str, Any]:
    """An inbound call to `number` from `cli` ("" when withheld)."""
    body = _common("ice", call, timestamp)
    body.update(
        callResourceUrl=call_resource_url,
        cli=cli or "private",
        to={"type": "did", "endpoint": number},
        domain="pstn",
        originationType="PSTN",
        rdnis="",
        callHeaders=[],
        userRate=dict(_FREE),
    )
    return body


def ace(call: CallFields, *, timestamp: str | None = None) -> dict[str, Any]:
    """A callout was answered."""
    return _common("ace", call, timestamp)


def dice(
    call: CallFields,
    *,
    result: str,
    reason: str,
    duration: int,
    to: Mapping[str, str],
    cli: str,
    timestamp: str | None = None,
) -> dict[str, Any]:
    """A call ended: `result` and `reason` as DiCE names them ("N/A" when there is none)."""
    body = _common("dice", call, timestamp)
    body.update(result=result, reason=reason, duration=duration, to=dict(to))
    body["from"] = cli or "private"
    body.update(debit=dict(_FREE), userRate=dict(_FREE))
    return body


def menu_pie(
    call: CallFields, *, menu_id: str, kind: str, value: str, input_method: str, timestamp: str | None = None
) -> dict[str, Any]:
    """A runMenu ended; the application answers with SVAML for what comes next."""
    body = _common("pie", call, timestamp)
    body["menuResult"] = {"menuId": menu_id, "type": kind, "value": value, "inputMethod": input_method}
    return body


def conference_pie(
    call: CallFields, *, conference_id: str, digits: str, timestamp: str | None = None
) -> dict[str, Any]:
    """A detect-mode collection ended in `conference_id`: the digits as a `sequence` result."""
    body = _common("pie", call, timestamp)
    body["conferenceId"] = conference_id
    body["menuResult"] = {"menuId": conference_id, "type": "sequence", "value": digits, "inputMethod": "dtmf"}
    return body
