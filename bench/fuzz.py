#!/usr/bin/env python3
"""Fuzzing of every parser that reads bytes from the network or an application, against its error contract.

    .venv/bin/python bench/fuzz.py --target sip --seconds 600
    .venv/bin/python bench/fuzz.py --all --seconds 600

Targets (each calls the real code; "crash" means anything escaping beyond what the contract allows):
- `sip`: `parse_message` (only `SipParseError`), then what parsed goes through the transaction layer the way
  `SipStack._on_message` drives it (match, create, feed twice, answer, timers): nothing may raise there.
- `sdp`: `SessionDescription.parse` (only `SdpError`), `negotiate` on what parsed (only `NoCommonCodec`),
  `apply_answer` against our own offer (`SdpError`, `NoCommonCodec`), and the answer re-parsed.
- `rtp`: `RtpPacket.parse`, `rtcp.parse_compound`, `TelephoneEvent.parse` (each only its own error), the
  Python `TelephoneEventReceiver`; the native `EventReceiverCore.receive`, `JitterCore.push/pop_into`, and
  a real `Plane` row fed the input as a datagram over loopback (nothing may raise).
- `svaml`: `parse_svaml` (only `SvamlError`; pydantic errors must arrive wrapped in it), then
  `interpreter.plan` in every call context (only `SvamlError`).

Every target runs in a child process, so a crash of the C code (a signal) is counted, its input kept, and the
child restarted for the time left. The engine is atheris (libFuzzer, coverage guided) when it imports;
otherwise a plain mutator over the seed corpus (`bench/fuzz_corpus/<target>/`), which is what CI gets
without atheris installed. Unexpected exceptions are caught in the child, told apart by type and the
innermost source line, and each first input is written to `bench/out/fuzz/<target>/`.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import select
import socket
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CORPUS = ROOT / "bench" / "fuzz_corpus"
OUT_DEFAULT = ROOT / "bench" / "out" / "fuzz"
OUT = OUT_DEFAULT
TARGETS = ("sip", "sdp", "rtp", "svaml")
MAX_LEN = 4096

try:
    import atheris
except ImportError:  # the plain mutator stands in (CI runs the smoke test without atheris)
    atheris = None


# Targets: each builds its one-input function; the function lets escape only what breaks the contract --------


def _sip_target() -> Callable[[bytes], None]:
    from tonebridge.sip import transaction as tx
    from tonebridge.sip.message import Headers, Request, Response, SipParseError, parse_message

    def one(data: bytes) -> None:
        try:
            message = parse_message(data)
        except SipParseError:
            return
        try:
            parse_message(data, stream=True)
        except SipParseError:
            pass
        knob = len(data)  # chooses the transport and the answer, so the seeds parse as they are
        reliable = bool(knob & 1)
        table = tx.TransactionTable()
        now = 100.0
        if isinstance(message, Response):
            # A client transaction of ours that this response answers, so it is matched and fed.
            top_via = message.headers.get("Via")
            method = message.cseq.method if message.headers.get("CSeq") else "OPTIONS"
            if top_via and message.top_via.branch and message.top_via.branch.startswith(tx.MAGIC_COOKIE):
                headers = Headers([("Via", top_via), ("CSeq", f"1 {method}")])
                for name in ("From", "To", "Call-ID"):
                    if message.headers.get(name):
                        headers.add(name, message.headers.get(name) or "")
                request = Request(method, "sip:fuzz@127.0.0.1", headers)
                if method == "INVITE":
                    table.add(tx.ClientInviteTransaction(request, reliable=reliable, now=now))
                elif method not in ("ACK",):
                    table.add(tx.ClientNonInviteTransaction(request, reliable=reliable, now=now))
            for step in range(2):
                client = table.match_response(message)
                if client is not None:
                    client.receive_response(message, now + step)
                    client.pop_outgoing()
                    client.pop_events()
                    table.touch(client)
        else:
            assert isinstance(message, Request)
            for step in range(2):  # the first copy, then a retransmission
                server = table.match_request(message)
                if server is None and message.method == "ACK":
                    server = table.match_ack(message)
                if server is None and message.method == "ACK":
                    break
                if server is None:
                    cls = (
                        tx.ServerInviteTransaction
                        if message.method == "INVITE"
                        else tx.ServerNonInviteTransaction
                    )
                    server = cls(message, reliable=reliable, now=now)
                    table.add(server)
                server.receive_request(message, now + step * 0.1)
                server.pop_outgoing()
                server.pop_events()
                table.touch(server)
            if message.method == "CANCEL":
                table.match_cancel(message)
            server = table.match_request(message)
            if server is not None and message.method != "ACK":
                status = (100, 180, 200, 486, 503)[(knob >> 1) % 5]
                server.send_response(tx.make_response(message, status), now + 0.5)
                server.pop_outgoing()
                table.touch(server)
                if server.last_response is not None:  # a transport's failure report finds its machine
                    table.match_sent(server.last_response)
        # Every timer of §17 comes due over 64*T1 and beyond.
        for delta in (0.25, 0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 32.5, 64.0, 200.0):
            for acted in table.handle_timers(now + delta):
                acted.pop_outgoing()
                acted.pop_events()
        table.purge()

    return one


def _sdp_target() -> Callable[[bytes], None]:
    from tonebridge.sip import sdp

    ours = sdp.build_offer("127.0.0.1", 40000, session_id=1)

    def one(data: bytes) -> None:
        try:
            offer = sdp.SessionDescription.parse(data)
        except sdp.SdpError:
            return
        try:
            offer.serialize()
        except sdp.SdpError:
            pass
        for policy in (None, "sendonly", "inactive"):
            try:
                answer, _ = sdp.negotiate(offer, "127.0.0.1", 40002, direction_policy=policy, session_id=2)
            except sdp.NoCommonCodec:
                continue
            sdp.SessionDescription.parse(answer.serialize())
        try:
            sdp.apply_answer(ours, offer)
        except (sdp.SdpError, sdp.NoCommonCodec):
            pass

    return one


class _PlaneRow:
    """One row of a real native Plane with its socket on loopback, and a peer that sends it datagrams."""

    def __init__(self) -> None:
        import numpy as np

        from tonebridge._mediaplane import Plane

        self.plane = Plane(4)
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.setblocking(False)
        self.peer = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.peer.bind(("127.0.0.1", 0))
        self.peer.setblocking(False)
        self.row = self.plane.add(self.sock.fileno())
        self.plane.configure(self.row, "127.0.0.1", 9, True, 0, 101, True)
        self.frames = np.zeros((self.plane.rows, 160), dtype=np.int16)
        self.mask = np.ones(self.plane.rows, dtype=np.uint8)
        self.poller = select.poll()
        self.poller.register(self.sock.fileno(), select.POLLIN)
        self.now = 1000.0

    def feed(self, data: bytes) -> None:
        self.peer.sendto(data, self.sock.getsockname())
        self.poller.poll(1000)  # loopback delivers at once; the wait only guards a busy machine
        self.now += 0.02
        self.plane.receive(self.now, self.frames)
        self.plane.send(self.frames, self.mask)
        self.plane.report_block(self.row)
        self.plane.leg_stats(self.row)
        try:
            while True:
                self.peer.recv(4096)
        except BlockingIOError:
            pass


def _rtp_target() -> Callable[[bytes], None]:
    import numpy as np

    from tonebridge._mediaplane import EventReceiverCore, JitterCore
    from tonebridge.media import rtcp
    from tonebridge.media.rfc4733 import TelephoneEvent, TelephoneEventError, TelephoneEventReceiver
    from tonebridge.media.rtp import RtpError, RtpPacket

    row = _PlaneRow()
    out = np.zeros(160, dtype=np.int16)

    def one(data: bytes) -> None:
        try:
            packet = RtpPacket.parse(data)
        except RtpError:
            packet = None
        try:
            rtcp.parse_compound(data)
        except rtcp.RtcpError:
            pass
        try:
            TelephoneEvent.parse(data)
        except TelephoneEventError:
            pass
        # Both receivers see the same packets, as the Python and native code must agree on what they accept.
        receiver = TelephoneEventReceiver()
        core = EventReceiverCore()
        jitter = JitterCore()
        packets = [packet] if packet is not None else []
        packets.append(RtpPacket(101, 7, int.from_bytes(data[:4].ljust(4, b"\0"), "big"), 42, data[4:]))
        now = 10.0
        for item in packets:
            for _ in range(3):  # retransmissions of one event packet
                receiver.receive(item, now)
                core.receive(item.ssrc, item.timestamp, item.payload, now)
                now += 0.02
        now += 1.0
        receiver.handle_timer(now)
        core.handle_timer(now)
        for item in packets:
            samples = np.frombuffer(item.payload[: len(item.payload) // 2 * 2], dtype=np.int16)
            jitter.push(item.ssrc, item.timestamp, samples)
            jitter.push(item.ssrc, (item.timestamp + 160) & 0xFFFFFFFF, samples[:160])
        for _ in range(4):
            jitter.pop_into(out)
        row.feed(data)

    return one


def _svaml_target() -> Callable[[bytes], None]:
    from tonebridge.svaml import interpreter
    from tonebridge.svaml.models import SvamlError, parse_svaml

    contexts = [
        interpreter.CallContext("ice", answered=False),
        interpreter.CallContext("ace", answered=True),
        interpreter.CallContext("pie", answered=True),
        interpreter.CallContext("patch", answered=True),
        interpreter.CallContext("patch", answered=False),
        interpreter.CallContext("patch", answered=True, parked=True),
    ]

    def one(data: bytes) -> None:
        try:
            document = parse_svaml(data)
        except SvamlError:
            return
        for context in contexts:
            try:
                interpreter.plan(document, context)
            except SvamlError:
                pass

    return one


BUILDERS: dict[str, Callable[[], Callable[[bytes], None]]] = {
    "sip": _sip_target,
    "sdp": _sdp_target,
    "rtp": _rtp_target,
    "svaml": _svaml_target,
}


# The child: runs one target until its deadline, catching what escapes ----------------------------------------


class _Child:
    """One target in this process: counts executions, keeps the first input of each distinct crash, and
    leaves (with its figures on disk for the parent) at its deadline."""

    def __init__(self, target: str, seconds: float, stats_path: Path) -> None:
        self.target = target
        self.deadline = time.monotonic() + seconds
        self.stats_path = stats_path
        self.out = OUT / target
        self.executions = 0
        self.crashes: dict[str, str] = {}  # signature -> saved input file
        self.next_dump = 0.0
        self.one = BUILDERS[target]()

    def run_one(self, data: bytes) -> None:
        self.executions += 1
        try:
            self.one(data)
        except Exception as exc:  # everything here broke the contract; keep going to find more
            self._crash(data, exc)
        now = time.monotonic()
        if now >= self.next_dump:
            self.next_dump = now + 0.5
            self.dump()
            if now >= self.deadline:
                os._exit(0)

    def _crash(self, data: bytes, exc: BaseException) -> None:
        frames = traceback.extract_tb(exc.__traceback__)
        ours = [f for f in frames if "tonebridge" in f.filename] or frames
        where = f"{Path(ours[-1].filename).name}:{ours[-1].lineno}" if ours else "?"
        signature = f"{type(exc).__name__} at {where}"
        if signature in self.crashes:
            return
        self.out.mkdir(parents=True, exist_ok=True)
        path = self.out / f"crash-{hashlib.sha1(data).hexdigest()[:16]}"
        path.write_bytes(data)
        self.crashes[signature] = _shown(path)
        print(f"[{self.target}] {signature}: {exc!r:.200} -> {path}", file=sys.stderr, flush=True)
        self.dump()

    def dump(self) -> None:
        tmp = self.stats_path.with_suffix(".tmp")
        tmp.write_text(json.dumps({"executions": self.executions, "crashes": self.crashes}))
        tmp.replace(self.stats_path)


def _shown(path: Path) -> str:
    return str(path.relative_to(ROOT)) if path.is_relative_to(ROOT) else str(path)


def _seeds(target: str) -> list[bytes]:
    seeds = [p.read_bytes() for p in sorted((CORPUS / target).glob("*")) if p.is_file()]
    return seeds or [b""]


def _mutate(rng: random.Random, data: bytes, seeds: list[bytes]) -> bytes:
    """A few random edits of the kinds that break parsers: flips, interesting bytes, cuts, repeats, splices."""
    buf = bytearray(data)
    for _ in range(rng.randint(1, 6)):
        choice = rng.randrange(8)
        pos = rng.randrange(len(buf) + 1)
        if choice == 0 and buf:
            buf[min(pos, len(buf) - 1)] ^= 1 << rng.randrange(8)
        elif choice == 1 and buf:
            buf[min(pos, len(buf) - 1)] = rng.choice(b'\x00\xff\x7f\x80\r\n :;,="<>[]{}%')
        elif choice == 2:
            del buf[pos : pos + rng.randint(1, 32)]
        elif choice == 3:
            buf[pos:pos] = bytes(rng.randrange(256) for _ in range(rng.randint(1, 8)))
        elif choice == 4 and buf:
            start = rng.randrange(len(buf))
            chunk = buf[start : start + rng.randint(1, 64)]
            buf[pos:pos] = chunk * rng.randint(1, 4)
        elif choice == 5:
            other = rng.choice(seeds)
            cut = rng.randrange(len(other) + 1)
            buf = buf[:pos] + other[cut:]
        elif choice == 6 and len(buf) >= 4:
            at = rng.randrange(len(buf) - 3)
            value = rng.choice([0, 1, 0x7F, 0x80, 0xFF, 0xFFFF, 0x7FFFFFFF, 0xFFFFFFFF, rng.getrandbits(32)])
            buf[at : at + 4] = value.to_bytes(4, "big")
        elif choice == 7:
            digits = str(rng.choice([0, -1, 65535, 65536, 2**31, 2**63, 10**30]))
            buf[pos:pos] = digits.encode()
    return bytes(buf[:MAX_LEN]) or data  # the empty input is a seed's business, not every tenth mutant's


def _run_plain(child: _Child, seed: int) -> None:
    rng = random.Random(seed)
    seeds = _seeds(child.target)
    current = OUT / child.target / ".current"
    current.parent.mkdir(parents=True, exist_ok=True)
    native = child.target == "rtp"
    first = iter(seeds)
    while True:
        data = next(first, None) or _mutate(rng, rng.choice(seeds), seeds)
        if native:  # a signal leaves no exception to catch: the input stays on disk for the parent
            current.write_bytes(data)
        child.run_one(data)


def _run_atheris(child: _Child, seconds: float, work: Path) -> None:
    OUT.joinpath(child.target).mkdir(parents=True, exist_ok=True)
    argv = [
        sys.argv[0],
        str(work),  # libFuzzer adds what it learns to the first directory; the seeds stay as they are
        str(CORPUS / child.target),
        f"-max_len={MAX_LEN}",
        f"-max_total_time={max(1, int(seconds) + 5)}",
        "-timeout=10",
        f"-artifact_prefix={OUT / child.target}/",
        "-print_final_stats=0",
        "-verbosity=0",
    ]
    atheris.Setup(argv, child.run_one)
    atheris.Fuzz()


def child_main(target: str, seconds: float, stats_path: Path, engine: str, seed: int) -> None:
    if engine == "atheris":
        with atheris.instrument_imports(include=["tonebridge"]):
            child = _Child(target, seconds, stats_path)
        _run_atheris(child, seconds, stats_path.parent / f"{target}-corpus")
    else:
        child = _Child(target, seconds, stats_path)
        child.dump()
        _run_plain(child, seed)


# The parent: one child after another until the time is up, counting the ones that died -------------------------


def run_target(target: str, seconds: float, engine: str, seed: int) -> dict[str, object]:
    started = time.monotonic()
    executions = 0
    crashes: dict[str, str] = {}
    restarts = 0
    with tempfile.TemporaryDirectory(prefix="fuzz-stats-") as tmp:
        while (left := seconds - (time.monotonic() - started)) > 0.5 or restarts == 0:
            stats_path = Path(tmp) / f"{target}-{restarts}.json"
            (Path(tmp) / f"{target}-corpus").mkdir(exist_ok=True)  # what libFuzzer learns outlives a restart
            log_path = Path(tmp) / f"{target}-{restarts}.log"
            command = [sys.executable, __file__, "--child", target, "--seconds", f"{max(left, 1):.1f}"]
            command += ["--stats", str(stats_path), "--engine", engine, "--seed", str(seed + restarts)]
            command += ["--out", str(OUT)]
            with log_path.open("wb") as log:
                result = subprocess.run(command, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)
            for line in log_path.read_text(errors="replace").splitlines():
                if line.startswith(f"[{target}]"):  # a caught crash, as the child reported it
                    print(line, file=sys.stderr)
            if stats_path.exists():
                stats = json.loads(stats_path.read_text())
                executions += stats["executions"]
                crashes.update(stats["crashes"])
            if result.returncode != 0:
                # A signal or libFuzzer's own exit on a crash: count it and keep its input.
                saved = OUT / target / ".current"
                artifacts = [*(OUT / target).glob("crash-*"), *(OUT / target).glob("timeout-*")]
                kept = sorted(artifacts, key=lambda path: path.stat().st_mtime)  # libFuzzer's is the newest
                if engine == "plain" and saved.exists():
                    data = saved.read_bytes()
                    path = OUT / target / f"crash-{hashlib.sha1(data).hexdigest()[:16]}"
                    path.write_bytes(data)
                    kept.append(path)
                where = _shown(kept[-1]) if kept else "?"
                crashes[f"process exit {result.returncode}"] = where
                OUT.joinpath(target).mkdir(parents=True, exist_ok=True)
                kept_log = OUT / target / f"exit{result.returncode}-{restarts}.log"
                kept_log.write_bytes(log_path.read_bytes()[-20_000:])
                print(
                    f"[{target}] child ended with {result.returncode}; input {where}, log {kept_log}",
                    file=sys.stderr,
                )
            (OUT / target / ".current").unlink(missing_ok=True)
            restarts += 1
    elapsed = time.monotonic() - started
    return {
        "target": target,
        "engine": engine,
        "seconds": round(elapsed, 1),
        "executions": executions,
        "per_second": round(executions / elapsed) if elapsed else 0,
        "crashes": len(crashes),
        "inputs": crashes,
    }


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--target", choices=TARGETS)
    parser.add_argument("--all", action="store_true", help="every target, one after another")
    parser.add_argument("--seconds", type=float, default=60.0, help="per target")
    parser.add_argument("--engine", choices=("atheris", "plain"), default="atheris" if atheris else "plain")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--json", action="store_true", help="one JSON line per target instead of the table")
    parser.add_argument("--out", type=Path, help="where crashing inputs go (bench/out/fuzz/<target>/)")
    parser.add_argument("--child", choices=TARGETS, help=argparse.SUPPRESS)
    parser.add_argument("--stats", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.engine == "atheris" and atheris is None:
        parser.error("atheris is not installed (pip install atheris), use --engine plain")
    global OUT
    OUT = (args.out or OUT_DEFAULT).resolve()
    if args.child:
        child_main(args.child, args.seconds, args.stats, args.engine, args.seed)
        return 0
    targets = list(TARGETS) if args.all else [args.target] if args.target else []
    if not targets:
        parser.error("name a --target or pass --all")
    if not args.json:
        print(f"{'target':<7} {'engine':<8} {'seconds':>8} {'executions':>11} {'exec/s':>8} {'crashes':>8}")
    failed = False
    for target in targets:
        result = run_target(target, args.seconds, args.engine, args.seed)
        failed |= bool(result["crashes"])
        if args.json:
            print(json.dumps(result), flush=True)
        else:
            print(
                f"{target:<7} {result['engine']:<8} {result['seconds']:>8} {result['executions']:>11,} "
                f"{result['per_second']:>8,} {result['crashes']:>8}",
                flush=True,
            )
            for signature, path in result["inputs"].items():
                print(f"        {signature}: {path}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
