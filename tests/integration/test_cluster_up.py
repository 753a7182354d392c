"""`tonebridge cluster up`: Redis, two nodes, Kamailio and HAProxy on free ports; calls through the SIP front
reach the nodes, the HTTP front answers, a node killed with SIGKILL is taken out of both fronts within 5 s
while calls and requests keep succeeding, and `cluster down` leaves no process (docs/cluster.md). Also: the
SIP front follows a node's 302 to another node itself, and deploy/ is rendered from the same templates."""

from __future__ import annotations

import os
import re
import signal
import socket
import threading
import time
from pathlib import Path

import pytest
from backend import Backend
from cluster_harness import cluster, count, free_block, health, processes_mentioning, running, wait_until
from harness import HOST, ROOT, Process, ServerHandle, free_port, free_port_range
from sinch_app import NUMBER, app_config
from sipp import run_uac

from tonebridge.cluster.orchestrate import (
    NodePlan,
    find_binary,
    render_dispatcher,
    render_examples,
    render_kamailio,
    sip_options,
)

pytestmark = pytest.mark.integration

ROOM = "cluster-room"


def haproxy_states(sock_path: Path) -> dict[str, str]:
    """Server name -> UP/DOWN, from HAProxy's stats socket."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(2)
        sock.connect(str(sock_path))
        sock.sendall(b"show stat\n")
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    rows = [line.split(",") for line in data.decode().splitlines() if line and not line.startswith("#")]
    return {row[1]: row[17] for row in rows if row[0] == "tonebridge_nodes" and row[1].startswith("node-")}


def test_cluster_up_routes_through_both_fronts_and_survives_a_killed_node(
    tmp_path: Path, backend: Backend
) -> None:
    backend.answers["ice"] = lambda event: {"action": {"name": "connectConf", "conferenceId": ROOM}}
    low, high = free_port_range(200)
    config = tmp_path / "cluster.toml"
    config.write_text(f"[server]\nrtp_ports = [{low}, {high}]\n\n" + app_config(backend), encoding="utf-8")
    state = tmp_path / "state"
    sip_port, http_port, redis_port = free_port(), free_port(), free_port()
    first = free_block(4)
    args = ["--nodes", "2", "--config", str(config), "--state-dir", str(state)]
    args += ["--sip", f"{HOST}:{sip_port}", "--http", f"{HOST}:{http_port}"]
    args += ["--redis-port", str(redis_port), "--first-node-port", str(first)]

    started = time.monotonic()
    up = cluster("up", *args)
    assert up.returncode == 0, up.stdout + up.stderr
    try:
        pids = {
            name: int((state / "run" / f"{name}.pid").read_text())
            for name in ("redis-server", "node-1", "node-2", "kamailio", "haproxy")
        }
        assert f"{HOST}:{sip_port}" in up.stdout and f"{HOST}:{http_port}" in up.stdout, up.stdout
        logs = state / "logs"

        # Calls through Kamailio reach both nodes, round robin. A node that is not the room's home moves its
        # call there with a 302, which Kamailio follows: every call is answered, and every move followed.
        stats = run_uac(
            tmp_path, f"{HOST}:{sip_port}", service=NUMBER, calls=4, rate=10, timeout=30, extra=["-d", "200"]
        )
        assert stats.successful == 4 and stats.failed == 0, stats.output[-3000:]
        assert len(backend.events("ice")) == 4
        assert count(logs / "node-1.log", "event=call_incoming") >= 1
        assert count(logs / "node-2.log", "event=call_incoming") >= 1
        assert (
            count(logs / "node-1.log", "event=call_answered")
            + count(logs / "node-2.log", "event=call_answered")
            == 4
        )
        moved = count(logs / "node-1.log", "event=call_moved") + count(
            logs / "node-2.log", "event=call_moved"
        )
        assert count(logs / "kamailio.log", "following the node's redirect") == moved

        # HAProxy answers the health check from a node.
        assert health(http_port) == 200

        status = cluster("status", "--state-dir", str(state), timeout=30)
        assert status.returncode == 0, status.stdout + status.stderr
        for name in ("node-1", "node-2", "kamailio", "haproxy", "redis-server"):
            assert re.search(rf"^\s+{name}\s.*\balive\b", status.stdout, re.M), status.stdout

        # node-1 dies without a word. HAProxy takes it out within 5 s and every request meanwhile is
        # answered (a refused connection is redispatched); Kamailio's probes take it out within 5 s too.
        kamailio_log = logs / "kamailio.log"
        node_1_sip = f"sip:{HOST}:{first}"
        assert f"tonebridge node down: {node_1_sip}" not in kamailio_log.read_text()
        assert haproxy_states(state / "haproxy" / "admin.sock") == {"node-1": "UP", "node-2": "UP"}
        os.kill(pids["node-1"], signal.SIGKILL)
        killed = time.monotonic()
        codes: list[int | None] = []

        def haproxy_out() -> bool:
            codes.append(health(http_port))
            return haproxy_states(state / "haproxy" / "admin.sock").get("node-1") == "DOWN"

        wait_until(haproxy_out, 5.0, "HAProxy marks node-1 DOWN")
        assert set(codes) == {200}, codes
        wait_until(
            lambda: f"tonebridge node down: {node_1_sip}" in kamailio_log.read_text(),
            5.0 - (time.monotonic() - killed),
            "Kamailio marks node-1 down within 5 s of its death",
        )
        assert {health(http_port) for _ in range(6)} == {200}

        # New calls all go to node-2 and succeed.
        before = count(logs / "node-2.log", "event=call_answered")
        stats = run_uac(
            tmp_path, f"{HOST}:{sip_port}", service=NUMBER, calls=4, rate=10, timeout=30, extra=["-d", "200"]
        )
        assert stats.successful == 4 and stats.failed == 0, stats.output[-3000:]
        assert count(logs / "node-2.log", "event=call_answered") - before == 4

        status = cluster("status", "--state-dir", str(state), timeout=30)
        assert re.search(r"^\s+node-1\s.*\bDEAD\b", status.stdout, re.M), status.stdout
        assert status.returncode == 1
    finally:
        down = cluster("down", "--state-dir", str(state))
    assert down.returncode == 0, down.stdout + down.stderr
    for name, pid in pids.items():
        assert not running(pid), f"{name} (pid {pid}) still runs"
    assert processes_mentioning(str(state)) == []  # Kamailio's children and every node
    assert not list((state / "run").glob("*.pid"))
    assert time.monotonic() - started < 60


def test_deploy_examples_are_the_rendered_templates(tmp_path: Path) -> None:
    """deploy/ is rendered from src/tonebridge/cluster/templates: `python -m tonebridge.cluster.orchestrate
    render deploy` after changing a template."""
    for path in render_examples(tmp_path):
        name = path.relative_to(tmp_path)
        assert (ROOT / "deploy" / name).read_text() == path.read_text(), f"deploy/{name} is stale"


class RedirectingNode:
    """A stand-in node on UDP that answers OPTIONS 200 and every INVITE 302 to `target` (another node), as a
    node that is not a conference's home will."""

    def __init__(self, target: str) -> None:
        self.target = target
        self.invites = 0
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind((HOST, 0))
        self.port = self.sock.getsockname()[1]
        self.sock.settimeout(0.2)
        self.running = True
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while self.running:
            try:
                data, peer = self.sock.recvfrom(65535)
            except OSError:
                continue
            text = data.decode(errors="replace")
            method = text.split(" ", 1)[0]
            if method not in ("OPTIONS", "INVITE"):
                continue  # the ACK of our 302
            head = [
                line
                for line in text.split("\r\n")
                if line.split(":", 1)[0].lower() in ("via", "from", "to", "call-id", "cseq")
            ]
            status = "200 OK"
            extra = ""
            if method == "INVITE":
                self.invites += 1
                user = re.match(r"INVITE sip:([^@;> ]+)@", text)
                status = "302 Moved Temporarily"
                extra = f"Contact: <sip:{user.group(1) if user else 'x'}@{self.target}>\r\n"
                head = [h + ";tag=redirect" if h.lower().startswith("to:") else h for h in head]
            reply = f"SIP/2.0 {status}\r\n" + "\r\n".join(head) + "\r\n" + extra + "Content-Length: 0\r\n\r\n"
            self.sock.sendto(reply.encode(), peer)

    def close(self) -> None:
        self.running = False
        self.thread.join(2)
        self.sock.close()


def test_the_sip_front_follows_a_nodes_redirect_to_another_node(tmp_path: Path, start_server) -> None:  # type: ignore[no-untyped-def]
    server: ServerHandle = start_server()  # demo mode: answers every call
    real = f"{HOST}:{server.sip_port}"
    redirecting = RedirectingNode(real)
    nodes = [
        NodePlan("node-1", f"{HOST}:{redirecting.port}", "", (0, 0), ""),
        NodePlan("node-2", real, "", (0, 0), ""),
    ]
    dispatcher = tmp_path / "dispatcher.list"
    dispatcher.write_text(render_dispatcher(nodes))
    entry = free_port()
    cfg = tmp_path / "kamailio.cfg"
    (tmp_path / "run").mkdir()
    cfg.write_text(render_kamailio(HOST, entry, str(dispatcher), str(tmp_path / "run"), children=2))
    kamailio = Process([find_binary("kamailio"), "-DD", "-E", "-f", str(cfg), "-Y", str(tmp_path / "run")])
    try:
        wait_until(lambda: sip_options(HOST, entry) == 200, 15, "Kamailio answers OPTIONS")
        stats = run_uac(tmp_path, f"{HOST}:{entry}", calls=4, rate=10, timeout=30, extra=["-d", "200"])
        # The caller never saw a 302: every call was answered by the real node.
        assert stats.successful == 4 and stats.failed == 0, stats.output[-3000:] + kamailio.output[-3000:]
        assert redirecting.invites >= 1
        assert len(server.process.matches(r"event=call_answered")) == 4
        kamailio.wait_for(r"following the node's redirect to sip:demo@" + re.escape(real), timeout=5)
    finally:
        kamailio.stop()
        redirecting.close()
