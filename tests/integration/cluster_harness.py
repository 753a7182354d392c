"""Helpers of the tests that run a whole cluster with `tonebridge cluster up` (docs/cluster.md)."""

from __future__ import annotations

import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

from harness import HOST, Process, free_port, require, tonebridge_command


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


class RedisServer:
    """Debian's redis-server on a free port of the loopback address. Durable (`directory` given): the
    append-only file fsynced on every write, as docs/cluster.md asks of a cluster's Redis, so a restart
    keeps what it held. Not durable: no persistence at all, so a restart empties it, as a lost Redis would
    be."""

    def __init__(self, directory: Path | None = None, port: int | None = None) -> None:
        self.port = port or free_port()
        self.directory = directory
        self.process: Process | None = None
        self.start()

    def start(self) -> None:
        persistence = (
            ["--dir", str(self.directory), "--save", "", "--appendonly", "yes", "--appendfsync", "always"]
            if self.directory is not None
            else ["--save", "", "--appendonly", "no"]
        )
        self.process = Process(
            [require("redis-server"), "--port", str(self.port), "--bind", HOST, *persistence], name="redis"
        )
        self.process.wait_for(r"Ready to accept connections", timeout=15)
        import redis

        self.client = redis.Redis(host=HOST, port=self.port, decode_responses=True)

    def stop(self) -> None:
        if self.process is not None:
            self.process.stop()
            self.process = None

    @property
    def url(self) -> str:
        return f"redis://{HOST}:{self.port}/0"


def wait(predicate: Callable[[], Any], what: str, timeout: float = 15.0) -> Any:
    """Poll `predicate` (a look at Redis or at a metric: each look is the event) until it gives something
    true, and return that; fail at the deadline naming `what`."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout}s: {what}")
        time.sleep(0.05)
