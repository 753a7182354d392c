"""The built-in demo application, used when no `[[applications]]` are configured.

Every inbound call is answered into the conference `demo` in `detect` mode with maxDigits 2: callers hear
each other (music on hold while alone), and each collection of digits is printed, as the PIE callback will
carry it once applications are configured (shared/spec/operations.md, the demo application).
"""

from __future__ import annotations

import logging

from tonebridge.calls.call import Direction
from tonebridge.calls.conferencing import ConferenceService
from tonebridge.calls.engine import CallEngine, Session
from tonebridge.conference.collector import CollectionDone
from tonebridge.conference.options import DtmfMode, DtmfOptions
from tonebridge.media.endpoint import Press

log = logging.getLogger("tonebridge.demo")

DEMO_CONFERENCE = "demo"
DEMO_OPTIONS = DtmfOptions(mode=DtmfMode.DETECT, max_digits=2)
DEMO_MOH = "music1"


class DemoApplication:
    def __init__(self) -> None:
        self.conferences: ConferenceService | None = None

    def attach(self, conferences: ConferenceService) -> None:
        self.conferences = conferences

    async def incoming(self, engine: CallEngine, session: Session) -> None:
        engine.answer(session)

    def on_answered(self, engine: CallEngine, session: Session) -> None:
        # Calls placed from Python (engine.originate) keep whatever their caller gives them to play.
        if session.call.direction is Direction.INBOUND:
            assert self.conferences is not None
            self.conferences.join(session, DEMO_CONFERENCE, DEMO_OPTIONS, DEMO_MOH)

    def on_press(self, engine: CallEngine, session: Session, press: Press) -> None:
        if self.conferences is not None:
            self.conferences.on_press(session, press)

    def collection(self, session: Session, done: CollectionDone) -> None:
        """The demo's PIE: printed, and completed at once so the caller returns to the room."""
        print(f"demo: PIE call={session.call_id} conference={done.conference_id} menuResult="
              f'{{"menuId": "{done.conference_id}", "type": "sequence", "value": "{done.digits}", '
              f'"inputMethod": "dtmf"}}', flush=True)

    def on_ended(self, engine: CallEngine, session: Session) -> None:
        engine.forget(session)
