"""Helpers of the tests that run a whole cluster with `tonebridge cluster up` (docs/cluster.md)."""

from __future__ import annotations

import socket
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path

from harness import HOST, free_port, tonebridge_command


def cluster(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*tonebridge_command(), "cluster", *args], capture_output=True, text=True, timeout=timeout
    )


def free_block(size: int) -> int:
    """The first of `size` consecutive ports free for UDP and TCP on the loopback address."""
    for _ in range(200):
        base = free_port()
        if base + size > 65000:
            continue
        ok = True
        for port in range(base, base + size):
            for kind in (socket.SOCK_STREAM, socket.SOCK_DGRAM):
                with socket.socket(socket.AF_INET, kind) as sock:
                    try:
                        sock.bind((HOST, port))
                    except OSError:
                        ok = False
        if ok:
            return base
    raise RuntimeError("no free block of ports")


def health(port: int) -> int | None:
    try:
        with urllib.request.urlopen(f"http://{HOST}:{port}/tonebridge/v1/health", timeout=2) as response:
            return response.status
    except urllib.error.HTTPError as exc:
        return exc.code
    except OSError:
        return None


def running(pid: int) -> bool:
    """The pid exists and is not a zombie (the orphans of `cluster up` are reaped by init, later)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat[stat.rindex(")") + 2] not in "ZX"


def processes_mentioning(text: str) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                cmdline = (entry / "cmdline").read_bytes().decode(errors="replace")
            except OSError:
                continue
            if text in cmdline and running(int(entry.name)):
                found.append(int(entry.name))
    return found


def count(log: Path, text: str) -> int:
    return log.read_text(errors="replace").count(text)


def wait_until(condition, timeout: float, what: str, poll: float = 0.1) -> None:  # type: ignore[no-untyped-def]
    """Poll `condition` until it holds; fails after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {timeout:.1f} s")
        time.sleep(poll)
