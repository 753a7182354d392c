"""Collect one detect-mode digit sequence: the end rules of conference-dtmf.md §3 "detect", step 2.

Sans-IO in the aioquic style: the owner reports press starts and ends with the time, asks
:meth:`DigitCollector.next_timer` when to call back, and calls :meth:`DigitCollector.handle_timer` then.
A collection ends on the first of: ``maxDigits`` reached; ``#`` pressed while ``maxDigits`` > 1 (the ``#`` is
not part of the value); ``timeoutMills`` passed since the end of the last press. With ``maxDigits`` == 1 a
``#`` is an ordinary digit.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from tonebridge.conference.options import DtmfOptions
from tonebridge.keys import DTMF_KEYS

__all__ = [
    "DIGITS",
    "CollectionDone",
    "CollectionFinished",
    "DigitCollector",
    "CollectionEndReason",
    "check_digit",
]

DIGITS = frozenset(DTMF_KEYS)


def check_digit(digit: str) -> str:
    """Return the canonical (upper-case) form of a DTMF key or raise ValueError."""
    canonical = digit.upper() if isinstance(digit, str) else digit
    if not isinstance(canonical, str) or canonical not in DIGITS:
        raise ValueError(f"not a DTMF key: {digit!r} (expected one of 0-9, *, #, A-D)")
    return canonical


class CollectionEndReason(StrEnum):
    """Why a collection ended."""

    MAX_DIGITS = "max_digits"
    HASH = "hash"
    TIMEOUT = "timeout"
    #: Cut short because the participant left or was kicked (conference-dtmf.md §4).
    LEFT = "left"


@dataclass(frozen=True, slots=True)
class CollectionDone:
    """A finished collection: the value of the PIE's ``menuResult`` for this participant.

    ``seq`` numbers the collections of one call from 0 (PIEs of a call are delivered in this order);
    ``ended_at`` is when the collection ended, the start of the PIE-latency metric (§5).
    """

    call_id: str
    conference_id: str
    digits: str
    seq: int = 0
    reason: CollectionEndReason = CollectionEndReason.TIMEOUT
    ended_at: float = 0.0


class CollectionFinished(RuntimeError):
    """A press was reported to a collector whose collection has already ended."""


class DigitCollector:
    """One collection of digits for one participant, under the options in force when it began."""

    def __init__(
        self, options: DtmfOptions, *, call_id: str = "", conference_id: str = "", seq: int = 0
    ) -> None:
        self.options = options
        self.call_id = call_id
        self.conference_id = conference_id
        self.seq = seq
        self._digits: list[str] = []
        self._pressing = False
        self._deadline: float | None = None
        self._result: CollectionDone | None = None

    @property
    def digits(self) -> str:
        return "".join(self._digits)

    @property
    def done(self) -> bool:
        return self._result is not None

    @property
    def result(self) -> CollectionDone | None:
        return self._result

    def press_started(self, digit: str, now: float) -> CollectionDone | None:
        """Take a key; return the result if this key ends the collection."""
        digit = check_digit(digit)
        if self._result is not None:
            raise CollectionFinished(f"collection {self.seq} of call {self.call_id!r} has already ended")
        # While a key is down the inter-digit timer does not run; it restarts at the press's end.
        self._pressing = True
        self._deadline = None
        if digit == "#" and self.options.max_digits > 1:
            return self._finish(CollectionEndReason.HASH, now)
        self._digits.append(digit)
        if len(self._digits) >= self.options.max_digits:
            return self._finish(CollectionEndReason.MAX_DIGITS, now)
        return None

    def press_ended(self, now: float) -> None:
        """The key is released: the inter-digit timeout runs from now. A stray end is ignored."""
        if self._result is not None or not self._pressing:
            return
        self._pressing = False
        self._deadline = now + self.options.timeout_s

    def next_timer(self) -> float | None:
        """When :meth:`handle_timer` must next be called, or None."""
        return None if self._result is not None else self._deadline

    def handle_timer(self, now: float) -> CollectionDone | None:
        """End the collection if the inter-digit timeout has passed."""
        if self._result is None and self._deadline is not None and now >= self._deadline:
            return self._finish(CollectionEndReason.TIMEOUT, now)
        return None

    def cut_short(self, now: float) -> CollectionDone | None:
        """End now because the participant is leaving; None when nothing was collected."""
        if self._result is not None:
            return None
        result = self._finish(CollectionEndReason.LEFT, now)
        return result if result.digits else None

    def _finish(self, reason: CollectionEndReason, now: float) -> CollectionDone:
        self._pressing = False
        self._deadline = None
        self._result = CollectionDone(
            call_id=self.call_id,
            conference_id=self.conference_id,
            digits=self.digits,
            seq=self.seq,
            reason=reason,
            ended_at=now,
        )
        return self._result
