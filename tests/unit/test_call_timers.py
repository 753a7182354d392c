"""Call timers (calls/timers.py): deadlines of what runs on a call, kept in the heap of the call cores'
deadlines and fired by the engine's one loop timer. No sockets and no sleeping: the engine's clock is a
number the test sets, and the test fires the loop timer itself when that clock reaches a deadline."""

from __future__ import annotations

import asyncio
from collections import Counter
from types import SimpleNamespace
from typing import Any, cast

from tonebridge.calls.call import Call, Direction, EndReason
from tonebridge.calls.core import Action, Ended
from tonebridge.calls.engine import CallEngine
from tonebridge.calls.session import Session
from tonebridge.calls.timers import CallTimer, _Deadlines, first_set
from tonebridge.config import LimitsConfig, SecurityConfig
from tonebridge.media.clock import MediaClock
from tonebridge.media.endpoint import MediaLeg
from tonebridge.media.ports import PortPool


class Core:
    """A call core reduced to its timers and its hang-up."""

    def __init__(self, call: Call) -> None:
        self.call = call
        self.invite = SimpleNamespace(call_id=f"{call.call_id}@192.0.2.1")
        self.deadline: float | None = None
        self.fired: list[float] = []

    def next_timer(self) -> float | None:
        return self.deadline

    def handle_timer(self, now: float) -> list[Action]:
        if self.deadline is not None and self.deadline <= now:
            self.fired.append(now)
            self.deadline = None
        return []

    def hangup(self, reason: EndReason, now: float) -> list[Action]:
        if not self.call.ended(now, reason):
            return []
        assert self.call.result is not None
        return [Ended(reason, self.call.result, None)]


def new_session() -> Session:
    call = Call(Direction.INBOUND, remote_uri="sip:a@192.0.2.1", local_uri="sip:b@192.0.2.2", started_at=0.0)
    call.answered(0.0)
    leg = MediaLeg("127.0.0.1", PortPool(40000, 40100), call_id=call.call_id)  # never opened
    return Session(call, leg, cast(Any, None), core=cast(Any, Core(call)))


class Clock:
    def __init__(self) -> None:
        self.now = 0.0


def new_engine(clock: Clock) -> CallEngine:
    server = SimpleNamespace(rtp_ports=(40000, 40100), public_address="192.0.2.2", digest_algorithms=("MD5",))
    application = SimpleNamespace(
        on_answered=lambda *_: None, on_press=lambda *_: None, on_ended=lambda *_: None
    )
    engine = CallEngine(
        cast(Any, SimpleNamespace(server=server, limits=LimitsConfig(), security=SecurityConfig())),
        cast(Any, SimpleNamespace(transport=SimpleNamespace(stats=SimpleNamespace(counters=Counter())))),
        MediaClock(),
        cast(Any, application),
    )
    engine.now = lambda: clock.now  # type: ignore[method-assign]
    return engine


def fire_loop_timer(engine: CallEngine, clock: Clock, to: float) -> None:
    """Let the engine's clock reach `to`, firing the loop timer at each deadline it was armed for."""
    while engine.scheduler.armed_for is not None and engine.scheduler.armed_for <= to:
        clock.now = max(clock.now, engine.scheduler.armed_for)
        engine.scheduler.fire()
    clock.now = to


# -- the heap ------------------------------------------------------------------------------------------------


def test_timers_and_core_deadlines_come_due_in_deadline_order() -> None:
    deadlines = _Deadlines()
    a, b = new_session(), new_session()
    cast(Core, a.core).deadline = 3.0
    deadlines.file(a)
    fired: list[str] = []
    late = CallTimer(deadlines, b, 5.0, lambda: fired.append("late"))
    early = CallTimer(deadlines, b, 1.0, lambda: fired.append("early"))
    deadlines.add(late)
    deadlines.add(early)
    assert deadlines.earliest() == 1.0
    up_to = deadlines.sequence
    assert deadlines.pop_due(0.5, up_to) is None
    assert deadlines.pop_due(10.0, up_to) is early and not early.pending
    assert deadlines.pop_due(10.0, up_to) is a
    assert deadlines.pop_due(10.0, up_to) is late
    assert deadlines.pop_due(10.0, up_to) is None and deadlines.earliest() is None


def test_a_cancelled_timer_never_comes_due_and_an_ended_call_takes_its_timers_along() -> None:
    deadlines = _Deadlines()
    session = new_session()
    cancelled = CallTimer(deadlines, session, 1.0, lambda: None)
    kept = CallTimer(deadlines, session, 2.0, lambda: None)
    deadlines.add(cancelled)
    deadlines.add(kept)
    cancelled.cancel()
    cancelled.cancel()  # twice is once
    assert not cancelled.pending and deadlines.earliest() == 2.0
    session.call.ended(1.5, EndReason.CALLER_HANGUP)
    deadlines.file(session)
    assert not kept.pending and deadlines.earliest() is None


def test_entries_filed_during_a_round_wait_for_the_next() -> None:
    deadlines = _Deadlines()
    session = new_session()
    deadlines.add(CallTimer(deadlines, session, 1.0, lambda: None))
    up_to = deadlines.sequence
    assert isinstance(deadlines.pop_due(5.0, up_to), CallTimer)
    again = CallTimer(deadlines, session, 1.0, lambda: None)  # a callback filing for a time already past
    deadlines.add(again)
    assert deadlines.pop_due(5.0, up_to) is None
    assert deadlines.earliest() == 1.0 and deadlines.pop_due(5.0, deadlines.sequence) is again


def test_stale_entries_are_dropped_before_they_outnumber_the_live_ones() -> None:
    deadlines = _Deadlines()
    session = new_session()
    kept = CallTimer(deadlines, session, 14_400.0, lambda: None)
    deadlines.add(kept)
    for n in range(1000):
        timer = CallTimer(deadlines, session, 7_200.0 + n, lambda: None)
        deadlines.add(timer)
        timer.cancel()
        cast(Core, session.core).deadline = 3_600.0 + n  # a core whose deadline moves on
        deadlines.file(session)
    assert len(deadlines._heap) <= 64 + 2 * 2
    assert deadlines.earliest() == 3_600.0 + 999
    assert deadlines.pop_due(20_000.0, deadlines.sequence) is session
    assert deadlines.pop_due(20_000.0, deadlines.sequence) is kept


# -- the engine ----------------------------------------------------------------------------------------------


def test_call_at_fires_on_the_loop_timer_with_the_cores() -> None:
    async def scenario() -> None:
        clock = Clock()
        engine = new_engine(clock)
        session = new_session()
        core = cast(Core, session.core)
        fired: list[tuple[str, float]] = []
        engine.call_at(session, 2.0, lambda: fired.append(("two", clock.now)))
        engine.call_at(session, 1.0, lambda: fired.append(("one", clock.now)))
        cancelled = engine.call_at(session, 1.5, lambda: fired.append(("cancelled", clock.now)))
        core.deadline = 1.8
        engine._run(session, [])  # the core's deadline is filed as any action of it would be
        assert engine.scheduler.armed_for == 1.0  # one loop timer, for the earliest of all
        cancelled.cancel()
        fire_loop_timer(engine, clock, 1.9)
        assert fired == [("one", 1.0)] and core.fired == [1.8]
        assert engine.scheduler.armed_for == 2.0
        fire_loop_timer(engine, clock, 5.0)
        assert fired == [("one", 1.0), ("two", 2.0)] and engine.scheduler.armed_for is None

    asyncio.run(scenario())


def test_a_failing_callback_spoils_no_other_timer() -> None:
    async def scenario() -> None:
        clock = Clock()
        engine = new_engine(clock)
        session = new_session()
        fired: list[str] = []

        def fail() -> None:
            raise RuntimeError("a bug in what set the timer")

        engine.call_at(session, 1.0, fail)
        engine.call_at(session, 1.0, lambda: fired.append("after"))
        fire_loop_timer(engine, clock, 1.0)
        assert fired == ["after"]

    asyncio.run(scenario())


def test_a_timer_cancelled_by_an_earlier_one_due_with_it_does_not_fire() -> None:
    async def scenario() -> None:
        clock = Clock()
        engine = new_engine(clock)
        session = new_session()
        fired: list[str] = []
        second = engine.call_at(session, 1.0, lambda: fired.append("second"))
        first = engine.call_at(session, 0.5, second.cancel)
        fire_loop_timer(engine, clock, 2.0)
        assert fired == [] and not first.pending and not second.pending

    asyncio.run(scenario())


def test_timers_go_when_the_call_ends() -> None:
    async def scenario() -> None:
        clock = Clock()
        engine = new_engine(clock)
        session = new_session()
        fired: list[str] = []
        timer = engine.call_at(session, 60.0, lambda: fired.append("late"))
        waiting = asyncio.ensure_future(engine.wait_until(session, 30.0))
        await asyncio.sleep(0)
        clock.now = 10.0
        await engine.hangup(session, EndReason.MANAGER_HANGUP)
        assert session.ended_event.is_set() and not timer.pending
        assert await waiting is False  # the call ended before the deadline
        fire_loop_timer(engine, clock, 100.0)
        assert fired == [] and engine.scheduler.armed_for is None
        born_cancelled = engine.call_at(session, 200.0, lambda: fired.append("too late"))
        assert not born_cancelled.pending and engine.scheduler.armed_for is None
        assert await engine.wait_until(session, 200.0) is False

    asyncio.run(scenario())


def test_wait_until_returns_when_its_timer_fires() -> None:
    async def scenario() -> None:
        clock = Clock()
        engine = new_engine(clock)
        session = new_session()
        waiting = asyncio.ensure_future(engine.wait_until(session, 0.5))
        await asyncio.sleep(0)
        assert engine.scheduler.armed_for == 0.5 and not waiting.done()
        fire_loop_timer(engine, clock, 0.5)
        assert await waiting is True
        assert session.call.active and session.call.result is None

    asyncio.run(scenario())


def test_limit_duration_is_a_timer_of_the_core() -> None:
    calls: list[tuple[float, float]] = []

    class Limited(Core):
        def limit_duration(self, seconds: float, now: float) -> list[Action]:
            calls.append((seconds, now))
            self.deadline = now + seconds
            return []

    async def scenario() -> None:
        clock = Clock()
        engine = new_engine(clock)
        session = new_session()
        session.core = cast(Any, Limited(session.call))
        clock.now = 3.0
        engine.limit_duration(session, 60.0)
        assert calls == [(60.0, 3.0)] and engine.scheduler.armed_for == 63.0

    asyncio.run(scenario())


def test_first_set_returns_at_once_for_an_event_already_set() -> None:
    async def scenario() -> None:
        done, other = asyncio.Event(), asyncio.Event()
        done.set()
        await first_set(other, done)
        waiting = asyncio.ensure_future(first_set(other, asyncio.Event()))
        await asyncio.sleep(0)
        assert not waiting.done()
        other.set()
        await waiting

    asyncio.run(scenario())
