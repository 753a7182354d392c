"""Helpers that run the real server and real peers (SIPp, baresip, `tonebridge phone`) on 127.0.0.1.

Every port is chosen free at run time. Processes print one event per line; tests wait on the line they
expect with a deadline (`Process.wait_for`), never on a sleep.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

HOST = "127.0.0.1"
ROOT = Path(__file__).resolve().parents[2]


def free_port(both: bool = True) -> int:
    """A port free for UDP and (when `both`) TCP on the loopback address."""
    for _ in range(200):
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
            udp.bind((HOST, 0))
            port = udp.getsockname()[1]
            if not both:
                return port
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as tcp:
                try:
                    tcp.bind((HOST, port))
                except OSError:
                    continue
                return port
    raise RuntimeError("no free port")


def free_port_range(size: int = 200) -> tuple[int, int]:
    """A block of ports whose first one is free now; the server's pool skips ports that fail to bind."""
    base = free_port(both=False)
    base -= base % 2
    if base + size > 65000:
        base = 30000 + (base % 20000)
        base -= base % 2
    return base, base + size - 1


class Process:
    """A child process whose stdout lines are collected for `wait_for`."""

    def __init__(
        self,
        args: list[str],
        *,
        cwd: Path | None = None,
        env: dict[str, str] | None = None,
        stdin: bool = False,
        name: str = "",
    ) -> None:
        self.name = name or Path(args[0]).name
        self.args = args
        self.lines: list[str] = []
        self._cond = threading.Condition(threading.RLock())
        self.proc = subprocess.Popen(
            args,
            cwd=cwd,
            env={**os.environ, **(env or {})},
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            stdin=subprocess.PIPE if stdin else subprocess.DEVNULL,
            text=True,
            bufsize=1,
        )
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            with self._cond:
                self.lines.append(line.rstrip("\n"))
                self._cond.notify_all()
        with self._cond:
            self._cond.notify_all()

    def wait_for(self, pattern: str, timeout: float = 10.0, start: int = 0) -> re.Match[str]:
        """The first line from index `start` matching `pattern`; fails with the output after `timeout`."""
        regex = re.compile(pattern)
        deadline = time.monotonic() + timeout
        index = start
        with self._cond:
            while True:
                while index < len(self.lines):
                    match = regex.search(self.lines[index])
                    if match:
                        return match
                    index += 1
                remaining = deadline - time.monotonic()
                if remaining <= 0 or (self.proc.poll() is not None and not self._reader.is_alive()):
                    break
                self._cond.wait(min(remaining, 0.5))
        raise AssertionError(
            f"{self.name}: no line matching {pattern!r} within {timeout}s; output:\n"
            + "\n".join(self.lines[-60:])
        )

    def wait_for_count(self, pattern: str, count: int, timeout: float = 10.0) -> list[re.Match[str]]:
        """Wait until `count` lines match `pattern`; returns the matches."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                found = self.matches(pattern)
                if len(found) >= count or time.monotonic() >= deadline or self.proc.poll() is not None:
                    break
                self._cond.wait(min(max(0.0, deadline - time.monotonic()), 0.5))
        assert len(found) == count, f"{self.name}: {len(found)} lines match {pattern!r}, expected {count}"
        return found

    def matches(self, pattern: str) -> list[re.Match[str]]:
        regex = re.compile(pattern)
        with self._cond:
            return [m for line in self.lines if (m := regex.search(line))]

    def send(self, line: str) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(line + "\n")
        self.proc.stdin.flush()

    def wait_exit(self, timeout: float = 30.0) -> int:
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(
                f"{self.name} did not exit in {timeout}s; output:\n" + "\n".join(self.lines[-60:])
            ) from None

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 15.0) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)
            raise AssertionError(
                f"{self.name} ignored signal {sig}; output:\n" + "\n".join(self.lines[-60:])
            ) from None

    @property
    def output(self) -> str:
        with self._cond:
            return "\n".join(self.lines)


def tonebridge_command() -> list[str]:
    return [sys.executable, "-m", "tonebridge.cli"]


class ServerHandle:
    def __init__(self, process: Process, sip_port: int, http_port: int, config_path: Path) -> None:
        self.process = process
        self.sip_port = sip_port
        self.http_port = http_port
        self.config_path = config_path

    @property
    def sip_uri_host(self) -> str:
        return f"{HOST}:{self.sip_port}"


def write_config(path: Path, sip_port: int, http_port: int, rtp: tuple[int, int], extra: str = "") -> None:
    # Test backends and prompt servers listen on 127.0.0.1: allowed unless the test sets [security] itself.
    security = "" if "[security]" in extra else '[security]\nfetch_allow = ["127.0.0.0/8"]\n'
    path.write_text(
        f"""[server]
http = "{HOST}:{http_port}"
sip = "{HOST}:{sip_port}"
rtp_ports = [{rtp[0]}, {rtp[1]}]
public_address = "{HOST}"
data_dir = "{path.parent / "data"}"
{extra}
{security}""",
        encoding="utf-8",
    )


def phone(*args: str, stdin: bool = False) -> Process:
    """`tonebridge phone ...` with its own free SIP port and RTP range."""
    low, high = free_port_range(100)
    return Process(
        [
            *tonebridge_command(),
            "phone",
            *args,
            "--bind",
            f"{HOST}:{free_port()}",
            "--rtp-ports",
            f"{low}-{high}",
        ],
        stdin=stdin,
        name="phone",
    )


def require(binary: str) -> str:
    path = shutil.which(binary)
    if path is None:
        pytest.fail(
            f"{binary} is not installed: `make test` installs it (Debian packages sip-tester, baresip)"
        )
    return path


class InProcessServer:
    """The real server (real sockets) on its own event loop in a thread, for tests that call its Python API."""

    def __init__(self, config_text: str, application: object = None) -> None:
        import asyncio

        from tonebridge.config import parse_config
        from tonebridge.server import Server

        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.config = parse_config(config_text)

        async def build() -> Server:
            return Server(self.config, application)  # type: ignore[arg-type]

        self.server = self.run(build())
        self.run(self.server.start())

    def run(self, coro, timeout: float = 30.0):  # type: ignore[no-untyped-def]
        import asyncio

        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    @property
    def engine(self):  # type: ignore[no-untyped-def]
        return self.server.engine

    def close(self) -> None:
        if not self.thread.is_alive():
            return  # closed already (a test that stops its server itself)
        try:
            self.run(self.server.stop())
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self.thread.join(10)
