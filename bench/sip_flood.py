"""INVITE flood from one source against `tonebridge serve` with an application: is it throttled at the SIP
edge (sip/admission.py), is another source's caller still answered, and is nothing left up afterwards?

The reported experiment this reproduces, from before per-source admission existed: with an application
configured (its backend answering ICE with ConnectConf), 8 s of INVITEs at 500/s from 127.0.0.1 (SIPp's
built-in uac scenario, 4,000 calls) overloaded the server: 3,122 of 4,000 refused only after ICE timeouts,
a caller from 127.0.0.2 was not answered within 10 s, and 74 calls were still up a minute after the flood.

A fresh server runs pinned to core 0 with bench/rtp_load.py's application and backend (every ICE gets
connectConf into rooms of ten) and the server's default `[limits]` (none in its config) unless `--limits`
sets some. First a steady call (unless `--no-steady`): two `tonebridge phone` legs in a room of their own,
one sending a 700 Hz tone, the other recording what it hears. Then SIPp, pinned to core 1, runs its
built-in `uac` scenario (INVITE, 200, ACK, `--hold-ms` of call, BYE) from 127.0.0.1 at `--rate` calls per
second for `--seconds` seconds. Halfway through, one call from 127.0.0.2 (SIPp `-i 127.0.0.2 -mi
127.0.0.2`), timed from its INVITE to the 200 (SIPp's response-time measure). The flood ends when SIPp has
placed its last call; the server's metrics are read then and `--after` (60) s later, and only then is the
steady call hung up (on a calm server: its BYE lost in the flood would leave it up).

Reported: INVITEs sent; answered (SIPp got the INVITE's 200) and their INVITE-to-200 time (p50 / p99 /
max, SIPp's rtd in whole ms); calls completed (SIPp's successful calls: note that SIPp takes any 200 on
the call for its BYE's, a retransmitted 2xx of an INVITE whose ACK the server lost included); the ICEs the
application got; refused at once (the server's `sip.throttled_invites`, which also counts a refused
INVITE's retransmissions, and SIPp's calls aborted on an unexpected response, by status code from its
error trace); failed by timeout (the INVITE retransmitted until Timer B, never answered) and BYEs never
answered; the datagrams the kernel dropped at the server's SIP socket (/proc/net/udp: its receive buffer
was full); the other source's INVITE-to-200 time; the server's CPU % of one core during the flood
(/proc/PID/stat) and what everything else took of core 0 meanwhile; calls up at the end of the flood (the
steady call left out), at most at once, and `--after` (60) s later, with legs, RTP ports, rooms and SIP
transactions; the steady call's packets received per second (over the whole call, the listener's
`rtp_in`) and the fewest 20 ms frames carrying its tone in any second of the flood (50 when none is
missing). The server's metrics once a second go to timeline.csv in the work folder (`--keep`).
Verdicts: the other source was answered within 10 s; no call was up `--after` s after the flood. Exit
status 1 when either fails (or the server exited).

Needs `sipp` (Debian sip-tester 3.6.1) and `taskset`; loopback only (127.0.0.2 answers on Linux).
About 90 s.

    .venv/bin/python bench/sip_flood.py                        # 500/s for 8 s, default limits
    .venv/bin/python bench/sip_flood.py --limits rate=20,burst=20 --rate 50 --seconds 2 --after 5
"""

from __future__ import annotations

import argparse
import csv
import os
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time
import wave
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from rtp_load import (
    CLK_TCK,
    HOST,
    NUMBER,
    PEER_CORE,
    SERVER_CORE,
    Backend,
    Ports,
    core_busy_ticks,
    cpu_ticks,
    dig,
    exclusive,
    free_port,
    metrics,
    pinned,
    plan_ports,
    raise_fd_limit,
    start_server,
    stop,
    udp_drops,
)

OTHER_SOURCE = "127.0.0.2"
OTHER_ANSWER_LIMIT = 10.0  # seconds: the verdict's bound on the other source's INVITE-to-200
STEADY = ("talker", "listener")
TONE_HZ, TONE_DBM0 = 700.0, -15.0
# `--limits` names: short ones and the `[limits]` keys themselves (docs/configuration.md).
LIMIT_KEYS = {
    "rate": "invites_per_second_per_source",
    "burst": "invite_burst_per_source",
    "source_setting_up": "max_setting_up_per_source",
    "setting_up": "max_setting_up",
}


class FloodBackend(Backend):
    """rtp_load's backend (ICE -> connectConf into rooms of ten), the steady call in a room of its own."""

    def __init__(self) -> None:
        super().__init__(one_room=False)

    def answer(self, event: dict) -> dict | None:
        if event.get("event") == "ice" and event.get("cli") in STEADY:
            return {"action": {"name": "connectConf", "conferenceId": "steady"}}
        return super().answer(event)


def limits_section(specs: list[str]) -> str:
    """The `[limits]` section `--limits` asks for ("" for the server's defaults)."""
    lines = []
    for spec in specs:
        for item in filter(None, (part.strip() for part in spec.split(","))):
            name, sep, value = item.partition("=")
            key = LIMIT_KEYS.get(name.strip(), name.strip())
            if not sep or key not in LIMIT_KEYS.values():
                raise SystemExit(
                    f"--limits {item!r}: expected NAME=VALUE, NAME one of {', '.join(LIMIT_KEYS)}"
                )
            lines.append(f"{key} = {float(value) if key == LIMIT_KEYS['rate'] else int(value)}")
    return "[limits]\n" + "\n".join(lines) + "\n" if lines else ""


# SIPp ---------------------------------------------------------------------------------------------------


def start_uac(
    workdir: Path, name: str, sip_port: int, source: str, media_port: int, calls: int, rate: float, args
) -> subprocess.Popen:
    """SIPp's built-in uac on core 1: `calls` calls at `rate`/s from `source`, each held `--hold-ms`."""
    cmd = [*pinned(PEER_CORE), "sipp", f"{HOST}:{sip_port}", "-sn", "uac", "-s", NUMBER]
    cmd += ["-i", source, "-mi", source, "-p", str(free_port()), "-mp", str(media_port)]
    cmd += ["-m", str(calls), "-r", f"{rate:g}", "-l", str(calls), "-d", str(args.hold_ms)]
    cmd += ["-buff_size", "1048576", "-max_recv_loops", "10000", "-nostdin"]
    cmd += ["-trace_stat", "-stf", str(workdir / f"{name}.csv"), "-fd", "1"]
    # The unexpected messages (the refusals) and each call's INVITE-to-200 time, in files of their own.
    cmd += ["-trace_err", "-error_file", str(workdir / f"{name}-errors.log")]
    cmd += ["-trace_rtt", "-rtt_freq", "1", "-trace_counts"]
    # A call the server never answers fails after Timer B (32 s); this stops SIPp should one hang on.
    cmd += ["-timeout", f"{int(calls / rate + args.hold_ms / 1000 + 90)}s", "-timeout_error"]
    out = open(workdir / f"{name}.out", "w")
    proc = subprocess.Popen(cmd, cwd=workdir / name, stdout=out, stderr=subprocess.STDOUT)
    out.close()
    return proc


def sipp_stats(workdir: Path, name: str) -> dict[str, str]:
    """The last row of a SIPp run's statistics ({} before its first)."""
    stat = workdir / f"{name}.csv"
    try:
        rows = list(csv.DictReader(stat.read_text().splitlines(), delimiter=";"))
    except OSError:
        return {}
    return rows[-1] if rows else {}


def count(stats: dict[str, str], column: str) -> int:
    try:
        return int(stats.get(f"{column}(C)") or stats.get(column) or 0)
    except ValueError:
        return 0


def refusal_codes(workdir: Path, name: str) -> dict[str, int]:
    """Status codes of the responses SIPp aborted a call on (a 503 when throttled); not the 2xx
    retransmissions it logs for calls it has already ended."""
    path = workdir / f"{name}-errors.log"
    if not path.exists():
        return {}
    codes: dict[str, int] = {}
    text = path.read_text(errors="replace")
    for code in re.findall(r"Aborting call on unexpected message[^\n]*received 'SIP/2\.0 (\d{3})", text):
        codes[code] = codes.get(code, 0) + 1
    return codes


def answer_times(workdir: Path, name: str) -> list[float]:
    """Seconds from each answered call's first INVITE to its 200 (SIPp's rtd, in whole ms), sorted."""
    times = []
    for path in (workdir / name).glob("*_rtt.csv"):
        for row in list(csv.reader(path.read_text().splitlines(), delimiter=";"))[1:]:
            try:
                times.append(float(row[1]) / 1000.0)
            except (IndexError, ValueError):
                continue
    return sorted(times)


def message_counts(workdir: Path, name: str) -> dict[str, int]:
    """SIPp's counts per scenario message (-trace_counts), last row: `0_INVITE_Timeout`, `4_200_Recv`..."""
    for path in (workdir / name).glob("*_counts.csv"):
        rows = list(csv.DictReader(path.read_text().splitlines(), delimiter=";"))
        if rows:
            return {k: int(v) for k, v in rows[-1].items() if k and v and v.isdigit()}
    return {}


def quantile(values: list[float], q: float) -> float:
    return values[min(len(values) - 1, int(q * len(values)))]


def sip_drops(sip_port: int) -> int:
    """Datagrams the kernel dropped at the server's SIP socket (receive buffer full), /proc/net/udp."""
    return sum(udp_drops(sip_port, sip_port).values())


# The steady call ----------------------------------------------------------------------------------------


class Phone:
    """`tonebridge phone dial` on core 1, its event lines read as they come."""

    def __init__(
        self, workdir: Path, sip_port: int, user: str, rtp: tuple[int, int], extra: list[str]
    ) -> None:
        self.events: list[tuple[float, str, dict[str, str]]] = []
        self.changed = threading.Condition()
        cmd = [*pinned(PEER_CORE), sys.executable, "-m", "tonebridge.cli", "--log-level", "WARNING"]
        cmd += ["phone", "dial", f"sip:{NUMBER}@{HOST}:{sip_port}", "--from-user", user]
        cmd += ["--rtp-ports", f"{rtp[0]}-{rtp[1]}", *extra]
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
            words = line.split()
            if not words or not words[0].startswith("event="):
                continue
            fields = dict(word.split("=", 1) for word in words[1:] if "=" in word)
            with self.changed:
                self.events.append((time.monotonic(), words[0][6:], fields))
                self.changed.notify_all()
        with self.changed:
            self.changed.notify_all()

    def wait(self, event: str, timeout: float) -> tuple[float, dict[str, str]] | None:
        """When `event` came and its fields, or None if it did not within `timeout`."""

        def found() -> tuple[float, dict[str, str]] | None:
            return next(((t, f) for t, name, f in self.events if name == event), None)

        with self.changed:
            self.changed.wait_for(lambda: found() is not None or self.proc.poll() is not None, timeout)
            return found()

    def has(self, event: str) -> bool:
        with self.changed:
            return any(name == event for _, name, _ in self.events)

    def send(self, command: str) -> None:
        if self.proc.poll() is None and self.proc.stdin is not None:
            try:
                self.proc.stdin.write(command + "\n")
                self.proc.stdin.flush()
            except OSError:
                pass

    def close(self) -> None:
        stop(self.proc, 10)


def tone_frames_per_second(path: Path, start: float, end: float) -> list[int]:
    """For each whole second of the recording in [start, end) (seconds from its start, the answer): how
    many of its fifty 20 ms frames carry the tone (above -35 dBm0; the tone arrives at about -15)."""
    with wave.open(str(path)) as recording:
        rate = recording.getframerate()
        samples = np.frombuffer(recording.readframes(recording.getnframes()), "<i2").astype(np.float64)
    frame = rate // 50
    full_scale_sine_power = 32768.0**2 / 2
    counts = []
    for second in range(max(0, int(start)), int(np.ceil(end))):
        chunk = samples[second * rate : (second + 1) * rate]
        if len(chunk) < rate:
            break
        power = (chunk.reshape(50, frame) ** 2).mean(axis=1)
        level = 10 * np.log10(np.maximum(power, 1e-9) / full_scale_sine_power) + 3.14
        counts.append(int((level > -35.0).sum()))
    return counts


@dataclass
class Steady:
    answered_at: float = 0.0
    ended_at: float = 0.0
    rtp_in: int = 0
    flood_frames: list[int] = field(default_factory=list)
    problem: str = ""

    @property
    def pps(self) -> float | None:
        seconds = self.ended_at - self.answered_at
        return self.rtp_in / seconds if self.rtp_in and seconds > 0 else None


def start_steady(workdir: Path, sip_port: int, ports: Ports) -> tuple[Phone, Phone, Steady]:
    low, high = ports.phone
    mid = (low + high) // 2
    listener = Phone(workdir, sip_port, "listener", (low, mid), ["--record", str(workdir / "listener.wav")])
    steady = Steady()
    answered = listener.wait("answered", 20)
    talker = Phone(
        workdir, sip_port, "talker", (mid + 1, high), ["--tone", f"{TONE_HZ:g}", "--level", f"{TONE_DBM0:g}"]
    )
    if answered is None or talker.wait("answered", 20) is None:
        steady.problem = "the steady call was not answered in 20 s"
    else:
        steady.answered_at = answered[0]
    return listener, talker, steady


def end_steady(
    workdir: Path, listener: Phone, talker: Phone, steady: Steady, flood: tuple[float, float]
) -> None:
    listener.send("hangup")
    talker.send("hangup")
    ended = listener.wait("ended", 15)
    if steady.problem:
        return
    if ended is None or listener.wait("recorded", 15) is None:
        steady.problem = "the listener's call did not end in 15 s"
        return
    steady.ended_at = ended[0]
    steady.rtp_in = int(ended[1].get("rtp_in", 0))
    start, end = (t - steady.answered_at for t in flood)
    steady.flood_frames = tone_frames_per_second(workdir / "listener.wav", start, end)


# One run ------------------------------------------------------------------------------------------------


@dataclass
class Result:
    sent: int = 0
    answered: int = 0  # 200 to the INVITE received
    completed: int = 0  # SIPp's successful calls (BYE answered)
    answer_times: list[float] = field(default_factory=list)
    failed: int = 0
    unexpected: int = 0
    timed_out: int = 0  # INVITE retransmitted until Timer B, never answered
    bye_timed_out: int = 0
    drops_flood: int = 0
    drops_after: int = 0
    retransmissions: int = 0
    codes: dict[str, int] = field(default_factory=dict)
    throttled: int | None = None
    ices: int = 0
    other_seconds: float | None = None
    other_ok: bool = False
    flood_seconds: float = 0.0
    cpu_percent: float = 0.0
    others_on_core_percent: float = 0.0
    at_end: dict = field(default_factory=dict)
    after: dict = field(default_factory=dict)
    steady: Steady | None = None
    server_exit: int | None = None
    peak_calls: int = 0
    flood_calls_at_end: int | None = None
    flood_calls_after: int | None = None
    last_call_up: float | None = None  # seconds after the flood of the last sample with a call up


def wait_placed(workdir: Path, sipp: subprocess.Popen, calls: int, limit: float) -> None:
    """Until SIPp has created its last call (its statistics, once a second), exited, or `limit` passed."""
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline and sipp.poll() is None:
        if count(sipp_stats(workdir, "flood"), "TotalCallCreated") >= calls:
            return
        time.sleep(0.1)


class Timeline:
    """The server's metrics once a second from the flood's start, kept for timeline.csv and the peaks."""

    COLUMNS = (
        ("calls", ("calls", "active")),
        ("transactions", ("sip", "transactions")),
        ("throttled", ("sip", "throttled_invites")),
        ("legs", ("media", "legs")),
        ("participants", ("conferences", "participants")),
        ("outbox", ("outbox", "pending")),
    )

    def __init__(self, http_port: int, t0: float) -> None:
        self.http_port, self.t0 = http_port, t0
        self.rows: list[tuple[float, ...]] = []
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while not self.stopping.is_set():
            started = time.monotonic()
            try:
                current = metrics(self.http_port)
            except (OSError, ValueError):
                current = {}
            values = [dig(current, *keys) for _, keys in self.COLUMNS]
            self.rows.append(
                (round(started - self.t0, 1), *(v if isinstance(v, int) else -1 for v in values))
            )
            self.stopping.wait(max(0.0, 1.0 - (time.monotonic() - started)))

    def stop(self, path: Path) -> None:
        self.stopping.set()
        self.thread.join(35)
        with path.open("w") as out:
            out.write("seconds," + ",".join(name for name, _ in self.COLUMNS) + "\n")
            out.writelines(",".join(str(v) for v in row) + "\n" for row in self.rows)

    def peak(self, column: str) -> int:
        index = 1 + [name for name, _ in self.COLUMNS].index(column)
        return max((row[index] for row in self.rows), default=0)

    def last_above(self, column: str, level: int) -> float | None:
        """Seconds from the flood's start of the last sample with `column` above `level`."""
        index = 1 + [name for name, _ in self.COLUMNS].index(column)
        return max((row[0] for row in self.rows if row[index] > level), default=None)


def flood_calls(current: dict, *phones: Phone | None) -> int | None:
    """`calls.active` less the steady call's legs still up (each phone's own word: no `ended` yet)."""
    active = dig(current, "calls", "active")
    if not isinstance(active, int):
        return None
    with_us = sum(1 for phone in phones if phone is not None and not phone.has("ended"))
    return active - with_us


def progress(began: float, what: str) -> None:
    print(f"[{time.monotonic() - began:5.1f} s] {what}", flush=True)


def run(workdir: Path, args: argparse.Namespace, ports: Ports) -> Result:
    result = Result()
    backend = FloodBackend()
    server = flood = other = None
    listener = talker = None
    calls = int(round(args.rate * args.seconds))
    for name in ("flood", "other"):
        (workdir / name).mkdir(exist_ok=True)
    try:
        began = time.monotonic()
        server, sip_port, http_port = start_server(workdir, backend, ports, limits_section(args.limits))
        progress(began, "server up")
        time.sleep(1)
        if args.steady:
            listener, talker, result.steady = start_steady(workdir, sip_port, ports)
            progress(began, f"steady call: {result.steady.problem or 'answered'}")
            time.sleep(1)

        drops0 = sip_drops(sip_port)
        cpu0, core0, t0 = cpu_ticks(server.pid), core_busy_ticks(SERVER_CORE), time.monotonic()
        timeline = Timeline(http_port, t0)
        steady_up = sum(1 for phone in (listener, talker) if phone is not None and not phone.has("ended"))
        flood = start_uac(workdir, "flood", sip_port, HOST, ports.sipp_media, calls, args.rate, args)
        # The other source's call, halfway through the flood.
        time.sleep(args.seconds / 2)
        other = start_uac(workdir, "other", sip_port, OTHER_SOURCE, ports.sipp_media + 10, 1, 1.0, args)
        wait_placed(workdir, flood, calls, args.seconds * 3 + 30)
        cpu1, core1, t1 = cpu_ticks(server.pid), core_busy_ticks(SERVER_CORE), time.monotonic()
        result.flood_seconds = t1 - t0
        result.cpu_percent = 100.0 * (cpu1 - cpu0) / CLK_TCK / result.flood_seconds
        core_percent = 100.0 * (core1 - core0) / CLK_TCK / result.flood_seconds
        result.others_on_core_percent = max(0.0, core_percent - result.cpu_percent)
        result.drops_flood = sip_drops(sip_port) - drops0
        result.at_end = metrics(http_port)
        result.flood_calls_at_end = flood_calls(result.at_end, listener, talker)

        progress(began, f"flood placed in {t1 - t0:.1f} s; metrics again in {args.after:g} s")
        try:
            other.wait(max(0.0, t1 + args.after - time.monotonic()))
        except subprocess.TimeoutExpired:
            pass
        try:
            flood.wait(max(0.0, t1 + args.after - time.monotonic()))
        except subprocess.TimeoutExpired:
            print("  SIPp still running at the end of the wait: stopped", flush=True)
        time.sleep(max(0.0, t1 + args.after - time.monotonic()))
        result.after = metrics(http_port)
        result.drops_after = sip_drops(sip_port) - drops0
        result.flood_calls_after = flood_calls(result.after, listener, talker)
        # Hung up only now, on a calm server: a BYE lost in the flood would leave it up, counted as the flood's.
        if listener is not None and talker is not None and result.steady is not None:
            end_steady(workdir, listener, talker, result.steady, (t0, t1))
        timeline.stop(workdir / "timeline.csv")
        result.peak_calls = timeline.peak("calls")
        result.last_call_up = timeline.last_above("calls", steady_up)
        result.last_call_up = None if result.last_call_up is None else result.last_call_up - (t1 - t0)
        progress(began, "done")
        with backend.lock:
            result.ices = backend.ices
        result.server_exit = server.poll()
    finally:
        for proc in (flood, other):
            stop(proc, 10)
        for phone in (listener, talker):
            if phone is not None:
                phone.close()
        if server is not None:
            result.server_exit = server.poll()
        stop(server)
        backend.close()
    stats = sipp_stats(workdir, "flood")
    messages = message_counts(workdir, "flood")
    result.sent = count(stats, "TotalCallCreated")
    result.answered = messages.get("4_200_Recv", 0)
    result.completed = count(stats, "SuccessfulCall")
    result.answer_times = answer_times(workdir, "flood")
    result.failed = count(stats, "FailedCall")
    result.unexpected = count(stats, "FailedUnexpectedMessage")
    result.timed_out = messages.get("0_INVITE_Timeout", 0)
    result.bye_timed_out = messages.get("7_BYE_Timeout", 0)
    result.retransmissions = count(stats, "Retransmissions")
    result.codes = refusal_codes(workdir, "flood")
    if isinstance(dig(result.after, "sip"), dict):
        result.throttled = int(dig(result.after, "sip", "throttled_invites") or 0)  # type: ignore[arg-type]
    other_stats = sipp_stats(workdir, "other")
    result.other_ok = count(other_stats, "SuccessfulCall") == 1
    other_times = answer_times(workdir, "other")
    result.other_seconds = other_times[0] if other_times else None
    return result


# Output -------------------------------------------------------------------------------------------------


def fmt(value: int | None) -> str:
    return "n/a" if value is None else f"{value:,}"


def figure(document: dict, *keys: str) -> str:
    value = dig(document, *keys)
    return "n/a" if value is None else f"{value:,}" if isinstance(value, int) else str(value)


def report(result: Result, args: argparse.Namespace) -> bool:
    after = result.after
    other_in_time = result.other_seconds is not None and result.other_seconds <= OTHER_ANSWER_LIMIT
    calls_after = result.flood_calls_after
    nothing_left = calls_after == 0
    times = result.answer_times
    spread = f"{quantile(times, 0.5):.3f} / {quantile(times, 0.99):.3f} / {times[-1]:.3f}" if times else "n/a"
    codes = ", ".join(f"{n:,} × {code}" for code, n in sorted(result.codes.items())) or "none logged"
    other = (
        f"{result.other_seconds:.3f} s"
        if result.other_seconds is not None
        else ("answered, time n/a" if result.other_ok else "not answered")
    )
    limits = limits_section(args.limits).replace("\n", " ").strip() or "server defaults"
    print()
    print(
        f"SIP flood: {args.rate:g} INVITEs/s for {args.seconds:g} s from {HOST} (SIPp uac, calls held "
        f"{args.hold_ms} ms), limits: {limits}"
    )
    rows = [
        ("INVITEs sent (calls placed)", f"{result.sent:,}"),
        (
            "answered (200 received) / calls completed (BYE answered)",
            f"{result.answered:,} / {result.completed:,}",
        ),
        ("INVITE to 200 of the answered, p50 / p99 / max s", spread),
        ("ICEs to the application", f"{result.ices:,}"),
        (
            "refused at once: server sip.throttled_invites (with retransmissions)",
            "n/a" if result.throttled is None else f"{result.throttled:,}",
        ),
        (
            "SIPp calls failed / of them on an unexpected response",
            f"{result.failed:,} / {result.unexpected:,}",
        ),
        ("responses SIPp aborted a call on, by status", codes),
        ("failed by timeout: INVITE unanswered until Timer B", f"{result.timed_out:,}"),
        ("BYEs unanswered until timeout", f"{result.bye_timed_out:,}"),
        ("SIPp retransmissions", f"{result.retransmissions:,}"),
        (
            "datagrams dropped at the server's SIP socket: flood / to the end",
            f"{result.drops_flood:,} / {result.drops_after:,}",
        ),
        (f"other source ({OTHER_SOURCE}) INVITE to 200", other),
        ("flood placed in (s)", f"{result.flood_seconds:.1f}"),
        ("server CPU % of core 0 during the flood", f"{result.cpu_percent:.1f}"),
        ("others on core 0 % during the flood", f"{result.others_on_core_percent:.1f}"),
        ("calls up at the end of the flood (the steady call left out)", fmt(result.flood_calls_at_end)),
        ("calls up at once, at most (1 s samples)", f"{result.peak_calls:,}"),
        (f"calls up {args.after:g} s after (the steady call left out)", fmt(calls_after)),
        (
            "last flood call seen up (s after the flood)",
            "n/a" if result.last_call_up is None else f"{result.last_call_up:.0f}",
        ),
        (
            f"legs / RTP ports / rooms {args.after:g} s after (the steady call's included)",
            " / ".join(
                figure(after, *keys)
                for keys in (("media", "legs"), ("media", "portsInUse"), ("conferences", "rooms"))
            ),
        ),
        (f"SIP transactions {args.after:g} s after", figure(after, "sip", "transactions")),
    ]
    steady = result.steady
    if steady is not None:
        if steady.problem:
            rows.append(("steady call", steady.problem))
        else:
            pps = "n/a" if steady.pps is None else f"{steady.pps:.1f}"
            frames = f"{min(steady.flood_frames)} of 50" if steady.flood_frames else "n/a"
            rows.append(("steady call: packets received per second (whole call)", pps))
            rows.append(("steady call: fewest tone frames in a second of the flood", frames))
    else:
        rows.append(("steady call", "skipped (--no-steady)"))
    print("| figure | value |\n|---|---:|")
    for name, value in rows:
        print(f"| {name} | {value} |")
    if result.server_exit is not None:
        print(f"\nthe server exited during the run (status {result.server_exit})")
    print(f"\nother source answered within {OTHER_ANSWER_LIMIT:g} s: {'yes' if other_in_time else 'no'}")
    print(f"calls up {args.after:g} s after the flood == 0: {'yes' if nothing_left else 'no'}")
    print(
        f"RESULT sip_flood sent={result.sent} answered={result.answered} throttled={result.throttled} "
        f"drops={result.drops_after} "
        f"unexpected={result.unexpected} timed_out={result.timed_out} "
        f"other_answer_s={'n/a' if result.other_seconds is None else f'{result.other_seconds:.3f}'} "
        f"cpu={result.cpu_percent:.1f}% calls_at_end={result.flood_calls_at_end} "
        f"calls_after={calls_after} other_in_time={other_in_time} nothing_left={nothing_left}",
        flush=True,
    )
    return other_in_time and nothing_left and result.server_exit is None


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rate", type=float, default=500.0, help="INVITEs per second from 127.0.0.1")
    parser.add_argument("--seconds", type=float, default=8.0, help="how long the flood lasts")
    parser.add_argument("--hold-ms", type=int, default=1000, help="how long each answered call stays up")
    parser.add_argument(
        "--after", type=float, default=60.0, help="seconds after the flood to read the metrics"
    )
    parser.add_argument(
        "--limits",
        action="append",
        default=[],
        metavar="NAME=VALUE[,...]",
        help=f"a [limits] setting for the server ({', '.join(f'{k} ({v})' for k, v in LIMIT_KEYS.items())}); "
        "none: the server's defaults",
    )
    parser.add_argument("--no-steady", dest="steady", action="store_false", help="skip the steady call")
    parser.add_argument("--keep", type=Path, help="work in this folder and keep it (logs, SIPp output)")
    args = parser.parse_args()
    limits_section(args.limits)  # a bad --limits fails here, before anything starts
    calls = int(round(args.rate * args.seconds))
    ports = plan_ports(calls)
    exclusive(ports)
    # Two sockets per call the server holds; those up at once stay well below the number placed.
    raise_fd_limit(min(calls, 3000))
    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, lambda number, frame: sys.exit(128 + number))
    os.sched_setaffinity(0, {int(PEER_CORE)})
    with tempfile.TemporaryDirectory(prefix="sip-flood-") as tmp:
        workdir = args.keep or Path(tmp)
        workdir.mkdir(parents=True, exist_ok=True)
        result = run(workdir, args, ports)
    sys.exit(0 if report(result, args) else 1)


if __name__ == "__main__":
    main()
