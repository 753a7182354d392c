"""Media-plane load benchmark (issue 10): `tonebridge serve` carrying N conference legs streamed by SIPp.

For each N a fresh server runs pinned to core 0 (`taskset -c 0`) with one Sinch-style application whose
callback backend is a small HTTP server in this process: every ICE gets `connectConf` in detect mode
(maxDigits 4, 3 s timeout) into `room-K`, ten callers per room, or all of them in `room-0` with
`--one-room`. SIPp, pinned to core 1, places the N calls at `--rate` per second (200 by default; the
server answers each through the ICE callback); each call offers PCMU and telephone-event (`--inband`: PCMU
alone, so the server runs its in-band detector on every leg) and streams looped G.711 mu-law speech-like
noise with `rtp_stream`. Once every leg is in its room (or joins stop coming for 10 s) and `--settle`
seconds have passed, the bench measures a window of `--window` seconds.
Through it a probe phone (`tonebridge phone dial`, core 1) sits in room-0 and presses 1234 again and again,
as RFC 4733 or, with `--inband`, as in-band tones with no telephone-event offered; each press of four
digits ends a collection and sends a PIE. After the window the bench ends the calls through the API
(DELETE /calling/v1/conferences/id/room-K: the server sends every BYE) and waits for SIPp to finish, for
at most `--teardown` seconds, then stops SIPp and the server. The last column counts SIPp's calls ended by
the server's BYE, failed, and cut (still up when SIPp was stopped).

Reported per N, for the server process (and any children it starts) only:
- CPU % of one core over the window (/proc/PID/stat utime + stime); and, to tell a noisy row, what every
  other process and the kernel took of that core meanwhile (its busy time in /proc/stat, less the server's:
  softirq work for the server's packets lands there too),
- RSS per participant: (VmRSS at the end of the window - VmRSS of the same server idle) / load legs,
- tick duration and tick lateness (how late each 20 ms tick started after its deadline), p50 / p99 / max
  in ms, from the server's histograms `media.tickDurationMs` and `media.tickLatenessMs`. The quantiles are
  those of the window alone: the cumulative bucket counts read before the window are subtracted from those
  read after it, and a quantile is interpolated linearly inside its bucket as Prometheus'
  histogram_quantile does (a quantile in the +Inf bucket reads as the highest finite bound). The window's
  max is given as "≤ B", B the upper bound of the highest bucket that gained counts in the window, unless
  the histogram's own `max` grew during the window: then that value is the window's max, is given as is,
  and caps the quantiles (interpolation may otherwise place them above it),
- skipped ticks: the delta of `media.skippedTicks` (ticks more than 200 ms behind; `lateTicks` before
  the histograms existed),
- packets the server sent per leg per second: delta of `media.packets.out` / `media.legs` / window; and
  the probe's own figure (packets its phone received / its call's length),
- packets in, out and dropped by the server over the window (its counters `media.packets.*`),
- packets dropped at the server's RTP sockets during the window (/proc/net/udp `drops`, summed over the
  sockets in the server's RTP port range),
- PIE latency p50 and p99 over the probe's collections: `conferences.pieRequestLatencyMsP50/P99` (end of
  the collection to the PIE leaving) and `pieLatencyMsP50/P99` (to the application's answer). The server
  keeps its latest 1,000 collections, which on its fresh start are the probe's, and with `--inband` any a
  load leg's noise was taken for (the PIEs column counts the probe's and the others),
- whether the row is clean: every call in its room, p99 lateness < 5 ms, 0 skipped ticks, 0 drops at the
  server's sockets, PIE request p99 < 20 ms. A metric the server does not publish yet prints as n/a, and
  a row missing one of these reads "?" rather than clean.

Prints one Markdown table and the largest clean N, and writes bench/out/rtp_load.png (or
rtp_load_one_room.png, rtp_load_inband.png): server CPU % and p99 lateness against N, when matplotlib is
installed (`make bench-rtp` installs it). Needs `sipp` (Debian sip-tester 3.6.1) and `taskset`; loopback
only. Every RTP port (SIPp's, the server's, the probe's) lies below the kernel's ephemeral range, read from
/proc/sys/net/ipv4/ip_local_port_range, and the file-descriptor limit the children inherit is raised
for two sockets per leg. The default sweep takes about 5 minutes (each N at most about 2).

    .venv/bin/python bench/rtp_load.py                # 500, 1000, 1500, 2000 legs, rooms of 10
    .venv/bin/python bench/rtp_load.py --one-room     # 100, 300, 500 legs in one room
    .venv/bin/python bench/rtp_load.py --inband       # 500, 1000 legs, in-band detection on each
    .venv/bin/python bench/rtp_load.py --quick        # smoke test: 20 legs, 3 s window
    .venv/bin/python bench/rtp_load.py --counts 50,100 --window 5
"""

from __future__ import annotations

import argparse
import base64
import concurrent.futures
import csv
import fcntl
import hashlib
import hmac
import json
import math
import os
import resource
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np

HOST = "127.0.0.1"
NUMBER = "+15550001111"
KEY = "bench-rtp-load"
SECRET = "YmVuY2gtc2VjcmV0"  # base64 of "bench-secret"
ROOM_SIZE = 10
SERVER_CORE, PEER_CORE = "0", "1"
CLK_TCK = os.sysconf("SC_CLK_TCK")
OUT = Path(__file__).parent / "out"
_held: list[object] = []  # open files whose locks last as long as the process
DEFAULT_COUNTS = {"rooms": "500,1000,1500,2000", "one-room": "100,300,500", "inband": "500,1000"}
CLEAN_LATENESS_P99_MS = 5.0
CLEAN_PIE_REQUEST_P99_MS = 20.0

SCENARIO = """<?xml version="1.0" encoding="ISO-8859-1" ?>
<!-- A conference caller: streams looped mu-law audio (rtp_stream) until the server sends BYE. -->
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
      MEDIA_LINES
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
  <recv request="BYE"/>
  <send>
    <![CDATA[
      SIP/2.0 200 OK
      [last_Via:]
      [last_From:]
      [last_To:]
      [last_Call-ID:]
      [last_CSeq:]
      Content-Length: 0

    ]]>
  </send>
</scenario>
"""
MEDIA_TELEPHONE_EVENT = (
    "m=audio [rtpstream_audio_port] RTP/AVP 0 101\n      a=rtpmap:0 PCMU/8000\n"
    "      a=rtpmap:101 telephone-event/8000\n      a=fmtp:101 0-16"
)
MEDIA_PCMU_ONLY = "m=audio [rtpstream_audio_port] RTP/AVP 0\n      a=rtpmap:0 PCMU/8000"


def free_port() -> int:
    """A port free for both UDP and TCP (SIP listens on both; HTTP on TCP)."""
    while True:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
            udp.bind((HOST, 0))
            port = udp.getsockname()[1]
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as tcp:
                try:
                    tcp.bind((HOST, port))
                except OSError:
                    continue
        return port


@dataclass(frozen=True)
class Ports:
    """Where each party's RTP goes, all below the ephemeral range (where free_port() finds SIP and HTTP)."""

    # SIPp's -mp. SIPp 3.6.1 streams every call from this one socket (and never reads it); later
    # versions bind two ports per call upwards from it, so the plan leaves them room.
    sipp_media: int
    server: tuple[int, int]
    phone: tuple[int, int]


def plan_ports(max_count: int) -> Ports:
    ephemeral_low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    # SIPp skips ports that are taken, so its block gets room to spare; the server's holds two ports per
    # leg (RTP, RTCP) with a quarter more for ports held by others and for legs still closing.
    sipp = 6000
    sipp_high = sipp + 2 * max_count + 500
    server_low = math.ceil((sipp_high + 500) / 1000) * 1000
    server_high = server_low + math.ceil((2 * max_count * 1.25 + 200) / 1000) * 1000 - 1
    phone_low = server_high + 501
    ports = Ports(sipp, (server_low, server_high), (phone_low, phone_low + 99))
    if ports.phone[1] >= ephemeral_low:
        raise SystemExit(
            f"{max_count} legs need RTP ports up to {ports.phone[1]}, into the kernel's ephemeral range "
            f"({ephemeral_low} and up, /proc/sys/net/ipv4/ip_local_port_range): use smaller counts"
        )
    return ports


def raise_fd_limit(max_count: int) -> None:
    """Children inherit this process's limit: the server holds two sockets per leg (and SIPp after 3.6.1
    two per call)."""
    needed = 4 * max_count + 4096
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft >= needed:
        return
    if hard != resource.RLIM_INFINITY and hard < needed:
        raise SystemExit(f"{max_count} legs need {needed} file descriptors; the hard limit is {hard}")
    resource.setrlimit(resource.RLIMIT_NOFILE, (needed, hard))


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
        self.lock = threading.Lock()
        self.reset()
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
                answer = backend.answer(event)
                data = json.dumps(answer).encode() if answer is not None else b""
                try:
                    self.send_response(200)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)
                except (BrokenPipeError, ConnectionResetError):
                    # The server stopped waiting (its callback timeout) or was itself stopped.
                    with backend.lock:
                        backend.abandoned += 1

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
            self.ices = 0
            self.rooms: set[str] = set()
            self.probe_calls: set[str] = set()
            self.probe_pies = 0
            self.other_pies = 0  # in-band talk-off: a load leg's noise read as digits
            self.abandoned = 0

    def answer(self, event: dict) -> dict | None:
        kind = event.get("event")
        if kind == "pie":
            with self.lock:
                if event.get("callid") in self.probe_calls:
                    self.probe_pies += 1
                else:
                    self.other_pies += 1
            return None
        if kind != "ice":
            return None
        probe = event.get("cli") == "probe"
        with self.lock:
            if probe:
                self.probe_calls.add(event.get("callid", ""))
                room = "room-0"
            else:
                room = f"room-{0 if self.one_room else self.ices // ROOM_SIZE}"
                self.ices += 1
            self.rooms.add(room)
        return {
            "action": {
                "name": "connectConf",
                "conferenceId": room,
                "conferenceDtmfOptions": {"mode": "detect", "maxDigits": 4, "timeoutMills": 3000},
            }
        }

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


# /proc and the server's HTTP API ------------------------------------------------------------------------


def process_tree(pid: int) -> list[int]:
    """`pid` and its descendants (a media plane may run in a child process of the server)."""
    found, todo = [], [pid]
    while todo:
        current = todo.pop()
        found.append(current)
        try:
            for task in Path(f"/proc/{current}/task").iterdir():
                todo += [int(c) for c in (task / "children").read_text().split()]
        except OSError:
            continue
    return found


def cpu_ticks(pid: int) -> int:
    total = 0
    for member in process_tree(pid):
        try:
            fields = Path(f"/proc/{member}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])  # utime, stime (fields 14 and 15 of the whole line)
    return total


def core_busy_ticks(core: str) -> int:
    """Ticks the core spent on anything but idle and I/O wait, every process together (/proc/stat)."""
    for line in Path("/proc/stat").read_text().splitlines():
        if line.startswith(f"cpu{core} "):
            ticks = [int(v) for v in line.split()[1:]]
            return sum(ticks) - ticks[3] - ticks[4]
    return 0


def rss_kib(pid: int) -> int:
    total = 0
    for member in process_tree(pid):
        try:
            lines = Path(f"/proc/{member}/status").read_text().splitlines()
        except OSError:
            continue
        total += next((int(line.split()[1]) for line in lines if line.startswith("VmRSS:")), 0)
    return total


def udp_drops(low: int, high: int) -> dict[int, int]:
    """Drops per socket (by inode) of the UDP sockets bound to a port in [low, high]."""
    drops: dict[int, int] = {}
    for line in Path("/proc/net/udp").read_text().splitlines()[1:]:
        parts = line.split()
        port = int(parts[1].rsplit(":", 1)[1], 16)
        if low <= port <= high:
            drops[int(parts[9])] = int(parts[12])
    return drops


def metrics(http_port: int) -> dict:
    with urllib.request.urlopen(f"http://{HOST}:{http_port}/tonebridge/v1/metrics", timeout=30) as r:
        return json.load(r)


def kick_all(http_port: int, room: str) -> int:
    """DELETE the room's participants as the application would: a request signed with its key."""
    path = f"/calling/v1/conferences/id/{room}"
    timestamp = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    # No body: the MD5 and content-type lines of the string to sign are empty.
    text = f"DELETE\n\n\nx-timestamp:{timestamp}\n{path}"
    digest = hmac.new(base64.b64decode(SECRET), text.encode(), hashlib.sha256).digest()
    request = urllib.request.Request(f"http://{HOST}:{http_port}{path}", method="DELETE")
    request.add_header("Authorization", f"Application {KEY}:{base64.b64encode(digest).decode()}")
    request.add_header("x-timestamp", timestamp)
    with urllib.request.urlopen(request, timeout=30) as reply:
        return reply.status


def dig(document: dict, *keys: str) -> object:
    """document[k1][k2]..., or None where a level is missing (metrics the server does not publish yet)."""
    for key in keys:
        if not isinstance(document, dict) or key not in document:
            return None
        document = document[key]
    return document


def delta(before: dict, after: dict, *keys: str) -> int | None:
    a, b = dig(after, *keys), dig(before, *keys)
    return a - b if isinstance(a, int | float) and isinstance(b, int | float) else None


# Histograms ---------------------------------------------------------------------------------------------


@dataclass
class Spread:
    """p50, p99 and max of one histogram over the window, in ms."""

    p50: float | None
    p99: float | None
    max: float | None
    max_exact: bool

    def cell(self) -> str:
        if self.p50 is None:
            return "n/a"
        if self.max is None:
            top = "?"
        elif math.isinf(self.max):
            top = "> all buckets"
        else:
            top = f"{self.max:.2f}" if self.max_exact else f"≤{self.max:g}"
        return f"{self.p50:.2f} / {self.p99:.2f} / {top}"


def _buckets(histogram: object) -> list[tuple[float, float]] | None:
    if not isinstance(histogram, dict) or not isinstance(histogram.get("buckets"), list):
        return None
    out = []
    for bound, count in histogram["buckets"]:
        out.append((math.inf if bound in ("+Inf", "Inf", "inf") else float(bound), float(count)))
    return sorted(out)


def histogram_quantile(q: float, buckets: list[tuple[float, float]]) -> float | None:
    """The q-quantile of cumulative buckets [(upper bound, count <= bound)], interpolated linearly inside
    its bucket (Prometheus' histogram_quantile: the first bucket starts at 0, and a quantile in the +Inf
    bucket reads as the highest finite bound)."""
    if not buckets or buckets[-1][1] <= 0:
        return None
    rank = q * buckets[-1][1]
    lower_bound, lower_count = 0.0, 0.0
    for bound, count in buckets:
        if count >= rank:
            if math.isinf(bound):
                return lower_bound
            if count == lower_count:
                return bound
            return lower_bound + (bound - lower_bound) * (rank - lower_count) / (count - lower_count)
        lower_bound, lower_count = bound, count
    return lower_bound


def window_spread(before: dict, after: dict, name: str) -> Spread:
    """The window's p50, p99 and max of histogram media.<name>, from the counts it gained."""
    h0, h1 = dig(before, "media", name), dig(after, "media", name)
    b0, b1 = _buckets(h0), _buckets(h1)
    if b0 is None or b1 is None:
        return Spread(None, None, None, False)
    start = dict(b0)
    gained = [(bound, count - start.get(bound, 0.0)) for bound, count in b1]
    p50, p99 = histogram_quantile(0.5, gained), histogram_quantile(0.99, gained)
    top, previous = None, 0.0
    for bound, count in gained:
        if count > previous:
            top = bound  # this bucket itself gained counts
        previous = count
    max0, max1 = dig(h0, "max"), dig(h1, "max")
    if isinstance(max0, int | float) and isinstance(max1, int | float) and max1 > max0:
        # Interpolation inside the top bucket may land above the true max: never report a quantile above it.
        top = float(max1)
        return Spread(*(None if v is None else min(v, top) for v in (p50, p99)), top, True)
    return Spread(p50, p99, top, False)


# Processes ----------------------------------------------------------------------------------------------


def pinned(core: str) -> list[str]:
    """The prefix that runs a child on `core` and, where setpriv exists, ends it (SIGTERM) should this
    process die without stopping it: an orphaned server would load core 0 under the next run."""
    prefix = ["setpriv", "--pdeathsig", "TERM"] if shutil.which("setpriv") else []
    return [*prefix, "taskset", "-c", core]


def exclusive(ports: Ports) -> None:
    """Refuse to run beside another run of this bench (same cores, same ports) or with SIPp's media
    port taken. The lock lasts as long as this process."""
    lock = open(Path(tempfile.gettempdir()) / "tonebridge-rtp-load.lock", "a+")
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        raise SystemExit(
            "another bench/rtp_load.py run is going: two would share core 0 and the ports"
        ) from None
    for port in (ports.sipp_media, ports.sipp_media + 2):
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            try:
                s.bind((HOST, port))
            except OSError:
                raise SystemExit(
                    f"UDP port {port} (SIPp's media) is in use; is a SIPp still running?"
                ) from None
    _held.append(lock)


def stop(proc: subprocess.Popen | None, timeout: float = 30.0) -> None:
    if proc is None or proc.poll() is not None:
        return
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(5)


def start_server(workdir: Path, backend: Backend, ports: Ports) -> tuple[subprocess.Popen, int, int]:
    sip, http = free_port(), free_port()
    config = workdir / "bench.toml"
    config.write_text(
        f'[server]\nsip = "{HOST}:{sip}"\nhttp = "{HOST}:{http}"\n'
        f"rtp_ports = [{ports.server[0]}, {ports.server[1]}]\n"
        f'data_dir = "{workdir / f"data-{sip}"}"\n\n'
        f'[[applications]]\nkey = "{KEY}"\nsecret = "{SECRET}"\ncallback_url = "{backend.url}"\n'
        f'numbers = ["{NUMBER}"]\n'
    )
    log = open(workdir / "server.log", "a")
    proc = subprocess.Popen(
        [*pinned(SERVER_CORE), sys.executable, "-m", "tonebridge.cli", "--log-level", "WARNING"]
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


def start_sipp(
    workdir: Path, sip_port: int, count: int, args: argparse.Namespace, ports: Ports
) -> subprocess.Popen:
    stat = workdir / f"sipp-{count}.csv"
    stat.unlink(missing_ok=True)
    cmd = [*pinned(PEER_CORE), "sipp", f"{HOST}:{sip_port}", "-sf", str(workdir / "load.xml")]
    cmd += ["-s", NUMBER, "-i", HOST, "-mi", HOST, "-p", str(free_port()), "-mp", str(ports.sipp_media)]
    cmd += ["-m", str(count), "-r", str(args.rate), "-l", str(count), "-max_socket", str(2 * count + 100)]
    # A large SIP socket buffer: the BYEs of every call arrive in one burst when the rooms are emptied.
    cmd += ["-buff_size", "1048576"]
    cmd += ["-nostdin", "-trace_stat", "-stf", str(stat), "-fd", "1", "-max_recv_loops", "10000"]
    # A stop for SIPp itself should the server never end some calls.
    limit = count / args.rate + args.settle + args.window + 240
    cmd += ["-timeout", f"{int(limit)}s", "-timeout_error"]
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


class Probe:
    """One probe phone in room-0 through the window: presses 1234 again and again until told to stop,
    each press of four digits a collection and a PIE; then hangs up."""

    def __init__(self, workdir: Path, sip_port: int, ports: Ports, inband: bool) -> None:
        self.inband = inband
        self.lines: list[str] = []
        self.changed = threading.Condition()
        self.stopping = threading.Event()
        self.failures: list[str] = []
        self.packets_in = 0
        self.seconds = 0.0
        cmd = [*pinned(PEER_CORE), sys.executable, "-m", "tonebridge.cli", "--log-level", "WARNING"]
        cmd += ["phone", "dial", f"sip:{NUMBER}@{HOST}:{sip_port}", "--from-user", "probe"]
        cmd += ["--rtp-ports", f"{ports.phone[0]}-{ports.phone[1]}"]
        if inband:
            cmd.append("--no-telephone-event")
        self.proc = subprocess.Popen(
            cmd,
            cwd=workdir,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
            bufsize=1,
        )
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            with self.changed:
                self.lines.append(line.strip())
                self.changed.notify_all()
        with self.changed:
            self.changed.notify_all()

    def _count(self, event: str) -> int:
        return sum(1 for line in self.lines if line.startswith(f"event={event} "))

    def _wait(self, event: str, count: int, timeout: float) -> bool:
        with self.changed:
            return self.changed.wait_for(
                lambda: self._count(event) >= count or self.proc.poll() is not None, timeout
            ) and (self._count(event) >= count)

    def run(self) -> None:
        try:
            if not self._wait("answered", 1, 20):
                self.failures.append("probe not answered in 20 s")
                return
            answered = time.monotonic()
            sent = 0
            while not self.stopping.is_set():
                self._send(f"dtmf 1234 {'inband' if self.inband else 'rfc4733'}")
                sent += 1
                if not self._wait("dtmf_sent", sent, 10):
                    self.failures.append("digits not sent in 10 s")
                    break
                # Room for the PIE and the return to the mix before the next four digits.
                self.stopping.wait(0.5)
            self._send("hangup")
            if self._wait("ended", 1, 15):
                self.seconds = time.monotonic() - answered
                ended = next(line for line in self.lines if line.startswith("event=ended "))
                fields = dict(part.split("=", 1) for part in ended.split() if "=" in part)
                self.packets_in = int(fields.get("rtp_in", 0))
            else:
                self.failures.append("probe call did not end in 15 s")
        except (OSError, ValueError) as exc:
            self.failures.append(repr(exc))

    def _send(self, command: str) -> None:
        if self.proc.poll() is None and self.proc.stdin is not None:
            self.proc.stdin.write(command + "\n")
            self.proc.stdin.flush()

    def close(self) -> None:
        self.stopping.set()
        stop(self.proc, 10)


# One measurement ----------------------------------------------------------------------------------------


@dataclass
class Row:
    count: int
    legs: int = 0
    rooms: int = 0
    cpu_percent: float = 0.0
    other_cpu_percent: float = 0.0
    rss_kib_per_leg: float | None = None
    tick: Spread = field(default_factory=lambda: Spread(None, None, None, False))
    lateness: Spread = field(default_factory=lambda: Spread(None, None, None, False))
    skipped: int | None = None
    sent_pps: float | None = None
    probe_pps: float | None = None
    packets_in: int | None = None
    packets_out: int | None = None
    packets_dropped: int | None = None
    send_errors: int | None = None
    socket_drops: int = 0
    pie_request_p50: float | None = None
    pie_request_p99: float | None = None
    pie_p50: float | None = None
    pie_p99: float | None = None
    probe_pies: int = 0
    other_pies: int = 0
    calls_ok: int = 0
    calls_failed: int = 0
    join_seconds: float = 0.0
    teardown_seconds: float = 0.0

    @property
    def clean(self) -> bool | None:
        """None when a figure the verdict needs is missing (n/a)."""
        known = [self.lateness.p99, self.skipped, self.pie_request_p99]
        if any(value is None for value in known):
            failed = (
                self.legs < self.count
                or self.socket_drops > 0
                or (self.skipped or 0) > 0
                or (self.lateness.p99 or 0.0) >= CLEAN_LATENESS_P99_MS
                or (self.pie_request_p99 or 0.0) >= CLEAN_PIE_REQUEST_P99_MS
            )
            return False if failed else None
        return (
            self.legs >= self.count
            and self.socket_drops == 0
            and self.skipped == 0
            and self.lateness.p99 < CLEAN_LATENESS_P99_MS  # type: ignore[operator]
            and self.pie_request_p99 < CLEAN_PIE_REQUEST_P99_MS  # type: ignore[operator]
        )


def wait_for_joins(http_port: int, count: int, sipp: subprocess.Popen, limit: float) -> int:
    """Participants once all `count` have joined, joins stopped coming for 10 s, or `limit` passed."""
    deadline = time.monotonic() + limit
    seen, last_change = -1, time.monotonic()
    while time.monotonic() < deadline:
        joined = int(dig(metrics(http_port), "conferences", "participants") or 0)
        if joined >= count or sipp.poll() is not None:
            return joined
        if joined != seen:
            seen, last_change = joined, time.monotonic()
        elif time.monotonic() - last_change > 10:
            return joined
        time.sleep(0.5)
    return seen


def end_calls(http_port: int, rooms: list[str], sipp: subprocess.Popen, limit: float) -> str:
    """Empty every room through the API (the server sends the BYEs) and wait for SIPp to see its calls
    end, for at most `limit` seconds: an overloaded server may take far longer, and the window is over."""
    deadline = time.monotonic() + limit
    pool = concurrent.futures.ThreadPoolExecutor(8)
    futures = [pool.submit(kick_all, http_port, room) for room in rooms]
    done, pending = concurrent.futures.wait(futures, timeout=limit)
    # Requests still running end with the server, which is stopped next.
    pool.shutdown(wait=False, cancel_futures=True)
    problems = sorted({repr(f.exception()) for f in done if f.exception() is not None})
    problems += sorted({f"answered {f.result()}" for f in done if not f.exception() and f.result() >= 300})
    if pending:
        problems.append(f"{len(pending)} of {len(rooms)} rooms not emptied in {limit:.0f} s")
    try:
        sipp.wait(max(1.0, deadline - time.monotonic()))
    except subprocess.TimeoutExpired:
        problems.append(f"calls still up after {limit:.0f} s")
    return "; ".join(problems)


def measure(workdir: Path, backend: Backend, count: int, args: argparse.Namespace, ports: Ports) -> Row:
    row = Row(count)
    backend.reset()
    server = sipp = None
    probe: Probe | None = None
    try:
        server, sip_port, http_port = start_server(workdir, backend, ports)
        time.sleep(1)
        idle_rss = rss_kib(server.pid)
        sipp = start_sipp(workdir, sip_port, count, args, ports)
        started = time.monotonic()
        row.legs = wait_for_joins(http_port, count, sipp, count / args.rate + 45)
        row.join_seconds = time.monotonic() - started
        if row.legs < count:
            print(f"  only {row.legs} of {count} calls joined their rooms", flush=True)
        time.sleep(args.settle)

        before = metrics(http_port)
        drops_before = udp_drops(*ports.server)
        cpu_before, core_before, t0 = cpu_ticks(server.pid), core_busy_ticks(SERVER_CORE), time.monotonic()
        probe = Probe(workdir, sip_port, ports, args.inband)
        probe_thread = threading.Thread(target=probe.run, daemon=True)
        probe_thread.start()
        time.sleep(args.window)
        cpu_after, core_after, t1 = cpu_ticks(server.pid), core_busy_ticks(SERVER_CORE), time.monotonic()
        drops_after = udp_drops(*ports.server)
        rss = rss_kib(server.pid)
        after = metrics(http_port)
        probe.stopping.set()
        probe_thread.join(30)
        window = t1 - t0

        row.rooms = int(dig(after, "conferences", "rooms") or 0)
        row.cpu_percent = 100.0 * (cpu_after - cpu_before) / CLK_TCK / window
        core_percent = 100.0 * (core_after - core_before) / CLK_TCK / window
        row.other_cpu_percent = max(0.0, core_percent - row.cpu_percent)
        row.rss_kib_per_leg = (rss - idle_rss) / row.legs if row.legs else None
        row.tick = window_spread(before, after, "tickDurationMs")
        row.lateness = window_spread(before, after, "tickLatenessMs")
        row.skipped = delta(before, after, "media", "skippedTicks")
        if row.skipped is None:
            row.skipped = delta(before, after, "media", "lateTicks")
        row.packets_in = delta(before, after, "media", "packets", "in")
        row.packets_out = delta(before, after, "media", "packets", "out")
        row.packets_dropped = delta(before, after, "media", "packets", "dropped")
        row.send_errors = delta(before, after, "media", "packets", "sendErrors")
        media_legs = dig(after, "media", "legs")
        if row.packets_out is not None and isinstance(media_legs, int) and media_legs:
            row.sent_pps = row.packets_out / media_legs / window
        if probe.seconds:
            row.probe_pps = probe.packets_in / probe.seconds
        row.socket_drops = sum(d - drops_before.get(inode, 0) for inode, d in drops_after.items())
        # Read after the probe hung up: its last PIE may have been on its way when the window closed.
        final = metrics(http_port)
        row.pie_request_p50 = dig(final, "conferences", "pieRequestLatencyMsP50")  # type: ignore[assignment]
        row.pie_request_p99 = dig(final, "conferences", "pieRequestLatencyMsP99")  # type: ignore[assignment]
        row.pie_p50 = dig(final, "conferences", "pieLatencyMsP50")  # type: ignore[assignment]
        row.pie_p99 = dig(final, "conferences", "pieLatencyMsP99")  # type: ignore[assignment]
        with backend.lock:
            row.probe_pies, row.other_pies = backend.probe_pies, backend.other_pies
            rooms = sorted(backend.rooms)
            abandoned = backend.abandoned
        if abandoned:
            print(f"  {abandoned} callbacks abandoned by the server before the backend answered", flush=True)
        if probe.failures:
            print(f"  probe failures: {probe.failures[:3]}", flush=True)

        # The window is measured: what follows only ends the calls, within a bound.
        started = time.monotonic()
        problems = end_calls(http_port, rooms, sipp, args.teardown)
        row.teardown_seconds = time.monotonic() - started
        if problems:
            print(f"  ending the calls: {problems}", flush=True)
    finally:
        if probe is not None:
            probe.close()
        stop(sipp)
        stop(server)
    row.calls_ok, row.calls_failed = sipp_result(workdir, count)
    return row


# Output -------------------------------------------------------------------------------------------------


def fmt(value: float | None, digits: int = 1) -> str:
    return "n/a" if value is None else f"{value:,.{digits}f}"


def verdict(clean: bool | None) -> str:
    return "?" if clean is None else ("yes" if clean else "no")


def table(rows: list[Row]) -> str:
    header = [
        "N",
        "load legs in rooms",
        "rooms",
        "server CPU %",
        "others on its core %",
        "RSS KiB/leg",
        "tick ms p50 / p99 / max",
        "lateness ms p50 / p99 / max",
        "skipped ticks",
        "sent pkts/s per leg",
        "probe pkts/s",
        "pkts in",
        "pkts out",
        "pkts dropped",
        "socket drops",
        "PIE request ms p50 / p99",
        "PIE ms p50 / p99",
        "PIEs probe / other",
        "calls ended / failed / cut",
        "clean",
    ]
    lines = ["| " + " | ".join(header) + " |", "|" + "---:|" * len(header)]
    for r in rows:
        cells = [
            f"{r.count:,}",
            f"{r.legs:,}",
            str(r.rooms),
            fmt(r.cpu_percent),
            fmt(r.other_cpu_percent),
            fmt(r.rss_kib_per_leg),
            r.tick.cell(),
            r.lateness.cell(),
            fmt(r.skipped, 0),
            fmt(r.sent_pps),
            fmt(r.probe_pps),
            fmt(r.packets_in, 0),
            fmt(r.packets_out, 0),
            fmt(r.packets_dropped, 0),
            f"{r.socket_drops:,}",
            f"{fmt(r.pie_request_p50, 2)} / {fmt(r.pie_request_p99, 2)}",
            f"{fmt(r.pie_p50, 2)} / {fmt(r.pie_p99, 2)}",
            f"{r.probe_pies} / {r.other_pies}",
            f"{r.calls_ok} / {r.calls_failed} / {r.count - r.calls_ok - r.calls_failed}",
            verdict(r.clean),
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def max_clean(rows: list[Row]) -> str:
    clean = [r.count for r in rows if r.clean]
    if clean:
        return f"{max(clean):,}"
    if any(r.clean is None for r in rows):
        return "unknown (a figure the verdict needs is n/a: the server does not publish it yet)"
    return "none of the counts run"


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
    late = [(r.count, r.lateness.p99) for r in rows if r.lateness.p99 is not None]
    if late:
        late_axis.plot(*zip(*late, strict=True), "s--", color="tab:red", label="p99 tick lateness")
        late_axis.set_ylim(bottom=0, top=max(2 * CLEAN_LATENESS_P99_MS, *(v for _, v in late)) * 1.1)
    else:
        late_axis.set_ylim(0, 2 * CLEAN_LATENESS_P99_MS)
        late_axis.text(0.5, 0.9, "tick lateness: n/a", transform=late_axis.transAxes, ha="center")
    late_axis.axhline(CLEAN_LATENESS_P99_MS, color="tab:red", alpha=0.3, linewidth=1)
    late_axis.set_ylabel("p99 tick lateness ms (line: clean limit)", color="tab:red")
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
    parser.add_argument(
        "--counts",
        help=f"participant counts, comma-separated (default {DEFAULT_COUNTS['rooms']}; "
        f"--one-room {DEFAULT_COUNTS['one-room']}; --inband {DEFAULT_COUNTS['inband']})",
    )
    parser.add_argument("--one-room", action="store_true", help="everyone in one room (default: rooms of 10)")
    parser.add_argument(
        "--inband",
        action="store_true",
        help="load legs and probe without telephone-event: in-band detection on every leg",
    )
    parser.add_argument("--window", type=float, default=10.0, help="measured seconds per count")
    parser.add_argument("--settle", type=float, default=2.0, help="seconds after the last join")
    parser.add_argument("--rate", type=float, default=200.0, help="SIPp calls per second while ramping up")
    parser.add_argument(
        "--teardown", type=float, default=30.0, help="seconds at most to end the calls after the window"
    )
    parser.add_argument("--quick", action="store_true", help="smoke test: 20 legs, 3 s window, 1 s settle")
    parser.add_argument("--keep", type=Path, help="work in this folder and keep it (logs, SIPp output)")
    args = parser.parse_args()
    if args.quick:
        args.counts = args.counts or "20"
        args.window, args.settle = 3.0, 1.0
    variant = "one-room" if args.one_room else "inband" if args.inband else "rooms"
    counts = [int(c) for c in (args.counts or DEFAULT_COUNTS[variant]).split(",") if c.strip()]
    ports = plan_ports(max(counts))
    exclusive(ports)
    raise_fd_limit(max(counts))
    # A polite kill ends the run through its `finally` blocks, which stop the server and SIPp.
    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, lambda number, frame: sys.exit(128 + number))
    # This process (backend, probe, polling) stays off the server's core.
    os.sched_setaffinity(0, {int(PEER_CORE)})
    rows: list[Row] = []
    backend = Backend(args.one_room)
    with tempfile.TemporaryDirectory(prefix="rtp-load-") as tmp:
        workdir = args.keep or Path(tmp)
        workdir.mkdir(parents=True, exist_ok=True)
        audio = workdir / "speech.ulaw"
        audio.write_bytes(speech_like_ulaw())
        scenario = SCENARIO.replace("AUDIO_FILE", str(audio))
        scenario = scenario.replace("MEDIA_LINES", MEDIA_PCMU_ONLY if args.inband else MEDIA_TELEPHONE_EVENT)
        (workdir / "load.xml").write_text(scenario)
        try:
            for count in counts:
                started = time.monotonic()
                try:
                    row = measure(workdir, backend, count, args, ports)
                except (OSError, ValueError, KeyError) as exc:
                    print(f"N={count}: failed: {exc!r}", flush=True)
                    continue
                rows.append(row)
                print(
                    f"N={count}: legs={row.legs} cpu={row.cpu_percent:.1f}% "
                    f"others_on_core={row.other_cpu_percent:.1f}% "
                    f"rss/leg={fmt(row.rss_kib_per_leg)}KiB tick={row.tick.cell()} "
                    f"lateness={row.lateness.cell()} skipped={fmt(row.skipped, 0)} "
                    f"sent_pps={fmt(row.sent_pps)} probe_pps={fmt(row.probe_pps)} "
                    f"send_errors={fmt(row.send_errors, 0)} socket_drops={row.socket_drops} "
                    f"pie_request_p99={fmt(row.pie_request_p99, 2)} pies={row.probe_pies}/{row.other_pies} "
                    f"calls={row.calls_ok}/{row.calls_failed} joined_in={row.join_seconds:.0f}s "
                    f"teardown={row.teardown_seconds:.0f}s ({time.monotonic() - started:.0f}s)",
                    flush=True,
                )
        finally:
            backend.close()
    layout = "one room" if args.one_room else f"rooms of {ROOM_SIZE}"
    dtmf = "in-band detection" if args.inband else "RFC 4733"
    print()
    print(f"RTP load, {layout}, {dtmf}, {args.window:g} s window per N (server on core {SERVER_CORE}):")
    print(table(rows))
    print(
        f"\nLargest clean N (all legs in, p99 lateness < {CLEAN_LATENESS_P99_MS:g} ms, no skipped tick, "
        f"no socket drop, PIE request p99 < {CLEAN_PIE_REQUEST_P99_MS:g} ms): {max_clean(rows)}"
    )
    name = "rtp_load" + ("_one_room" if args.one_room else "") + ("_inband" if args.inband else "") + ".png"
    if rows and plot(rows, OUT / name, f"tonebridge serve, one core, {layout}, {dtmf}"):
        print(f"\nplot: {OUT / name}")
    elif rows:
        print("\nno plot: matplotlib is not installed (`make bench-rtp` installs it)")


if __name__ == "__main__":
    main()
