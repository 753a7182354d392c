"""Conferences with real phones (`tonebridge phone`, real SIP and RTP) on loopback: who hears whom, room
control, and the DTMF modes of shared/spec/conference-dtmf.md, all checked on what the phones record or
decode themselves."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from audio import read_wav
from harness import Process, phone
from rooms import Plan, RoomsApplication

from tonebridge.conference.options import DtmfMode, DtmfOptions

pytestmark = pytest.mark.integration

FRAME = 160


def tone_dbm0(samples: np.ndarray, freq: float) -> float:
    """The level of one frequency in `samples` (Hann-windowed DFT bin), in dBm0 as a sine would read."""
    x = samples.astype(np.float64)
    window = np.hanning(len(x))
    t = np.arange(len(x)) / 8000.0
    amplitude = 2 * abs(np.sum(x * window * np.exp(-2j * np.pi * freq * t))) / np.sum(window)
    if amplitude <= 0:
        return -120.0
    return 20 * np.log10(amplitude / 32767.0) + 3.14


class Caller:
    """One phone in the room, with its own recording and the seconds it has heard so far."""

    def __init__(self, server, app: RoomsApplication, user: str, plan: Plan, tmp: Path, *args: str) -> None:  # type: ignore[no-untyped-def]
        app.plans[user] = plan
        self.user = user
        self.wav = tmp / f"{user}.wav"
        self.process: Process = phone(
            "dial",
            f"sip:{plan.room}@127.0.0.1:{server.server.stack.port}",
            "--from-user",
            user,
            "--record",
            str(self.wav),
            *args,
            stdin=True,
        )
        self.process.wait_for(r"event=answered", timeout=15)
        app.wait(lambda: user in app.sessions)
        self.session = app.sessions[user]

    @property
    def call_id(self) -> str:
        return self.session.call_id

    def heard_seconds(self) -> int:
        found = self.process.matches(r"event=heard .*seconds=(\d+)")
        return int(found[-1].group(1)) if found else 0

    def window_start(self) -> int:
        """The first whole second of recording that begins after now."""
        return self.heard_seconds() + 1

    def wait_heard(self, seconds: int) -> None:
        self.process.wait_for(rf"event=heard .*seconds={seconds}\b", timeout=seconds + 15)

    def hangup(self) -> np.ndarray:
        if self.process.proc.poll() is None:
            self.process.send("hangup")
        self.process.wait_for(r"event=recorded", timeout=15)
        self.process.wait_exit()
        samples, _ = read_wav(self.wav)
        return samples

    def digits(self) -> str:
        return "".join(m.group(1) for m in self.process.matches(r"^event=dtmf .*digit=(\S+)"))


def window(samples: np.ndarray, start_second: int, seconds: int = 1) -> np.ndarray:
    return samples[start_second * 8000 : (start_second + seconds) * 8000]


def phase(callers: list[Caller], seconds: int = 1) -> dict[str, int]:
    """Mark a phase: each caller's window is its next `seconds` whole seconds of recording; wait until
    they are recorded."""
    starts = {c.user: c.window_start() for c in callers}
    for c in callers:
        c.wait_heard(starts[c.user] + seconds)
    return starts


FREQS = {"a": 500.0, "b": 800.0, "c": 1300.0}
PRESENT = -30.0  # each phone sends its tone at -15 dBm0
ABSENT = -55.0


@pytest.fixture
def room(in_process_server, tmp_path: Path):  # type: ignore[no-untyped-def]
    app = RoomsApplication()
    server = in_process_server(application=app)
    made: list[Caller] = []

    def add(user: str, plan: Plan | None = None, *args: str) -> Caller:
        caller = Caller(server, app, user, plan or Plan("room1"), tmp_path, *args)
        made.append(caller)
        return caller

    add.server = server  # type: ignore[attr-defined]
    add.app = app  # type: ignore[attr-defined]
    yield add
    for caller in made:
        if caller.process.proc.poll() is None:
            caller.process.stop()


def three_tones(room) -> list[Caller]:  # type: ignore[no-untyped-def]
    a = room("a", None, "--tone", "500", "--level", "-15")
    b = room("b", None, "--tone", "800", "--level", "-15", "--codec", "PCMA")
    c = room("c", None, "--tone", "1300", "--level", "-15")
    return [a, b, c]


def assert_hears(samples: np.ndarray, present: set[str], absent: set[str], who: str) -> None:
    for name in present:
        level = tone_dbm0(samples, FREQS[name])
        assert level > PRESENT, f"{who} should hear {name} ({FREQS[name]} Hz), got {level:.1f} dBm0"
    for name in absent:
        level = tone_dbm0(samples, FREQS[name])
        assert level < ABSENT, f"{who} should not hear {name} ({FREQS[name]} Hz), got {level:.1f} dBm0"


def test_three_phones_hear_the_other_two_and_not_themselves(room) -> None:  # type: ignore[no-untyped-def]
    callers = three_tones(room)
    assert callers[1].session.media.codec == "PCMA" and callers[0].session.media.codec == "PCMU"
    starts = phase(callers)
    recordings = {c.user: c.hangup() for c in callers}
    for c in callers:
        others = set(FREQS) - {c.user}
        assert_hears(window(recordings[c.user], starts[c.user]), others, {c.user}, c.user)


def test_mute_hold_resume_kick_and_kick_all_on_recorded_audio(room) -> None:  # type: ignore[no-untyped-def]
    a, b, c = callers = three_tones(room)
    service = room.server.server.conferences
    run = room.server.loop.call_soon_threadsafe

    run(service.mute, b.call_id)
    muted = phase(callers)
    run(service.unmute, b.call_id)
    unmuted = phase(callers)
    run(service.hold, c.call_id, "music2")
    held = phase(callers)
    run(service.resume, c.call_id)
    resumed = phase(callers)
    run(service.kick, a.call_id)
    a.process.wait_for(r"event=ended .*reason=CALLEEHANGUP", timeout=10)
    kicked = phase([b, c])
    rec_a = a.hangup()
    run(service.kick_all, "room1")
    for caller in (b, c):
        caller.process.wait_for(r"event=ended .*reason=CALLEEHANGUP", timeout=10)
    rec = {"a": rec_a, "b": b.hangup(), "c": c.hangup()}

    # Muted: nobody hears b; b still hears a and c.
    assert_hears(window(rec["a"], muted["a"]), {"c"}, {"b", "a"}, "a while b muted")
    assert_hears(window(rec["c"], muted["c"]), {"a"}, {"b", "c"}, "c while b muted")
    assert_hears(window(rec["b"], muted["b"]), {"a", "c"}, {"b"}, "muted b")
    assert_hears(window(rec["a"], unmuted["a"]), {"b", "c"}, {"a"}, "a after unmute")
    # Held: c hears music (none of the room's tones, but sound), and nobody hears c.
    held_c = window(rec["c"], held["c"])
    assert_hears(held_c, set(), {"a", "b", "c"}, "held c")
    assert np.sqrt(np.mean(held_c.astype(np.float64) ** 2)) > 100, "held c hears no music"
    assert_hears(window(rec["a"], held["a"]), {"b"}, {"c", "a"}, "a while c held")
    assert_hears(window(rec["c"], resumed["c"]), {"a", "b"}, {"c"}, "c after resume")
    assert_hears(window(rec["b"], resumed["b"]), {"a", "c"}, {"b"}, "b after resume")
    # Kicked: a is gone for b and c.
    assert_hears(window(rec["b"], kicked["b"]), {"c"}, {"a", "b"}, "b after a kicked")
    assert service.rooms.get("room1") is None


def test_a_leg_that_stops_sending_does_not_stall_the_others(room) -> None:  # type: ignore[no-untyped-def]
    a, b, c = three_tones(room)
    c.process.stop(sig=9)  # SIGKILL: no BYE, no more RTP
    starts = phase([a, b])
    assert_hears(window(a.hangup(), starts["a"]), {"b"}, {"a"}, "a after c vanished")
    assert_hears(window(b.hangup(), starts["b"]), {"a"}, {"b"}, "b after c vanished")
    assert room.server.server.clock.late_ticks == 0


DIGITS = "1123#*0"


@pytest.mark.parametrize("method", ["rfc4733", "info", "inband"])
def test_forward_matrix(room, method: str) -> None:  # type: ignore[no-untyped-def]
    forward = DtmfOptions(mode=DtmfMode.FORWARD)
    te_receiver = room("rte", Plan("fwd", forward))
    inband_receiver = room("rin", Plan("fwd", forward), "--no-telephone-event")
    held_receiver = room("rheld", Plan("fwd", forward))
    room.server.loop.call_soon_threadsafe(room.server.server.conferences.hold, held_receiver.call_id)
    sender_args = ["--no-telephone-event"] if method == "inband" else []
    sender = room(
        "snd",
        Plan("fwd", forward),
        "--dtmf",
        DIGITS,
        "--dtmf-mode",
        method,
        "--dtmf-delay",
        "0.5",
        "--dtmf-duration",
        "100",
        *sender_args,
    )
    sender.process.wait_for(r"event=dtmf_sent", timeout=30)
    for receiver, source in ((te_receiver, "rfc4733"), (inband_receiver, "inband")):
        receiver.process.wait_for(r"^event=dtmf .*digit=0", timeout=15)
        assert receiver.digits() == DIGITS, receiver.process.output[-3000:]
        assert all(m.group(1) == source for m in receiver.process.matches(r"^event=dtmf .*source=(\S+)"))
    # Nothing goes to the held receiver or back to the sender (a final check after the others got all).
    phase([te_receiver])
    assert held_receiver.digits() == ""
    assert sender.digits() == ""


def test_ignore_mode_presses_are_heard_as_tones(room) -> None:  # type: ignore[no-untyped-def]
    listener = room("lis", Plan("ign"), "--no-telephone-event")
    sender = room("snd", Plan("ign"), "--dtmf", "159", "--dtmf-delay", "0.5")
    sender.process.wait_for(r"event=dtmf_sent", timeout=30)
    listener.process.wait_for_count(r"^event=dtmf .*source=inband", 3, timeout=15)
    assert listener.digits() == "159"
    assert room.app.collections == []


def detect_plan(max_digits: int, timeout_ms: int = 3000) -> Plan:
    return Plan("det", DtmfOptions(mode=DtmfMode.DETECT, max_digits=max_digits, timeout_ms=timeout_ms))


def test_detect_ends_at_max_digits(room) -> None:  # type: ignore[no-untyped-def]
    other = room("oth", Plan("det"), "--no-telephone-event")
    presser = room("det", detect_plan(3), "--dtmf", "123", "--dtmf-delay", "0.5")
    room.app.wait(lambda: room.app.values("det") == ["123"])
    presser.process.wait_for(r"event=dtmf_sent")
    assert other.digits() == ""


def test_detect_ends_at_hash_and_at_timeout(room) -> None:  # type: ignore[no-untyped-def]
    hash_user = room("hsh", detect_plan(5), "--dtmf", "12#", "--dtmf-delay", "0.5")
    room.app.wait(lambda: room.app.values("hsh") == ["12"])
    timeout_user = room("tmo", detect_plan(5, 800), "--dtmf", "45", "--dtmf-delay", "0.5")
    room.app.wait(lambda: room.app.values("tmo") == ["45"], timeout=15)
    done = [d for who, d in room.app.collections if who == "tmo"][0]
    assert done.reason.value == "timeout"
    del hash_user, timeout_user


def test_detect_takes_the_participant_out_of_the_mix_until_the_pie_completes(room) -> None:  # type: ignore[no-untyped-def]
    app = room.app
    app.hold_collections = True
    rooms = room.server.server.conferences.rooms
    a = room("a", Plan("room1"), "--tone", "500", "--level", "-15", "--no-telephone-event")
    det = room(
        "det",
        Plan("room1", DtmfOptions(mode=DtmfMode.DETECT, max_digits=2, timeout_ms=20000)),
        "--tone",
        "800",
        "--level",
        "-15",
    )
    before = phase([a, det])
    det.process.send("dtmf 4")
    app.wait(lambda: rooms.participant(det.call_id).state.value == "collecting")
    during = phase([a, det])
    # "5" ends the collection; "6" comes while its PIE is still held and starts the next one ("#" ends it).
    det.process.send("dtmf 56#")
    app.wait(lambda: app.values("det") == ["45"])
    det.process.wait_for(r"event=dtmf_sent .*digits=56#")
    room.server.loop.call_soon_threadsafe(app.release.set)
    app.wait(lambda: app.values("det") == ["45", "6"], timeout=15)
    app.wait(lambda: rooms.participant(det.call_id).state.value == "in_mix")
    after = phase([a, det])
    rec_a, rec_det = a.hangup(), det.hangup()
    assert tone_dbm0(window(rec_a, before["a"]), 800.0) > PRESENT
    assert tone_dbm0(window(rec_det, before["det"]), 500.0) > PRESENT
    assert tone_dbm0(window(rec_a, during["a"]), 800.0) < ABSENT, "the room hears the collecting participant"
    assert tone_dbm0(window(rec_det, during["det"]), 500.0) < ABSENT, (
        "the collecting participant hears the room"
    )
    assert tone_dbm0(window(rec_det, after["det"]), 500.0) > PRESENT, "not back in the room after the PIE"
    assert tone_dbm0(window(rec_a, after["a"]), 800.0) > PRESENT
    # a runs an in-band detector on all it heard: no digit of det's leaked into the room.
    assert a.digits() == ""


def test_inband_presses_of_a_detect_participant_do_not_leak(room) -> None:  # type: ignore[no-untyped-def]
    listener = room("lis", Plan("det"), "--no-telephone-event")
    presser = room(
        "det",
        detect_plan(3, 500),
        "--no-telephone-event",
        "--dtmf",
        "1234",
        "--dtmf-mode",
        "inband",
        "--dtmf-delay",
        "0.5",
    )
    room.app.wait(lambda: len(room.app.values("det")) >= 2, timeout=20)
    presser.process.wait_for(r"event=dtmf_sent")
    assert "".join(room.app.values("det")) == "1234"
    phase([listener])
    assert listener.digits() == ""


def test_alone_in_a_room_hears_its_music_on_hold_until_someone_joins(room) -> None:  # type: ignore[no-untyped-def]
    solo = room("solo", Plan("moh", moh="ring"))
    alone = phase([solo], seconds=6)  # one whole ring cadence: 2 s on, 4 s off
    room("two", Plan("moh"))
    together = phase([solo])
    recording = solo.hangup()
    loudest = max(tone_dbm0(window(recording, alone["solo"] + k), 440.0) for k in range(6))
    assert loudest > PRESENT  # ring-back, 440 + 480 Hz, sounds in at least one second of every six
    assert tone_dbm0(window(recording, together["solo"]), 440.0) < ABSENT


def test_event_stream_and_metrics_show_each_press(room) -> None:  # type: ignore[no-untyped-def]
    import json
    import threading
    import urllib.request

    port = room.server.server.http_port
    events: list[dict] = []
    got = threading.Condition()

    def listen() -> None:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/tonebridge/v1/events", timeout=30) as stream:
            for raw in stream:
                line = raw.decode().strip()
                if line.startswith("data: "):
                    with got:
                        events.append(json.loads(line[6:]))
                        got.notify_all()

    threading.Thread(target=listen, daemon=True).start()
    with got:
        got.wait_for(lambda: room.server.server.conferences.events.subscribers == 1, 10)
    room("fwd", Plan("ev", DtmfOptions(mode=DtmfMode.FORWARD)))
    room("det", detect_plan(2), "--dtmf", "7", "--dtmf-delay", "0.3")
    room("det2", detect_plan(1), "--dtmf", "8", "--dtmf-delay", "0.3")
    with got:
        assert got.wait_for(lambda: sum(e["type"] == "pie_answered" for e in events) == 2, 15), events
    presses = [e for e in events if e["type"] == "press"]
    assert {(e["digit"], e["source"], e["mode"], e["outcome"]) for e in presses} == {
        ("7", "rfc4733", "detect", "collected"),
        ("8", "rfc4733", "detect", "collected"),
    }
    kinds = [e["type"] for e in events if e.get("callId") == room.app.sessions["det2"].call_id]
    assert kinds.index("press") < kinds.index("left_mix") or kinds.index("left_mix") < kinds.index(
        "collection"
    )
    assert kinds.index("collection") < kinds.index("pie_sent") < kinds.index("pie_answered")
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/tonebridge/v1/metrics", timeout=5) as reply:
        counters = json.loads(reply.read())["conferences"]["counters"]
    assert counters["presses.rfc4733.detect"] == 2 and counters["collections"] == 2
