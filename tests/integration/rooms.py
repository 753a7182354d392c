"""A test application for conference tests: puts each inbound call into the room and DTMF mode the test
planned for its caller (by the `From` user the phone dials with), records every collection, and completes
each one when the test lets it (`hold_collections`), as a backend answering a PIE would."""

from __future__ import annotations

import asyncio
import threading
from dataclasses import dataclass, field

from tonebridge.calls.events import CallAnswered
from tonebridge.conference.options import DtmfOptions


@dataclass
class Plan:
    room: str
    options: DtmfOptions = field(default_factory=DtmfOptions)
    moh: str | None = None


class RoomsApplication:
    def __init__(self) -> None:
        self.plans: dict[str, Plan] = {}
        self.conferences = None
        self.sessions: dict[str, object] = {}  # caller user -> session
        self.collections: list[tuple[str, object]] = []  # (caller user, CollectionDone)
        self._changed = threading.Condition()
        self.release: asyncio.Event | None = None
        self.hold_collections = False

    def attach(self, engine, conferences) -> None:  # type: ignore[no-untyped-def]
        self.conferences = conferences

    async def incoming(self, engine, session) -> None:  # type: ignore[no-untyped-def]
        engine.answer(session)

    def on_event(self, event) -> None:  # type: ignore[no-untyped-def]
        if isinstance(event, CallAnswered):
            session = event.session
            plan = self.plans[session.call.cli]
            self.conferences.join(session, plan.room, plan.options, plan.moh)
            with self._changed:
                self.sessions[session.call.cli] = session
                self._changed.notify_all()

    def collection(self, session, done):  # type: ignore[no-untyped-def]
        with self._changed:
            self.collections.append((session.call.cli, done))
            self._changed.notify_all()
        if not self.hold_collections:
            return None
        if self.release is None:
            self.release = asyncio.Event()
        return self.release.wait()

    def wait(self, predicate, timeout: float = 10.0):  # type: ignore[no-untyped-def]
        """Block the test thread until `predicate()` is true (checked on every change)."""
        with self._changed:
            if not self._changed.wait_for(predicate, timeout):
                raise AssertionError(f"condition not met within {timeout}s; collections={self.collections}")

    def values(self, user: str) -> list[str]:
        with self._changed:
            return [done.digits for who, done in self.collections if who == user]
