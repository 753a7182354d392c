"""`tonebridge cluster up|down|status`: a whole cluster on this machine (docs/cluster.md, "Running it").

`up` renders the configs of Redis, the nodes, Kamailio (the SIP front) and HAProxy (the HTTP front) into a
state directory, starts each as a child in its own session that outlives the command (pid files and logs in
the state directory), waits until each is ready, prints what runs where and exits. `down` stops what `up`
started; `status` shows the processes, the nodes registered in Redis and the conferences' homes.

The front and Redis configs come from the templates in `templates/` (the same files `deploy/` is rendered
from: `python -m tonebridge.cluster.orchestrate render deploy`); a `{{ name }}` in a template is a value
filled in here. The nodes' TOML files are the `--config` file's content with `[server]` addresses, RTP range
and data directory set per node and a `[cluster]` section added, written with tomli_w.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import tomllib
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import tomli_w

from tonebridge.config import Config, ConfigError, parse_config, split_host_port

TEMPLATES = Path(__file__).parent / "templates"
HEALTH = "/tonebridge/v1/health"
STATE_FILE = "cluster.json"
DEFAULT_SIP = "127.0.0.1:5060"
DEFAULT_HTTP = "127.0.0.1:8080"
DEFAULT_REDIS_PORT = 6379
DEFAULT_FIRST_NODE_PORT = 5071
DEFAULT_RTP = (20000, 29999)
# Readiness deadlines, in seconds.
READY_REDIS = 15.0
READY_NODES = 90.0
READY_FRONT = 20.0
# How long `down` waits after SIGTERM before SIGKILL.
STOP_GRACE = 20.0

_PLACEHOLDER = re.compile(r"\{\{ ([a-z_]+) \}\}")


class ClusterError(Exception):
    """A reason `up` cannot go on, printed as is."""


# ---------------------------------------------------------------------------------------------------------
# Rendering


def render(template: str, values: dict[str, object]) -> str:
    """The template file `template` with every `{{ name }}` replaced by `values[name]`."""
    text = (TEMPLATES / template).read_text(encoding="utf-8")
    missing = sorted({m.group(1) for m in _PLACEHOLDER.finditer(text)} - values.keys())
    if missing:
        raise KeyError(f"{template}: no value for {', '.join(missing)}")
    return _PLACEHOLDER.sub(lambda m: str(values[m.group(1)]), text)


@dataclass(frozen=True)
class NodePlan:
    node_id: str
    sip: str  # host:port
    http: str
    rtp_ports: tuple[int, int]
    data_dir: str
    core: int | None = None


def render_kamailio(
    sip_host: str, sip_port: int, dispatcher_list: str, runtime_dir: str, children: int = 4
) -> str:
    return render(
        "kamailio.cfg",
        {
            "sip_host": sip_host,
            "sip_port": sip_port,
            "dispatcher_list": dispatcher_list,
            "runtime_dir": runtime_dir,
            "children": children,
        },
    )


def render_dispatcher(nodes: Sequence[NodePlan]) -> str:
    lines = [f"1 sip:{node.sip} 0 0 duid={node.node_id}" for node in nodes]
    return render("dispatcher.list", {"nodes": "\n".join(lines)})


def render_haproxy(
    http_host: str,
    http_port: int,
    nodes: Sequence[NodePlan],
    log_target: str,
    stats_socket: str,
    global_extra: Sequence[str] = (),
) -> str:
    servers = "\n".join(f"    server {node.node_id} {node.http}" for node in nodes)
    extra = "\n".join(f"    {line}" for line in global_extra)
    return render(
        "haproxy.cfg",
        {
            "http_host": http_host,
            "http_port": http_port,
            "servers": servers,
            "log_target": log_target,
            "stats_socket": stats_socket,
            "global_extra": extra,
        },
    )


def render_redis(bind: str, port: int, data_dir: str, pidfile: str, logfile: str) -> str:
    return render(
        "redis.conf",
        {"bind": bind, "port": port, "data_dir": data_dir, "pidfile": pidfile, "logfile": logfile},
    )


def split_rtp(rtp: tuple[int, int], count: int) -> list[tuple[int, int]]:
    """`rtp` cut into `count` distinct ranges, each starting on an even port."""
    low, high = rtp
    low += low % 2
    size = (high - low + 1) // count
    size -= size % 2
    if size < 4:
        raise ClusterError(f"rtp_ports {list(rtp)} is too small for {count} nodes (4 ports each at least)")
    return [(low + k * size, low + (k + 1) * size - 1) for k in range(count)]


def node_config(base: dict[str, Any], node: NodePlan, redis_url: str) -> str:
    """The TOML of one node: `base` (the parsed `--config` file) with its own addresses, RTP range, data
    directory and [cluster] section."""
    data = {key: value for key, value in base.items()}
    server = dict(data.get("server", {}))
    server.update(sip=node.sip, http=node.http, rtp_ports=list(node.rtp_ports), data_dir=node.data_dir)
    data["server"] = server
    if "cluster" in Config.model_fields:
        cluster = dict(data.get("cluster", {}))
        cluster.update(
            redis=redis_url, node_id=node.node_id, advertise_sip=node.sip, advertise_http=node.http
        )
        data["cluster"] = cluster
    else:  # a server without cluster mode: the nodes run alone behind the fronts
        data.pop("cluster", None)
    header = f"# Tonebridge cluster node {node.node_id}, written by `tonebridge cluster up`.\n"
    return header + tomli_w.dumps(data)


def plan_nodes(
    count: int, host: str, first_port: int, rtp: tuple[int, int], data_root: Path, cores: Sequence[int]
) -> list[NodePlan]:
    """Node i (from 1) takes SIP port first_port + 2(i-1) and the next port for HTTP."""
    ranges = split_rtp(rtp, count)
    return [
        NodePlan(
            node_id=f"node-{i + 1}",
            sip=f"{host}:{first_port + 2 * i}",
            http=f"{host}:{first_port + 2 * i + 1}",
            rtp_ports=ranges[i],
            data_dir=str(data_root / f"node-{i + 1}" / "data"),
            core=cores[i % len(cores)] if cores else None,
        )
        for i in range(count)
    ]


def render_examples(out: Path) -> list[Path]:
    """deploy/: the configs of a machine with the two fronts, Redis and two nodes, at Debian's paths."""
    public = "203.0.113.10"
    nodes = plan_nodes(2, "127.0.0.1", DEFAULT_FIRST_NODE_PORT, DEFAULT_RTP, Path("/var/lib/tonebridge"), [])
    base: dict[str, Any] = {"server": {"public_address": public}}
    files = {
        "kamailio/kamailio.cfg": render_kamailio(
            public, 5060, "/etc/kamailio/dispatcher.list", "/run/kamailio", children=8
        ),
        "kamailio/dispatcher.list": render_dispatcher(nodes),
        "haproxy/haproxy.cfg": render_haproxy(
            "0.0.0.0",
            8080,
            nodes,
            "/dev/log local0",
            "/run/haproxy/admin.sock",
            ["user haproxy", "group haproxy", "chroot /var/lib/haproxy"],
        ),
        "redis/redis.conf": render_redis(
            "127.0.0.1 -::1",
            DEFAULT_REDIS_PORT,
            "/var/lib/redis",
            "/run/redis/redis-server.pid",
            "/var/log/redis/redis-server.log",
        ),
    }
    for index, node in enumerate(nodes, start=1):
        files[f"tonebridge/node-{index}.toml"] = node_config(
            base, node, f"redis://127.0.0.1:{DEFAULT_REDIS_PORT}/0"
        )
    written = []
    for name, text in files.items():
        path = out / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
        written.append(path)
    return written


# ---------------------------------------------------------------------------------------------------------
# Processes


@dataclass
class Managed:
    """A process `up` started: its own session, so its pid is its process group."""

    name: str
    kind: str  # redis | node | kamailio | haproxy
    pid: int
    marker: str  # a string of its command line (its config file), against pid reuse
    log: str
    address: str = ""
    extra: str = ""


def _proc_stat(pid: int) -> tuple[str, int] | None:
    """(state, process group) of a pid, or None when there is no such process."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = text[text.rindex(")") + 2 :].split()
    return fields[0], int(fields[2])


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def alive(pid: int, marker: str) -> bool:
    """The process runs (a zombie is dead) and is the one we started (its command line holds `marker`)."""
    stat = _proc_stat(pid)
    return stat is not None and stat[0] not in "ZX" and marker in _cmdline(pid)


def group_members(pgid: int, marker: str) -> list[int]:
    """Live processes of process group `pgid` whose command line holds `marker` (Kamailio's children)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        stat = _proc_stat(int(entry.name))
        if stat and stat[1] == pgid and stat[0] not in "ZX" and marker in _cmdline(int(entry.name)):
            found.append(int(entry.name))
    return found


def stop_processes(processes: Sequence[Managed], grace: float = STOP_GRACE) -> list[str]:
    """SIGTERM every process (and its group), wait up to `grace`, then SIGKILL; the names killed hard."""
    targets = {p.name: group_members(p.pid, p.marker) for p in processes}
    for pids in targets.values():
        for pid in pids:
            try:
                os.kill(pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
    deadline = time.monotonic() + grace
    killed = []
    for proc in processes:
        while time.monotonic() < deadline and group_members(proc.pid, proc.marker):
            time.sleep(0.05)
        rest = group_members(proc.pid, proc.marker)
        if rest:
            killed.append(proc.name)
            for pid in rest:
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
    end = time.monotonic() + 5
    while time.monotonic() < end and any(group_members(p.pid, p.marker) for p in processes):
        time.sleep(0.05)
    return killed


def find_binary(name: str) -> str:
    path = shutil.which(name) or next(
        (
            f"{d}/{name}"
            for d in ("/usr/sbin", "/sbin", "/usr/local/sbin")
            if os.access(f"{d}/{name}", os.X_OK)
        ),
        None,
    )
    if path is None:
        raise ClusterError(
            f"{name} is not installed (`make peers` installs redis-server, kamailio and haproxy)"
        )
    return path


def _spawn(args: list[str], log: Path, cwd: Path, core: int | None = None) -> subprocess.Popen[bytes]:
    def pin() -> None:
        if core is not None:
            os.sched_setaffinity(0, {core})

    with open(log, "wb") as out:
        return subprocess.Popen(
            args,
            cwd=cwd,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            preexec_fn=pin if core is not None else None,
            env={**os.environ, "OPENBLAS_NUM_THREADS": "1"},
        )


def _tail(path: str | Path, lines: int = 25) -> str:
    try:
        text = Path(path).read_text(errors="replace").splitlines()
    except OSError:
        return ""
    return "\n".join(text[-lines:])


# ---------------------------------------------------------------------------------------------------------
# Readiness probes


def probe_host(host: str) -> str:
    """Where to reach a listener bound to `host` from this machine."""
    return {"0.0.0.0": "127.0.0.1", "::": "::1", "": "127.0.0.1"}.get(host, host)


def http_status(host: str, port: int, path: str = HEALTH, timeout: float = 1.0) -> int | None:
    url = f"http://{host if ':' not in host else f'[{host}]'}:{port}{path}"
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return response.status
    except urllib.error.HTTPError as exc:
        return exc.code
    except (OSError, ValueError):
        return None


def sip_options(host: str, port: int, timeout: float = 0.5) -> int | None:
    """Send one OPTIONS over UDP to host:port; the status code of its final answer, or None."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_DGRAM) as sock:
        sock.bind((host, 0))
        sock.settimeout(timeout)
        local = sock.getsockname()[1]
        shown = f"[{host}]" if ":" in host else host
        message = (
            f"OPTIONS sip:{shown}:{port} SIP/2.0\r\n"
            f"Via: SIP/2.0/UDP {shown}:{local};branch=z9hG4bK{secrets.token_hex(8)};rport\r\n"
            "Max-Forwards: 70\r\n"
            f"From: <sip:cluster@{shown}>;tag={secrets.token_hex(4)}\r\n"
            f"To: <sip:{shown}:{port}>\r\n"
            f"Call-ID: {secrets.token_hex(12)}@{shown}\r\n"
            "CSeq: 1 OPTIONS\r\n"
            "Content-Length: 0\r\n\r\n"
        )
        try:
            sock.sendto(message.encode(), (host, port))
            deadline = time.monotonic() + timeout
            while (left := deadline - time.monotonic()) > 0:
                sock.settimeout(left)
                data = sock.recv(65535)
                match = re.match(rb"SIP/2\.0 (\d{3})", data)
                if match and not match.group(1).startswith(b"1"):
                    return int(match.group(1))
        except OSError:
            return None
    return None


def redis_ping(url: str) -> bool:
    import redis

    try:
        with redis.Redis.from_url(url, socket_timeout=1, socket_connect_timeout=1) as client:
            return bool(client.ping())
    except redis.RedisError:
        return False


def wait_until(what: str, ready: Callable[[], bool], deadline: float, proc: Managed) -> None:
    """Poll `ready` until it holds; fail when `proc` dies or at `deadline` (monotonic)."""
    while True:
        if ready():
            return
        # Our own child, not yet waited for, so its pid cannot have been reused: no marker needed (Redis,
        # for one, rewrites the command line the marker is found in only some time after it starts).
        stat = _proc_stat(proc.pid)
        if stat is None or stat[0] in "ZX":
            raise ClusterError(f"{proc.name} exited while starting; its log ({proc.log}):\n{_tail(proc.log)}")
        if time.monotonic() >= deadline:
            raise ClusterError(
                f"{what} not ready in time; {proc.name}'s log ({proc.log}):\n{_tail(proc.log)}"
            )
        time.sleep(0.1)


def port_free(host: str, port: int, udp: bool) -> bool:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    kinds = [socket.SOCK_STREAM] + ([socket.SOCK_DGRAM] if udp else [])
    for kind in kinds:
        with socket.socket(family, kind) as sock:
            if kind == socket.SOCK_STREAM:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                sock.bind((host, port))
            except OSError:
                return False
    return True


def free_port(host: str) -> int:
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


# ---------------------------------------------------------------------------------------------------------
# State


def _state_path(state_dir: Path) -> Path:
    return state_dir / STATE_FILE


def load_state(state_dir: Path) -> dict[str, Any] | None:
    try:
        return json.loads(_state_path(state_dir).read_text())
    except (OSError, ValueError):
        return None


def _save_state(state_dir: Path, state: dict[str, Any], processes: Sequence[Managed]) -> None:
    state = {**state, "processes": [asdict(p) for p in processes]}
    tmp = _state_path(state_dir).with_suffix(".tmp")
    tmp.write_text(json.dumps(state, indent=2))
    tmp.replace(_state_path(state_dir))
    run = state_dir / "run"
    run.mkdir(exist_ok=True)
    for proc in processes:
        (run / f"{proc.name}.pid").write_text(f"{proc.pid}\n")


def _processes(state: dict[str, Any]) -> list[Managed]:
    return [Managed(**p) for p in state.get("processes", [])]


# ---------------------------------------------------------------------------------------------------------
# Commands


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="cluster_command", required=True)
    up = sub.add_parser("up", help="start Redis, N nodes, Kamailio and HAProxy on this machine")
    up.add_argument("--nodes", type=int, default=os.cpu_count() or 1, help="number of nodes (default: cores)")
    up.add_argument("--config", help="the nodes' TOML config ([server] addresses are set per node)")
    up.add_argument(
        "--state-dir", default="cluster", help="configs, logs, pid files, data (default ./cluster)"
    )
    up.add_argument("--sip", default=DEFAULT_SIP, help=f"SIP entry, Kamailio (default {DEFAULT_SIP})")
    up.add_argument("--http", default=DEFAULT_HTTP, help=f"HTTP entry, HAProxy (default {DEFAULT_HTTP})")
    up.add_argument(
        "--redis-port",
        type=int,
        help=f"Redis port on 127.0.0.1 (default {DEFAULT_REDIS_PORT}, else a free one)",
    )
    up.add_argument(
        "--first-node-port",
        type=int,
        default=DEFAULT_FIRST_NODE_PORT,
        help="node i listens SIP on P+2(i-1) and HTTP on the next port (default %(default)s)",
    )
    down = sub.add_parser("down", help="stop everything `cluster up` started")
    down.add_argument("--state-dir", default="cluster")
    status = sub.add_parser("status", help="processes, nodes registered in Redis, conference homes")
    status.add_argument("--state-dir", default="cluster")


def run(args: argparse.Namespace) -> int:
    try:
        if args.cluster_command == "up":
            return up(args)
        if args.cluster_command == "down":
            return down(Path(args.state_dir).resolve())
        if args.cluster_command == "status":
            return status(Path(args.state_dir).resolve())
    except ClusterError as exc:
        print(f"tonebridge cluster: {exc}", file=sys.stderr)
        return 1
    return 2


def _address(text: str, what: str) -> tuple[str, int]:
    try:
        return split_host_port(text)
    except ValueError as exc:
        raise ClusterError(f"{what}: {exc}") from None


def _base_config(path: str | None) -> dict[str, Any]:
    if path is None:
        return {}
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise ClusterError(f"{path}: {exc.strerror or exc}") from None
    try:
        parse_config(text, path)
    except ConfigError as exc:
        raise ClusterError(str(exc)) from None
    return tomllib.loads(text)


def up(args: argparse.Namespace) -> int:
    state_dir = Path(args.state_dir).resolve()
    previous = load_state(state_dir)
    if previous and any(alive(p.pid, p.marker) for p in _processes(previous)):
        raise ClusterError(f"a cluster already runs from {state_dir}: `tonebridge cluster down` first")
    if args.nodes < 1:
        raise ClusterError("--nodes must be at least 1")
    sip_host, sip_port = _address(args.sip, "--sip")
    http_host, http_port = _address(args.http, "--http")
    base = _base_config(args.config)
    binaries = {name: find_binary(name) for name in ("redis-server", "kamailio", "haproxy")}

    node_host = "127.0.0.1"
    cores = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else []
    rtp = tuple(base.get("server", {}).get("rtp_ports", DEFAULT_RTP))
    nodes = plan_nodes(args.nodes, node_host, args.first_node_port, (rtp[0], rtp[1]), state_dir, cores)

    # Every port must be distinct, and free before anything starts.
    last = args.first_node_port + 2 * args.nodes - 1
    if args.first_node_port < 1024 or last > 65535:
        raise ClusterError(
            f"--first-node-port: the nodes' ports {args.first_node_port}-{last} must be within 1024-65535"
        )
    node_ports = set(range(args.first_node_port, last + 1))
    if {sip_port, http_port, args.redis_port} & node_ports or sip_port == http_port:
        raise ClusterError("--sip, --http, --redis-port and the nodes' ports (--first-node-port) overlap")
    busy = [
        f"{host}:{port}"
        for host, port, udp in [
            (sip_host, sip_port, True),
            (http_host, http_port, False),
            *[(node_host, int(n.sip.rsplit(":", 1)[1]), True) for n in nodes],
            *[(node_host, int(n.http.rsplit(":", 1)[1]), False) for n in nodes],
        ]
        if not port_free(host, port, udp)
    ]
    if busy:
        raise ClusterError(f"ports in use: {', '.join(busy)} (see --sip, --http, --first-node-port)")
    redis_port = args.redis_port
    if redis_port is None:
        usable = DEFAULT_REDIS_PORT not in node_ports | {sip_port, http_port}
        redis_port = (
            DEFAULT_REDIS_PORT if usable and port_free("127.0.0.1", DEFAULT_REDIS_PORT, False) else None
        )
        redis_port = redis_port or free_port("127.0.0.1")
    elif not port_free("127.0.0.1", redis_port, False):
        raise ClusterError(f"--redis-port {redis_port} is in use")
    redis_url = f"redis://127.0.0.1:{redis_port}/0"

    # Configs.
    for sub in ("run", "logs", "redis/data", "kamailio/run", "haproxy"):
        (state_dir / sub).mkdir(parents=True, exist_ok=True)
    logs = state_dir / "logs"
    redis_conf = state_dir / "redis" / "redis.conf"
    redis_conf.write_text(
        render_redis(
            "127.0.0.1",
            redis_port,
            str(state_dir / "redis" / "data"),
            str(state_dir / "redis" / "redis.pid"),
            "",
        )
    )
    node_files = []
    for node in nodes:
        path = state_dir / node.node_id / f"{node.node_id}.toml"
        path.parent.mkdir(parents=True, exist_ok=True)
        text = node_config(base, node, redis_url)
        try:
            parse_config(text, str(path))
        except ConfigError as exc:
            raise ClusterError(str(exc)) from None
        path.write_text(text)
        node_files.append(path)
    dispatcher = state_dir / "kamailio" / "dispatcher.list"
    dispatcher.write_text(render_dispatcher(nodes))
    kamailio_cfg = state_dir / "kamailio" / "kamailio.cfg"
    kamailio_cfg.write_text(
        render_kamailio(sip_host, sip_port, str(dispatcher), str(state_dir / "kamailio" / "run"), children=2)
    )
    haproxy_cfg = state_dir / "haproxy" / "haproxy.cfg"
    haproxy_cfg.write_text(
        render_haproxy(
            http_host, http_port, nodes, "stdout format raw local0", str(state_dir / "haproxy" / "admin.sock")
        )
    )
    checks = [
        [binaries["kamailio"], "-c", "-f", str(kamailio_cfg)],
        [binaries["haproxy"], "-c", "-q", "-f", str(haproxy_cfg)],
    ]
    for check in checks:
        done = subprocess.run(check, capture_output=True, text=True, timeout=60)
        if done.returncode != 0:
            raise ClusterError(f"{' '.join(check)} failed:\n{(done.stdout + done.stderr)[-3000:]}")

    state: dict[str, Any] = {
        "state_dir": str(state_dir),
        "started": time.time(),
        "sip": f"{sip_host}:{sip_port}",
        "http": f"{http_host}:{http_port}",
        "redis": redis_url,
        "nodes": [asdict(n) for n in nodes],
    }
    started: list[Managed] = []

    def start(
        name: str, kind: str, argv: list[str], marker: str, address: str, core: int | None = None
    ) -> Managed:
        log = logs / f"{name}.log"
        popen = _spawn(argv, log, state_dir, core)
        proc = Managed(
            name, kind, popen.pid, marker, str(log), address, "" if core is None else f"core {core}"
        )
        started.append(proc)
        _save_state(state_dir, state, started)
        return proc

    try:
        # Redis rewrites its command line to "redis-server HOST:PORT": that is its marker.
        marker = f"redis-server 127.0.0.1:{redis_port}"
        proc = start("redis-server", "redis", [binaries["redis-server"], str(redis_conf)], marker, redis_url)
        wait_until("Redis", lambda: redis_ping(redis_url), time.monotonic() + READY_REDIS, proc)

        node_procs = []
        for node, path in zip(nodes, node_files, strict=True):
            argv = [sys.executable, "-m", "tonebridge.cli", "serve", "--config", str(path)]
            node_procs.append(start(node.node_id, "node", argv, str(path), node.http, node.core))
        deadline = time.monotonic() + READY_NODES
        for node, proc in zip(nodes, node_procs, strict=True):
            host, port = split_host_port(node.http)
            wait_until(
                f"{node.node_id} ({node.http})",
                lambda h=host, p=port: http_status(h, p) == 200,
                deadline,
                proc,
            )

        argv = [
            binaries["kamailio"],
            "-DD",
            "-E",
            "-f",
            str(kamailio_cfg),
            "-Y",
            str(state_dir / "kamailio" / "run"),
        ]
        proc = start("kamailio", "kamailio", argv, str(kamailio_cfg), f"{sip_host}:{sip_port}")
        probe = probe_host(sip_host)
        wait_until(
            "Kamailio", lambda: sip_options(probe, sip_port) == 200, time.monotonic() + READY_FRONT, proc
        )

        argv = [binaries["haproxy"], "-db", "-f", str(haproxy_cfg)]
        proc = start("haproxy", "haproxy", argv, str(haproxy_cfg), f"{http_host}:{http_port}")
        probe = probe_host(http_host)
        wait_until(
            "HAProxy", lambda: http_status(probe, http_port) == 200, time.monotonic() + READY_FRONT, proc
        )
    except BaseException:
        stop_processes(list(reversed(started)))
        _remove_pid_files(state_dir, started)
        _state_path(state_dir).unlink(missing_ok=True)
        raise

    print(f"Tonebridge cluster up ({len(nodes)} nodes), state in {state_dir}")
    print(f"  SIP entry   {sip_host}:{sip_port}  kamailio (udp, tcp)  pid {started[-2].pid}")
    print(f"  HTTP entry  {http_host}:{http_port}  haproxy  pid {started[-1].pid}")
    print(f"  Redis       {redis_url}  pid {started[0].pid}")
    for node, proc in zip(nodes, node_procs, strict=True):
        core = f"core {node.core}" if node.core is not None else ""
        print(
            f"  {node.node_id:<10}  sip {node.sip}  http {node.http}  rtp {node.rtp_ports[0]}-{node.rtp_ports[1]}  {core}  pid {proc.pid}"
        )
    print(f"  logs in {logs}; `tonebridge cluster status --state-dir {state_dir}`, `... down` to stop")
    return 0


def _remove_pid_files(state_dir: Path, processes: Sequence[Managed]) -> None:
    for proc in processes:
        (state_dir / "run" / f"{proc.name}.pid").unlink(missing_ok=True)


def down(state_dir: Path) -> int:
    state = load_state(state_dir)
    if state is None:
        print(f"no cluster in {state_dir}")
        return 0
    processes = _processes(state)
    # Fronts first (no new traffic), then the nodes, Redis last (nodes leave the directory as they stop).
    order = {"haproxy": 0, "kamailio": 0, "node": 1, "redis": 2}
    killed: list[str] = []
    for rank in sorted(set(order.values())):
        killed += stop_processes([p for p in processes if order.get(p.kind, 1) == rank])
    left = [p.name for p in processes if group_members(p.pid, p.marker)]
    _remove_pid_files(state_dir, processes)
    if left:
        print(f"still running: {', '.join(left)}", file=sys.stderr)
        return 1
    _state_path(state_dir).unlink(missing_ok=True)
    note = f" ({', '.join(killed)} needed SIGKILL)" if killed else ""
    print(f"Tonebridge cluster in {state_dir} stopped: {len(processes)} processes{note}")
    return 0


def status(state_dir: Path) -> int:
    state = load_state(state_dir)
    if state is None:
        print(f"no cluster in {state_dir} (`tonebridge cluster up --state-dir {state_dir}` starts one)")
        return 1
    processes = _processes(state)
    print(f"Tonebridge cluster in {state_dir}")
    print(f"  SIP entry {state['sip']}, HTTP entry {state['http']}, Redis {state['redis']}")
    print("Processes:")
    all_alive = True
    for proc in processes:
        up_now = alive(proc.pid, proc.marker)
        all_alive &= up_now
        where = f"  {proc.extra}" if proc.extra else ""
        print(
            f"  {proc.name:<13} {proc.kind:<9} {proc.address:<28} pid {proc.pid:<8} {'alive' if up_now else 'DEAD'}{where}"
        )
    _print_directory(state["redis"])
    _print_haproxy(state_dir / "haproxy" / "admin.sock")
    return 0 if all_alive else 1


def _print_directory(url: str) -> None:
    import redis

    try:
        with redis.Redis.from_url(
            url, socket_timeout=2, socket_connect_timeout=2, decode_responses=True
        ) as db:
            ids = sorted(db.smembers("tonebridge:nodes"))
            nodes = {node_id: db.hgetall(f"tonebridge:node:{node_id}") for node_id in ids}
            homes = {
                key.removeprefix("tonebridge:home:"): db.get(key) for key in db.scan_iter("tonebridge:home:*")
            }
    except redis.RedisError as exc:
        print(f"Redis {url} not reachable: {exc}")
        return
    print("Nodes registered in Redis:")
    if not ids:
        print("  none: no node has registered (nodes register once they run with a [cluster] section)")
    now = time.time()
    for node_id in ids:
        info = nodes[node_id]
        if not info:
            print(f"  {node_id:<13} dead (no heartbeat)")
            continue
        age = now - float(info.get("updated") or 0)
        print(
            f"  {node_id:<13} sip {info.get('sip', '?')}  http {info.get('http', '?')}  calls {info.get('calls', '?')}"
            f"  conferences {info.get('conferences', '?')}  participants {info.get('participants', '?')}"
            f"  alive (heartbeat {age:.0f} s ago)"
        )
    print("Conference homes:")
    if not homes:
        print("  none")
    for conference, node_id in sorted(homes.items()):
        print(f"  {conference} -> {node_id}")


def _print_haproxy(sock_path: Path) -> None:
    """HAProxy's own view of the nodes, from its stats socket."""
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(2)
            sock.connect(str(sock_path))
            sock.sendall(b"show stat\n")
            data = b""
            while chunk := sock.recv(65536):
                data += chunk
    except OSError:
        return
    rows = [
        line.split(",")
        for line in data.decode(errors="replace").splitlines()
        if line and not line.startswith("#")
    ]
    servers = [
        f"{row[1]} {row[17]}"
        for row in rows
        if len(row) > 17 and row[0] == "tonebridge_nodes" and row[1] not in ("BACKEND", "FRONTEND")
    ]
    if servers:
        print(f"HAProxy sees: {', '.join(servers)}")


def main(argv: list[str] | None = None) -> int:
    """`python -m tonebridge.cluster.orchestrate render DIR`: write the deploy/ examples from the templates."""
    parser = argparse.ArgumentParser(prog="python -m tonebridge.cluster.orchestrate")
    sub = parser.add_subparsers(dest="command", required=True)
    render_parser = sub.add_parser("render", help="render the deploy/ example configs into DIR")
    render_parser.add_argument("dir")
    args = parser.parse_args(argv)
    for path in render_examples(Path(args.dir)):
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
