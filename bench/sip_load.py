"""SIP call-rate benchmark: the calls per second SIPp sustains against `tonebridge serve` with 0 failures.

Starts the server (demo application: each call is answered, gets RTP ports and a media leg) on free ports,
then runs SIPp's built-in `uac` scenario (INVITE, 200, ACK, hold `--hold-ms`, BYE, 200) at rising rates
for a short probe each, and finally holds the best clean rate for `--seconds` (60 by default). A rate is
clean when every call completes, SIPp retransmits nothing (the server answered in time) and the run ends
on schedule.
Prints one line per run and a summary; needs `sipp` (Debian sip-tester). Never run as a test.

    .venv/bin/python bench/sip_load.py                 # probe 20, 40, 80... then 60 s at the best
    .venv/bin/python bench/sip_load.py --rate 50       # only 60 s at 50 cps
"""

from __future__ import annotations

import argparse
import csv
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HOST = "127.0.0.1"


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def start_server(workdir: Path) -> tuple[subprocess.Popen[str], int]:
    sip, http = free_port(), free_port()
    config = workdir / "bench.toml"
    config.write_text(
        f'[server]\nsip = "{HOST}:{sip}"\nhttp = "{HOST}:{http}"\nrtp_ports = [30000, 39999]\n'
        f'data_dir = "{workdir / "data"}"\n'
        # The call rate itself is measured, from one source: far above the default per-source admission.
        "\n[limits]\ninvites_per_second_per_source = 10000\ninvite_burst_per_source = 20000\n"
        "max_setting_up_per_source = 10000\nmax_setting_up = 10000\n"
    )
    proc = subprocess.Popen(
        [sys.executable, "-m", "tonebridge.cli", "--log-level", "WARNING", "serve", "--config", str(config)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
            probe.settimeout(0.5)
            probe.sendto(
                f"OPTIONS sip:x@{HOST} SIP/2.0\r\nVia: SIP/2.0/UDP {HOST}:9;branch=z9hG4bKb;rport\r\n"
                f"From: <sip:b@{HOST}>;tag=1\r\nTo: <sip:x@{HOST}>\r\nCall-ID: b\r\nCSeq: 1 OPTIONS\r\n"
                "Content-Length: 0\r\n\r\n".encode(),
                (HOST, sip),
            )
            try:
                probe.recvfrom(4096)
                return proc, sip
            except TimeoutError:
                continue
            except ConnectionRefusedError:
                time.sleep(0.1)
    proc.kill()
    raise SystemExit("server did not answer OPTIONS within 20 s")


def run_sipp(workdir: Path, sip_port: int, rate: float, seconds: float, hold_ms: int) -> dict[str, int]:
    stat = workdir / f"stat-{rate}-{seconds}.csv"
    calls = int(rate * seconds)
    cmd = [
        "sipp",
        f"{HOST}:{sip_port}",
        "-sn",
        "uac",
        "-i",
        HOST,
        "-mi",
        HOST,
        "-p",
        str(free_port()),
        "-r",
        str(rate),
        "-m",
        str(calls),
        "-l",
        str(max(10, int(rate * (hold_ms / 1000 + 2)))),
        "-d",
        str(hold_ms),
        "-nostdin",
        "-trace_stat",
        "-stf",
        str(stat),
        "-fd",
        "1",
        "-timeout",
        f"{int(seconds + 60)}s",
        "-timeout_error",
        "-max_recv_loops",
        "10000",
    ]
    started = time.monotonic()
    subprocess.run(cmd, cwd=workdir, capture_output=True, text=True, timeout=seconds + 120)
    elapsed = time.monotonic() - started
    last = list(csv.DictReader(stat.read_text().splitlines(), delimiter=";"))[-1]
    return {
        "calls": calls,
        "ok": int(last["SuccessfulCall(C)"]),
        "failed": int(last["FailedCall(C)"]),
        "retrans": int(last["Retransmissions(C)"]),
        "elapsed": int(elapsed),
    }


def sustained(result: dict[str, int], seconds: float) -> bool:
    """Every call completed, none retransmitted (the server kept up), and the run kept to its schedule."""
    return (
        not result["failed"]
        and result["ok"] == result["calls"]
        and result["retrans"] == 0
        and result["elapsed"] <= seconds * 1.15 + 3
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rate", type=float, help="skip the probes; hold this rate")
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--probe-seconds", type=float, default=10.0)
    parser.add_argument("--hold-ms", type=int, default=1000, help="how long each call stays up")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        proc, sip_port = start_server(workdir)
        try:
            best = args.rate
            if best is None:
                rate = 10.0
                best = 0.0
                while rate <= 640:
                    result = run_sipp(workdir, sip_port, rate, args.probe_seconds, args.hold_ms)
                    print(f"probe rate={rate:g}/s {result}", flush=True)
                    if not sustained(result, args.probe_seconds):
                        break
                    best = rate
                    rate *= 2
                # Between the last clean rate and the first failing one, try the midpoint too.
                if best and rate <= 640:
                    mid = (best + rate) / 2
                    result = run_sipp(workdir, sip_port, mid, args.probe_seconds, args.hold_ms)
                    print(f"probe rate={mid:g}/s {result}", flush=True)
                    if sustained(result, args.probe_seconds):
                        best = mid
            if args.rate is None:
                # A fresh server for the long run: the failing probe leaves a backlog behind it.
                proc.send_signal(signal.SIGTERM)
                proc.wait(30)
                proc, sip_port = start_server(workdir)
            result = run_sipp(workdir, sip_port, best, args.seconds, args.hold_ms)
            print(f"sustained rate={best:g}/s for {args.seconds:g}s: {result}", flush=True)
            clean = sustained(result, args.seconds)
            print(
                f"RESULT calls_per_second={best:g} seconds={args.seconds:g} zero_failures={clean} "
                f"cores={os.cpu_count()} hold_ms={args.hold_ms}"
            )
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.wait(30)


if __name__ == "__main__":
    main()
