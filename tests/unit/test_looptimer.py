"""The one re-armable loop timer of the SIP stack and the call engine."""

from __future__ import annotations

import asyncio

from tonebridge.looptimer import LoopTimer


def test_fires_once_for_the_deadline_it_was_last_armed_for() -> None:
    async def main() -> list[float]:
        fired: list[float] = []
        done = asyncio.Event()
        clock = [100.0]
        timer = LoopTimer(lambda: clock[0], lambda: (fired.append(clock[0]), done.set()))
        timer.arm(500.0)  # far away: would never fire within this test
        handle = timer._handle
        timer.arm(500.0)  # the same deadline keeps the same handle
        assert timer._handle is handle and timer.armed_for == 500.0
        timer.arm(99.0)  # already due: fires on the loop's next turn
        await asyncio.wait_for(done.wait(), 5)
        assert timer.armed_for is None
        return fired

    assert asyncio.run(main()) == [100.0]


def test_cancel_and_none_disarm() -> None:
    async def main() -> None:
        timer = LoopTimer(lambda: 0.0, lambda: (_ for _ in ()).throw(AssertionError("must not fire")))
        timer.arm(-1.0)
        timer.cancel()
        timer.arm(-1.0)
        timer.arm(None)
        assert timer.armed_for is None
        await asyncio.sleep(0)  # one turn of the loop: a handle left armed would have run here
        await asyncio.sleep(0)

    asyncio.run(main())
