"""The application interface: everything the server calls on the application it runs (the Sinch-style
application, the demo, a test's own), declared in one place so that nothing is looked up by name."""

from __future__ import annotations

from collections.abc import Awaitable
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from tonebridge.calls.conferencing import ConferenceService
    from tonebridge.calls.engine import CallEngine
    from tonebridge.calls.events import CallEvent
    from tonebridge.calls.session import Session
    from tonebridge.conference.collector import CollectionDone


class Application(Protocol):
    def attach(self, engine: CallEngine, conferences: ConferenceService) -> None:
        """The server's wiring, once, before any call: the engine and rooms the application drives."""

    async def incoming(self, engine: CallEngine, session: Session) -> None:
        """A new inbound call: answer it (engine.answer), reject it (engine.reject), or leave it ringing."""

    def on_event(self, event: CallEvent) -> None:
        """Something happened to a call (answered, key pressed, ended) or a conference (ended)."""

    def collection(self, session: Session, done: CollectionDone) -> Awaitable[None] | None:
        """A detect-mode collection ended: send its PIE. The participant returns to the room when the
        returned awaitable completes (at once for None)."""
