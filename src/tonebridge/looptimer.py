"""One asyncio timer for a sans-IO machine's next deadline: what the SIP stack and the call engine each keep
for all their transactions or calls, re-armed whenever the earliest deadline moves."""

from __future__ import annotations

import asyncio
from collections.abc import Callable


class LoopTimer:
    """Calls `fire` once the monotonic `now` reaches the deadline last given to `arm`."""

    def __init__(self, now: Callable[[], float], fire: Callable[[], None]) -> None:
        self._now = now
        self._fire = fire
        self._handle: asyncio.TimerHandle | None = None
        self.armed_for: float | None = None  # the deadline the loop timer is armed for

    def arm(self, deadline: float | None) -> None:
        """Arm for `deadline` (None: disarm); a no-op when already armed for it."""
        if deadline == self.armed_for and self._handle is not None:
            return
        self.cancel()
        self.armed_for = deadline
        if deadline is not None:
            loop = asyncio.get_running_loop()
            self._handle = loop.call_at(loop.time() + max(0.0, deadline - self._now()), self._fired)

    def cancel(self) -> None:
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None
        self.armed_for = None

    def _fired(self) -> None:
        self._handle = None
        self.armed_for = None
        self._fire()
