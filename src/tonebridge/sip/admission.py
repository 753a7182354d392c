"""Admission of new INVITEs, per source address, pure: each source has a token bucket (a rate and a burst),
and a cap on the calls it may have being set up at once, under a cap for all sources together.

"Being set up" is an admitted INVITE not yet given its final response (waiting for the application's ICE
answer, or ringing). Time is passed in as `now`. A source is forgotten once its bucket has refilled and it
has nothing being set up, so what is kept is bounded by the INVITEs of the last few seconds.

A refused INVITE's retransmissions are refused again, as its transaction would absorb them were there one:
the refusal is answered statelessly, and a retransmission admitted once a token is back would make a call
its caller, holding the 503, never acknowledges.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Hashable
from dataclasses import dataclass

# How long a refusal is remembered: a UAC retransmits an unanswered INVITE until Timer B, 64*T1 (§17.1.1.2).
REFUSAL_MEMORY = 32.0
# And for how many INVITEs at most (the oldest forgotten first): a minute's worth at 1,000 a second.
MAX_REFUSALS_REMEMBERED = 65536


@dataclass(frozen=True)
class AdmissionLimits:
    rate: float  # INVITEs per second per source, sustained
    burst: int  # INVITEs a source may send at once after being quiet
    max_setting_up_per_source: int
    max_setting_up: int

    def __post_init__(self) -> None:
        if self.rate <= 0 or self.burst < 1 or self.max_setting_up_per_source < 1 or self.max_setting_up < 1:
            raise ValueError(f"admission limits must be positive: {self}")


@dataclass(frozen=True)
class Refusal:
    """Why an INVITE was refused (`rate`, `source_setting_up`, `setting_up`) and the Retry-After to send."""

    reason: str
    retry_after: int


class _Source:
    __slots__ = ("tokens", "stamp", "setting_up")

    def __init__(self, tokens: float, stamp: float) -> None:
        self.tokens = tokens
        self.stamp = stamp
        self.setting_up = 0


class InviteAdmission:
    def __init__(self, limits: AdmissionLimits) -> None:
        self.limits = limits
        self._sources: dict[str, _Source] = {}
        self._setting_up: dict[Hashable, str] = {}
        # A bucket idle this long is full again, so forgetting it changes no later decision.
        self._refill_time = limits.burst / limits.rate
        self._last_sweep = -math.inf
        self._refused: OrderedDict[Hashable, tuple[float, Refusal]] = OrderedDict()

    @property
    def setting_up(self) -> int:
        return len(self._setting_up)

    @property
    def sources(self) -> int:
        return len(self._sources)

    def admit(self, source: str, key: Hashable, now: float) -> Refusal | None:
        """Admit the new INVITE `key` from `source`, counting it as being set up, or say why not."""
        if now - self._last_sweep >= self._refill_time:
            self._sweep(now)
        self._forget_refusals(now)
        if (refused := self._refused.get(key)) is not None:
            return refused[1]
        limits = self.limits
        state = self._sources.get(source)
        if state is None:
            state = self._sources[source] = _Source(float(limits.burst), now)
        else:
            elapsed = max(0.0, now - state.stamp)
            state.tokens = min(float(limits.burst), state.tokens + elapsed * limits.rate)
            state.stamp = now
        # The caps are checked before the bucket: an INVITE refused for them costs its source no token.
        if len(self._setting_up) >= limits.max_setting_up:
            return self._refuse(key, Refusal("setting_up", 1), now)
        if state.setting_up >= limits.max_setting_up_per_source:
            return self._refuse(key, Refusal("source_setting_up", 1), now)
        if state.tokens < 1.0:
            wait = max(1, math.ceil((1.0 - state.tokens) / limits.rate))
            return self._refuse(key, Refusal("rate", wait), now)
        state.tokens -= 1.0
        if key not in self._setting_up:
            state.setting_up += 1
            self._setting_up[key] = source
        return None

    def finished(self, key: Hashable) -> None:
        """The INVITE `key` got its final response (or its transaction ended); unknown keys are ignored."""
        source = self._setting_up.pop(key, None)
        if source is None:
            return
        state = self._sources.get(source)
        if state is not None:
            state.setting_up -= 1

    def _refuse(self, key: Hashable, refusal: Refusal, now: float) -> Refusal:
        self._refused[key] = (now, refusal)
        if len(self._refused) > MAX_REFUSALS_REMEMBERED:
            self._refused.popitem(last=False)
        return refusal

    def _forget_refusals(self, now: float) -> None:
        # Kept in the order they were made, so the expired ones are at the front.
        while self._refused:
            key, (when, _) = next(iter(self._refused.items()))
            if now - when < REFUSAL_MEMORY:
                return
            del self._refused[key]

    def _sweep(self, now: float) -> None:
        self._last_sweep = now
        idle = [
            source
            for source, state in self._sources.items()
            if state.setting_up == 0 and now - state.stamp >= self._refill_time
        ]
        for source in idle:
            del self._sources[source]
