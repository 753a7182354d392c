"""A Call: one leg (one SIP dialog and its RTP stream), its states, and why it ended.

Pure bookkeeping: the call core (calls/core.py) moves a Call through its states as SIP events arrive;
the names of results and reasons are those the Sinch DiCE callback uses, so the API can report them as is.
"""

from __future__ import annotations

import enum
import secrets
from dataclasses import dataclass, field


class CallState(enum.Enum):
    INITIATING = "initiating"  # outbound: INVITE not yet answered with a provisional
    RINGING = "ringing"
    ANSWERED = "answered"
    ENDED = "ended"


class Direction(enum.Enum):
    INBOUND = "inbound"
    OUTBOUND = "outbound"


class CallResult(enum.Enum):
    """DiCE `result`."""

    ANSWERED = "ANSWERED"
    BUSY = "BUSY"
    NOANSWER = "NOANSWER"
    FAILED = "FAILED"


class EndReason(enum.Enum):
    """DiCE `reason`."""

    CALLER_HANGUP = "CALLERHANGUP"
    CALLEE_HANGUP = "CALLEEHANGUP"
    MANAGER_HANGUP = "MANAGERHANGUP"
    TIMEOUT = "TIMEOUT"
    NO_ANSWER = "NOANSWER"
    BUSY = "BUSY"
    CANCEL = "CANCEL"
    USER_NOT_FOUND = "USERNOTFOUND"
    GENERAL_ERROR = "GENERALERROR"
    CALLBACK_ERROR = "CALLBACKERROR"
    NONE = "N/A"


class InvalidTransition(Exception):
    """A state change the call's life does not allow (for example answering an ended call)."""


def new_call_id() -> str:
    return secrets.token_hex(16)


@dataclass
class Call:
    direction: Direction
    remote_uri: str
    local_uri: str
    started_at: float
    call_id: str = field(default_factory=new_call_id)
    cli: str = ""
    state: CallState = CallState.INITIATING
    answered_at: float | None = None
    ended_at: float | None = None
    result: CallResult | None = None
    reason: EndReason | None = None
    sip_status: int | None = None  # the final SIP status that ended an unanswered outbound call
    on_hold: bool = False

    @property
    def active(self) -> bool:
        return self.state is not CallState.ENDED

    def ringing(self) -> None:
        if self.state is CallState.ENDED:
            raise InvalidTransition(f"call {self.call_id} has ended")
        if self.state is CallState.INITIATING:
            self.state = CallState.RINGING

    def answered(self, now: float) -> None:
        if self.state in (CallState.ANSWERED, CallState.ENDED):
            raise InvalidTransition(f"call {self.call_id} is {self.state.value}, cannot answer")
        self.state = CallState.ANSWERED
        self.answered_at = now

    def ended(
        self,
        now: float,
        reason: EndReason,
        *,
        result: CallResult | None = None,
        sip_status: int | None = None,
    ) -> bool:
        """Mark the call ended; returns False if it had already ended (the first reason stands)."""
        if self.state is CallState.ENDED:
            return False
        if result is None:
            result = CallResult.ANSWERED if self.answered_at is not None else CallResult.FAILED
        self.state = CallState.ENDED
        self.ended_at = now
        self.reason = reason
        self.result = result
        self.sip_status = sip_status
        return True

    def duration(self, now: float) -> int:
        """Whole seconds since answer (to the end, once ended); 0 if never answered."""
        if self.answered_at is None:
            return 0
        end = self.ended_at if self.ended_at is not None else now
        return max(0, int(end - self.answered_at))


def outcome_for_status(status: int) -> tuple[CallResult, EndReason]:
    """How an outbound call that got a final error status ended (RFC 3261 §21 classes)."""
    if status in (486, 600):
        return CallResult.BUSY, EndReason.BUSY
    if status in (408, 480):
        return CallResult.NOANSWER, EndReason.NO_ANSWER
    if status == 487:
        return CallResult.NOANSWER, EndReason.CANCEL
    if status in (404, 604):
        return CallResult.FAILED, EndReason.USER_NOT_FOUND
    if status == 603:
        return CallResult.BUSY, EndReason.BUSY
    return CallResult.FAILED, EndReason.GENERAL_ERROR
