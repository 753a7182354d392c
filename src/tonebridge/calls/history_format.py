"""Call history as its readers take it: one call as JSON (the HTTP route and `tonebridge records`), the
same as CSV rows, and the times a query is bounded by (ISO 8601, Unix seconds, or a duration back from
now)."""

from __future__ import annotations

import csv
import io
import json
import math
import re
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any

from tonebridge.store.db import CallHistory

__all__ = ["CSV_COLUMNS", "as_csv", "as_json", "iso", "parse_since", "parse_time"]

CSV_COLUMNS = (
    "callId",
    "applicationKey",
    "direction",
    "from",
    "to",
    "status",
    "result",
    "reason",
    "startedAt",
    "answeredAt",
    "endedAt",
    "duration",
    "conferences",
    "callbacks",
)

_UNIX_SECONDS = re.compile(r"\d+(\.\d+)?")
_DURATION = re.compile(r"(\d+(?:\.\d+)?)([smhd])")
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_time(text: str) -> float:
    """Seconds since the epoch from ISO 8601 (UTC unless it says otherwise) or Unix seconds; ValueError
    saying what is accepted otherwise."""
    text = text.strip()
    if _UNIX_SECONDS.fullmatch(text):
        seconds = float(text)
        if not math.isfinite(seconds):
            raise ValueError(f"{text[:32]!r}... is too far from now")
        return seconds
    try:
        when = datetime.fromisoformat(text)
    except ValueError:
        raise ValueError(f"{text!r} is neither ISO 8601 nor Unix seconds") from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return when.timestamp()


def parse_since(text: str, now: float) -> float:
    """`parse_time`, or a duration back from `now`: `90s`, `10m`, `2h`, `7d`."""
    match = _DURATION.fullmatch(text.strip())
    if match:
        return now - float(match.group(1)) * _UNIT_SECONDS[match.group(2)]
    try:
        return parse_time(text)
    except ValueError:
        raise ValueError(
            f"{text!r} is neither ISO 8601, Unix seconds nor a duration like 10m or 2h"
        ) from None


def iso(at: float | None) -> str | None:
    """UTC with milliseconds and `Z`: `2026-12-01T19:05:07.123Z`."""
    if at is None:
        return None
    return datetime.fromtimestamp(at, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _destination(to: str | None) -> Any:
    # Stored as the JSON of a Sinch destination; a value that is not JSON is shown as it is.
    if to is None:
        return None
    try:
        return json.loads(to)
    except ValueError:
        return to


def as_json(entry: CallHistory) -> dict[str, Any]:
    record = entry.record
    return {
        "callId": record["call_id"],
        "applicationKey": record["app_key"],
        "direction": record["direction"],
        "from": record["from_"],
        "to": _destination(record["to"]),
        "domain": record["domain"],
        "status": record["status"],
        "result": record["result"],
        "reason": record["reason"],
        "startedAt": iso(record["started_at"]),
        "answeredAt": iso(record["answered_at"]),
        "endedAt": iso(record["ended_at"]),
        "duration": record["duration"],
        "conferenceId": record["conference_id"],
        "conferences": [
            {
                "conferenceId": stay.conference_id,
                "joinedAt": iso(stay.joined_at),
                "leftAt": iso(stay.left_at),
                "leftReason": stay.left_reason,
            }
            for stay in entry.conferences
        ],
        "callbacks": [
            {
                "event": attempt.event,
                "url": attempt.url,
                "attemptedAt": iso(attempt.attempted_at),
                "status": attempt.status,
                "error": attempt.error,
                "durationMs": attempt.duration_ms,
                "stored": attempt.outbox_id is not None,
            }
            for attempt in entry.callbacks
        ],
    }


def _csv_row(entry: CallHistory) -> list[Any]:
    call = as_json(entry)
    to = call["to"]
    conferences = list(dict.fromkeys(stay["conferenceId"] for stay in call["conferences"]))
    if not conferences and call["conferenceId"]:
        conferences = [call["conferenceId"]]  # bound for it, never in it (a callout not answered)
    callbacks = [f"{a['event']} {a['status'] or a['error']}" for a in call["callbacks"]]
    return [
        call["callId"],
        call["applicationKey"] or "",
        call["direction"] or "",
        call["from"] or "",
        to.get("endpoint", "") if isinstance(to, dict) else to or "",
        call["status"],
        call["result"] or "",
        call["reason"] or "",
        call["startedAt"] or "",
        call["answeredAt"] or "",
        call["endedAt"] or "",
        "" if call["duration"] is None else call["duration"],
        ";".join(conferences),
        ";".join(callbacks),
    ]


def as_csv(entries: Iterable[CallHistory]) -> str:
    """A header row, then a row per call; several conferences or callback attempts share a cell, `;`
    between them."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    writer.writerows(_csv_row(entry) for entry in entries)
    return out.getvalue()
