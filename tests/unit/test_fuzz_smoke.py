"""The CI run of bench/fuzz.py: every target (SIP with transactions, SDP, RTP/RTCP/RFC 4733 with the native
plane, SVAML) for a few seconds each, with zero crashes.

The plain mutator is used, not atheris: it needs nothing beyond the test extras and, seeded, mutates the
same way on every run. The long coverage-guided runs are the bench's (docs/benchmarks.md, "Fuzzing").
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SECONDS_PER_TARGET = 4


def test_every_fuzz_target_runs_without_a_crash(tmp_path: Path) -> None:
    command = [sys.executable, str(ROOT / "bench" / "fuzz.py"), "--all", "--json", "--engine", "plain"]
    command += ["--seconds", str(SECONDS_PER_TARGET), "--out", str(tmp_path)]
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=120)
    results = {row["target"]: row for row in map(json.loads, done.stdout.splitlines())}
    assert sorted(results) == ["rtp", "sdp", "sip", "svaml"], done.stderr
    for target, row in results.items():
        assert row["crashes"] == 0, f"{target}: {row['inputs']}\n{done.stderr}"
        # Executions really happened (hundreds a second even on a loaded 2-core machine).
        assert row["executions"] > 100 * SECONDS_PER_TARGET, row
    assert done.returncode == 0, done.stderr
    assert not list(tmp_path.rglob("crash-*"))
