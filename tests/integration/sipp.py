"""Running SIPp (Debian `sip-tester`) as a real peer: as a caller against the server, or as a callee (UAS)
the server calls. Statistics come from SIPp's own `-trace_stat` CSV, read once it has exited."""

from __future__ import annotations

import csv
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from harness import HOST, Process, free_port

SCENARIOS = Path(__file__).parent / "scenarios"


def sipp_binary() -> str:
    path = shutil.which("sipp")
    if path is None:
        raise AssertionError("sipp is not installed: `make test` installs Debian's sip-tester")
    return path


@dataclass
class SippStats:
    successful: int
    failed: int
    unexpected: int
    retransmissions: int
    exit_code: int
    output: str


def _stats(stat_file: Path, exit_code: int, output: str) -> SippStats:
    rows = (
        list(csv.DictReader(stat_file.read_text().splitlines(), delimiter=";")) if stat_file.exists() else []
    )
    if not rows:
        raise AssertionError(f"sipp wrote no statistics (exit {exit_code}):\n{output[-3000:]}")
    last = rows[-1]
    return SippStats(
        successful=int(last["SuccessfulCall(C)"]),
        failed=int(last["FailedCall(C)"]),
        unexpected=int(last["FailedUnexpectedMessage(C)"]),
        retransmissions=int(last["Retransmissions(C)"]),
        exit_code=exit_code,
        output=output,
    )


def run_uac(
    workdir: Path,
    target: str,
    *,
    scenario: str | None = None,
    builtin: str = "uac",
    calls: int = 1,
    rate: float = 10.0,
    transport: str = "u1",
    service: str = "demo",
    timeout: float = 120.0,
    extra: list[str] | None = None,
) -> SippStats:
    """Place `calls` calls at `rate` per second to `target` (host:port) and wait for SIPp to finish."""
    stat_file = workdir / f"sipp-{free_port()}.csv"
    args = [
        sipp_binary(),
        target,
        "-i",
        HOST,
        "-mi",
        HOST,
        "-p",
        str(free_port()),
        "-mp",
        str(_media_port()),
        "-t",
        transport,
        "-s",
        service,
        "-m",
        str(calls),
        "-r",
        str(rate),
        "-l",
        str(max(calls, 10)),
        "-timeout",
        f"{int(timeout)}s",
        "-timeout_error",
        "-nostdin",
        "-trace_stat",
        "-stf",
        str(stat_file),
        "-fd",
        "1",
        "-max_recv_loops",
        "1000",
    ]
    if scenario:
        args += ["-sf", str(SCENARIOS / scenario)]
    else:
        args += ["-sn", builtin]
    args += extra or []
    completed = subprocess.run(args, cwd=workdir, capture_output=True, text=True, timeout=timeout + 30)
    return _stats(stat_file, completed.returncode, completed.stdout + completed.stderr)


def start_uas(
    workdir: Path,
    *,
    scenario: str | None = None,
    builtin: str = "uas",
    echo: bool = True,
    transport: str = "u1",
    calls: int | None = None,
) -> tuple[Process, int, Path]:
    """A SIPp callee in the background; returns (process, SIP port, stat file)."""
    port = free_port()
    stat_file = workdir / f"sipp-uas-{port}.csv"
    args = [
        sipp_binary(),
        "-i",
        HOST,
        "-mi",
        HOST,
        "-p",
        str(port),
        "-t",
        transport,
        "-nostdin",
        "-trace_stat",
        "-stf",
        str(stat_file),
        "-fd",
        "1",
    ]
    if echo:
        args += ["-rtp_echo", "-mp", str(_media_port())]
    args += ["-sf", str(SCENARIOS / scenario)] if scenario else ["-sn", builtin]
    if calls is not None:
        args += ["-m", str(calls)]
    return Process(args, cwd=workdir, name="sipp-uas"), port, stat_file


def uas_stats(process: Process, stat_file: Path, timeout: float = 30.0) -> SippStats:
    code = process.wait_exit(timeout)
    return _stats(stat_file, code, process.output)


def _media_port() -> int:
    port = free_port(both=False)
    return port - port % 2
