"""Call timers: every deadline of every call, kept in one heap and fired by the engine's one loop timer.

Two kinds of deadline share the heap: a call core's own (its ring timeout, its waits for an answer; see
calls/core.py), and the `CallTimer`s that what runs a call sets on it (a menu's timeout, a park's
maxDuration, a pause between digits). `_Deadlines`, the heap, is pure: it is handed `now` and hands back
what is due. `Scheduler` is its asyncio edge: one loop timer armed for the earliest deadline, which runs
the due timers' callbacks and hands the due cores back to the engine. `first_set` is the wait on events
both the engine and the applications use instead of polling.
"""

from __future__ import annotations

import asyncio
import heapq
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Protocol

from tonebridge.looptimer import LoopTimer

if TYPE_CHECKING:
    from tonebridge.calls.core import Action
    from tonebridge.calls.session import Session

log = logging.getLogger("tonebridge.calls")


async def first_set(*events: asyncio.Event) -> None:
    """Wait until any of `events` is set: whoever sets it wakes the waiter, nothing re-checks per tick."""
    if any(event.is_set() for event in events):
        return
    waiters = [asyncio.ensure_future(event.wait()) for event in events]
    try:
        await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for waiter in waiters:
            waiter.cancel()


class TimerCallback(Protocol):
    """What a call timer runs at its deadline: nothing in, nothing out."""

    def __call__(self) -> None: ...


class CallTimer:
    """A deadline set on a call by what runs it (a menu's timeout, a park's maxDuration, a pause between
    digits), kept with the call cores' deadlines and fired by the same loop timer. `callback` runs once at
    `deadline` unless the timer is cancelled first; the engine cancels it when its call ends."""

    __slots__ = ("callback", "deadline", "pending", "session", "_owner")

    def __init__(
        self, owner: _Deadlines | None, session: Session, deadline: float, callback: TimerCallback
    ) -> None:
        self.session = session
        self.deadline = deadline
        self.callback = callback
        self.pending = owner is not None
        self._owner = owner

    def cancel(self) -> None:
        if self.pending and self._owner is not None:
            self._owner.unfile(self)


class _Deadlines:
    """The earliest deadline among every call core and call timer without visiting each: a heap whose
    entries a core's newer deadline supersedes, or a timer's cancelling voids; such stale entries are
    skipped when reached (as in the transaction table), and dropped all at once when they come to
    outnumber the live ones, so an ended call is not held until its longest deadline would have come."""

    def __init__(self) -> None:
        self._heap: list[tuple[float, int, Session | CallTimer]] = []
        self._filed: dict[int, float] = {}  # id(session) -> the deadline its newest heap entry holds
        self._timers: dict[int, set[CallTimer]] = {}  # id(session) -> its pending call timers
        self._pending_timers = 0
        self._sequence = 0

    def file(self, session: Session) -> None:
        if not session.call.active:
            self._drop_timers(session)
        deadline = session.core.next_timer() if session.core is not None else None
        if deadline is None:
            self._filed.pop(id(session), None)
            return
        if self._filed.get(id(session)) == deadline:
            return
        self._filed[id(session)] = deadline
        self._push(deadline, session)

    def add(self, timer: CallTimer) -> None:
        self._timers.setdefault(id(timer.session), set()).add(timer)
        self._pending_timers += 1
        self._push(timer.deadline, timer)

    def unfile(self, timer: CallTimer) -> None:
        """A timer that will not fire (cancelled, or firing now); its heap entry goes stale."""
        timer.pending = False
        timers = self._timers.get(id(timer.session))
        if timers is not None and timer in timers:
            timers.discard(timer)
            self._pending_timers -= 1
            if not timers:
                del self._timers[id(timer.session)]

    def _drop_timers(self, session: Session) -> None:
        for timer in self._timers.pop(id(session), ()):
            timer.pending = False
            self._pending_timers -= 1

    def _push(self, deadline: float, item: Session | CallTimer) -> None:
        self._sequence += 1
        heapq.heappush(self._heap, (deadline, self._sequence, item))
        if len(self._heap) > 64 + 2 * (len(self._filed) + self._pending_timers):
            self._compact()

    def _compact(self) -> None:
        live: list[tuple[float, int, Session | CallTimer]] = []
        seen: set[int] = set()
        for entry in self._heap:
            deadline, _, item = entry
            if self._live(deadline, item) and (isinstance(item, CallTimer) or id(item) not in seen):
                seen.add(id(item))
                live.append(entry)
        heapq.heapify(live)
        self._heap = live

    def _live(self, deadline: float, item: Session | CallTimer) -> bool:
        if isinstance(item, CallTimer):
            return item.pending
        return self._filed.get(id(item)) == deadline

    @property
    def sequence(self) -> int:
        """The number of the newest entry: what `pop_due` takes entries up to."""
        return self._sequence

    def earliest(self) -> float | None:
        while self._heap:
            deadline, _, item = self._heap[0]
            if self._live(deadline, item):
                return deadline
            heapq.heappop(self._heap)
        return None

    def pop_due(self, now: float, up_to: int) -> Session | CallTimer | None:
        """The next session whose core has a deadline at or before `now`, or timer due by then, among
        the entries filed up to `up_to`; it is unfiled until filed again. One at a time, so what one
        does (a timer cancelling another, a core ending its call) holds for the next."""
        while self._heap and self._heap[0][0] <= now:
            if self._heap[0][1] > up_to:
                # Filed while due ones were being run: the next round takes it, so a callback that
                # files again for a time already past cannot keep this round going.
                break
            deadline, _, item = heapq.heappop(self._heap)
            if not self._live(deadline, item):
                continue
            if isinstance(item, CallTimer):
                self.unfile(item)
            else:
                del self._filed[id(item)]
            return item
        return None


class Scheduler:
    """The engine's one loop timer, armed for the earliest deadline in the heap (like sip/stack.py's for
    the transactions), so that no call and no call timer waits on a loop timer or a task of its own.

    `now` is the engine's clock; `run` is how the engine executes a core's actions, given here the actions
    of a core whose deadline came.
    """

    def __init__(self, now: Callable[[], float], run: Callable[[Session, list[Action]], object]) -> None:
        self._now = now
        self._run = run
        self._deadlines = _Deadlines()
        self._timer = LoopTimer(now, self.fire)

    def file(self, session: Session) -> None:
        """Take a core's deadline as it is now (moved, gone; all its call timers gone if its call ended)."""
        self._deadlines.file(session)
        self.arm()

    def call_at(self, session: Session, deadline: float, callback: TimerCallback) -> CallTimer:
        """Run `callback` at `deadline` (on the clock of `now`), from the loop timer that drives the cores.

        The timer goes when the call ends, so a callback never runs for an ended call; on one that has
        already ended the timer is born cancelled.
        """
        if not session.call.active:
            return CallTimer(None, session, deadline, callback)
        timer = CallTimer(self._deadlines, session, deadline, callback)
        self._deadlines.add(timer)
        self.arm()
        return timer

    async def wait_until(self, session: Session, deadline: float) -> bool:
        """Wait for `deadline` on a call timer: True when it came, False when the call ended first."""
        came = asyncio.Event()
        timer = self.call_at(session, deadline, came.set)
        try:
            await first_set(came, session.ended_event)
        finally:
            timer.cancel()
        return came.is_set()

    @property
    def armed_for(self) -> float | None:
        """The deadline the loop timer is armed for."""
        return self._timer.armed_for

    def arm(self) -> None:
        """Keep the loop timer armed for the earliest deadline of any core or call timer."""
        self._timer.arm(self._deadlines.earliest())

    def fire(self) -> None:
        """The loop timer came (or a test says so): run everything due by now, then arm for what is left."""
        self._timer.cancel()
        now = self._now()
        up_to = self._deadlines.sequence
        while (due := self._deadlines.pop_due(now, up_to)) is not None:
            if isinstance(due, CallTimer):
                try:
                    due.callback()
                except Exception:
                    # One failing callback is a bug in what set it; the others due with it still run.
                    log.exception("event=call_timer_failed call_id=%s", due.session.call_id)
            else:
                assert due.core is not None
                self._run(due, due.core.handle_timer(now))
        self.arm()

    def close(self) -> None:
        self._timer.cancel()
