"""The built-in demo application, used when no `[[applications]]` are configured.

Every inbound call is answered into the conference `demo` in `detect` mode with maxDigits 2: callers hear
each other (music on hold while alone), and each collection of digits is printed, as the PIE callback will
carry it once applications are configured (shared/spec/operations.md, the demo application).
"""

from __future__ import annotations

import logging
from typing import assert_never

from tonebridge.calls.call import Direction
from tonebridge.calls.conferencing import ConferenceService
from tonebridge.calls.engine import CallEngine
from tonebridge.calls.events import CallAnswered, CallEnded, CallEvent, ConferenceEnded, KeyPressed
from tonebridge.calls.session import Session
from tonebridge.conference.collector import CollectionDone
from tonebridge.conference.options import DtmfMode, DtmfOptions

log = logging.getLogger("tonebridge.demo")

DEMO_CONFERENCE = "demo"
DEMO_OPTIONS = DtmfOptions(mode=DtmfMode.DETECT, max_digits=2)
DEMO_MOH = "music1"


class DemoApplication:
    def __init__(self) -> None:
        self.engine: CallEngine | None = None
        self.conferences: ConferenceService | None = None

    def attach(self, engine: CallEngine, conferences: ConferenceService) -> None:
        self.engine = engine
        self.conferences = conferences

    async def incoming(self, engine: CallEngine, session: Session) -> None:
        engine.answer(session)

    def on_event(self, event: CallEvent) -> None:
        match event:
            case CallAnswered(session=session):
                # Calls placed from Python (engine.originate) keep whatever their caller gives them to play.
                if session.call.direction is Direction.INBOUND:
                    assert self.conferences is not None
                    self.conferences.join(session, DEMO_CONFERENCE, DEMO_OPTIONS, DEMO_MOH)
            case CallEnded(session=session):
                assert self.engine is not None
                self.engine.forget(session)
            case KeyPressed() | ConferenceEnded():
                pass  # presses reach the room by themselves; the demo keeps nothing per conference
            case _:
                assert_never(event)

    def collection(self, session: Session, done: CollectionDone) -> None:
        """The demo's PIE: printed, and completed at once so the caller returns to the room."""
        print(
            f"demo: PIE call={session.call_id} conference={done.conference_id} menuResult="
            f'{{"menuId": "{done.conference_id}", "type": "sequence", "value": "{done.digits}", '
            f'"inputMethod": "dtmf"}}',
            flush=True,
        )
