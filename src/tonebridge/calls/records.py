"""Call records: the row the store keeps for each call of an application, and the body `GET
/calling/v1/calls/id/{callId}` makes of it, live or long ended.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from tonebridge.calls.call import Call
    from tonebridge.calls.sinch import SinchCall

__all__ = ["call_record", "call_resource"]

_TIMESTAMP = "%Y-%m-%dT%H:%M:%SZ"  # the Sinch `timestamp`, as callbacks/bodies.py's iso_now writes it


def call_record(leg: Call, call: SinchCall, now: float) -> dict[str, Any]:
    """The store's row for the call, as of `now` (the engine's clock, monotonic)."""
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
        # Seconds since the epoch, as every time of the store, so that the history can be queried and
        # ordered by time: the engine's start of the call, not the whole second of `call.timestamp`.
        "started_at": time.time() - (now - leg.started_at),
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
        "timestamp": _timestamp(record.get("started_at")),
        "custom": record.get("custom"),
        "userRate": {"currencyId": "USD", "amount": 0.0},
        "debit": {"currencyId": "USD", "amount": 0.0},
    }


def _timestamp(started_at: float | str | None) -> str | None:
    if started_at is None or isinstance(started_at, str):
        return started_at
    return datetime.fromtimestamp(started_at, UTC).strftime(_TIMESTAMP)
