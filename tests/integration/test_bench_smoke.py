"""The benchmarks still run: each bench script on a CI-sized load (a few ticks, a few legs), so a change
to the server's real paths cannot leave a bench measuring something that no longer exists."""

from __future__ import annotations

import subprocess
import sys

import pytest
from harness import ROOT, free_port_range

pytestmark = pytest.mark.integration


def test_mixer_bench_times_the_real_tick_on_a_few_legs() -> None:
    low, high = free_port_range(100)
    completed = subprocess.run(
        [
            sys.executable,
            str(ROOT / "bench" / "mixer.py"),
            "--ticks",
            "20",
            "--rooms",
            "5",
            "--participants",
            "10",
            "--no-search",
            "--ports",
            f"{low}-{high}",
        ],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
    )
    assert completed.returncode == 0, completed.stdout[-3000:] + completed.stderr[-3000:]
    assert "tick p50 ms" in completed.stdout, completed.stdout


def test_rtp_load_bench_runs_its_quick_sweep() -> None:
    completed = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "rtp_load.py"), "--quick"],
        capture_output=True,
        text=True,
        timeout=180,
        cwd=ROOT,
    )
    assert completed.returncode == 0, completed.stdout[-3000:] + completed.stderr[-3000:]
    # The table reads the server's own tick histograms and packet counters: n/a would mean they are gone.
    # Whether the row is clean is the bench's finding, not this test's: timing is never asserted here.
    row = next(line for line in completed.stdout.splitlines() if line.startswith("| 20 |"))
    assert "n/a" not in row, completed.stdout[-3000:]


def test_rtp_load_bench_runs_its_quick_sweep_through_a_two_node_cluster() -> None:
    # `tonebridge cluster up --nodes 2` (Redis, two nodes, Kamailio, HAProxy), SIPp calling Kamailio.
    completed = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "rtp_load.py"), "--quick", "--cluster", "2"],
        capture_output=True,
        text=True,
        timeout=90,
        cwd=ROOT,
    )
    assert completed.returncode == 0, completed.stdout[-3000:] + completed.stderr[-3000:]
    cells = {
        line.split("|")[2].strip(): [cell.strip() for cell in line.split("|")[1:-1]]
        for line in completed.stdout.splitlines()
        if line.startswith("| 20 | node-")
    }
    assert sorted(cells) == ["node-1", "node-2"], completed.stdout[-3000:]
    for node, row in cells.items():
        # legs, "rooms (homes)", "moved in / out": each node is home to one of the two rooms and got calls of
        # both, so calls were moved both ways; its tick histograms and packet counters were read.
        assert int(row[3]) > 0 and row[4] == "1 (1)", (node, row)
        moved_in, moved_out = (int(v) for v in row[5].split(" / "))
        assert moved_in > 0 and moved_out > 0, (node, row)
        assert "n/a" not in row[10] + row[11] + row[14] + row[15], (node, row)
    # The probe's digits made PIEs on room-0's home; every call was ended by its node. Timing is the
    # bench's finding, not this test's: whether a row is clean is never asserted here.
    summary = next((line for line in completed.stdout.splitlines() if line.startswith("| 20 | 20 |")), "")
    pies, calls = summary.split("|")[8].strip(), summary.split("|")[9].strip()
    assert int(pies.split(" / ")[0]) > 0 and calls == "20 / 0 / 0", summary


def test_sip_flood_bench_runs_a_small_flood() -> None:
    # 50 INVITEs a second for 2 s against 10 a second (burst 10) allowed per source: refusals still happen.
    completed = subprocess.run(
        [
            sys.executable,
            str(ROOT / "bench" / "sip_flood.py"),
            "--rate",
            "50",
            "--seconds",
            "2",
            "--after",
            "10",
            "--limits",
            "rate=10,burst=10",
        ],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
    )
    assert completed.returncode == 0, completed.stdout[-3000:] + completed.stderr[-3000:]
    summary = next(line for line in completed.stdout.splitlines() if line.startswith("RESULT sip_flood "))
    fields = dict(part.split("=", 1) for part in summary.split()[2:])
    # Counted by the server and seen by SIPp: the bench reads both, not only its own figures.
    assert int(fields["throttled"]) > 0 and int(fields["unexpected"]) > 0, summary
    assert fields["other_in_time"] == "True" and fields["nothing_left"] == "True", summary
