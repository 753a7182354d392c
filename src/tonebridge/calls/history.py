"""Call history: every call the server handles, kept in the store as it answers and ends, and the
conferences it was in, whatever application (or none) it belongs to.

The engine's call events give the call's life (`CallRecorder.on_call_event`, an engine observer wired after
the application); the conference service's event bus gives room membership (`RoomMembershipBus`, the bus
the server hands that service). Every write goes through the store's writer thread and is not awaited: a
record is history, not something a call waits for. The application's own record of a call (the Sinch one:
its key, destination, custom data) is written by the application; this module adds the times and outcome
and fills in who and where only for a call nobody else has recorded.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Callable
from typing import Any, assert_never

from tonebridge.calls.call import Call, Direction
from tonebridge.calls.events import CallAnswered, CallEnded, CallEvent, ConferenceEnded, KeyPressed
from tonebridge.events import EventBus
from tonebridge.store.db import Store

__all__ = ["CallRecorder", "HistoryPruner", "RoomMembershipBus"]

log = logging.getLogger("tonebridge.history")

# How often the history is pruned (`[records] retention_days`), once at start too; a retention shorter
# than two intervals prunes every half retention.
PRUNE_INTERVAL = 60.0
# Calls deleted per transaction: a large first prune commits in steps and lets other writes in between.
PRUNE_BATCH = 5000


class CallRecorder:
    """Writes each call's record on answer and on end. `now` is the engine's clock (monotonic), which a
    call's times are read on; `wall` the epoch clock the store keeps them on."""

    def __init__(self, store: Store, now: Callable[[], float], wall: Callable[[], float] = time.time) -> None:
        self.store = store
        self._now = now
        self._wall = wall

    def on_call_event(self, event: CallEvent) -> None:
        match event:
            case CallAnswered(session=session) | CallEnded(session=session):
                self._save(session.call)
            case KeyPressed() | ConferenceEnded():
                pass
            case _:
                assert_never(event)

    def _save(self, call: Call) -> None:
        now = self._now()
        offset = self._wall() - now  # the engine's times are monotonic; the history's are wall-clock

        def wall(at: float | None) -> float | None:
            return None if at is None else at + offset

        record: dict[str, Any] = {
            "call_id": call.call_id,
            "direction": call.direction.value,
            "status": "ONGOING" if call.active else "FINAL",
            "answered_at": wall(call.answered_at),
            "ended_at": wall(call.ended_at),
            "duration": call.duration(now),
        }
        if not call.active:
            record["result"] = call.result.value if call.result else None
            record["reason"] = call.reason.value if call.reason else None
        self.store.save_call(record, if_new=_identity(call, wall(call.started_at)))


def _identity(call: Call, started_at: float | None) -> dict[str, Any]:
    """Who called where, for a call no application has recorded (the demo's, a bridge's far leg, one
    refused for want of an application). `to` is a destination as the Sinch record keeps it."""
    target = call.local_uri if call.direction is Direction.INBOUND else call.remote_uri
    return {
        "app_key": None,
        "from_": call.cli,
        "to": json.dumps({"type": "sip", "endpoint": target}),
        "started_at": started_at,
    }


class RoomMembershipBus(EventBus):
    """The conference service's event bus, also recording in the store when a call joins and leaves a
    room: every such event, in order, where a subscriber's bounded queue could drop some."""

    def __init__(self, store: Store) -> None:
        super().__init__()
        self.store = store

    def publish(self, event: dict[str, Any]) -> None:
        super().publish(event)  # stamps the event's time
        kind = event.get("type")
        try:
            if kind == "joined":
                self.store.conference_joined(event["callId"], event["conferenceId"], event["time"])
            elif kind == "left":
                self.store.conference_left(
                    event["callId"], event["conferenceId"], event["time"], event.get("reason")
                )
        except Exception:
            # Published from inside a room's operation: a history that cannot be written (a store
            # already closed at shutdown) must not break the room.
            log.exception("event=history_write_failed type=%s", kind)


class HistoryPruner:
    """Deletes the records of calls that ended and started more than `retention` seconds ago, with their
    stays in conferences and their callback attempts (`[records] retention_days`): at `start()` and every
    `interval` seconds after (by default a minute, or half the retention when that is shorter). SQLite
    reuses the freed pages, so the store stops growing once calls are pruned as fast as they are made."""

    def __init__(
        self,
        store: Store,
        retention: float,
        *,
        wall: Callable[[], float] = time.time,
        interval: float | None = None,
    ) -> None:
        if retention <= 0:
            raise ValueError("retention must be positive")
        self.store = store
        self.retention = float(retention)
        self.interval = min(PRUNE_INTERVAL, max(retention / 2, 0.5)) if interval is None else interval
        self._wall = wall
        self._task: asyncio.Task[None] | None = None
        self.pruned = 0

    async def prune(self) -> int:
        """Prune now; how many calls went."""
        cutoff = self._wall() - self.retention
        removed = 0
        while True:
            batch = await self.store.calls_prune(cutoff, PRUNE_BATCH)
            removed += batch
            if batch < PRUNE_BATCH:
                break
        if removed:
            self.pruned += removed
            log.info("event=calls_pruned calls=%d", removed)
        return removed

    def start(self) -> None:
        """Prune at once and then every `interval` seconds, on the running loop."""
        self._task = asyncio.get_running_loop().create_task(self._prune_forever(), name="history:prune")

    async def _prune_forever(self) -> None:
        while True:
            try:
                await self.prune()
            except Exception:
                log.exception("event=calls_prune_failed")
            await asyncio.sleep(self.interval)

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None
