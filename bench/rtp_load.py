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
    .venv/bin/python bench/rtp_load.py --cluster 2 --counts 1000,2000 --rate 100

`--cluster NODES` runs `tonebridge cluster up --nodes NODES` (docs/cluster.md) for each N instead of one
server: Redis, the nodes (node i pinned to core i - 1 by the orchestration), Kamailio and HAProxy, on
free ports, in the same application. SIPp and the probe call Kamailio's SIP entry; Kamailio deals the calls
round robin and a call that lands away from its room's home is moved there by the node's 302, which
Kamailio follows; the media then flows straight between SIPp and the home node. The rooms are laid out so
that every node is home to as many rooms and half of the calls are moved (see room_of;
`--rooms-in-order` fills them one after another instead). SIPp, the probe, this process and the fronts
are not pinned: they share the cores with the nodes. Each node is measured as the one server is above
(its process's CPU, its core's other load, its histograms, counters and RTP sockets, from its own
/tonebridge/v1/metrics), and a row is clean when every call joined, the probe's PIEs were measured and
every node is clean on its own (p99 lateness, skipped ticks, drops at its sockets, and PIE request p99 on
room-0's home). Also reported: the CPU of SIPp, of Kamailio + HAProxy + Redis and of this process with the
probe over the window, and the SIP datagrams dropped at the nodes' and Kamailio's SIP sockets from the
first call to the window's end. Every count must be a multiple of NODES x 10; `--quick` runs NODES x 10
legs at 10 calls a second. The rooms are emptied through HAProxy (a node that is not the home forwards the DELETE).
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
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import numpy as np

HOST = "127.0.0.1"
NUMBER = "+15550001111"
KEY = "bench-rtp-load"
SECRET = "YmVuY2gtc2VjcmV0"  # base64 of "bench-secret"
ROOM_SIZE = 10
# The media benches ramp their calls from one source faster than the default per-source INVITE admission
# lets through (docs/configuration.md, "[limits]"): they measure the media plane, not admission.
BENCH_LIMITS = (
    "[limits]\ninvites_per_second_per_source = 10000\ninvite_burst_per_source = 20000\n"
    "max_setting_up_per_source = 10000\nmax_setting_up = 10000\n"
)
SERVER_CORE, PEER_CORE = "0", "1"
# With --cluster the nodes take the cores in turn and SIPp, the probe, this process and the fronts float.
PEER_CORES = ",".join(str(core) for core in range(os.cpu_count() or 1))
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


def plan_ports(max_count: int, server_legs: int | None = None) -> Ports:
    """`server_legs` (default `max_count`): legs the server's range must hold (a cluster's nodes split it)."""
    server_legs = server_legs or max_count
    ephemeral_low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    # SIPp skips ports that are taken, so its block gets room to spare; the server's holds two ports per
    # leg (RTP, RTCP) with a quarter more for ports held by others and for legs still closing.
    sipp = 6000
    sipp_high = sipp + 2 * max_count + 500
    server_low = math.ceil((sipp_high + 500) / 1000) * 1000
    server_high = server_low + math.ceil((2 * server_legs * 1.25 + 200) / 1000) * 1000 - 1
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


def room_of(call: int, nodes: int = 1, count: int = 0) -> int:
    """The room of the call-th load call (from 0) of `count`: rooms of ROOM_SIZE, one after another on one
    server (nodes == 1: call // ROOM_SIZE).

    In a cluster of `nodes`, Kamailio deals new calls round robin (call i lands on node i mod nodes, give
    or take where it starts) and a room's home is the node that claims it first, normally the one its first
    call lands on. The first count / ROOM_SIZE calls open one room each, room r on node r mod nodes; the
    rest of the first half of the calls join rooms of the node they land on; the second half join rooms of
    another node and are moved there (302): seconds after the rooms were opened at the bench's rates, so
    the openers have claimed their homes by then and every node is home to as many rooms. Filled one after
    another instead, with an even room size every room's first call lands on the same node
    (`--rooms-in-order` shows it). `count` must be a multiple of nodes x ROOM_SIZE.
    """
    if nodes == 1:
        return call // ROOM_SIZE
    per_node = count // ROOM_SIZE // nodes  # rooms homed on each node
    node = call % nodes
    if call >= count // 2:
        node = (node + 1 + (call // nodes) % (nodes - 1)) % nodes
    return (call // nodes) % per_node * nodes + node


class AnsweringServer(ThreadingHTTPServer):
    # A burst of callbacks (the outbox sends up to 64 at once) overflows http.server's backlog of 5, and
    # a dropped SYN is retried after 1 s, then 3 s: past the server's 5 s ICE timeout.
    request_queue_size = 1024
    daemon_threads = True


def answering_server(backend: Any) -> AnsweringServer:
    """An HTTP server on a free loopback port that answers each callback with `backend.answer(event)`
    (its JSON, or an empty body for None) and counts in `backend.abandoned`, under `backend.lock`, the
    answers the server stopped waiting for (its callback timeout, or it was stopped)."""

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
                with backend.lock:
                    backend.abandoned += 1

    return AnsweringServer((HOST, 0), Handler)


class Backend:
    """The application's callback backend: ICE -> connectConf into room-K, 200 to everything else."""

    def __init__(self, one_room: bool, nodes: int = 1) -> None:
        self.one_room = one_room
        self.nodes = nodes
        # With a cluster: its Redis (set while one runs); rooms then go by SIPp's call number, of `count`.
        self.redis_url: str | None = None
        self.count = 0
        self.lock = threading.Lock()
        self.reset()
        self.server = answering_server(self)
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
        cli = str(event.get("cli", ""))
        probe = cli == "probe"
        with self.lock:
            if probe:
                self.probe_calls.add(event.get("callid", ""))
                room = "room-0"
            elif self.redis_url is not None and cli.removeprefix("load").isdigit():
                # In a cluster the room goes by SIPp's call number (its From user, load1, load2, ...), the
                # order Kamailio deals the calls to the nodes in, not by the order the ICEs arrive in.
                room = f"room-{room_of(int(cli.removeprefix('load')) - 1, self.nodes, self.count)}"
                self.ices += 1
            else:
                room = f"room-{0 if self.one_room else room_of(self.ices, self.nodes)}"
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


def start_server(
    workdir: Path, backend: Backend, ports: Ports, extra_config: str = ""
) -> tuple[subprocess.Popen, int, int]:
    """The server on core 0 with the backend's application; `extra_config` is appended to its config (a
    `[limits]` section, say)."""
    sip, http = free_port(), free_port()
    config = workdir / "bench.toml"
    config.write_text(
        f'[server]\nsip = "{HOST}:{sip}"\nhttp = "{HOST}:{http}"\n'
        f"rtp_ports = [{ports.server[0]}, {ports.server[1]}]\n"
        f'data_dir = "{workdir / f"data-{sip}"}"\n\n'
        f'[[applications]]\nkey = "{KEY}"\nsecret = "{SECRET}"\ncallback_url = "{backend.url}"\n'
        f'numbers = ["{NUMBER}"]\n' + (f"\n{extra_config}" if extra_config else "")
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
    workdir: Path,
    sip_port: int,
    count: int,
    args: argparse.Namespace,
    ports: Ports,
    cores: str = PEER_CORE,
) -> subprocess.Popen:
    stat = workdir / f"sipp-{count}.csv"
    stat.unlink(missing_ok=True)
    cmd = [*pinned(cores), "sipp", f"{HOST}:{sip_port}", "-sf", str(workdir / "load.xml")]
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

    def __init__(
        self, workdir: Path, sip_port: int, ports: Ports, inband: bool, cores: str = PEER_CORE
    ) -> None:
        self.inband = inband
        self.lines: list[str] = []
        self.changed = threading.Condition()
        self.stopping = threading.Event()
        self.failures: list[str] = []
        self.packets_in = 0
        self.seconds = 0.0
        cmd = [*pinned(cores), sys.executable, "-m", "tonebridge.cli", "--log-level", "WARNING"]
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


def wait_for_joins(
    http_port: int,
    count: int,
    sipp: subprocess.Popen,
    limit: float,
    participants: Callable[[], int] | None = None,
) -> int:
    """Participants once all `count` have joined, joins stopped coming for 10 s, or `limit` passed;
    `participants` counts them (default: the server's metrics at `http_port`)."""
    deadline = time.monotonic() + limit
    seen, last_change = -1, time.monotonic()
    while time.monotonic() < deadline:
        if participants is not None:
            joined = participants()
        else:
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
        server, sip_port, http_port = start_server(workdir, backend, ports, BENCH_LIMITS)
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


# A cluster (--cluster N) ------------------------------------------------------------------------------


@dataclass
class NodeRow(Row):
    """One node's figures over the window (Row's, for that node alone) and where it runs."""

    node_id: str = ""
    core: int | None = None
    homes: int = 0
    moved_in: int | None = None
    moved_out: int | None = None

    @property
    def clean(self) -> bool | None:
        """p99 lateness < 5 ms, no skipped tick, no drop at its sockets and, on the node that collected the
        probe's digits (room-0's home), PIE request p99 < 20 ms; None when the node does not say."""
        if self.lateness.p99 is None or self.skipped is None:
            return None
        ok = (
            self.socket_drops == 0
            and self.skipped == 0
            and self.lateness.p99 < CLEAN_LATENESS_P99_MS
            and (self.pie_request_p99 is None or self.pie_request_p99 < CLEAN_PIE_REQUEST_P99_MS)
        )
        return ok


@dataclass
class ClusterRow:
    count: int
    nodes: list[NodeRow] = field(default_factory=list)
    legs: int = 0
    probe_pps: float | None = None
    probe_pies: int = 0
    other_pies: int = 0
    calls_ok: int = 0
    calls_failed: int = 0
    sipp_cpu_percent: float | None = None
    fronts_cpu_percent: float | None = None  # Kamailio, HAProxy and Redis together
    bench_cpu_percent: float | None = None  # this process (backend, polling) and the probe phone
    # SIP datagrams dropped at the nodes' SIP sockets and at Kamailio's, from the first call to the window's end
    sip_drops: int = 0
    front_drops: int = 0
    join_seconds: float = 0.0
    teardown_seconds: float = 0.0

    @property
    def cpu_percent(self) -> float:
        return sum(n.cpu_percent for n in self.nodes)

    @property
    def pie_request_p99(self) -> float | None:
        known = [n.pie_request_p99 for n in self.nodes if n.pie_request_p99 is not None]
        return max(known) if known else None

    @property
    def clean(self) -> bool | None:
        """Every call in its room, the probe's PIEs measured, and every node clean."""
        verdicts = [n.clean for n in self.nodes]
        if self.legs < self.count or False in verdicts:
            return False
        if None in verdicts or self.pie_request_p99 is None:
            return None
        return True


def free_block(size: int) -> int:
    """The first of `size` consecutive ports free for UDP and TCP (the nodes' SIP and HTTP ports)."""
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
    raise SystemExit("no block of free ports for the cluster's nodes")


class Cluster:
    """`tonebridge cluster up --nodes N` with the backend's application: Redis, N nodes (node i pinned to
    core i - 1), Kamailio and HAProxy, on free ports, in `workdir`/cluster-<count>; `close()` is
    `tonebridge cluster down`. The state it leaves (tonebridge.cluster.orchestrate) says what runs where."""

    def __init__(self, workdir: Path, backend: Backend, ports: Ports, nodes: int, count: int) -> None:
        from tonebridge.cluster import orchestrate

        self.orchestrate = orchestrate
        self.state_dir = workdir / f"cluster-{count}"
        shutil.rmtree(self.state_dir, ignore_errors=True)
        self.state_dir.mkdir(parents=True)
        config = self.state_dir / "bench.toml"
        config.write_text(
            f"[server]\nrtp_ports = [{ports.server[0]}, {ports.server[1]}]\n\n"
            f'[[applications]]\nkey = "{KEY}"\nsecret = "{SECRET}"\ncallback_url = "{backend.url}"\n'
            f'numbers = ["{NUMBER}"]\n\n{BENCH_LIMITS}'
        )
        # The command as users run it, in a process of its own: the nodes take the cores of its affinity in
        # turn, so it gets every core (node i on core i - 1). Tried three times: `up` sometimes takes a
        # process that is still starting for one that exited (its readiness check looks for a marker in
        # the command line before Redis has rewritten its own; seen with HAProxy once too).
        for attempt in range(3):
            self.sip_port, self.http_port = free_port(), free_port()
            cmd = ["taskset", "-c", PEER_CORES, sys.executable, "-m", "tonebridge.cli", "cluster", "up"]
            cmd += ["--nodes", str(nodes), "--config", str(config), "--state-dir", str(self.state_dir)]
            cmd += ["--sip", f"{HOST}:{self.sip_port}", "--http", f"{HOST}:{self.http_port}"]
            cmd += ["--redis-port", str(free_port()), "--first-node-port", str(free_block(2 * nodes))]
            done = subprocess.run(cmd, capture_output=True, text=True, timeout=180)
            (self.state_dir / "up.out").write_text(done.stdout + done.stderr)
            if done.returncode == 0:
                break
            print(f"  tonebridge cluster up failed (attempt {attempt + 1}): {done.stderr.strip()[:300]}")
            self.close()
        else:
            raise SystemExit(f"tonebridge cluster up failed:\n{done.stdout}{done.stderr}")
        state = orchestrate.load_state(self.state_dir)
        assert state is not None
        self.state = state
        self.processes = [orchestrate.Managed(**p) for p in state["processes"]]
        self.nodes = [
            (plan, next(p for p in self.processes if p.name == plan["node_id"])) for plan in state["nodes"]
        ]

    def node_http(self, plan: dict) -> int:
        return int(plan["http"].rsplit(":", 1)[1])

    def pids(self, *kinds: str) -> list[int]:
        """Live pids of the processes of these kinds, with their children (Kamailio's workers)."""
        found = []
        for proc in self.processes:
            if proc.kind in kinds:
                found += self.orchestrate.group_members(proc.pid, proc.marker)
        return found

    def homes(self) -> dict[str, str]:
        """Conference -> node id, from the cluster's Redis."""
        import redis

        with redis.Redis.from_url(self.state["redis"], socket_timeout=5, decode_responses=True) as db:
            return {
                key.removeprefix("tonebridge:home:"): db.get(key) for key in db.scan_iter("tonebridge:home:*")
            }

    def close(self) -> None:
        cmd = [sys.executable, "-m", "tonebridge.cli", "cluster", "down", "--state-dir", str(self.state_dir)]
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=180)
        (self.state_dir / "down.out").write_text(done.stdout + done.stderr)
        if done.returncode != 0:
            print(f"  tonebridge cluster down: {done.stdout}{done.stderr}", flush=True)


def pids_ticks(pids: list[int]) -> int:
    total = 0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])
    return total


def measure_cluster(
    workdir: Path, backend: Backend, count: int, args: argparse.Namespace, ports: Ports
) -> ClusterRow:
    row = ClusterRow(count)
    backend.reset()
    cluster: Cluster | None = None
    sipp = None
    probe: Probe | None = None
    try:
        cluster = Cluster(workdir, backend, ports, args.cluster, count)
        backend.redis_url, backend.count = cluster.state["redis"], count
        nodes = cluster.nodes
        time.sleep(1)
        idle_rss = [rss_kib(proc.pid) for _, proc in nodes]
        sip_ports = [int(plan["sip"].rsplit(":", 1)[1]) for plan, _ in nodes]
        sip_before = [udp_drops(port, port) for port in [cluster.sip_port, *sip_ports]]
        sipp = start_sipp(workdir, cluster.sip_port, count, args, ports, PEER_CORES)
        started = time.monotonic()

        def joined() -> int:
            return sum(
                int(dig(metrics(cluster.node_http(plan)), "conferences", "participants") or 0)
                for plan, _ in nodes
            )

        row.legs = wait_for_joins(cluster.http_port, count, sipp, count / args.rate + 45, joined)
        row.join_seconds = time.monotonic() - started
        if row.legs < count:
            print(f"  only {row.legs} of {count} calls joined their rooms", flush=True)
        time.sleep(args.settle)

        others = {
            "sipp": [*process_tree(sipp.pid)],
            "fronts": cluster.pids("kamailio", "haproxy", "redis"),
        }
        before = [metrics(cluster.node_http(plan)) for plan, _ in nodes]
        drops_before = [udp_drops(*plan["rtp_ports"]) for plan, _ in nodes]
        cpu_before = [cpu_ticks(proc.pid) for _, proc in nodes]
        core_before = [core_busy_ticks(str(plan["core"])) for plan, _ in nodes]
        others_before = {name: pids_ticks(pids) for name, pids in others.items()}
        self_before = os.times()
        t0 = time.monotonic()
        probe = Probe(workdir, cluster.sip_port, ports, args.inband, PEER_CORES)
        probe_tree = process_tree(probe.proc.pid)
        probe_before = pids_ticks(probe_tree)
        probe_thread = threading.Thread(target=probe.run, daemon=True)
        probe_thread.start()
        time.sleep(args.window)
        cpu_after = [cpu_ticks(proc.pid) for _, proc in nodes]
        core_after = [core_busy_ticks(str(plan["core"])) for plan, _ in nodes]
        others_after = {name: pids_ticks(pids) for name, pids in others.items()}
        probe_after = pids_ticks(probe_tree)
        self_after = os.times()
        t1 = time.monotonic()
        drops_after = [udp_drops(*plan["rtp_ports"]) for plan, _ in nodes]
        sip_after = [udp_drops(port, port) for port in [cluster.sip_port, *sip_ports]]
        sip_gained = [
            sum(d - before_.get(inode, 0) for inode, d in after_.items())
            for before_, after_ in zip(sip_before, sip_after, strict=True)
        ]
        row.front_drops, row.sip_drops = sip_gained[0], sum(sip_gained[1:])
        rss = [rss_kib(proc.pid) for _, proc in nodes]
        after = [metrics(cluster.node_http(plan)) for plan, _ in nodes]
        probe.stopping.set()
        probe_thread.join(30)
        window = t1 - t0

        row.sipp_cpu_percent = 100.0 * (others_after["sipp"] - others_before["sipp"]) / CLK_TCK / window
        row.fronts_cpu_percent = 100.0 * (others_after["fronts"] - others_before["fronts"]) / CLK_TCK / window
        own = (self_after.user + self_after.system) - (self_before.user + self_before.system)
        row.bench_cpu_percent = 100.0 * (own + (probe_after - probe_before) / CLK_TCK) / window
        if probe.seconds:
            row.probe_pps = probe.packets_in / probe.seconds
        homes = cluster.homes()
        # Read after the probe hung up: its last PIE may have been on its way when the window closed.
        final = [metrics(cluster.node_http(plan)) for plan, _ in nodes]
        for k, (plan, _) in enumerate(nodes):
            node = NodeRow(count, node_id=plan["node_id"], core=plan["core"])
            b, a = before[k], after[k]
            node.legs = int(dig(a, "conferences", "participants") or 0)
            node.count = node.legs
            node.rooms = int(dig(a, "conferences", "rooms") or 0)
            node.homes = sum(1 for home in homes.values() if home == node.node_id)
            node.moved_in = dig(final[k], "cluster", "calls_moved_in")  # type: ignore[assignment]
            node.moved_out = dig(final[k], "cluster", "calls_moved_out")  # type: ignore[assignment]
            node.cpu_percent = 100.0 * (cpu_after[k] - cpu_before[k]) / CLK_TCK / window
            core_percent = 100.0 * (core_after[k] - core_before[k]) / CLK_TCK / window
            node.other_cpu_percent = max(0.0, core_percent - node.cpu_percent)
            node.rss_kib_per_leg = (rss[k] - idle_rss[k]) / node.legs if node.legs else None
            node.tick = window_spread(b, a, "tickDurationMs")
            node.lateness = window_spread(b, a, "tickLatenessMs")
            node.skipped = delta(b, a, "media", "skippedTicks")
            node.packets_in = delta(b, a, "media", "packets", "in")
            node.packets_out = delta(b, a, "media", "packets", "out")
            node.packets_dropped = delta(b, a, "media", "packets", "dropped")
            node.send_errors = delta(b, a, "media", "packets", "sendErrors")
            media_legs = dig(a, "media", "legs")
            if node.packets_out is not None and isinstance(media_legs, int) and media_legs:
                node.sent_pps = node.packets_out / media_legs / window
            node.socket_drops = sum(d - drops_before[k].get(inode, 0) for inode, d in drops_after[k].items())
            node.pie_request_p50 = dig(final[k], "conferences", "pieRequestLatencyMsP50")  # type: ignore[assignment]
            node.pie_request_p99 = dig(final[k], "conferences", "pieRequestLatencyMsP99")  # type: ignore[assignment]
            node.pie_p50 = dig(final[k], "conferences", "pieLatencyMsP50")  # type: ignore[assignment]
            node.pie_p99 = dig(final[k], "conferences", "pieLatencyMsP99")  # type: ignore[assignment]
            row.nodes.append(node)
        with backend.lock:
            row.probe_pies, row.other_pies = backend.probe_pies, backend.other_pies
            rooms = sorted(backend.rooms)
            abandoned = backend.abandoned
        if abandoned:
            print(f"  {abandoned} callbacks abandoned by a node before the backend answered", flush=True)
        if probe.failures:
            print(f"  probe failures: {probe.failures[:3]}", flush=True)
        unhomed = sorted(set(rooms) - set(homes))
        if unhomed:
            print(f"  rooms with no home in Redis: {unhomed[:5]}", flush=True)

        # The window is measured: what follows only ends the calls (through HAProxy), within a bound.
        started = time.monotonic()
        problems = end_calls(cluster.http_port, rooms, sipp, args.teardown)
        row.teardown_seconds = time.monotonic() - started
        if problems:
            print(f"  ending the calls: {problems}", flush=True)
    finally:
        if probe is not None:
            probe.close()
        stop(sipp)
        if cluster is not None:
            cluster.close()
    row.calls_ok, row.calls_failed = sipp_result(workdir, count)
    return row


def cluster_table(rows: list[ClusterRow]) -> str:
    header = [
        "N",
        "node",
        "core",
        "legs",
        "rooms (homes)",
        "calls moved in / out",
        "CPU %",
        "CPU % per 100 legs",
        "others on its core %",
        "RSS KiB/leg",
        "tick ms p50 / p99 / max",
        "lateness ms p50 / p99 / max",
        "skipped ticks",
        "sent pkts/s per leg",
        "pkts in",
        "pkts out",
        "socket drops",
        "PIE request ms p50 / p99",
        "PIE ms p50 / p99",
        "clean",
    ]
    lines = ["| " + " | ".join(header) + " |", "|" + "---:|" * len(header)]
    for r in rows:
        for n in r.nodes:
            per_100 = 100.0 * n.cpu_percent / n.legs if n.legs else None
            cells = [
                f"{r.count:,}",
                n.node_id,
                str(n.core),
                f"{n.legs:,}",
                f"{n.rooms} ({n.homes})",
                f"{fmt(n.moved_in, 0)} / {fmt(n.moved_out, 0)}",
                fmt(n.cpu_percent),
                fmt(per_100, 2),
                fmt(n.other_cpu_percent),
                fmt(n.rss_kib_per_leg),
                n.tick.cell(),
                n.lateness.cell(),
                fmt(n.skipped, 0),
                fmt(n.sent_pps),
                fmt(n.packets_in, 0),
                fmt(n.packets_out, 0),
                f"{n.socket_drops:,}",
                f"{fmt(n.pie_request_p50, 2)} / {fmt(n.pie_request_p99, 2)}",
                f"{fmt(n.pie_p50, 2)} / {fmt(n.pie_p99, 2)}",
                verdict(n.clean),
            ]
            lines.append("| " + " | ".join(cells) + " |")
        per_100 = 100.0 * r.cpu_percent / r.legs if r.legs else None
        cells = [f"{r.count:,}", "**all**", "", f"{r.legs:,}", "", "", fmt(r.cpu_percent), fmt(per_100, 2)]
        cells += [""] * (len(header) - len(cells) - 1) + [f"**{verdict(r.clean)}**"]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def cluster_summary(rows: list[ClusterRow]) -> str:
    header = [
        "N",
        "legs in rooms",
        "nodes' CPU %",
        "SIPp CPU %",
        "Kamailio + HAProxy + Redis CPU %",
        "bench + probe CPU %",
        "probe pkts/s",
        "PIEs probe / other",
        "calls ended / failed / cut",
        "joined in s",
        "SIP socket drops nodes / Kamailio",
        "clean",
    ]
    lines = ["| " + " | ".join(header) + " |", "|" + "---:|" * len(header)]
    for r in rows:
        cells = [
            f"{r.count:,}",
            f"{r.legs:,}",
            fmt(r.cpu_percent),
            fmt(r.sipp_cpu_percent),
            fmt(r.fronts_cpu_percent),
            fmt(r.bench_cpu_percent),
            fmt(r.probe_pps),
            f"{r.probe_pies} / {r.other_pies}",
            f"{r.calls_ok} / {r.calls_failed} / {r.count - r.calls_ok - r.calls_failed}",
            f"{r.join_seconds:.0f}",
            f"{r.sip_drops:,} / {r.front_drops:,}",
            verdict(r.clean),
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


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


def run_cluster(args: argparse.Namespace, counts: list[int], ports: Ports) -> None:
    """The sweep with `tonebridge cluster up --nodes args.cluster` in place of one server."""
    # This process (backend, probe, polling), SIPp and the probe float over every core, as the fronts do.
    os.sched_setaffinity(0, set(range(os.cpu_count() or 1)))
    rows: list[ClusterRow] = []
    backend = Backend(False, 1 if args.rooms_in_order else args.cluster)
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
                    row = measure_cluster(workdir, backend, count, args, ports)
                except (OSError, ValueError, KeyError) as exc:
                    print(f"N={count}: failed: {exc!r}", flush=True)
                    continue
                rows.append(row)
                nodes = " ".join(
                    f"[{n.node_id} core {n.core}: legs={n.legs} homes={n.homes} "
                    f"moved_in={fmt(n.moved_in, 0)} cpu={n.cpu_percent:.1f}% "
                    f"others_on_core={n.other_cpu_percent:.1f}% lateness={n.lateness.cell()} "
                    f"skipped={fmt(n.skipped, 0)} sent_pps={fmt(n.sent_pps)} socket_drops={n.socket_drops} "
                    f"send_errors={fmt(n.send_errors, 0)} pie_request_p99={fmt(n.pie_request_p99, 2)} "
                    f"clean={verdict(n.clean)}]"
                    for n in row.nodes
                )
                print(
                    f"N={count}: legs={row.legs} {nodes} sipp_cpu={fmt(row.sipp_cpu_percent)}% "
                    f"fronts_cpu={fmt(row.fronts_cpu_percent)}% bench_cpu={fmt(row.bench_cpu_percent)}% "
                    f"probe_pps={fmt(row.probe_pps)} pies={row.probe_pies}/{row.other_pies} "
                    f"calls={row.calls_ok}/{row.calls_failed} joined_in={row.join_seconds:.0f}s "
                    f"sip_drops={row.sip_drops}/{row.front_drops} "
                    f"teardown={row.teardown_seconds:.0f}s clean={verdict(row.clean)} "
                    f"({time.monotonic() - started:.0f}s)",
                    flush=True,
                )
        finally:
            backend.close()
    dtmf = "in-band detection" if args.inband else "RFC 4733"
    order = ", rooms filled in order" if args.rooms_in_order else ""
    print()
    print(
        f"RTP load through a cluster of {args.cluster} node(s) (node i on core i - 1; SIPp, probe, Kamailio, "
        f"HAProxy and Redis float over all {os.cpu_count()} cores), rooms of {ROOM_SIZE}{order}, {dtmf}, "
        f"{args.window:g} s window per N:"
    )
    print(cluster_table(rows))
    print()
    print(cluster_summary(rows))
    clean = [r.count for r in rows if r.clean]
    best = f"{max(clean):,}" if clean else "none of the counts run"
    print(
        f"\nLargest clean N (all legs in, on every node p99 lateness < {CLEAN_LATENESS_P99_MS:g} ms, no "
        f"skipped tick, no socket drop; PIE request p99 < {CLEAN_PIE_REQUEST_P99_MS:g} ms): {best}"
    )


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
    parser.add_argument(
        "--quick",
        action="store_true",
        help="smoke test: 20 legs, 3 s window, 1 s settle (with --cluster: NODES x 10 legs at 10 calls/s)",
    )
    parser.add_argument("--keep", type=Path, help="work in this folder and keep it (logs, SIPp output)")
    parser.add_argument(
        "--cluster",
        type=int,
        metavar="NODES",
        help="run `tonebridge cluster up --nodes NODES` (node i on core i - 1, Kamailio, HAProxy, Redis) "
        "instead of one server; SIPp calls Kamailio and every node is measured",
    )
    parser.add_argument(
        "--rooms-in-order",
        action="store_true",
        help="with --cluster: fill the rooms one after another as on one server (see room_of)",
    )
    args = parser.parse_args()
    if args.cluster is not None and args.cluster < 1:
        parser.error("--cluster needs at least 1 node")
    if args.cluster and args.one_room:
        parser.error("--cluster runs rooms of 10: one room has one home, on one node")
    if args.quick and args.cluster:
        args.counts = args.counts or str(ROOM_SIZE * max(2, args.cluster))
        # 10 calls a second: the moved calls come a second after the rooms' first calls, which have claimed
        # their homes by then even on a busy CI machine.
        args.rate = 10.0 if args.rate == parser.get_default("rate") else args.rate
    if args.quick:
        args.counts = args.counts or "20"
        args.window, args.settle = 3.0, 1.0
    variant = "one-room" if args.one_room else "inband" if args.inband else "rooms"
    counts = [int(c) for c in (args.counts or DEFAULT_COUNTS[variant]).split(",") if c.strip()]
    if args.cluster and any(count % (ROOM_SIZE * args.cluster) for count in counts):
        parser.error(f"with --cluster {args.cluster} every count is a multiple of {ROOM_SIZE * args.cluster}")
    # A cluster's nodes split the server's range: each gets room for about 94 % of the legs (1.5 / nodes of
    # them with two nodes), so an uneven spread of the homes still finds ports.
    server_legs = max(counts) if (args.cluster or 1) == 1 else math.ceil(max(counts) * 0.75 * args.cluster)
    ports = plan_ports(max(counts), server_legs)
    exclusive(ports)
    raise_fd_limit(max(counts))
    # A polite kill ends the run through its `finally` blocks, which stop the server and SIPp.
    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, lambda number, frame: sys.exit(128 + number))
    if args.cluster:
        run_cluster(args, counts, ports)
        return
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
