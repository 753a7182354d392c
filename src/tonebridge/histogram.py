"""A cumulative histogram with fixed bucket bounds: what the media tick's duration and lateness are kept in,
cheap enough to observe twice per tick and shaped like a Prometheus histogram for whoever reads it."""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Sequence

# Milliseconds: fine below the 5 ms that matter to a 20 ms tick, coarse beyond.
TICK_BOUNDS_MS: tuple[float, ...] = (
    0.1, 0.2, 0.3, 0.5, 0.75, 1, 1.5, 2, 3, 4, 5, 6, 8, 10, 15, 20, 30, 50, 100, 250, 1000,
)  # fmt: skip


class Histogram:
    def __init__(self, bounds: Sequence[float] = TICK_BOUNDS_MS) -> None:
        self.bounds = tuple(bounds)
        self._counts = [0] * (len(self.bounds) + 1)  # the last bucket is +Inf
        self.count = 0
        self.sum = 0.0
        self.max = 0.0

    def observe(self, value: float) -> None:
        self._counts[bisect_left(self.bounds, value)] += 1
        self.count += 1
        self.sum += value
        if value > self.max:
            self.max = value

    def quantile(self, q: float) -> float | None:
        """The q-quantile, interpolated inside its bucket (None before any observation)."""
        if not self.count:
            return None
        rank = q * self.count
        seen = 0
        for index, count in enumerate(self._counts):
            if count and seen + count >= rank:
                low = self.bounds[index - 1] if index else 0.0
                high = self.bounds[index] if index < len(self.bounds) else self.max
                return low + (high - low) * max(0.0, rank - seen) / count
            seen += count
        return self.max

    def snapshot(self) -> dict[str, object]:
        cumulative: list[list[object]] = []
        total = 0
        for bound, count in zip(self.bounds, self._counts, strict=False):
            total += count
            cumulative.append([bound, total])
        cumulative.append(["+Inf", self.count])
        return {
            "count": self.count,
            "sum": round(self.sum, 3),
            "max": round(self.max, 3),
            "p50": _round(self.quantile(0.5)),
            "p99": _round(self.quantile(0.99)),
            "buckets": cumulative,
        }


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 3)
