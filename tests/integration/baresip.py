"""Run baresip 1.0.0 (Debian `baresip`) as a real SIP/RTP peer on 127.0.0.1 and steer it from a test.

One `Baresip` is one baresip process with its own config folder. It plays a WAV file as its microphone
(`aufile`), records what it sends and hears (`sndfile`), is steered over one persistent `ctrl_tcp`
connection (netstring-framed JSON commands; events collected for `wait_event`) and sends RFC 4733 digits
when a key arrives on its `cons` UDP port.

Account lines (the `accounts` argument) are baresip's own syntax, one account per line:

- Direct calls, answered by themselves, no registration (what the self-test uses)::

      <sip:b@127.0.0.1:SIP_PORT;transport=udp>;regint=0;answermode=auto

  `regint=0` matters: without it baresip registers every hour to the AOR's host and port.
  `direct_account()` builds this line.
- Registered to a registrar (e.g. Tonebridge) listening on 127.0.0.1:REG_PORT::

      <sip:alice@127.0.0.1:REG_PORT;transport=udp>;auth_pass=secret;regint=60;answermode=auto

  baresip sends REGISTER to the AOR's host and port; the digest user is the AOR user unless
  `;auth_user=NAME` says otherwise. A registering account needs `auth_pass` (otherwise baresip asks for a
  password on stdin). Drop `;answermode=auto` to leave incoming calls ringing (`answer()` takes them).
  `registering_account()` builds this line. REGISTER_OK / REGISTER_FAIL events report the outcome.

baresip 1.0.0 facts this module relies on (found by running it):

- `sip_listen 127.0.0.1:P` binds UDP and TCP on P and TLS on P+1: `allocate_ports()` keeps P+1 free and
  the constructor refuses a control or console port there.
- Accounts in the `accounts` file (read by `module_tmp account.so`) register before any ctrl_tcp client can
  connect, so their REGISTER_OK / REGISTER_FAIL events are lost, and malformed lines are skipped silently.
  The harness therefore loads no `account` module and adds each line with the ctrl_tcp command `uanew`
  once connected (it answers ok=false for a bad line); the `accounts` file it writes is a record only.
  The first account is the one `dial` uses. With no account at all, `dial` fails with "Invalid argument".
- `aufile` loads the whole WAV at start, needs 16-bit mono at the codec's rate (8 kHz for G.711), and
  ends the call when the file runs out. Without `audio_source_wav` a long silent WAV is played, because
  RFC 4733 digits leave through the audio source's send loop.
- `sndfile` writes `dump-YYYY-MM-DD-HH-MM-SS-enc.wav` (sent) and `...-dec.wav` (heard) into `snd_path`,
  named by local time at the start of the call's audio (two calls started in the same second overwrite
  each other). libsndfile completes the WAV header only when the call's audio is torn down.
- ctrl_tcp frames are netstrings `LEN:JSON,`. Commands are `{"command", "params", "token"}`; responses are
  `{"response": true, "ok", "data", "token"}`; events are `{"event": true, "type", "class", "accountaor",
  "direction", "peeruri", "id", "param"}` where `param` holds the digit of CALL_DTMF_START, the peer URI
  of CALL_ESTABLISHED and the reason of CALL_CLOSED.
- `cons` turns each byte of a UDP datagram into a key press; the `menu` module sends a digit key as
  RFC 4733 while a call is up, and the release code 0x04 ends the event.
- `ausine` works at 48 kHz only, so silence comes from a WAV file, not from a generator.
"""

from __future__ import annotations

import contextlib
import json
import re
import shutil
import socket
import struct
import subprocess
import threading
import time
import wave
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import harness

HOST = "127.0.0.1"
MODULE_PATH = Path("/usr/lib/baresip/modules")
# Length of the silent WAV played when the caller gives no source: longer than any test call.
SILENCE_SECONDS = 300
# The key code `cons` maps to "key released" (it ends a DTMF event started by a digit key).
KEY_RELEASE = b"\x04"
DIGITS = "0123456789*#"
_BYTES_PER_SECOND = 8000 * 2
_CONFIG_UNSAFE = re.compile(r"[\s#,]")
_ANSI = re.compile(rb"\x1b\[[0-9;]*m")


class BaresipError(AssertionError):
    """baresip failed to start, refused a command, or an awaited event did not come."""


def free_port(exclude: Iterable[int] = ()) -> int:
    """A port free for both UDP and TCP on 127.0.0.1 right now (and not in `exclude`)."""
    excluded = set(exclude)
    for _ in range(500):
        port = harness.free_port()
        if port not in excluded:
            return port
    raise BaresipError("no free UDP+TCP port on 127.0.0.1")


@dataclass(frozen=True)
class Ports:
    """The three ports one baresip instance listens on."""

    sip: int
    ctrl: int
    cons: int


def allocate_ports() -> Ports:
    """Distinct free ports for one instance, keeping sip+1 free as well (baresip's TLS listener).

    All candidate sockets stay bound until every port is chosen, so the three are distinct.
    """
    held: list[socket.socket] = []

    def hold(kind: int, port: int) -> bool:
        sock = socket.socket(socket.AF_INET, kind)
        try:
            sock.bind((HOST, port))
        except OSError:
            sock.close()
            return False
        held.append(sock)
        return True

    def take(needs_next_tcp: bool) -> int:
        for _ in range(500):
            udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            udp.bind((HOST, 0))
            port = udp.getsockname()[1]
            mark = len(held)
            held.append(udp)
            if (
                port < 65535
                and hold(socket.SOCK_STREAM, port)
                and (
                    not needs_next_tcp
                    or (hold(socket.SOCK_STREAM, port + 1) and hold(socket.SOCK_DGRAM, port + 1))
                )
            ):
                return port
            for sock in held[mark:]:
                sock.close()
            del held[mark:]
        raise BaresipError("no free ports on 127.0.0.1")

    try:
        sip = take(needs_next_tcp=True)
        return Ports(sip=sip, ctrl=take(False), cons=take(False))
    finally:
        for sock in held:
            sock.close()


def direct_account(user: str, sip_port: int, *, auto_answer: bool = True) -> str:
    """An account line for calls made and taken directly (no registrar) by an instance on `sip_port`."""
    line = f"<sip:{user}@{HOST}:{sip_port};transport=udp>;regint=0"
    return line + (";answermode=auto" if auto_answer else "")


def registering_account(
    user: str,
    registrar_port: int,
    password: str,
    *,
    auto_answer: bool = True,
    regint: int = 60,
    auth_user: str | None = None,
) -> str:
    """An account line that registers `user` (digest password `password`) to 127.0.0.1:`registrar_port`."""
    line = f"<sip:{user}@{HOST}:{registrar_port};transport=udp>;auth_pass={password};regint={regint}"
    if auth_user is not None:
        line += f";auth_user={auth_user}"
    return line + (";answermode=auto" if auto_answer else "")


def _check_config_safe(what: str, value: str) -> None:
    # baresip's config values end at whitespace, and ',' separates module from device.
    if _CONFIG_UNSAFE.search(value):
        raise ValueError(
            f"{what} {value!r} holds whitespace, ',' or '#', which baresip's config cannot carry"
        )


def _check_source_wav(path: Path) -> None:
    with wave.open(str(path), "rb") as inp:
        shape = (inp.getframerate(), inp.getnchannels(), inp.getsampwidth())
    if shape != (8000, 1, 2):
        raise ValueError(
            f"{path}: aufile with G.711 needs 8000 Hz mono 16-bit, got {shape[0]} Hz, "
            f"{shape[1]} channel(s), {8 * shape[2]}-bit"
        )


def _finished_wav(path: Path) -> bool:
    """Whether libsndfile has closed `path`: RIFF and data sizes in the header match the file's length."""
    try:
        with path.open("rb") as inp:
            blob = inp.read(4096)
            length = inp.seek(0, 2)
    except OSError:
        return False
    if len(blob) < 44 or blob[:4] != b"RIFF" or blob[8:12] != b"WAVE":
        return False
    if struct.unpack_from("<I", blob, 4)[0] != length - 8:
        return False
    offset = 12
    while offset + 8 <= len(blob):
        chunk, size = blob[offset : offset + 4], struct.unpack_from("<I", blob, offset + 4)[0]
        if chunk == b"data":
            return size == length - offset - 8
        offset += 8 + size + (size & 1)
    return False


class Baresip:
    """One baresip 1.0.0 process on 127.0.0.1, steered over ctrl_tcp and cons.

    Use as a context manager, or call `stop()` in a `finally`. Typical run::

        ports = allocate_ports()
        peer = Baresip(tmp_path / "b", sip_port=ports.sip, ctrl_port=ports.ctrl, cons_port=ports.cons,
                       accounts=[direct_account("b", ports.sip)], audio_source_wav=wav)
        peer.wait_ready()
        ...
        peer.wait_event("CALL_ESTABLISHED", timeout=10)
        peer.stop()
    """

    def __init__(
        self,
        workdir: Path,
        *,
        sip_port: int,
        ctrl_port: int,
        cons_port: int,
        accounts: list[str],
        audio_source_wav: Path | None = None,
        record: bool = True,
        rtp_ports: tuple[int, int] | None = None,
        extra_config: str = "",
        binary: str = "baresip",
    ) -> None:
        if len({sip_port, sip_port + 1, ctrl_port, cons_port}) != 4:
            raise ValueError(
                f"ports clash: sip {sip_port} (and {sip_port + 1} for TLS), ctrl {ctrl_port}, "
                f"cons {cons_port}; use allocate_ports()"
            )
        if not accounts:
            raise ValueError("baresip needs at least one account line to dial or answer")
        found = shutil.which(binary)
        if found is None:
            raise BaresipError(f"{binary} is not installed (Debian package `baresip`)")
        self.workdir = Path(workdir).resolve()
        self.sip_port, self.ctrl_port, self.cons_port = sip_port, ctrl_port, cons_port
        self.accounts = list(accounts)
        self.record = record
        self.record_dir = self.workdir / "recordings"
        self.log_path = self.workdir / "baresip.log"
        self.events: list[dict[str, Any]] = []
        self._consumed: set[int] = set()
        self._responses: dict[str, dict[str, Any]] = {}
        self._lines: deque[str] = deque(maxlen=4000)
        self._cond = threading.Condition()
        self._send_lock = threading.Lock()
        self._tokens = 0
        self._sock: socket.socket | None = None
        self._ctrl_reader: threading.Thread | None = None

        self.workdir.mkdir(parents=True, exist_ok=True)
        _check_config_safe("workdir", str(self.workdir))
        if audio_source_wav is None:
            source = self.workdir / "silence.wav"
            with wave.open(str(source), "wb") as out:
                out.setnchannels(1)
                out.setsampwidth(2)
                out.setframerate(8000)
                out.writeframes(bytes(SILENCE_SECONDS * _BYTES_PER_SECOND))
        else:
            source = Path(audio_source_wav).resolve()
            _check_source_wav(source)
        _check_config_safe("audio_source_wav", str(source))
        self.audio_source_wav = source
        if record:
            self.record_dir.mkdir(exist_ok=True)
        self._write_config(rtp_ports, extra_config)

        self._log = self.log_path.open("w", encoding="utf-8")
        self.proc = subprocess.Popen(
            [found, "-f", str(self.workdir)],
            cwd=self.workdir,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        self._out_reader = threading.Thread(
            target=self._read_output, name=f"baresip-out-{sip_port}", daemon=True
        )
        self._out_reader.start()

    # -- configuration -------------------------------------------------------------------------------

    def _write_config(self, rtp_ports: tuple[int, int] | None, extra: str) -> None:
        modules = ["cons.so", "g711.so", "aufile.so", "aubridge.so"] + (["sndfile.so"] if self.record else [])
        lines = [
            "poll_method\tepoll",
            f"sip_listen\t{HOST}:{self.sip_port}",
            "call_local_timeout\t120",
            "call_max_calls\t4",
            # No sound card: the player is an aubridge device nobody reads from; received audio is still
            # decoded (and recorded by sndfile) before it reaches the player.
            "audio_player\taubridge,nil",
            "audio_alert\taubridge,alert",
            f"audio_source\taufile,{self.audio_source_wav}",
            "audio_level\tno",
            "ausrc_format\ts16",
            "auplay_format\ts16",
            "auenc_format\ts16",
            "audec_format\ts16",
            "rtcp_mux\tno",
            "jitter_buffer_delay\t5-10",
            "rtp_stats\tno",
            f"net_interface\t{HOST}",
            # Any stray lookup goes to a closed loopback port and fails at once: no DNS leaves the machine.
            f"dns_server\t{HOST}:53",
            f"module_path\t{MODULE_PATH}",
            *(f"module\t{name}" for name in modules),
            "module_app\tmenu.so",
            "module_app\tctrl_tcp.so",
            f"cons_listen\t{HOST}:{self.cons_port}",
            f"ctrl_tcp_listen\t{HOST}:{self.ctrl_port}",
        ]
        if rtp_ports is not None:
            lines.append(f"rtp_ports\t{rtp_ports[0]}-{rtp_ports[1]}")
        if self.record:
            lines.append(f"snd_path\t{self.record_dir}")
        (self.workdir / "config").write_text("\n".join(lines) + "\n" + extra + "\n", encoding="utf-8")
        (self.workdir / "accounts").write_text(
            "# Not loaded at start (no account module): the harness adds these with `uanew` over ctrl_tcp.\n"
            + "\n".join(f"#{line}" for line in self.accounts)
            + "\n",
            encoding="utf-8",
        )

    # -- process output ------------------------------------------------------------------------------

    def _read_output(self) -> None:
        assert self.proc.stdout is not None
        pending = b""
        while chunk := self.proc.stdout.read1(65536):
            self._log.write(chunk.decode("utf-8", "replace"))
            # The menu's status line redraws itself with '\r': split on it too.
            parts = re.split(rb"[\r\n]", _ANSI.sub(b"", pending + chunk))
            pending = parts.pop()
            with self._cond:
                self._lines.extend(p.decode("utf-8", "replace") for p in parts if p.strip())
                self._cond.notify_all()
        with self._cond:
            if pending.strip():
                self._lines.append(pending.decode("utf-8", "replace"))
            self._cond.notify_all()
        self._log.close()

    @property
    def output(self) -> str:
        """baresip's stdout and stderr so far (the last few thousand lines; all of it is in `log_path`)."""
        with self._cond:
            return "\n".join(self._lines)

    def _tail(self, lines: int = 40) -> str:
        with self._cond:
            return "\n".join(list(self._lines)[-lines:])

    def _failure(self, message: str) -> BaresipError:
        with self._cond:
            types = [e.get("type") for e in self.events]
        state = "running" if self.proc.poll() is None else f"exited with {self.proc.returncode}"
        return BaresipError(
            f"baresip :{self.sip_port} ({state}): {message}\nevents: {types}\noutput tail:\n{self._tail()}"
        )

    def _wait_line(self, pattern: str, deadline: float) -> re.Match[str] | None:
        regex = re.compile(pattern)
        index = 0
        with self._cond:
            while True:
                lines = list(self._lines)
                for line in lines[index:]:
                    if match := regex.search(line):
                        return match
                index = len(lines)
                remaining = deadline - time.monotonic()
                if remaining <= 0 or not self._out_reader.is_alive():
                    return None
                self._cond.wait(remaining)

    def wait_ready(self, timeout: float = 10.0) -> None:
        """Wait for "baresip is ready.", check the modules loaded, open ctrl_tcp, then add the accounts."""
        deadline = time.monotonic() + timeout
        if self._wait_line(r"baresip is ready\.", deadline) is None:
            raise self._failure(f"not ready within {timeout}s")
        problems = [
            line
            for line in self.output.splitlines()
            if re.search(r"failed to listen|Address already in use|^module .*: |could not open", line)
        ]
        if problems:
            raise self._failure("startup problems: " + "; ".join(problems))
        try:
            self._sock = socket.create_connection(
                (HOST, self.ctrl_port), timeout=max(0.1, deadline - time.monotonic())
            )
        except OSError as exc:
            raise self._failure(f"cannot connect to ctrl_tcp on {self.ctrl_port}: {exc}") from None
        self._sock.settimeout(None)
        self._ctrl_reader = threading.Thread(
            target=self._read_ctrl, name=f"baresip-ctrl-{self.sip_port}", daemon=True
        )
        self._ctrl_reader.start()
        for line in self.accounts:
            response = self.command("uanew", line, timeout=max(0.1, deadline - time.monotonic()))
            if not response.get("ok"):
                raise self._failure(f"account line refused: {line!r}: {response.get('data')!r}")

    # -- ctrl_tcp --------------------------------------------------------------------------------------

    def _read_ctrl(self) -> None:
        assert self._sock is not None
        buffer = b""
        while True:
            try:
                chunk = self._sock.recv(65536)
            except OSError:
                break
            if not chunk:
                break
            buffer += chunk
            messages, buffer = _split_netstrings(buffer)
            with self._cond:
                for message in messages:
                    if message.get("event"):
                        self.events.append(message)
                    elif message.get("response"):
                        self._responses[str(message.get("token", ""))] = message
                self._cond.notify_all()
        with self._cond:
            self._cond.notify_all()

    def command(self, name: str, params: str | None = None, timeout: float = 5.0) -> dict[str, Any]:
        """Send one ctrl_tcp command and return baresip's response (`ok`, `data`, `token`)."""
        if self._sock is None:
            raise BaresipError("call wait_ready() before sending commands")
        with self._cond:
            self._tokens += 1
            token = f"t{self._tokens}"
        body: dict[str, Any] = {"command": name, "token": token}
        if params is not None:
            body["params"] = params
        payload = json.dumps(body).encode()
        with self._send_lock:
            self._sock.sendall(str(len(payload)).encode() + b":" + payload + b",")
        deadline = time.monotonic() + timeout
        with self._cond:
            while token not in self._responses:
                remaining = deadline - time.monotonic()
                if remaining <= 0 or self._ctrl_reader is None or not self._ctrl_reader.is_alive():
                    raise self._failure(f"no response to {body} within {timeout}s")
                self._cond.wait(remaining)
            return self._responses.pop(token)

    def _checked(self, name: str, params: str | None = None) -> dict[str, Any]:
        response = self.command(name, params)
        if not response.get("ok"):
            raise self._failure(f"command {name} {params or ''} refused: {response.get('data')!r}")
        return response

    def wait_event(self, type: str, timeout: float = 10.0, **match: Any) -> dict[str, Any]:
        """The oldest not yet returned event of `type` whose fields equal `match` (e.g. `param="1"`).

        Each event is returned once, so two waits for CALL_DTMF_START see two different digits.
        """
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                for index, event in enumerate(self.events):
                    if (
                        index not in self._consumed
                        and event.get("type") == type
                        and all(event.get(key) == value for key, value in match.items())
                    ):
                        self._consumed.add(index)
                        return event
                remaining = deadline - time.monotonic()
                if remaining <= 0 or self._ctrl_reader is None or not self._ctrl_reader.is_alive():
                    break
                self._cond.wait(remaining)
        raise self._failure(f"no event {type} {match or ''} within {timeout}s")

    # -- calls -----------------------------------------------------------------------------------------

    def dial(self, uri: str) -> dict[str, Any]:
        """Call `uri` from the first account (e.g. `sip:b@127.0.0.1:5080`); wait for CALL_ESTABLISHED."""
        return self._checked("dial", uri)

    def answer(self) -> dict[str, Any]:
        """Take the ringing incoming call (for accounts without `answermode=auto`)."""
        return self._checked("accept")

    def hangup(self) -> dict[str, Any]:
        """Hang up the current call; CALL_CLOSED follows."""
        return self._checked("hangup")

    def press(self, digit: str) -> None:
        """Press and release one key: baresip sends it as an RFC 4733 event on the current call."""
        if len(digit) != 1 or digit not in DIGITS:
            raise ValueError(f"press() takes one of {DIGITS!r}, got {digit!r}")
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
            udp.sendto(digit.encode(), (HOST, self.cons_port))
            udp.sendto(KEY_RELEASE, (HOST, self.cons_port))

    # -- recordings ------------------------------------------------------------------------------------

    def _dump(self, kind: str) -> Path | None:
        if not self.record:
            return None
        dumps = sorted(self.record_dir.glob(f"dump-*-{kind}.wav"))
        return dumps[-1] if dumps else None

    def _finished_dump(self, kind: str, timeout: float) -> Path | None:
        deadline = time.monotonic() + timeout
        path = self._dump(kind)
        if path is None:
            return None
        # libsndfile writes the header's sizes when the call's audio is freed, just after CALL_CLOSED.
        while not _finished_wav(path):
            if time.monotonic() >= deadline:
                raise self._failure(f"{path.name} still open after {timeout}s: was the call hung up?")
            time.sleep(0.02)
        return path

    def received_wav(self, timeout: float = 5.0) -> Path | None:
        """The WAV of what the latest call heard (decoded, before the player); None without recordings.

        Call it after CALL_CLOSED: it waits up to `timeout` for libsndfile to close the file.
        """
        return self._finished_dump("dec", timeout)

    def sent_wav(self, timeout: float = 5.0) -> Path | None:
        """The WAV of what the latest call sent (before encoding); None without recordings."""
        return self._finished_dump("enc", timeout)

    def wait_received_audio(self, seconds: float, timeout: float = 10.0) -> None:
        """Wait until the current call has decoded `seconds` of received audio (the dump grows per packet)."""
        if not self.record:
            raise BaresipError("wait_received_audio needs record=True")
        deadline = time.monotonic() + timeout
        wanted = 44 + int(seconds * _BYTES_PER_SECOND)
        while True:
            path = self._dump("dec")
            if path is not None and path.stat().st_size >= wanted:
                return
            if time.monotonic() >= deadline or self.proc.poll() is not None:
                raise self._failure(f"did not receive {seconds}s of audio within {timeout}s")
            time.sleep(0.02)

    # -- shutdown --------------------------------------------------------------------------------------

    def stop(self, timeout: float = 3.0) -> int:
        """Quit baresip (ctrl_tcp `quit`, then SIGTERM twice, then SIGKILL) and reap it; returns the exit code."""
        if self.proc.poll() is None and self._sock is not None:
            payload = b'{"command": "quit"}'
            with contextlib.suppress(OSError), self._send_lock:
                self._sock.sendall(str(len(payload)).encode() + b":" + payload + b",")
        # `quit` waits for the BYEs of open calls, which a vanished peer never answers. baresip's first
        # SIGTERM asks for the same graceful stop; its second one exits at once.
        for signal_, wait in ((None, timeout), ("term", 1.0), ("term", timeout), ("kill", timeout)):
            if signal_ == "term":
                self.proc.terminate()
            elif signal_ == "kill":
                self.proc.kill()
            try:
                self.proc.wait(wait)
                break
            except subprocess.TimeoutExpired:
                continue
        if self._sock is not None:
            with contextlib.suppress(OSError):
                self._sock.close()
        self._out_reader.join(timeout)
        if self._ctrl_reader is not None:
            self._ctrl_reader.join(timeout)
        return self.proc.returncode

    def __enter__(self) -> Baresip:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _split_netstrings(buffer: bytes) -> tuple[list[dict[str, Any]], bytes]:
    """Complete netstrings decoded as JSON objects, and the unconsumed rest of `buffer`."""
    messages: list[dict[str, Any]] = []
    while True:
        colon = buffer.find(b":")
        if colon < 0:
            return messages, buffer
        header = buffer[:colon]
        if not header.isdigit():
            raise BaresipError(f"ctrl_tcp sent a malformed netstring: {buffer[:60]!r}")
        end = colon + 1 + int(header)
        if len(buffer) < end + 1:
            return messages, buffer
        if buffer[end : end + 1] != b",":
            raise BaresipError(f"ctrl_tcp netstring without its ',': {buffer[: end + 1][:80]!r}")
        messages.append(json.loads(buffer[colon + 1 : end]))
        buffer = buffer[end + 1 :]
