"""What happens to calls, as typed events: the one vocabulary the engine, the conference service and the
applications share.

The engine publishes `CallAnswered`, `KeyPressed` and `CallEnded`; the conference service publishes the
room's `ConferenceEnded`. Every observer gets every event in the order they were registered (the server
registers the conference service before the application, so that what a call's end completes in a room,
a collection's PIE, is enqueued before the call's own DiCE) and handles the kinds it cares about with a
`match`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from tonebridge.conference.room import ConferenceEnded

if TYPE_CHECKING:
    from tonebridge.calls.session import Session
    from tonebridge.media.endpoint import Press

__all__ = ["CallAnswered", "CallEnded", "CallEvent", "ConferenceEnded", "KeyPressed", "Observer"]


@dataclass(frozen=True, slots=True)
class CallAnswered:
    """The call is answered: ours accepted by the far end (a callout), or answered by us (inbound)."""

    session: Session


@dataclass(frozen=True, slots=True)
class KeyPressed:
    """A key went down (`press.started`) or came up on the call: RFC 4733, SIP INFO or in-band."""

    session: Session
    press: Press


@dataclass(frozen=True, slots=True)
class CallEnded:
    """The call is over; `session.call` says why (reason, result, SIP status)."""

    session: Session


CallEvent = CallAnswered | KeyPressed | CallEnded | ConferenceEnded
Observer = Callable[[CallEvent], None]
