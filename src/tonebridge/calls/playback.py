"""Media on a call that is not in a room: prompts played, digits sent, the park loop and runMenu's menus.

Each waits on news, not by polling: a player's end (`WavPlayer(on_finished=...)`), an engine call timer
(`call_at`, `wait_until`), the call's end, a press the application hands the menu (`SinchCall.menu_presses`,
`menu_wake`) or a PATCH that unparks the call (`SinchCall.park_over`). What a menu's result or a park's end
leads to (the PIE, the next SVAML) is calls/sinch.py's.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from tonebridge.calls.call import EndReason
from tonebridge.calls.engine import CallEngine
from tonebridge.calls.session import Session
from tonebridge.calls.timers import CallTimer, first_set
from tonebridge.media import prompts
from tonebridge.media.wav import WavPlayer
from tonebridge.svaml import interpreter as ops
from tonebridge.svaml import menu as menus
from tonebridge.svaml.models import Prompt

if TYPE_CHECKING:
    import numpy as np

    from tonebridge.calls.sinch import SinchCall

__all__ = ["DIGIT_PAUSE", "CallMedia"]

DIGIT_PAUSE = 0.5  # what a `w` in a digit string waits (sinch-voice-v1.md, callout `dtmf`)


class CallMedia:
    """Plays, sends and waits on one engine's calls; text to speech is cached in `tts_dir`."""

    def __init__(self, engine: CallEngine, tts_dir: Path | None = None) -> None:
        self.engine = engine
        self.tts_dir = tts_dir

    async def _render(self, prompt_list: list[Prompt], locale: str) -> np.ndarray:
        return await asyncio.get_running_loop().run_in_executor(
            None, lambda: prompts.render(prompt_list, locale, cache_dir=self.tts_dir)
        )

    async def play(
        self,
        session: Session,
        prompt_list: list[Prompt],
        locale: str,
        *,
        stop: asyncio.Event | None = None,
        loop: bool = False,
    ) -> None:
        """Play prompts to a call that is not in a conference, and wait until they are heard, the call ends
        or `stop` is set (looped, only the last two end the play)."""
        samples = await self._render(prompt_list, locale)
        ends = (session.ended_event,) if stop is None else (session.ended_event, stop)
        if samples.size == 0 or any(end.is_set() for end in ends):
            return
        heard = asyncio.Event()
        player = WavPlayer(samples, loop=loop, on_finished=_on_loop(heard.set))
        session.leg.source = player
        try:
            await first_set(heard, *ends)
        finally:
            if session.leg.source is player:
                session.leg.source = None

    async def send_digits(self, session: Session, value: str) -> None:
        engine = self.engine
        for chunk in re.split(r"(w)", value):
            if chunk == "w":
                if not await engine.wait_until(session, engine.now() + DIGIT_PAUSE):
                    return
            elif chunk:
                await engine.send_dtmf(
                    session,
                    chunk,
                    "rfc4733" if session.media and session.media.telephone_event_pt is not None else "inband",
                )

    async def park(self, session: Session, call: SinchCall, op: ops.Park) -> None:
        """park: the intro once, then the hold prompts looped, until a PATCH unparks the call or
        maxDuration passes (then the call ends with reason TIMEOUT)."""
        engine = self.engine
        locale = op.locale or call.locale
        over = asyncio.Event()
        expired = False

        def expire() -> None:
            nonlocal expired
            if call.park_over is over:  # not a park a PATCH has already ended (and maybe parked again)
                # Unparked at the deadline itself: a PATCH coming after it finds a live call, not a park.
                expired, call.parked = True, False
                over.set()

        call.parked, call.park_over = True, over
        limit = engine.call_at(session, engine.now() + op.max_duration, expire)
        try:
            await self.play(session, list(op.intro_prompts), locale, stop=over)
            if op.hold_prompts:
                await self.play(session, list(op.hold_prompts), locale, stop=over, loop=True)
            await first_set(over, session.ended_event)
        finally:
            limit.cancel()
            if call.park_over is over:
                call.park_over = None
        if expired and session.call.active:
            await engine.hangup(session, EndReason.TIMEOUT)

    async def menu(self, session: Session, call: SinchCall, op: ops.RunMenu) -> menus.MenuResult | None:
        """A runMenu's menus on the call, which takes presses while they run: their result, or None when
        the call ended first."""
        runner = menus.MenuRunner(op.menu_spec, self.engine.now())
        call.menu = runner
        result = await self._drive_menu(session, call, runner)
        call.menu = None
        return result

    async def _drive_menu(
        self, session: Session, call: SinchCall, runner: menus.MenuRunner
    ) -> menus.MenuResult | None:
        """Run the menu's effects and feed it what happens, when it happens: every source of news sets one
        wake event (a press through the application's on_press, the prompt's player at its end, a call
        timer at the menu's deadline, the call's end), and each wake takes all the news there is; returns
        the menu's result."""
        engine = self.engine
        wake = asyncio.Event()
        call.menu_wake = wake
        ended = asyncio.ensure_future(session.ended_event.wait())
        ended.add_done_callback(lambda _: wake.set())
        player: WavPlayer | None = None
        timer: CallTimer | None = None
        pending = runner.start(engine.now())
        try:
            while session.call.active:
                for effect in pending:
                    if isinstance(effect, menus.MenuResult):
                        return effect
                    if isinstance(effect, menus.PlayPrompt):
                        samples = await self._render(list(effect.prompts), effect.locale)
                        player = WavPlayer(samples, on_finished=_on_loop(wake.set)) if samples.size else None
                        session.leg.source = player
                        if player is None:
                            pending = runner.prompt_finished(engine.now())
                            break
                    elif isinstance(effect, menus.StopPrompt):
                        session.leg.source = None
                        player = None
                else:
                    pending = []
                if pending:
                    continue
                deadline = runner.next_timer()
                if timer is not None and (not timer.pending or timer.deadline != deadline):
                    timer.cancel()
                    timer = None
                if deadline is not None and timer is None:
                    timer = engine.call_at(session, deadline, wake.set)
                # Cleared after the wait, not before: news that came while a prompt was being rendered
                # has set it already and must not be lost.
                await wake.wait()
                wake.clear()
                now = engine.now()
                presses, call.menu_presses = call.menu_presses, []
                for digit in presses:
                    pending += runner.press(digit, now)
                if player is not None and player.finished:
                    player = None
                    session.leg.source = None
                    pending += runner.prompt_finished(now)
                deadline = runner.next_timer()
                if deadline is not None and deadline <= now:
                    pending += runner.handle_timer(now)
            return None
        finally:
            ended.cancel()
            if timer is not None:
                timer.cancel()
            if player is not None and session.leg.source is player:
                session.leg.source = None
            call.menu_wake = None


def _on_loop(callback: Callable[[], None]) -> Callable[[], None]:
    """`callback`, made safe to call from the media thread (where a player's last frame is taken): it runs
    on this loop."""
    loop = asyncio.get_running_loop()
    return lambda: loop.call_soon_threadsafe(callback)
