"""Benchmark of the conference mixer: per-tick time of decode + mix + encode for every leg.

Run single-threaded (numpy's element-wise work is single-threaded anyway; this pins any BLAS pools too):

    OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 MKL_NUM_THREADS=1 .venv/bin/python bench/mixer.py

Every leg contributes and hears; legs alternate between PCMU and PCMA; each tick feeds one 20 ms G.711
payload per leg to ``Mixer.mix_payloads`` and times the call. Prints the median and 99th percentile per
configuration, then the number of participants that fit in 5 ms per tick (25 % of one core at 50 ticks/s).
"""

from __future__ import annotations

import argparse
import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import time  # noqa: E402

import numpy as np  # noqa: E402

from tonebridge.media import g711  # noqa: E402
from tonebridge.media.mixer import Mixer  # noqa: E402

FRAME = 160
BUDGET_S = 0.005


def build(participants: int, room_size: int, seed: int = 0) -> tuple[Mixer, list[dict[int, bytes]]]:
    rng = np.random.default_rng(seed)
    mixer = Mixer(FRAME)
    for leg in range(participants):
        mixer.add_leg(leg, leg // room_size, "PCMU" if leg % 2 == 0 else "PCMA")
    # A few distinct ticks of speech-level noise, cycled, so payloads differ from tick to tick.
    ticks = []
    for _ in range(4):
        payloads = {}
        for leg in range(participants):
            samples = rng.normal(0, 2000, FRAME).clip(-32768, 32767).astype(np.int16)
            payloads[leg] = g711.encode("PCMU" if leg % 2 == 0 else "PCMA", samples)
        ticks.append(payloads)
    return mixer, ticks


def measure(participants: int, room_size: int, ticks: int) -> tuple[float, float]:
    """Median and 99th percentile of the per-tick time, in milliseconds."""
    mixer, inputs = build(participants, room_size)
    for i in range(10):  # warm-up: index arrays, caches
        mixer.mix_payloads(inputs[i % len(inputs)])
    times = np.empty(ticks)
    for i in range(ticks):
        start = time.perf_counter()
        mixer.mix_payloads(inputs[i % len(inputs)])
        times[i] = time.perf_counter() - start
    return float(np.median(times)) * 1e3, float(np.percentile(times, 99)) * 1e3


def capacity(room_size: int, ticks: int) -> tuple[int, float, float]:
    """Largest participant count (to 5 %) whose median tick fits in the budget, with its median and p99."""

    def fits(participants: int) -> bool:
        # Other processes only ever add time: the lower of two runs' medians is the better estimate.
        return min(measure(participants, room_size, ticks)[0] for _ in range(2)) <= BUDGET_S * 1e3

    low, high = room_size, 500
    while fits(high):
        low, high = high, high * 2
    while high - low > max(room_size, low // 20):
        mid = (low + high) // 2
        if fits(mid):
            low = mid
        else:
            high = mid
    return (low, *measure(low, room_size, ticks))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ticks", type=int, default=300, help="timed ticks per configuration")
    args = parser.parse_args()
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(
        f"numpy {np.__version__}, {args.ticks} ticks per row, decode + mix + encode, all legs contributing "
        f"(load average {load:.2f} on {os.cpu_count()} cores)"
    )
    print(f"{'participants':>12} {'room size':>9} {'rooms':>6} {'median ms':>10} {'p99 ms':>8} {'us/leg':>7}")
    per_leg_at_1000: dict[int, float] = {}
    for room_size in (5, 50):
        for participants in (10, 100, 500, 1000):
            median, p99 = measure(participants, room_size, args.ticks)
            per_leg_at_1000[room_size] = median / participants
            rooms = -(-participants // room_size)
            per_leg = median * 1e3 / participants
            print(f"{participants:>12} {room_size:>9} {rooms:>6} {median:>10.3f} {p99:>8.3f} {per_leg:>7.2f}")
    for room_size, per_leg in per_leg_at_1000.items():
        print(
            f"rooms of {room_size}: 5 ms / per-leg time at 1,000 legs = {BUDGET_S * 1e3 / per_leg:.0f} participants"
        )
    for room_size in (5, 50):
        most, median, p99 = capacity(room_size, max(50, args.ticks // 3))
        print(
            f"rooms of {room_size}: searched, about {most} participants per core within 5 ms per 20 ms tick "
            f"(median {median:.2f} ms, p99 {p99:.2f} ms there)"
        )


if __name__ == "__main__":
    main()
