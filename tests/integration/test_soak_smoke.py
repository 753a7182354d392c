"""The soak bench at CI size: 20 churning participants with presses, callouts and kicks for a minute, and
the server's memory, file descriptors, tasks, ports and store flat (bench/soak.py, docs/benchmarks.md)."""

from __future__ import annotations

import subprocess
import sys

import pytest
from harness import ROOT

pytestmark = pytest.mark.integration


def test_soak_bench_stays_flat_on_a_small_load() -> None:
    completed = subprocess.run(
        [
            sys.executable,
            str(ROOT / "bench" / "soak.py"),
            *("--participants", "20", "--minutes", "1", "--sample", "5"),
            *("--press-interval", "2", "--presses", "1-9"),
            *("--callout-interval", "4", "--callout-hold", "5-15", "--kick-interval", "2"),
            # Records and callbacks kept 15 s (pruned every 7.5 s): the store is at its steady state when
            # the start figures are taken, 25 s in.
            *("--retention", "15", "--warmup", "25"),
        ],
        capture_output=True,
        text=True,
        timeout=150,
        cwd=ROOT,
    )
    output = completed.stdout[-4000:] + completed.stderr[-3000:]
    assert completed.returncode == 0, output
    assert "verdict: flat" in completed.stdout, output
    assert "| after drain |" in completed.stdout, output
