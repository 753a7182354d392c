"""Integration fixtures: the real server, started per test on free ports (helpers live in harness.py)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from backend import Backend
from baresip import Baresip, allocate_ports
from harness import (
    InProcessServer,
    Process,
    ServerHandle,
    free_port,
    free_port_range,
    tonebridge_command,
    write_config,
)
from sinch_app import KEY, SECRET


@pytest.fixture
def start_server(tmp_path: Path) -> Iterator:
    """Start `tonebridge serve` with a generated config; stopped (SIGTERM, exit 0 checked) afterwards."""
    started: list[ServerHandle] = []

    def start(extra_config: str = "") -> ServerHandle:
        sip_port, http_port = free_port(), free_port()
        config = tmp_path / f"tonebridge-{len(started)}.toml"
        write_config(config, sip_port, http_port, free_port_range(), extra_config)
        process = Process([*tonebridge_command(), "serve", "--config", str(config)], name="tonebridge")
        process.wait_for(r"event=listening", timeout=20)
        handle = ServerHandle(process, sip_port, http_port, config)
        started.append(handle)
        return handle

    yield start
    for handle in started:
        code = handle.process.stop()
        assert code == 0, f"server exited {code}:\n{handle.process.output[-3000:]}"
        assert "Traceback" not in handle.process.output, handle.process.output[-5000:]


@pytest.fixture
def backend() -> Iterator[Backend]:
    """A real HTTP backend for the Sinch application of sinch_app.py, verifying every callback's signature."""
    server = Backend(KEY, SECRET, free_port())
    yield server
    server.stop()


@pytest.fixture
def in_process_server(tmp_path: Path) -> Iterator:
    """Start the server in this process with a generated config plus `extra_config`."""
    servers: list[InProcessServer] = []

    def start(extra_config: str = "", application: object = None) -> InProcessServer:
        config = tmp_path / f"inproc-{len(servers)}.toml"
        write_config(config, free_port(), free_port(), free_port_range(), extra_config)
        server = InProcessServer(config.read_text(), application)
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.close()


@pytest.fixture
def baresip_peer(tmp_path: Path) -> Iterator[Callable[..., Baresip]]:
    """Start ready baresip instances on free ports; every one is stopped (and reaped) afterwards."""
    started: list[Baresip] = []

    def start(name: str, accounts: Callable[[int], list[str]], **kwargs: object) -> Baresip:
        ports = allocate_ports()
        peer = Baresip(
            tmp_path / name,
            sip_port=ports.sip,
            ctrl_port=ports.ctrl,
            cons_port=ports.cons,
            accounts=accounts(ports.sip),
            **kwargs,
        )
        started.append(peer)
        peer.wait_ready(timeout=10)
        return peer

    yield start
    for peer in started:
        peer.stop()
        assert peer.proc.poll() is not None
