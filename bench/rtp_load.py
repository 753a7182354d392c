"""Media-plane load benchmark: `tonebridge serve` carrying N conference legs that stream audio from SIPp.

For each N in `--counts` (50, 100, 200, 300, 400 by default) a fresh server is started pinned to core 0
(`taskset -c 0`) with one Sinch-style application whose callback backend is a small HTTP server in this
process: it answers every ICE with `connectConf` in detect mode (maxDigits 4, 3 s timeout), ten callers
per room (`room-0`, `room-1`...) or all of them in one room with `--one-room`. SIPp, pinned to core 1,
then places N calls to the application's number; each call offers PCMU and telephone-event and streams
looped G.711 mu-law speech-like noise with SIPp's `rtp_stream` action. Once every leg is in its room the
bench measures a window of `--window` seconds, while probe calls (`tonebridge phone dial`, also on core 1)
join room-0 and press 1234 as RFC 4733 digits, which ends a collection and sends a PIE. Then the calls end
(BYE) and the server is stopped.

Reported per N, for the server process only:
- CPU % of one core over the window (/proc/PID/stat utime + stime),
- RSS per participant: (VmRSS at the end of the window - VmRSS of the idle server) / N,
- late ticks during the window (delta of metrics `media.lateTicks`: ticks more than 200 ms behind, which the
  media clock skips; smaller lateness is not counted anywhere yet, and there is no tick-duration histogram),
- packets the server sent per leg per second, counted on the probe legs (packets received by the phone over
  its call's length: the metrics have no per-leg send counter),
- packets dropped at the server's RTP sockets during the window (/proc/net/udp `drops`, summed over the
  sockets in the server's RTP port range),
- PIE latency p50 from metrics (`pieLatencyMsP50`: end of collection to the application's answer;
  `pieRequestLatencyMsP50`: to the PIE leaving).

Prints one Markdown table and writes `bench/out/rtp_load.png` (CPU and late ticks against N) when
matplotlib is installed. Needs `sipp` (Debian sip-tester 3.6.1) and `taskset`; loopback only.

    .venv/bin/python bench/rtp_load.py                     # 50, 100, 200, 300, 400 legs, rooms of 10
    .venv/bin/python bench/rtp_load.py --counts 20,50 --one-room
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np

HOST = "127.0.0.1"
NUMBER = "+15550001111"
KEY = "bench-rtp-load"
SECRET = "YmVuY2gtc2VjcmV0"  # base64 of "bench-secret"
ROOM_SIZE = 10
# Every port below the kernel's ephemeral range (32768-60999 here), where free_port() picks the SIP and
# HTTP ports: the server's RTP range, SIPp's media ports and the probe phone's.
SERVER_RTP = (20000, 29999)
SIPP_MEDIA_PORT = 12000
PHONE_RTP = "31000-31999"
SERVER_CORE, PEER_CORE = "0", "1"
CLK_TCK = os.sysconf("SC_CLK_TCK")
OUT = Path(__file__).parent / "out"

LOAD_SCENARIO = """<?xml version="1.0" encoding="ISO-8859-1" ?>
<!-- A conference caller: PCMU and telephone-event, streams looped mu-law audio (rtp_stream) for -d ms. -->
<scenario name="rtp load caller">
  <send retrans="500">
    <![CDATA[
      INVITE sip:[service]@[remote_ip]:[remote_port] SIP/2.0
      Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
      From: load <sip:load[call_number]@[local_ip]:[local_port]>;tag=[pid]L[call_number]
      To: <sip:[service]@[remote_ip]:[remote_port]>
      Call-ID: [call_id]
      CSeq: 1 INVITE
      Contact: <sip:load@[local_ip]:[local_port];transport=[transport]>
      Max-Forwards: 70
      Content-Type: application/sdp
      Content-Length: [len]

      v=0
      o=load 1 1 IN IP[local_ip_type] [local_ip]
      s=-
      c=IN IP[media_ip_type] [media_ip]
      t=0 0
      m=audio [rtpstream_audio_port] RTP/AVP 0 101
      a=rtpmap:0 PCMU/8000
      a=rtpmap:101 telephone-event/8000
      a=fmtp:101 0-16
      a=ptime:20
      a=sendrecv

    ]]>
  </send>
  <recv response="100" optional="true"/>
  <recv response="180" optional="true"/>
  <recv response="183" optional="true"/>
  <recv response="200" rtd="true"/>
  <send>
    <![CDATA[
      ACK sip:[service]@[remote_ip]:[remote_port] SIP/2.0
      Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
      From: load <sip:load[call_number]@[local_ip]:[local_port]>;tag=[pid]L[call_number]
      To: <sip:[service]@[remote_ip]:[remote_port]>[peer_tag_param]
      Call-ID: [call_id]
      CSeq: 1 ACK
      Max-Forwards: 70
      Content-Length: 0

    ]]>
  </send>
  <nop><action><exec rtp_stream="AUDIO_FILE,-1,0"/></action></nop>
  <pause/>
  <send retrans="500">
    <![CDATA[
      BYE sip:[service]@[remote_ip]:[remote_port] SIP/2.0
      Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
      From: load <sip:load[call_number]@[local_ip]:[local_port]>;tag=[pid]L[call_number]
      To: <sip:[service]@[remote_ip]:[remote_port]>[peer_tag_param]
      Call-ID: [call_id]
      CSeq: 2 BYE
      Max-Forwards: 70
      Content-Length: 0

    ]]>
  </send>
  <recv response="200" crlf="true"/>
</scenario>
"""


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def speech_like_ulaw(seconds: float = 8.0, seed: int = 7) -> bytes:
    """Speech-like noise as raw G.711 mu-law: low-passed noise in 4 Hz syllables with pauses, about
    -20 dBFS while talking."""
    from tonebridge.media import g711

    rate = 8000
    rng = np.random.default_rng(seed)
    n = int(seconds * rate)
    noise = rng.standard_normal(n)
    # A one-pole low-pass tilts the spectrum towards voice (most energy below 1 kHz).
    shaped = np.empty(n)
    acc = 0.0
    alpha = 0.35
    for i, x in enumerate(noise):
        acc += alpha * (x - acc)
        shaped[i] = acc
    t = np.arange(n) / rate
    syllables = np.clip(np.sin(2 * np.pi * 4.0 * t), 0, None) ** 0.5
    phrases = (np.sin(2 * np.pi * 0.3 * t) > -0.5).astype(float)  # talk about 2/3 of the time
    signal_ = shaped / np.sqrt(np.mean(shaped**2)) * syllables * phrases
    samples = np.clip(signal_ * 0.1 * 32767, -32768, 32767).astype(np.int16)
    return g711.ulaw_encode(samples).tobytes()


class Backend:
    """The application's callback backend: ICE -> connectConf into room-K, 200 to everything else."""

    def __init__(self, one_room: bool) -> None:
        self.one_room = one_room
        self.ices = 0
        self.pies = 0
        self.lock = threading.Lock()
        backend = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                pass

            def do_POST(self) -> None:  # noqa: N802 (http.server's naming)
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                try:
                    event = json.loads(body)
                except ValueError:
                    event = {}
                answer = backend.answer(event, probe=b"probe" in body)
                data = json.dumps(answer).encode() if answer is not None else b""
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self.server = ThreadingHTTPServer((HOST, 0), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}/callbacks"

    def reset(self) -> None:
        with self.lock:
            self.ices = self.pies = 0

    def answer(self, event: dict, probe: bool) -> dict | None:
        kind = event.get("event")
        if kind == "pie":
            with self.lock:
                self.pies += 1
            return None
        if kind != "ice":
            return None
        with self.lock:
            index = self.ices
            self.ices += 0 if probe else 1
        room = 0 if self.one_room or probe else index // ROOM_SIZE
        return {
            "action": {
                "name": "connectConf",
                "conferenceId": f"room-{room}",
                "conferenceDtmfOptions": {"mode": "detect", "maxDigits": 4, "timeoutMills": 3000},
            }
        }

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


# /proc readers ------------------------------------------------------------------------------------------


def cpu_ticks(pid: int) -> int:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])  # utime, stime (fields 14 and 15 of the whole line)


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def udp_drops(low: int, high: int) -> dict[int, int]:
    """Drops per socket (by inode) of the UDP sockets bound to a port in [low, high]."""
    drops: dict[int, int] = {}
    for line in Path("/proc/net/udp").read_text().splitlines()[1:]:
        parts = line.split()
        port = int(parts[1].rsplit(":", 1)[1], 16)
        if low <= port <= high:
            drops[int(parts[9])] = int(parts[12])
    return drops


def udp_in_datagrams() -> int:
    """UDP datagrams delivered to any socket of this network namespace (/proc/net/snmp)."""
    lines = [
        line.split() for line in Path("/proc/net/snmp").read_text().splitlines() if line.startswith("Udp:")
    ]
    return int(lines[1][lines[0].index("InDatagrams")])


def metrics(http_port: int) -> dict:
    with urllib.request.urlopen(f"http://{HOST}:{http_port}/tonebridge/v1/metrics", timeout=5) as r:
        return json.load(r)


# Processes ----------------------------------------------------------------------------------------------


def stop(proc: subprocess.Popen | None, timeout: float = 15.0) -> None:
    if proc is None or proc.poll() is not None:
        return
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(5)


def start_server(workdir: Path, backend: Backend) -> tuple[subprocess.Popen, int, int]:
    sip, http = free_port(), free_port()
    config = workdir / "bench.toml"
    config.write_text(
        f'[server]\nsip = "{HOST}:{sip}"\nhttp = "{HOST}:{http}"\n'
        f"rtp_ports = [{SERVER_RTP[0]}, {SERVER_RTP[1]}]\n"
        f'data_dir = "{workdir / f"data-{sip}"}"\n\n'
        f'[[applications]]\nkey = "{KEY}"\nsecret = "{SECRET}"\ncallback_url = "{backend.url}"\n'
        f'numbers = ["{NUMBER}"]\n'
    )
    log = open(workdir / "server.log", "a")
    proc = subprocess.Popen(
        ["taskset", "-c", SERVER_CORE, sys.executable, "-m", "tonebridge.cli", "--log-level", "WARNING"]
        + ["serve", "--config", str(config)],
        stdout=log,
        stderr=subprocess.STDOUT,
        cwd=workdir,
    )
    log.close()
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"server exited ({proc.returncode}):\n{(workdir / 'server.log').read_text()}")
        try:
            metrics(http)
            return proc, sip, http
        except OSError:
            time.sleep(0.2)
    stop(proc)
    raise SystemExit("server did not answer /tonebridge/v1/metrics within 30 s")


def start_sipp(workdir: Path, sip_port: int, count: int, rate: float, hold_ms: int) -> subprocess.Popen:
    stat = workdir / f"sipp-{count}.csv"
    cmd = ["taskset", "-c", PEER_CORE, "sipp", f"{HOST}:{sip_port}", "-sf", str(workdir / "load.xml")]
    cmd += ["-s", NUMBER, "-i", HOST, "-mi", HOST, "-p", str(free_port()), "-mp", str(SIPP_MEDIA_PORT)]
    cmd += ["-m", str(count), "-r", str(rate), "-l", str(count), "-d", str(hold_ms)]
    cmd += ["-nostdin", "-trace_stat", "-stf", str(stat), "-fd", "1", "-max_recv_loops", "10000"]
    cmd += ["-timeout", f"{int(hold_ms / 1000 + count / rate + 90)}s", "-timeout_error"]
    out = open(workdir / f"sipp-{count}.out", "w")
    proc = subprocess.Popen(cmd, cwd=workdir, stdout=out, stderr=subprocess.STDOUT)
    out.close()
    return proc


def sipp_result(workdir: Path, count: int) -> tuple[int, int]:
    stat = workdir / f"sipp-{count}.csv"
    if not stat.exists():
        return 0, 0
    rows = list(csv.DictReader(stat.read_text().splitlines(), delimiter=";"))
    if not rows:
        return 0, 0
    return int(rows[-1]["SuccessfulCall(C)"]), int(rows[-1]["FailedCall(C)"])


@dataclass
class Probe:
    """Probe calls one after another: each joins room-0, presses 1234 (RFC 4733), hangs up after 5 s."""

    workdir: Path
    sip_port: int
    calls: int = 0
    packets_in: int = 0
    seconds: float = 0.0
    failures: list[str] = field(default_factory=list)
    proc: subprocess.Popen | None = None
    stopping: bool = False

    def run(self, until: float) -> None:
        self.one()
        while not self.stopping and time.monotonic() + 7 < until:
            self.one()

    def one(self) -> None:
        cmd = ["taskset", "-c", PEER_CORE, sys.executable, "-m", "tonebridge.cli", "--log-level", "WARNING"]
        cmd += ["phone", "dial", f"sip:{NUMBER}@{HOST}:{self.sip_port}", "--from-user", "probe"]
        cmd += ["--rtp-ports", PHONE_RTP, "--dtmf", "1234", "--dtmf-delay", "1", "--hangup-after", "5"]
        self.proc = subprocess.Popen(
            cmd, cwd=self.workdir, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True
        )
        answered = ended = None
        try:
            assert self.proc.stdout is not None
            for line in self.proc.stdout:
                fields = dict(part.split("=", 1) for part in line.split() if "=" in part)
                if fields.get("event") == "answered":
                    answered = time.monotonic()
                elif fields.get("event") == "ended":
                    ended = time.monotonic()
                    if answered is not None:
                        self.calls += 1
                        self.packets_in += int(fields.get("rtp_in", 0))
                        self.seconds += ended - answered
                    else:
                        self.failures.append(line.strip())
            self.proc.wait(20)
        except subprocess.TimeoutExpired:
            self.failures.append("phone did not exit")
        finally:
            stop(self.proc)


# One measurement ----------------------------------------------------------------------------------------


@dataclass
class Row:
    count: int
    legs: int = 0
    rooms: int = 0
    cpu_percent: float = 0.0
    rss_kib_per_leg: float = 0.0
    late_ticks: int = 0
    probe_pps: float | None = None
    sent_pps: float | None = None
    received_pps: float | None = None
    drops: int = 0
    pie_p50: float | None = None
    pie_request_p50: float | None = None
    probes: int = 0
    calls_ok: int = 0
    calls_failed: int = 0


def measure(workdir: Path, backend: Backend, count: int, args: argparse.Namespace) -> Row:
    row = Row(count)
    backend.reset()
    server = sipp = None
    probe: Probe | None = None
    probe_thread: threading.Thread | None = None
    try:
        server, sip_port, http_port = start_server(workdir, backend)
        # The namespace's UDP traffic without this load (other processes on the machine), to subtract.
        base_in, base_t0 = udp_in_datagrams(), time.monotonic()
        time.sleep(2)
        baseline_pps = (udp_in_datagrams() - base_in) / (time.monotonic() - base_t0)
        idle_rss = rss_kib(server.pid)
        ramp = count / args.rate
        hold_ms = int((ramp + args.settle + args.window + 8) * 1000)
        sipp = start_sipp(workdir, sip_port, count, args.rate, hold_ms)
        # Wait (bounded) until every call is a participant, then let the rooms settle.
        deadline = time.monotonic() + ramp + 30
        while time.monotonic() < deadline:
            if metrics(http_port)["conferences"]["participants"] >= count or sipp.poll() is not None:
                break
            time.sleep(0.5)
        time.sleep(args.settle)
        before = metrics(http_port)
        drops_before = udp_drops(*SERVER_RTP)
        sipp_before = udp_drops(SIPP_MEDIA_PORT, SIPP_MEDIA_PORT + 3)
        in_before = udp_in_datagrams()
        cpu_before, t0 = cpu_ticks(server.pid), time.monotonic()
        probe = Probe(workdir, sip_port)
        probe_thread = threading.Thread(target=probe.run, args=(t0 + args.window,), daemon=True)
        probe_thread.start()
        time.sleep(args.window)
        cpu_after, t1 = cpu_ticks(server.pid), time.monotonic()
        in_after = udp_in_datagrams()
        after = metrics(http_port)
        drops_after = udp_drops(*SERVER_RTP)
        sipp_after = udp_drops(SIPP_MEDIA_PORT, SIPP_MEDIA_PORT + 3)
        rss = rss_kib(server.pid)
        probe.stopping = True
        probe_thread.join(15)
        row.legs = after["conferences"]["participants"]
        row.rooms = after["conferences"]["rooms"]
        row.cpu_percent = 100.0 * (cpu_after - cpu_before) / CLK_TCK / (t1 - t0)
        row.rss_kib_per_leg = (rss - idle_rss) / max(1, count)
        row.late_ticks = after["media"]["lateTicks"] - before["media"]["lateTicks"]
        row.drops = sum(d - drops_before.get(inode, 0) for inode, d in drops_after.items())
        # SIPp never reads its media socket (every call's SDP names it): once its buffer is full, each
        # packet the server sends to a load leg is dropped there and counted.
        unread = sum(d - sipp_before.get(inode, 0) for inode, d in sipp_after.items())
        row.sent_pps = unread / max(1, row.legs) / (t1 - t0) if unread else None
        final = metrics(http_port)["conferences"]
        # What reached the server's sockets: every UDP datagram delivered in the namespace, less the
        # baseline and the probe's two directions (SIPp's media socket is never read, so nothing of the
        # server's reaches it as a delivered datagram). An estimate: it shows whether SIPp kept 50/s.
        delivered = in_after - in_before - baseline_pps * (t1 - t0) - 2 * probe.packets_in
        row.received_pps = max(0.0, delivered) / max(1, row.legs) / (t1 - t0)
        row.pie_p50 = final["pieLatencyMsP50"]
        row.pie_request_p50 = final["pieRequestLatencyMsP50"]
        row.probes = probe.calls
        if probe.seconds:
            row.probe_pps = probe.packets_in / probe.seconds
        if probe.failures:
            print(f"  probe failures: {probe.failures[:3]}", flush=True)
        # The calls end by themselves (BYE) once their hold time is over.
        try:
            sipp.wait(ramp + 40)
        except subprocess.TimeoutExpired:
            print("  sipp did not finish in time; stopped", flush=True)
        row.calls_ok, row.calls_failed = sipp_result(workdir, count)
    finally:
        if probe is not None:
            probe.stopping = True
            stop(probe.proc)
        stop(sipp)
        stop(server)
    return row


def fmt(value: float | None, digits: int = 1) -> str:
    return "n/a" if value is None else f"{value:,.{digits}f}"


def table(rows: list[Row]) -> str:
    lines = [
        "| N | legs in rooms | rooms | server CPU % | RSS KiB/leg | late ticks | sent pkts/s per leg (all) | sent pkts/s per leg (probe) "
        "| received pkts/s per leg (approx.) "
        "| drops at server | PIE p50 ms | PIE request p50 ms | probes | calls ok/failed |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r.count} | {r.legs} | {r.rooms} | {fmt(r.cpu_percent)} | {fmt(r.rss_kib_per_leg)} "
            f"| {r.late_ticks} | {fmt(r.sent_pps)} | {fmt(r.probe_pps)} | {fmt(r.received_pps)} | {r.drops} | {fmt(r.pie_p50, 2)} "
            f"| {fmt(r.pie_request_p50, 2)} | {r.probes} | {r.calls_ok}/{r.calls_failed} |"
        )
    return "\n".join(lines)


def plot(rows: list[Row], path: Path, title: str) -> bool:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    counts = [r.count for r in rows]
    fig, cpu_axis = plt.subplots(figsize=(7, 4))
    cpu_axis.plot(counts, [r.cpu_percent for r in rows], "o-", color="tab:blue", label="server CPU %")
    cpu_axis.set_xlabel("participants (N)")
    cpu_axis.set_ylabel("server CPU % of one core", color="tab:blue")
    cpu_axis.set_ylim(bottom=0, top=max(100.0, *(r.cpu_percent for r in rows)) * 1.05)
    late_axis = cpu_axis.twinx()
    late_axis.plot(counts, [r.late_ticks for r in rows], "s--", color="tab:red", label="late ticks")
    late_axis.set_ylabel("late ticks in the window", color="tab:red")
    late_axis.set_ylim(bottom=0, top=max(1, *(r.late_ticks for r in rows)) * 1.2)
    cpu_axis.set_title(title)
    cpu_axis.grid(True, alpha=0.3)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return True


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--counts", default="50,100,200,300,400", help="participant counts, comma-separated")
    parser.add_argument("--one-room", action="store_true", help="everyone in one room (default: rooms of 10)")
    parser.add_argument("--window", type=float, default=20.0, help="measured seconds per count")
    parser.add_argument("--settle", type=float, default=2.0, help="seconds after the last join")
    parser.add_argument("--rate", type=float, default=50.0, help="SIPp calls per second while ramping up")
    parser.add_argument("--keep", type=Path, help="work in this folder and keep it (logs, SIPp output)")
    args = parser.parse_args()
    counts = [int(c) for c in args.counts.split(",") if c.strip()]
    high = SIPP_MEDIA_PORT + 4 * max(counts) + 10
    if high >= SERVER_RTP[0]:
        raise SystemExit(f"too many calls for SIPp's media ports below {SERVER_RTP[0]}")
    low_ephemeral = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    if SERVER_RTP[1] >= low_ephemeral or int(PHONE_RTP.split("-")[1]) >= low_ephemeral:
        raise SystemExit(f"RTP ports must stay below the ephemeral range ({low_ephemeral} and up)")
    # This process (backend, polling) stays off the server's core.
    os.sched_setaffinity(0, {int(PEER_CORE)})
    rows: list[Row] = []
    backend = Backend(args.one_room)
    with tempfile.TemporaryDirectory(prefix="rtp-load-") as tmp:
        workdir = args.keep or Path(tmp)
        workdir.mkdir(parents=True, exist_ok=True)
        audio = workdir / "speech.ulaw"
        audio.write_bytes(speech_like_ulaw())
        (workdir / "load.xml").write_text(LOAD_SCENARIO.replace("AUDIO_FILE", str(audio)))
        try:
            for count in counts:
                started = time.monotonic()
                try:
                    row = measure(workdir, backend, count, args)
                except (OSError, ValueError, KeyError) as exc:
                    print(f"N={count}: failed: {exc!r}", flush=True)
                    continue
                rows.append(row)
                print(
                    f"N={count}: legs={row.legs} cpu={row.cpu_percent:.1f}% "
                    f"rss/leg={row.rss_kib_per_leg:.1f}KiB late={row.late_ticks} "
                    f"probe_pps={fmt(row.probe_pps)} sent_pps={fmt(row.sent_pps)} in_pps~{fmt(row.received_pps)} drops={row.drops} pie_p50={row.pie_p50} "
                    f"calls={row.calls_ok}/{row.calls_failed} ({time.monotonic() - started:.0f}s)",
                    flush=True,
                )
        finally:
            backend.close()
    layout = "one room" if args.one_room else f"rooms of {ROOM_SIZE}"
    print()
    print(f"RTP load, {layout}, {args.window:g} s window per N (server on core {SERVER_CORE}):")
    print(table(rows))
    name = "rtp_load_one_room.png" if args.one_room else "rtp_load.png"
    if rows and plot(rows, OUT / name, f"tonebridge serve, one core, {layout}"):
        print(f"\nplot: {OUT / name}")
    elif rows:
        print("\nno plot: matplotlib is not installed (`make bench-rtp` installs it)")


if __name__ == "__main__":
    main()
