"""Call records: the row the store keeps for each call of an application, and the body `GET
/calling/v1/calls/id/{callId}` makes of it, live or long ended.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from tonebridge.calls.call import Call
    from tonebridge.calls.sinch import SinchCall

__all__ = ["call_record", "call_resource"]


def call_record(leg: Call, call: SinchCall, now: float) -> dict[str, Any]:
    """The store's row for the call, as of `now` (the engine's clock)."""
    return {
        "call_id": leg.call_id,
        "app_key": call.app_key,
        "direction": leg.direction.value,
        "from_": call.cli,
        "to": json.dumps(call.destination),
        "domain": call.domain,
        "status": "ONGOING" if leg.active else "FINAL",
        "result": leg.result.value if leg.result else "N/A",
        "reason": leg.reason.value if leg.reason else "N/A",
        "started_at": call.timestamp,
        "duration": leg.duration(now),
        "custom": call.custom,
        "conference_id": call.conference_id,
        "cookies": call.cookies,
    }


def call_resource(call_id: str, record: Mapping[str, Any]) -> dict[str, Any]:
    """The Sinch view of a record (whether fresh or read back from the store, where `to` is JSON text)."""
    to = record.get("to") or "{}"
    to = json.loads(to) if isinstance(to, str) else to
    return {
        "from": {"type": "number", "endpoint": record.get("from_") or "private"},
        "to": to,
        "domain": record.get("domain") or "pstn",
        "callId": call_id,
        "duration": record.get("duration") or 0,
        "status": record.get("status"),
        "result": record.get("result") or "N/A",
        "reason": record.get("reason") or "N/A",
        "timestamp": record.get("started_at"),
        "custom": record.get("custom"),
        "userRate": {"currencyId": "USD", "amount": 0.0},
        "debit": {"currencyId": "USD", "amount": 0.0},
    }
