"""Soak benchmark: `tonebridge serve` carrying about N churning participants for a long time, with presses,
callouts and kicks; memory, file descriptors, tasks, ports and store size must stay flat.

A fresh server runs pinned to core 0 (`taskset -c 0`) on a generated config: one Sinch-style application
whose callback backend is a small HTTP server in this process, a `[[trunks]]` entry pointing at a SIPp UAS,
and a short `[records] retention_days` and `[callbacks] retention_seconds` (`--retention`, 3 minutes by
default) so that the store reaches its steady state within the run. Every ICE gets `connectConf` in detect
mode (maxDigits 1, so every press ends a collection and sends a PIE) into the room of `room-0..room-K`
(rooms of ten) with the fewest live callers.

The load, all of it on core 1:
- callers: SIPp places calls at `--rate` per second up to N at once (`-l N`), so the population stays at N
  as calls end and are replaced. Each call offers PCMU and telephone-event, streams looped mu-law
  speech-like noise (`rtp_stream`), presses a digit as RFC 4733 (SIPp's recorded pcap) every
  `--press-interval` seconds and hangs up itself after a number of presses drawn (seeded, `--seed`) from
  `--presses LOW-HIGH` and given to SIPp in an injection file. A BYE from the server (a kick) ends it
  at any time.
- callouts: every `--callout-interval` seconds a signed `conferenceCallout` (POST /calling/v1/callouts)
  into a random room, through the trunk to a SIPp UAS that answers, streams speech and presses one digit;
  each callout is kicked by the bench after a seeded hold of 20-50 s (`--callout-hold`).
- kicks: every `--kick-interval` seconds a signed DELETE /calling/v1/conferences/id/{room}/{callId} of a
  random live caller.

Every `--sample` seconds (10 by default) the bench records the server's RSS (/proc/PID/status VmRSS),
open file descriptors (/proc/PID/fd), and from GET /tonebridge/v1/metrics its asyncio tasks, active calls,
rooms and participants, RTP ports in use, media legs and pending callbacks; the store's size (the SQLite
file with its -wal and -shm) and its row counts. After `--minutes` of load the bench stops placing calls,
empties every room through the API and waits for every call to end and every callback to go out (the
drain). It prints a table of the figures idle (before any call), at the start of the load (the first
sample once the population reached N and the warm-up, `--warmup` seconds, by default three retentions
and two minutes, has passed), at its end and after the drain (once the figures are back at idle, or 30 s
after the last callback went out), with totals: calls placed, presses sent, PIEs
received, callouts, kicks and failures.

Verdict flat, exit 0, when: RSS at the end is within 10 % (or 8 MiB) of the start; the store's size at
the end is within 10 % (or 1 MiB) of the start; and after the drain the file descriptors, tasks, calls,
rooms, participants, ports and legs are back at their idle figures. Otherwise "not flat", exit 1; exit 2
when the load itself failed (the population never reached N, or more than 5 % of the calls and callouts
failed). Presses without a PIE are reported, not counted as failures: a kick in the middle of a press, or
a SIPp too busy to play a call's last press before its BYE, costs one.

    .venv/bin/python bench/soak.py                                  # 300 participants, 30 minutes
    .venv/bin/python bench/soak.py --participants 20 --minutes 1 --press-interval 2 --presses 1-9 \\
        --retention 15 --warmup 25 --sample 5                       # CI-sized (test_soak_smoke.py)

Needs `sipp` (Debian sip-tester 3.6.1, with its pcaps in /usr/share/sip-tester) and `taskset`; loopback
only. Helpers (processes, /proc, metrics, speech) come from bench/rtp_load.py.
"""

from __future__ import annotations

import argparse
import base64
import csv
import fcntl
import hashlib
import hmac
import json
import math
import os
import random
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from rtp_load import (
    HOST,
    KEY,
    NUMBER,
    PEER_CORE,
    SECRET,
    SERVER_CORE,
    answering_server,
    dig,
    free_port,
    metrics,
    pinned,
    raise_fd_limit,
    rss_kib,
    speech_like_ulaw,
    stop,
)

ROOM_SIZE = 10
CALLEE = "+15559990000"
PCAPS = Path("/usr/share/sip-tester")
DTMF = {"mode": "detect", "maxDigits": 1, "timeoutMills": 3000}
# Port slots below the ephemeral range and above those of the other benches (rtp_load's from 6000, the
# flood bench's 15000-25999, probe phones' 26500-26599), one run per slot (its lock), so that a CI-sized
# run can go on beside a long one: SIPp's callers' media, the UAS's media, then the server's RTP range.
SLOTS = (26700, 28700, 30700)
SLOT_SIZE = 2000
CALLER_MEDIA, TRUNK_MEDIA, SERVER_RTP = 0, 700, 1000  # offsets in a slot
RSS_GROWTH, RSS_SLACK_KIB = 0.10, 8 * 1024
STORE_GROWTH, STORE_SLACK = 0.10, 1024 * 1024
# Drain figures that must be back at their idle values.
IDLE_KEYS = ("fds", "tasks", "calls", "rooms", "participants", "ports", "legs")

CALLER = """<?xml version="1.0" encoding="ISO-8859-1" ?>
<!-- A churning conference caller: streams looped mu-law audio, presses a digit (RFC 4733) every
     PRESS_MS ms and hangs up after [field0] presses; a BYE from the server (a kick) ends it any time. -->
<scenario name="soak caller">
  <send retrans="500">
    <![CDATA[
      INVITE sip:[service]@[remote_ip]:[remote_port] SIP/2.0
      Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
      From: soak <sip:soak[call_number]@[local_ip]:[local_port]>;tag=[pid]S[call_number]
      To: <sip:[service]@[remote_ip]:[remote_port]>
      Call-ID: [call_id]
      CSeq: 1 INVITE
      Contact: <sip:soak@[local_ip]:[local_port];transport=[transport]>
      Max-Forwards: 70
      Content-Type: application/sdp
      Content-Length: [len]

      v=0
      o=soak 1 1 IN IP[local_ip_type] [local_ip]
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
      From: soak <sip:soak[call_number]@[local_ip]:[local_port]>;tag=[pid]S[call_number]
      To: <sip:[service]@[remote_ip]:[remote_port]>[peer_tag_param]
      Call-ID: [call_id]
      CSeq: 1 ACK
      Max-Forwards: 70
      Content-Length: 0

    ]]>
  </send>
  <nop>
    <action>
      <exec rtp_stream="AUDIO_FILE,-1,0"/>
      <assignstr assign_to="presses_text" value="[field0]"/>
      <todouble assign_to="left" variable="presses_text"/>
    </action>
  </nop>
  <label id="1"/>
  <!-- The first receive with a timeout: SIPp's count of its timeouts is the count of presses. -->
  <recv request="BYE" timeout="PRESS_MS" ontimeout="2" next="4"/>
  <label id="2"/>
  <nop>
    <action>
      <exec play_pcap_audio="pcap/dtmf_2833_5.pcap"/>
      <add assign_to="left" value="-1"/>
      <test assign_to="done" variable="left" compare="less_than" value="1"/>
    </action>
  </nop>
  <nop next="3" test="done"/>
  <nop next="1"/>
  <label id="3"/>
  <!-- Two seconds for the last digit (a 280 ms event) to end before the BYE. -->
  <recv request="BYE" timeout="2000" ontimeout="6" next="4"/>
  <label id="6"/>
  <send retrans="500">
    <![CDATA[
      BYE sip:[service]@[remote_ip]:[remote_port] SIP/2.0
      Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
      From: soak <sip:soak[call_number]@[local_ip]:[local_port]>;tag=[pid]S[call_number]
      To: <sip:[service]@[remote_ip]:[remote_port]>[peer_tag_param]
      Call-ID: [call_id]
      CSeq: 2 BYE
      Max-Forwards: 70
      Content-Length: 0

    ]]>
  </send>
  <recv response="200" next="5"/>
  <label id="4"/>
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
  <label id="5"/>
  <nop/>
</scenario>
"""

TRUNK_UAS = """<?xml version="1.0" encoding="ISO-8859-1" ?>
<!-- A callee behind the trunk: answers with PCMU and telephone-event, streams looped mu-law audio, presses
     a digit (RFC 4733) 1.5 s after the ACK and waits for the server's BYE (the bench kicks every callout). -->
<scenario name="soak trunk callee">
  <recv request="INVITE" crlf="true"/>
  <send>
    <![CDATA[
      SIP/2.0 200 OK
      [last_Via:]
      [last_From:]
      [last_To:];tag=[pid]T[call_number]
      [last_Call-ID:]
      [last_CSeq:]
      Contact: <sip:[local_ip]:[local_port];transport=[transport]>
      Content-Type: application/sdp
      Content-Length: [len]

      v=0
      o=callee 1 1 IN IP[local_ip_type] [local_ip]
      s=-
      c=IN IP[media_ip_type] [media_ip]
      t=0 0
      m=audio [rtpstream_audio_port] RTP/AVP 0 101
      a=rtpmap:0 PCMU/8000
      a=rtpmap:101 telephone-event/8000
      a=fmtp:101 0-16

    ]]>
  </send>
  <recv request="ACK" crlf="true"/>
  <nop><action><exec rtp_stream="AUDIO_FILE,-1,0"/></action></nop>
  <recv request="BYE" timeout="1500" ontimeout="1" next="2"/>
  <label id="1"/>
  <nop><action><exec play_pcap_audio="pcap/dtmf_2833_4.pcap"/></action></nop>
  <recv request="BYE"/>
  <label id="2"/>
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


# The application's side -----------------------------------------------------------------------------------


def signed_request(http_port: int, method: str, path: str, body: dict | None = None) -> tuple[int, bytes]:
    """A request signed as the application signs it (the Sinch scheme: tests/integration/sinch_app.py);
    its status and body, errors included."""
    data = json.dumps(body).encode() if body is not None else b""
    content_type = "application/json" if body is not None else ""
    timestamp = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    md5 = base64.b64encode(hashlib.md5(data).digest()).decode() if data else ""
    text = f"{method}\n{md5}\n{content_type}\nx-timestamp:{timestamp}\n{path}"
    digest = hmac.new(base64.b64decode(SECRET), text.encode(), hashlib.sha256).digest()
    request = urllib.request.Request(f"http://{HOST}:{http_port}{path}", data=data or None, method=method)
    request.add_header("Authorization", f"Application {KEY}:{base64.b64encode(digest).decode()}")
    request.add_header("x-timestamp", timestamp)
    if content_type:
        request.add_header("Content-Type", content_type)
    try:
        with urllib.request.urlopen(request, timeout=30) as reply:
            return reply.status, reply.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


class Backend:
    """The callback backend: ICE -> connectConf into the room with the fewest live callers; keeps the live
    calls (ICE or callout to DiCE) and counts PIEs. HTTP/1.0, one connection per callback, so that the
    server holds no kept-alive connection to it once the load is over."""

    def __init__(self, rooms: int) -> None:
        self.rooms = [f"room-{i}" for i in range(rooms)]
        self.lock = threading.Lock()
        self.callers: dict[str, str] = {}  # live inbound call -> room
        self.callouts: dict[str, str] = {}  # live callout -> room
        self.ices = self.dices = self.pies = self.callout_pies = self.abandoned = 0
        self.other: dict[str, int] = {}
        self.server = answering_server(self)
        self.url = f"http://{HOST}:{self.server.server_address[1]}/callbacks"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def answer(self, event: dict) -> dict | None:
        kind, call_id = event.get("event"), str(event.get("callid", ""))
        with self.lock:
            if kind == "ice":
                self.ices += 1
                load = {room: 0 for room in self.rooms}
                for room in self.callers.values():
                    load[room] += 1
                room = min(self.rooms, key=lambda r: load[r])
                self.callers[call_id] = room
                return {
                    "action": {"name": "connectConf", "conferenceId": room, "conferenceDtmfOptions": DTMF}
                }
            if kind == "pie":
                self.pies += 1
                self.callout_pies += call_id in self.callouts
            elif kind == "dice":
                self.dices += 1
                self.callers.pop(call_id, None)
                self.callouts.pop(call_id, None)
            else:
                self.other[str(kind)] = self.other.get(str(kind), 0) + 1
        return None

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@dataclass
class Totals:
    callouts: int = 0
    callouts_failed: int = 0
    kicks: int = 0
    kicks_missed: int = 0  # 404: the call had just ended
    kicks_failed: int = 0
    errors: list[str] = field(default_factory=list)

    def error(self, text: str) -> None:
        if len(self.errors) < 20:
            self.errors.append(text)


class Driver:
    """Callouts and kicks through the API, on a schedule, until stopped."""

    def __init__(
        self, http_port: int, backend: Backend, args: argparse.Namespace, rng: random.Random
    ) -> None:
        self.http_port = http_port
        self.backend = backend
        self.args = args
        self.rng = rng
        self.totals = Totals()
        self.stopping = threading.Event()
        self.callout_ends: dict[str, float] = {}  # callout -> when the bench kicks it
        self.thread = threading.Thread(target=self.run, daemon=True)

    def run(self) -> None:
        now = time.monotonic()
        next_callout, next_kick = now, now + self.args.kick_interval
        while not self.stopping.is_set():
            now = time.monotonic()
            try:
                if now >= next_callout:
                    next_callout += self.args.callout_interval
                    self.callout()
                if now >= next_kick:
                    next_kick += self.args.kick_interval
                    with self.backend.lock:
                        callers = sorted(self.backend.callers.items())
                    if callers:
                        call_id, room = self.rng.choice(callers)
                        self.kick(room, call_id)
                for call_id, ends in list(self.callout_ends.items()):
                    if now >= ends:
                        del self.callout_ends[call_id]
                        with self.backend.lock:
                            room = self.backend.callouts.get(call_id)
                        if room is not None:
                            self.kick(room, call_id)
            except OSError as exc:  # the server not answering at all
                self.totals.error(repr(exc))
            self.stopping.wait(0.2)

    def callout(self) -> None:
        room = self.rng.choice(self.backend.rooms)
        body = {
            "method": "conferenceCallout",
            "conferenceCallout": {
                "destination": {"type": "number", "endpoint": CALLEE},
                "cli": NUMBER,
                "conferenceId": room,
                "conferenceDtmfOptions": DTMF,
                "enableDice": True,
            },
        }
        status, answer = signed_request(self.http_port, "POST", "/calling/v1/callouts", body)
        self.totals.callouts += 1
        if status != 200:
            self.totals.callouts_failed += 1
            self.totals.error(f"callout answered {status}: {answer[:200]!r}")
            return
        call_id = json.loads(answer)["callId"]
        with self.backend.lock:
            # A DiCE may come before this line only if the callout failed at once; it is then not live.
            self.backend.callouts[call_id] = room
        low, high = self.args.callout_hold
        self.callout_ends[call_id] = time.monotonic() + self.rng.uniform(low, high)

    def kick(self, room: str, call_id: str) -> None:
        status, answer = signed_request(
            self.http_port, "DELETE", f"/calling/v1/conferences/id/{room}/{call_id}"
        )
        self.totals.kicks += 1
        if status == 404:
            self.totals.kicks_missed += 1
        elif status >= 300:
            self.totals.kicks_failed += 1
            self.totals.error(f"kick answered {status}: {answer[:200]!r}")


# Figures --------------------------------------------------------------------------------------------------


@dataclass
class Sample:
    at: float  # seconds since the load started
    rss_kib: int
    fds: int
    tasks: int
    calls: int
    rooms: int
    participants: int
    ports: int
    legs: int
    pending: int
    store_bytes: int
    wal_bytes: int
    rows: dict[str, int]


def store_files(data_dir: Path) -> tuple[int, int]:
    """Bytes of the store: the database file with its -wal and -shm, and the -wal alone."""
    total = wal = 0
    for path in data_dir.glob("tonebridge.sqlite3*"):
        with_size = path.stat().st_size if path.exists() else 0
        total += with_size
        if path.name.endswith("-wal"):
            wal = with_size
    return total, wal


def row_counts(data_dir: Path) -> dict[str, int]:
    tables = ("calls", "call_conferences", "callback_attempts", "outbox")
    try:
        db = sqlite3.connect(f"file:{data_dir / 'tonebridge.sqlite3'}?mode=ro", uri=True, timeout=5)
        try:
            return {t: db.execute(f"SELECT count(*) FROM {t}").fetchone()[0] for t in tables}  # noqa: S608
        finally:
            db.close()
    except sqlite3.Error:
        return {}


def sample(pid: int, http_port: int, data_dir: Path, since: float) -> Sample:
    m = metrics(http_port)
    total, wal = store_files(data_dir)

    def number(*keys: str) -> int:
        value = dig(m, *keys)
        return int(value) if isinstance(value, int | float) else -1

    return Sample(
        at=time.monotonic() - since,
        rss_kib=rss_kib(pid),
        fds=len(os.listdir(f"/proc/{pid}/fd")),
        tasks=number("tasks"),
        calls=number("calls", "active"),
        rooms=number("conferences", "rooms"),
        participants=number("conferences", "participants"),
        ports=number("media", "portsInUse"),
        legs=number("media", "legs"),
        pending=number("outbox", "pending"),
        store_bytes=total,
        wal_bytes=wal,
        rows=row_counts(data_dir),
    )


def line(s: Sample) -> str:
    rows = " ".join(f"{k}={v}" for k, v in s.rows.items())
    return (
        f"t={s.at:6.0f}s rss={s.rss_kib / 1024:.1f}MiB fds={s.fds} tasks={s.tasks} calls={s.calls} "
        f"rooms={s.rooms} participants={s.participants} ports={s.ports} legs={s.legs} pending={s.pending} "
        f"store={s.store_bytes / 1024:.0f}KiB (wal {s.wal_bytes / 1024:.0f}KiB) {rows}"
    )


def table(columns: list[tuple[str, Sample]]) -> str:
    def rows_of(s: Sample, table_name: str) -> str:
        return f"{s.rows[table_name]:,}" if table_name in s.rows else "n/a"

    fields: list[tuple[str, object]] = [
        ("at (s into the load)", lambda s: f"{s.at:,.0f}"),
        ("RSS MiB", lambda s: f"{s.rss_kib / 1024:.1f}"),
        ("open fds", lambda s: f"{s.fds:,}"),
        ("asyncio tasks", lambda s: f"{s.tasks:,}"),
        ("active calls", lambda s: f"{s.calls:,}"),
        ("rooms", lambda s: f"{s.rooms:,}"),
        ("participants", lambda s: f"{s.participants:,}"),
        ("RTP ports in use", lambda s: f"{s.ports:,}"),
        ("media legs", lambda s: f"{s.legs:,}"),
        ("callbacks pending", lambda s: f"{s.pending:,}"),
        ("store KiB (db + wal + shm)", lambda s: f"{s.store_bytes / 1024:,.0f}"),
        ("of which WAL KiB", lambda s: f"{s.wal_bytes / 1024:,.0f}"),
        *(
            (f"rows: {t}", lambda s, t=t: rows_of(s, t))
            for t in ("calls", "call_conferences", "callback_attempts", "outbox")
        ),
    ]
    out = ["| figure | " + " | ".join(name for name, _ in columns) + " |"]
    out.append("|---|" + "---:|" * len(columns))
    for label, get in fields:
        out.append(f"| {label} | " + " | ".join(get(s) for _, s in columns) + " |")  # type: ignore[operator]
    return "\n".join(out)


def judge(idle: Sample, start: Sample, end: Sample, drain: Sample) -> list[str]:
    """What is not flat; empty when everything is."""
    problems = []
    growth = end.rss_kib - start.rss_kib
    if growth > max(RSS_GROWTH * start.rss_kib, RSS_SLACK_KIB):
        problems.append(
            f"RSS grew {growth / 1024:.1f} MiB ({100 * growth / start.rss_kib:.1f} %) over the load"
        )
    grown = end.store_bytes - start.store_bytes
    if grown > max(STORE_GROWTH * start.store_bytes, STORE_SLACK):
        problems.append(f"store grew {grown / 1024:.0f} KiB over the load")
    for key in IDLE_KEYS:
        if getattr(drain, key) != getattr(idle, key):
            problems.append(f"{key} after the drain {getattr(drain, key)}, idle {getattr(idle, key)}")
    return problems


# Processes ------------------------------------------------------------------------------------------------


def take_slot(participants: int) -> tuple[int, object]:
    """A port slot no other soak run holds (its lock lasts as long as the returned file)."""
    if participants > 350:  # the server's range holds 500 RTP/RTCP pairs, for callers and callouts
        raise SystemExit(f"{participants} participants do not fit a port slot of {SLOT_SIZE}")
    for base in SLOTS:
        lock = open(Path(tempfile.gettempdir()) / f"tonebridge-soak-{base}.lock", "a+")
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            lock.close()
            continue
        return base, lock
    raise SystemExit("every port slot is taken by another soak run")


def start_server(workdir: Path, backend: Backend, base: int, uas_port: int, retention: float) -> tuple:
    sip, http = free_port(), free_port()
    data_dir = workdir / "data"
    config = workdir / "soak.toml"
    config.write_text(
        f'[server]\nsip = "{HOST}:{sip}"\nhttp = "{HOST}:{http}"\n'
        f"rtp_ports = [{base + SERVER_RTP}, {base + SLOT_SIZE - 1}]\n"
        f'data_dir = "{data_dir}"\n\n'
        f"[records]\nretention_days = {retention / 86400.0!r}\n\n"
        f"[callbacks]\nretention_seconds = {retention!r}\n\n"
        f'[security]\nfetch_allow = ["127.0.0.0/8"]\n\n'
        f'[[applications]]\nkey = "{KEY}"\nsecret = "{SECRET}"\ncallback_url = "{backend.url}"\n'
        f'numbers = ["{NUMBER}"]\n\n'
        f'[[trunks]]\nname = "sipp"\nuri = "sip:{HOST}:{uas_port}"\n'
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
            return proc, sip, http, data_dir
        except OSError:
            time.sleep(0.2)
    stop(proc)
    raise SystemExit("server did not answer /tonebridge/v1/metrics within 30 s")


def sipp(workdir: Path, name: str, args: list[str]) -> subprocess.Popen:
    cmd = [*pinned(PEER_CORE), "sipp", *args, "-i", HOST, "-mi", HOST, "-nostdin", "-buff_size", "1048576"]
    cmd += ["-trace_stat", "-stf", str(workdir / f"{name}.csv"), "-trace_counts", "-fd", "5"]
    cmd += ["-max_recv_loops", "10000"]
    out = open(workdir / f"{name}.out", "w")
    proc = subprocess.Popen(cmd, cwd=workdir, stdout=out, stderr=subprocess.STDOUT)
    out.close()
    return proc


def last_row(path: Path) -> dict[str, str]:
    if not path.exists():
        return {}
    rows = list(csv.DictReader(path.read_text().splitlines(), delimiter=";"))
    return rows[-1] if rows else {}


def sipp_totals(workdir: Path, name: str) -> tuple[int, int, int]:
    """Calls placed (or answered), failed, and presses (timeouts of the wait-for-BYE receive) of a SIPp."""
    stat = last_row(workdir / f"{name}.csv")
    counts = next(iter(sorted(workdir.glob(f"{name}_*_counts.csv"))), None)
    presses = 0
    if counts is not None:
        row = last_row(counts)
        # "<index>_BYE_Timeout": the first is the wait between presses, each timeout a press.
        waits = sorted(
            (k for k in row if k and k.endswith("_BYE_Timeout")), key=lambda k: int(k.split("_")[0])
        )
        presses = int(row[waits[0]]) if waits else 0
    return int(stat.get("TotalCallCreated", 0) or 0), int(stat.get("FailedCall(C)", 0) or 0), presses


# The run --------------------------------------------------------------------------------------------------


def wait_until(check, limit: float, step: float = 0.5) -> bool:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(step)
    return check()


def run(args: argparse.Namespace, workdir: Path) -> int:
    rng = random.Random(args.seed)
    base, lock = take_slot(args.participants)
    raise_fd_limit(args.participants + 200)
    # A kept folder starts afresh: the store and SIPp's statistics of an earlier run would count.
    shutil.rmtree(workdir / "data", ignore_errors=True)
    for stale in [*workdir.glob("caller*.csv"), *workdir.glob("trunk*.csv")]:
        stale.unlink()
    audio = workdir / "speech.ulaw"
    audio.write_bytes(speech_like_ulaw())
    (workdir / "pcap").unlink(missing_ok=True)
    (workdir / "pcap").symlink_to(PCAPS)
    press_ms = int(args.press_interval * 1000)
    (workdir / "caller.xml").write_text(
        CALLER.replace("AUDIO_FILE", str(audio)).replace("PRESS_MS", str(press_ms))
    )
    (workdir / "trunk.xml").write_text(TRUNK_UAS.replace("AUDIO_FILE", str(audio)))
    low, high = args.presses
    (workdir / "presses.csv").write_text(
        "SEQUENTIAL\n" + "".join(f"{rng.randint(low, high)};\n" for _ in range(20000))
    )
    mean_hold = (low + high) / 2 * args.press_interval
    rate = args.rate or max(2 * args.participants / mean_hold, args.participants / 30)
    rooms = max(1, math.ceil(args.participants / ROOM_SIZE))
    backend = Backend(rooms)
    uas_port = free_port()
    server = uac = uas = None
    driver: Driver | None = None
    samples: list[Sample] = []
    log = open(workdir / "samples.log", "w")
    try:
        server, sip_port, http_port, data_dir = start_server(workdir, backend, base, uas_port, args.retention)
        time.sleep(2)
        t0 = time.monotonic()
        idle = sample(server.pid, http_port, data_dir, t0)
        print("idle: " + line(idle), flush=True)
        uas = sipp(
            workdir,
            "trunk",
            ["-sf", str(workdir / "trunk.xml"), "-p", str(uas_port), "-mp", str(base + TRUNK_MEDIA)]
            + ["-max_socket", "1000"],
        )
        uac = sipp(
            workdir,
            "caller",
            [f"{HOST}:{sip_port}", "-sf", str(workdir / "caller.xml"), "-s", NUMBER]
            + ["-inf", str(workdir / "presses.csv"), "-p", str(free_port()), "-mp", str(base + CALLER_MEDIA)]
            + ["-r", f"{rate:.3f}", "-l", str(args.participants)]
            + ["-max_socket", str(2 * args.participants + 100)],
        )
        t0 = time.monotonic()
        driver = Driver(http_port, backend, args, rng)
        driver.thread.start()
        window = args.minutes * 60
        start: Sample | None = None
        reached = False
        next_sample = time.monotonic()
        while time.monotonic() - t0 < window:
            if uac.poll() is not None or server.poll() is not None:
                print("SIPp or the server stopped during the load", flush=True)
                break
            time.sleep(max(0.0, next_sample - time.monotonic()))
            next_sample += args.sample
            try:
                s = sample(server.pid, http_port, data_dir, t0)
            except OSError as exc:  # metrics not answered within 30 s: a failure, and no sample
                driver.totals.error(f"sample at {time.monotonic() - t0:.0f} s: {exc!r}")
                continue
            samples.append(s)
            print(line(s), file=log, flush=True)
            print(line(s), flush=True)
            reached = reached or s.participants >= args.participants
            if start is None and reached and s.at >= args.warmup:
                start = s
        end = sample(server.pid, http_port, data_dir, t0)
        samples.append(end)
        print("end:  " + line(end), flush=True)

        # The drain: no new calls or callouts, every room emptied through the API, every call ended.
        driver.stopping.set()
        driver.thread.join(30)
        uac.send_signal(signal.SIGUSR1)  # SIPp: place no new call, exit once the running ones end
        time.sleep(1)
        with backend.lock:
            rooms_used = sorted(set(backend.rooms) | set(backend.callouts.values()))
        for room in rooms_used:
            status, _ = signed_request(http_port, "DELETE", f"/calling/v1/conferences/id/{room}")
            if status >= 300 and status != 404:
                driver.totals.error(f"emptying {room} answered {status}")
        drained = wait_until(lambda: dig(metrics(http_port), "calls", "active") == 0, 120)
        try:
            uac.wait(60)
        except subprocess.TimeoutExpired:
            driver.totals.error("the callers' SIPp did not exit after the drain")
        uas.send_signal(signal.SIGUSR1)
        try:
            uas.wait(30)
        except subprocess.TimeoutExpired:
            driver.totals.error("the trunk's SIPp did not exit after the drain")
        wait_until(lambda: dig(metrics(http_port), "outbox", "pending") == 0, 60)
        time.sleep(args.settle)
        # The last callbacks' tasks and connections end a little after the last call: up to 30 s more.
        after = sample(server.pid, http_port, data_dir, t0)
        deadline = time.monotonic() + 30
        while any(getattr(after, k) != getattr(idle, k) for k in IDLE_KEYS) and time.monotonic() < deadline:
            time.sleep(1)
            after = sample(server.pid, http_port, data_dir, t0)
        print("drain: " + line(after), flush=True)
        if not drained:
            driver.totals.error("calls still active 120 s after the rooms were emptied")
    finally:
        if driver is not None:
            driver.stopping.set()
        stop(uac)
        stop(uas)
        stop(server)
        backend.close()
        log.close()
        lock.close()  # type: ignore[attr-defined]

    placed, failed, presses = sipp_totals(workdir, "caller")
    answered, uas_failed, callee_presses = sipp_totals(workdir, "trunk")
    totals = driver.totals
    print()
    print(
        f"Soak: {args.participants} participants, {args.minutes:g} min, rooms of {ROOM_SIZE}, a press every "
        f"{args.press_interval:g} s, {low}-{high} presses a call, a callout every {args.callout_interval:g} s, "
        f"a kick every {args.kick_interval:g} s, retention {args.retention:g} s (server on core "
        f"{SERVER_CORE}, SIPp on core {PEER_CORE}):"
    )
    if start is None:
        print(f"the population never reached {args.participants} after the warm-up: no start figures")
        return 2
    print(table([("idle", idle), ("start", start), ("end", end), ("after drain", after)]))
    print()
    print(
        f"calls placed {placed:,} (failed {failed:,}); presses sent {presses + callee_presses:,} "
        f"(callers {presses:,}, callees {callee_presses:,}); PIEs received {backend.pies:,} (callees "
        f"{backend.callout_pies:,}); "
        f"ICEs {backend.ices:,}, DiCEs {backend.dices:,}; callouts {totals.callouts:,} (failed "
        f"{totals.callouts_failed:,}, answered by the trunk {answered:,}, failed there {uas_failed:,}); "
        f"kicks {totals.kicks:,} (missed, call already gone: {totals.kicks_missed:,}; failed "
        f"{totals.kicks_failed:,}); callbacks abandoned by the server {backend.abandoned:,}"
    )
    for error in totals.errors:
        print(f"  error: {error}")
    # A kick in the middle of a press (a 280 ms event), or a SIPp too busy to play a call's last press
    # before its BYE, costs a PIE: reported, not counted as a failure.
    lost = max(0, presses + callee_presses - backend.pies)
    print(f"presses without a PIE: {lost:,}")
    failures = failed + uas_failed + totals.callouts_failed + totals.kicks_failed + len(totals.errors)
    problems = judge(idle, start, end, after)
    print(f"failures: {failures:,}")
    if failures > max(3, 0.05 * (placed + totals.callouts)):
        print("verdict: load failed (too many failures)")
        return 2
    if problems:
        print("verdict: not flat: " + "; ".join(problems))
        return 1
    print("verdict: flat")
    return 0


def pair(text: str, kind: type = int) -> tuple:  # type: ignore[type-arg]
    low, _, high = text.partition("-")
    return kind(low), kind(high or low)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--participants", type=int, default=300, help="callers at once (SIPp's -l)")
    parser.add_argument("--minutes", type=float, default=30.0, help="length of the load")
    parser.add_argument(
        "--press-interval", type=float, default=10.0, help="seconds between a caller's presses"
    )
    parser.add_argument(
        "--presses", type=pair, default=(1, 11), help="presses a call makes before it hangs up, LOW-HIGH"
    )
    parser.add_argument("--callout-interval", type=float, default=2.0, help="seconds between callouts")
    parser.add_argument(
        "--callout-hold",
        type=lambda t: pair(t, float),
        default=(20.0, 50.0),
        help="a callout's life, LOW-HIGH s",
    )
    parser.add_argument("--kick-interval", type=float, default=3.0, help="seconds between kicks of callers")
    parser.add_argument("--rate", type=float, help="SIPp calls per second (default: ramp up in about 30 s)")
    parser.add_argument(
        "--retention", type=float, default=180.0, help="records and callbacks kept this many seconds"
    )
    parser.add_argument(
        "--warmup", type=float, help="start figures no earlier (default: 3 x retention + 120 s)"
    )
    parser.add_argument("--sample", type=float, default=10.0, help="seconds between samples")
    parser.add_argument("--settle", type=float, default=3.0, help="seconds after the drain before its sample")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--keep", type=Path, help="work in this folder and keep it (logs, SIPp output)")
    args = parser.parse_args()
    if args.warmup is None:
        # Rows reach their steady state after the retention and a prune; the store's file and its WAL
        # (whose size is set by the largest prune between checkpoints) some minutes later.
        args.warmup = 3 * args.retention + 120.0
    if args.warmup >= args.minutes * 60:
        raise SystemExit(f"the warm-up ({args.warmup:g} s) must end inside the load ({args.minutes:g} min)")
    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, lambda number, frame: sys.exit(128 + number))
    os.sched_setaffinity(0, {int(PEER_CORE)})
    with tempfile.TemporaryDirectory(prefix="soak-") as tmp:
        workdir = args.keep or Path(tmp)
        workdir.mkdir(parents=True, exist_ok=True)
        code = run(args, workdir)
    sys.exit(code)


if __name__ == "__main__":
    main()
