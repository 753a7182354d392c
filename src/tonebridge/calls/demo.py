"""The built-in demo application, used when no `[[applications]]` are configured.

Every inbound call is answered and hears a short beep every two seconds (so a newcomer hears that audio
flows); key presses are printed. It echoes nothing back. Conferences replace the beep once they land.
"""

from __future__ import annotations

import logging

import numpy as np

from tonebridge.calls.engine import CallEngine, Session
from tonebridge.media.endpoint import Press
from tonebridge.media.tones import sine
from tonebridge.media.wav import WavPlayer

log = logging.getLogger("tonebridge.demo")


def beep_pattern() -> np.ndarray:
    """400 ms of 440 Hz at -16 dBm0, then 1.6 s of silence."""
    return np.concatenate([sine(440.0, 400, -16.0), np.zeros(12_800, dtype=np.int16)])


class DemoApplication:
    def __init__(self) -> None:
        self._pattern = beep_pattern()

    async def incoming(self, engine: CallEngine, session: Session) -> None:
        session.leg.source = WavPlayer(self._pattern, loop=True)
        engine.answer(session)

    def on_answered(self, engine: CallEngine, session: Session) -> None:
        pass

    def on_press(self, engine: CallEngine, session: Session, press: Press) -> None:
        if press.started:
            print(f"demo: call {session.call_id} pressed {press.digit} ({press.source})", flush=True)

    def on_ended(self, engine: CallEngine, session: Session) -> None:
        engine.forget(session)
