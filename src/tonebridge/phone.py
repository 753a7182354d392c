"""`tonebridge phone`: a scriptable softphone on Tonebridge's own SIP and RTP stacks.

It dials or answers, sends digits as RFC 4733, SIP INFO or in-band tones, plays a WAV or a tone, records
what it hears to a WAV, puts the call on hold and back, and hangs up after N seconds or on a command.
Commands also come on stdin, one per line: `dtmf DIGITS [rfc4733|info|inband]`, `hold [sendonly|inactive]`,
`resume`, `hangup`. It prints one `key=value` event per line on stdout, which is what tests read.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import stat
import sys
from pathlib import Path
from typing import assert_never

import numpy as np

from tonebridge.calls.call import EndReason
from tonebridge.calls.engine import CallEngine
from tonebridge.calls.events import CallAnswered, CallEnded, CallEvent, ConferenceEnded, KeyPressed
from tonebridge.calls.session import Destination, Session
from tonebridge.config import Config, ServerConfig
from tonebridge.media.clock import MediaClock
from tonebridge.media.endpoint import Press
from tonebridge.media.g711 import CODECS
from tonebridge.media.tones import sine
from tonebridge.media.wav import WavPlayer, read_wav, write_wav
from tonebridge.sip.stack import SipStack


def emit(event: str, **fields: object) -> None:
    parts = [f"event={event}"] + [f"{k}={v}" for k, v in fields.items()]
    print(" ".join(parts), flush=True)


class PhoneApplication:
    """Answers inbound calls (in `answer` mode) and reports everything as events."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.sessions: list[Session] = []
        self.ended = asyncio.Event()
        self.answered: asyncio.Queue[Session] = asyncio.Queue()
        self._pressed_at: dict[str, float] = {}  # call id -> when the key now held went down
        self._frames_heard: dict[str, int] = {}  # call id -> frames heard (recorded) so far

    def source(self) -> WavPlayer | None:
        if self.args.play:
            return WavPlayer(read_wav(self.args.play), loop=True)
        if self.args.tone:
            # One second of tone, looped: seamless because every frequency here fits a whole number of cycles.
            return WavPlayer(sine(self.args.tone, 1000, self.args.level), loop=True)
        return None

    async def incoming(self, engine: CallEngine, session: Session) -> None:
        session.leg.source = self.source()
        emit("incoming", call_id=session.call_id, sip_from=session.call.remote_uri)
        engine.answer(session)

    def on_event(self, event: CallEvent) -> None:
        match event:
            case CallAnswered(session=session):
                self._answered(session)
            case KeyPressed(session=session, press=press):
                self._pressed(session, press)
            case CallEnded(session=session):
                self._ended(session)
            case ConferenceEnded():
                pass  # a phone has no rooms
            case _:
                assert_never(event)

    def _answered(self, session: Session) -> None:
        if session.leg.source is None:
            session.leg.source = self.source()
        self.sessions.append(session)
        session.leg.clock.listen(session.leg, lambda frame, s=session: self.heard(s))  # type: ignore[union-attr]
        media = session.media
        emit(
            "answered",
            call_id=session.call_id,
            codec=media.codec if media else "none",
            telephone_event=media.telephone_event_pt if media else None,
        )
        self.answered.put_nowait(session)

    def heard(self, session: Session) -> None:
        """Report each whole second of recorded audio, so scripts can wait on audio, not on time. Called on
        the loop once per frame, possibly after the media thread has recorded more: count the calls, not
        the recording's length, so no second is skipped."""
        if session.leg.recording is None:
            return
        frames = self._frames_heard[session.call_id] = self._frames_heard.get(session.call_id, 0) + 1
        if frames % 50 == 0:
            emit("heard", call_id=session.call_id, seconds=frames // 50)

    def _pressed(self, session: Session, press: Press) -> None:
        if press.started:
            self._pressed_at[session.call_id] = press.time
            emit("dtmf", call_id=session.call_id, digit=press.digit, source=press.source)
        else:
            started = self._pressed_at.pop(session.call_id, press.time)
            emit(
                "dtmf_ended",
                call_id=session.call_id,
                digit=press.digit,
                source=press.source,
                held_ms=round((press.time - started) * 1000),
            )

    def _ended(self, session: Session) -> None:
        call = session.call
        emit(
            "ended",
            call_id=session.call_id,
            reason=call.reason.value if call.reason else "",
            result=call.result.value if call.result else "",
            status=call.sip_status or "",
            rtp_in=session.leg.stats.packets_received,
            rtp_out=session.leg.stats.packets_sent,
        )
        if self.args.record and session.leg.recording is not None:
            samples = (
                np.concatenate(session.leg.recording) if session.leg.recording else np.zeros(0, np.int16)
            )
            path = Path(self.args.record)
            if len(self.sessions) > 1:
                path = path.with_name(f"{path.stem}-{len(self.sessions)}{path.suffix}")
            write_wav(path, samples)
            emit("recorded", call_id=session.call_id, path=path, samples=len(samples))
        self.ended.set()


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="phone_command", required=True)
    dial = sub.add_parser("dial", help="call a SIP URI")
    dial.add_argument("uri")
    dial.add_argument("--from-user", default="phone", help="user part of From")
    answer = sub.add_parser("answer", help="wait for calls and answer them")
    answer.add_argument("--calls", type=int, default=1, help="exit after this many calls ended (0: never)")
    for p in (dial, answer):
        p.add_argument("--bind", default="127.0.0.1:0", help="local SIP address (port 0: any free port)")
        p.add_argument("--rtp-ports", default="40000-49999")
        p.add_argument("--transport", choices=("udp", "tcp"), default="udp")
        p.add_argument(
            "--codec",
            choices=CODECS,
            action="append",
            help="codecs to offer/accept, in order (default PCMU, PCMA)",
        )
        p.add_argument(
            "--no-telephone-event",
            action="store_true",
            help="neither offer nor accept RFC 4733 (as a PSTN gateway without it)",
        )
        p.add_argument("--dtmf", default="", help="digits to send once answered")
        p.add_argument("--dtmf-mode", choices=("rfc4733", "info", "inband"), default="rfc4733")
        p.add_argument("--dtmf-delay", type=float, default=0.5, help="seconds after answer before digits")
        p.add_argument("--dtmf-duration", type=int, default=160, help="ms per digit")
        p.add_argument("--play", help="WAV file to send (looped)")
        p.add_argument("--tone", type=float, help="send a sine of this frequency (Hz)")
        p.add_argument("--level", type=float, default=-10.0, help="tone level in dBm0")
        p.add_argument("--record", help="write what the phone hears to this WAV")
        p.add_argument("--hangup-after", type=float, help="hang up this many seconds after answer")


async def run_phone(args: argparse.Namespace) -> int:
    low, high = (int(x) for x in args.rtp_ports.split("-"))
    host, _, port = args.bind.rpartition(":")
    config = Config(server=ServerConfig(sip=args.bind, rtp_ports=(low, high), public_address=host))
    stack = SipStack(host, int(port), public_address=host)
    clock = MediaClock(capacity=max(1, (high - low + 1) // 2))
    app = PhoneApplication(args)
    engine = CallEngine(config, stack, clock, app, user_agent_name=getattr(args, "from_user", "phone"))
    engine.observers.append(app.on_event)
    engine.codecs = tuple(args.codec) if args.codec else CODECS
    engine.telephone_event = not args.no_telephone_event
    engine.record_calls = bool(args.record)
    await stack.start()
    clock.start()
    emit("listening", sip=f"{host}:{stack.port}", transport="udp+tcp")
    loop = asyncio.get_running_loop()
    stdin_task = loop.create_task(_read_commands(engine, app, args))
    main_task = asyncio.current_task()
    for sig in (signal.SIGTERM, signal.SIGINT):
        # A signal hangs up properly (BYE) before the phone exits, so the far end sees a clean end.
        loop.add_signal_handler(sig, lambda: main_task.cancel() if main_task else None)
    exit_code = 0
    try:
        if args.phone_command == "dial":
            uri = (
                args.uri
                if args.transport == "udp" or "transport=" in args.uri
                else f"{args.uri};transport=tcp"
            )
            session = await engine.originate(Destination("sip", uri), cli=args.from_user)
            if not await session.wait_answered():
                exit_code = 1
            else:
                await _script(engine, session, args)
            await session.ended_event.wait()
        else:
            done = 0
            while args.calls == 0 or done < args.calls:
                session = await app.answered.get()
                await _script(engine, session, args)
                await session.ended_event.wait()
                done += 1
    except asyncio.CancelledError:
        exit_code = 0
    finally:
        stdin_task.cancel()
        await engine.shutdown()
        await clock.stop()
        await stack.close()
    return exit_code


async def _script(engine: CallEngine, session: Session, args: argparse.Namespace) -> None:
    """Send the scripted digits, then hang up when asked to."""
    loop = asyncio.get_running_loop()
    answered_at = loop.time()
    if args.dtmf:
        await asyncio.sleep(args.dtmf_delay)
        await engine.send_dtmf(session, args.dtmf, args.dtmf_mode, args.dtmf_duration)
        emit("dtmf_sent", call_id=session.call_id, digits=args.dtmf, mode=args.dtmf_mode)
    if args.hangup_after is not None and session.call.active:
        remaining = answered_at + args.hangup_after - loop.time()
        try:
            await asyncio.wait_for(session.ended_event.wait(), max(0.0, remaining))
        except TimeoutError:
            await engine.hangup(session, EndReason.CALLER_HANGUP)


async def _read_commands(engine: CallEngine, app: PhoneApplication, args: argparse.Namespace) -> None:
    loop = asyncio.get_running_loop()
    mode = os.fstat(sys.stdin.fileno()).st_mode if not sys.stdin.closed else 0
    if not (stat.S_ISFIFO(mode) or stat.S_ISSOCK(mode) or sys.stdin.isatty()):
        return  # /dev/null or a file: there are no commands to wait for, flags alone drive the phone
    reader = asyncio.StreamReader()
    try:
        await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    except (ValueError, OSError):
        return  # no usable stdin (closed or a file we cannot watch): flags alone drive the phone
    while True:
        line = await reader.readline()
        if not line:
            return
        words = line.decode(errors="replace").split()
        if not words:
            continue
        live = [s for s in app.sessions if s.call.active]
        if not live:
            emit("command_ignored", command=words[0], reason="no_call")
            continue
        session = live[-1]
        try:
            if words[0] == "dtmf" and len(words) >= 2:
                await engine.send_dtmf(
                    session, words[1], words[2] if len(words) > 2 else args.dtmf_mode, args.dtmf_duration
                )
                emit("dtmf_sent", call_id=session.call_id, digits=words[1])
            elif words[0] == "hold":
                response = await engine.set_direction(session, words[1] if len(words) > 1 else "sendonly")
                emit("hold", call_id=session.call_id, status=response.status)
            elif words[0] == "resume":
                response = await engine.set_direction(session, "sendrecv")
                emit("resume", call_id=session.call_id, status=response.status)
            elif words[0] == "hangup":
                await engine.hangup(session, EndReason.CALLER_HANGUP)
            else:
                emit("command_unknown", command=words[0])
        except ValueError as exc:
            emit("command_failed", command=words[0], reason=repr(str(exc)))
