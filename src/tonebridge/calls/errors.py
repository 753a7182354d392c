"""What the Sinch application refuses to do, as domain errors: a call, conference, participant or application
the caller may not see, a number another application holds.

They name what was asked for and nothing of HTTP: api/errors.py maps each one to its Sinch error body.
"""

from __future__ import annotations

__all__ = [
    "ApplicationNotFound",
    "CallNotFound",
    "CallNotLive",
    "ConferenceNotFound",
    "NotAParticipant",
    "NumberTaken",
    "SinchError",
]


class SinchError(Exception):
    """A request the application refuses because of what exists (or belongs to whom), not its shape."""


class CallNotFound(SinchError):
    """No call `call_id` of the asking application, live or recorded."""

    state = "not found"

    def __init__(self, call_id: str) -> None:
        super().__init__(f"call {call_id!r} {self.state}")
        self.call_id = call_id


class CallNotLive(CallNotFound):
    """No live call `call_id` of the asking application: only a live call can change, an ended one is gone."""

    state = "not found or ended"


class ConferenceNotFound(SinchError):
    """No running conference `conference_id` of the asking application."""

    def __init__(self, conference_id: str) -> None:
        super().__init__(f"conference {conference_id!r} not found")
        self.conference_id = conference_id


class NotAParticipant(SinchError):
    """The call is not in the conference (which exists and belongs to the asking application)."""

    def __init__(self, call_id: str, conference_id: str) -> None:
        super().__init__(f"{call_id!r} is not in conference {conference_id!r}")
        self.call_id = call_id
        self.conference_id = conference_id


class ApplicationNotFound(SinchError):
    """An application key the credentials do not cover: an application configures only itself."""

    def __init__(self, application_key: object) -> None:
        super().__init__(f"no application {application_key!r} for these credentials")
        self.application_key = application_key


class NumberTaken(SinchError):
    """A number already assigned to another application."""

    def __init__(self, number: str) -> None:
        super().__init__(f"{number} belongs to another application")
        self.number = number
