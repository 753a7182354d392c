"""Call states, end reasons and results."""

from __future__ import annotations

import pytest

from tonebridge.calls.call import (
    Call,
    CallResult,
    CallState,
    Direction,
    EndReason,
    InvalidTransition,
    outcome_for_status,
)


def make_call() -> Call:
    return Call(Direction.OUTBOUND, remote_uri="sip:b@x", local_uri="sip:a@y", started_at=100.0)


def test_answered_call_ends_with_duration_and_first_reason_kept() -> None:
    call = make_call()
    call.ringing()
    assert call.state is CallState.RINGING
    call.answered(101.0)
    assert call.ended(113.7, EndReason.CALLEE_HANGUP)
    assert not call.ended(120.0, EndReason.MANAGER_HANGUP)
    assert (call.result, call.reason, call.duration(500.0)) == (
        CallResult.ANSWERED,
        EndReason.CALLEE_HANGUP,
        12,
    )


def test_unanswered_call_has_no_duration_and_cannot_be_answered_after_end() -> None:
    call = make_call()
    call.ended(105.0, EndReason.TIMEOUT, result=CallResult.NOANSWER)
    assert call.duration(200.0) == 0
    with pytest.raises(InvalidTransition):
        call.answered(106.0)
    with pytest.raises(InvalidTransition):
        call.ringing()


@pytest.mark.parametrize(
    ("status", "result", "reason"),
    [
        (486, CallResult.BUSY, EndReason.BUSY),
        (600, CallResult.BUSY, EndReason.BUSY),
        (480, CallResult.NOANSWER, EndReason.NO_ANSWER),
        (408, CallResult.NOANSWER, EndReason.NO_ANSWER),
        (487, CallResult.NOANSWER, EndReason.CANCEL),
        (404, CallResult.FAILED, EndReason.USER_NOT_FOUND),
        (503, CallResult.FAILED, EndReason.GENERAL_ERROR),
    ],
)
def test_sip_status_outcomes(status: int, result: CallResult, reason: EndReason) -> None:
    assert outcome_for_status(status) == (result, reason)
