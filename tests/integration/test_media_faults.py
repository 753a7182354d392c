"""Media under network faults: a caller's presses reach the server through an impairment relay (5 % loss,
60 ms jitter that reorders, some duplicates; seeded), in a detect-mode room with one PIE per press, while a
second participant's call is watched for its frame rate.

RFC 4733 presses must each be reported exactly once and in order. In-band presses are counted: nothing may
be doubled, and the detection rate is printed (docs/dtmf.md, "Under network faults", quotes it). Two tests
without sockets back these up: the relay's loss chain keeps the rate and burst length asked of it, and both
RFC 4733 receivers, fed thousands of presses through the same impairment model on a simulated clock, lose a
press only when none of its packets got through.
"""

from __future__ import annotations

import json
import os
import random
import time
import urllib.request
from dataclasses import dataclass

import pytest
from backend import Backend
from harness import HOST, Process, phone
from impair import Channel, Impairment, ImpairmentRelay
from sinch_app import NUMBER, app_config

from tonebridge.media import native, rfc4733
from tonebridge.media.rtp import RtpPacket, RtpStream

pytestmark = pytest.mark.integration

ROOM = "faults"
SEED = int(os.environ.get("TONEBRIDGE_FAULTS_SEED", "4733"))  # another seed explores; this one reproduces
KEYS = "0123456789*#"
FAULTS = Impairment(loss=0.05, jitter_ms=60.0, duplicate=0.02)
FRAME_RATE = 50.0  # 20 ms packets


@dataclass
class Outcome:
    pressed: str
    reported: str
    rate_heard: float  # packets/s the other participant got from the server while the presses went on
    relay: ImpairmentRelay
    late: int  # the caller's packets the server's jitter buffer had already played past (fixed 40 ms delay)


def metrics(server) -> dict:  # type: ignore[no-untyped-def]
    with urllib.request.urlopen(f"http://{HOST}:{server.server.http_port}/tonebridge/v1/metrics") as reply:
        return json.loads(reply.read())


def wait_participants(server, count: int, timeout: float = 15.0) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while metrics(server)["conferences"]["participants"] != count:
        assert time.monotonic() < deadline, f"{count} participants not in the room within {timeout} s"
        time.sleep(0.1)  # the poll's interval; the deadline bounds the wait


def wait_pies(backend: Backend, call_id: str, count: int, timeout: float) -> None:
    """Until `count` PIEs of the call arrived or `timeout` passed; a shortfall is the caller's to report."""
    with backend.changed:
        backend.changed.wait_for(lambda: len(backend.events("pie", call_id)) >= count, timeout)


def run_presses(
    in_process_server, backend: Backend, *, count: int, mode: str, duration_ms: int, seed: int
) -> Outcome:  # type: ignore[no-untyped-def]
    backend.answers["ice"] = lambda event: {
        "action": {
            "name": "connectConf",
            "conferenceId": ROOM,
            "conferenceDtmfOptions": {"mode": "detect", "maxDigits": 1, "timeoutMills": 1000},
        }
    }
    server = in_process_server(app_config(backend))
    sip = server.server.stack.port
    pressed = "".join(random.Random(seed).choice(KEYS) for _ in range(count))
    listener = ImpairmentRelay(sip, seed=seed)  # no faults: it only counts what the listener is sent
    relay = ImpairmentRelay(sip, up=FAULTS, down=FAULTS, seed=seed)
    other: Process | None = None
    caller: Process | None = None
    try:
        other = phone("dial", f"sip:{NUMBER}@{HOST}:{listener.sip_port}", "--tone", "440", stdin=True)
        other.wait_for(r"event=answered", timeout=15)
        wait_participants(server, 1)
        other_id = backend.events("ice")[0]["callid"]
        inband = ("--no-telephone-event",) if mode == "inband" else ()
        caller = phone(
            "dial",
            f"sip:{NUMBER}@{HOST}:{relay.sip_port}",
            "--dtmf-duration",
            str(duration_ms),
            *inband,
            stdin=True,
        )
        caller.wait_for(r"event=answered", timeout=15)
        wait_participants(server, 2)
        assert relay.answered.is_set(), "the server's SDP did not pass through the relay"
        call_id = next(e["callid"] for e in backend.events("ice") if e["callid"] != other_id)
        started = time.monotonic()
        caller.send(f"dtmf {pressed} {mode}")
        caller.wait_for(r"event=dtmf_sent", timeout=count * 0.5 + 10)
        ended = time.monotonic()
        # Each press is reported within a jitter buffer's delay (or the receiver's 0.5 s end timer) of its
        # end; PIEs go out in order, so the last one's arrival is the end of the run.
        wait_pies(backend, call_id, count, timeout=3.0)
        # For the printout only: no public accessor gives the jitter buffer's counters of one leg.
        late = int(server.engine.sessions[call_id].leg._plane_stats().get("jitter_late", 0))
        caller.send("hangup")
        caller.wait_for(r"event=ended", timeout=10)
        backend.wait(lambda: len(backend.events("dice", call_id)) == 1)
        reported = "".join(e["menuResult"]["value"] for e in backend.events("pie", call_id))
        return Outcome(pressed, reported, listener.down.rate(started, ended), relay, late)
    finally:
        for process in (caller, other):
            if process is not None:
                process.stop()
        relay.close()
        listener.close()


def describe(outcome: Outcome) -> str:
    up = outcome.relay.up
    return (
        f"pressed {len(outcome.pressed)}, reported {len(outcome.reported)}; relay up: {up.received} packets, "
        f"{up.lost} lost (longest run {up.longest_burst}), {up.duplicated} duplicated, {up.reordered} "
        f"reordered; {outcome.late} late at the server's jitter buffer; "
        f"other participant heard {outcome.rate_heard:.1f} packets/s"
    )


def test_rfc4733_presses_survive_loss_jitter_and_reordering(in_process_server, backend: Backend) -> None:
    outcome = run_presses(in_process_server, backend, count=200, mode="rfc4733", duration_ms=60, seed=SEED)
    print(describe(outcome))
    # The faults must really have happened, or the test proves nothing.
    assert outcome.relay.up.lost > 0 and outcome.relay.up.reordered > 0 and outcome.relay.up.duplicated > 0
    assert outcome.reported == outcome.pressed, describe(outcome)
    assert abs(outcome.rate_heard - FRAME_RATE) <= 2.0, describe(outcome)


def test_inband_presses_under_faults_are_never_doubled(in_process_server, backend: Backend) -> None:
    outcome = run_presses(
        in_process_server, backend, count=100, mode="inband", duration_ms=100, seed=SEED + 1
    )
    detected = detection(outcome.pressed, outcome.reported)
    print(describe(outcome), f"; in-band detection rate {detected}/{len(outcome.pressed)}")
    assert outcome.relay.up.lost > 0 and outcome.relay.up.reordered > 0
    assert is_subsequence(outcome.reported, outcome.pressed), describe(outcome)
    assert abs(outcome.rate_heard - FRAME_RATE) <= 2.0, describe(outcome)


def is_subsequence(reported: str, pressed: str) -> bool:
    """Every reported digit is a press, in order, none used twice: nothing invented, nothing doubled. (A
    double of one press followed by the loss of a later press of the same key would pass; the count of
    PIEs then still shows a loss, which the printed rate reports.)"""
    rest = iter(pressed)
    return all(digit in rest for digit in reported)


def detection(pressed: str, reported: str) -> int:
    """How many presses were reported: the longest common subsequence, since a lost press shifts the rest."""
    previous = [0] * (len(reported) + 1)
    for p in pressed:
        current = [0]
        for j, r in enumerate(reported):
            current.append(previous[j] + 1 if p == r else max(previous[j + 1], current[j]))
        previous = current
    return previous[-1]


@pytest.mark.parametrize("burst", [None, 3.0])
def test_relay_loss_model_keeps_its_rate_and_burst_length(burst: float | None) -> None:
    """The relay's own check: its seeded chain loses the asked share in runs of the asked mean length, and
    one seed gives one sequence of decisions."""
    channel, again = (
        Channel(Impairment(loss=0.05, burst=burst), "s"),
        Channel(Impairment(loss=0.05, burst=burst), "s"),
    )
    fates = [bool(channel.delays()) for _ in range(200_000)]
    assert fates == [bool(again.delays()) for _ in range(200_000)]
    runs = [len(run) for run in "".join("x" if ok else "L" for ok in fates).split("x") if run]
    assert fates.count(False) / len(fates) == pytest.approx(0.05, rel=0.05)
    assert sum(runs) / len(runs) == pytest.approx(burst or 1 / 0.95, rel=0.05)


PROFILES = {
    "loss": Impairment(loss=0.05),
    "bursts": Impairment(loss=0.05, burst=3.0),
    "jitter": Impairment(jitter_ms=60.0),
    "duplicates": Impairment(duplicate=0.10),
    "all": FAULTS,
    "worse": Impairment(loss=0.20, burst=2.0, jitter_ms=60.0, duplicate=0.10),
}


@pytest.mark.parametrize("receiver", [rfc4733.TelephoneEventReceiver, native.TelephoneEventReceiver])
@pytest.mark.parametrize("profile", list(PROFILES))
def test_every_press_with_a_packet_through_is_reported_once_in_order(receiver, profile: str) -> None:
    """The receivers (reference and native) fed 2,000 presses through the relay's own impairment model,
    on a simulated clock: a press is lost only when none of its packets got through, and none is doubled or
    out of order. This is the RFC 4733 test above without its sockets, over more presses and worse faults."""
    rng = random.Random(f"{SEED}-{profile}")
    pressed = [rng.choice(KEYS) for _ in range(2000)]
    sender = rfc4733.TelephoneEventSender(101)
    stream = RtpStream(0, ssrc=7, timestamp=rng.getrandbits(32))
    for digit in pressed:
        sender.press(digit, duration_ms=60)
    channel = Channel(PROFILES[profile], f"{SEED}-{profile}")
    arrivals: list[tuple[float, int, RtpPacket]] = []
    starts: list[int] = []  # each press's timestamp, in the order sent
    now = 0.0
    while sender.active or sender.pending:
        packets = sender.tick(stream)
        if not packets:
            stream.advance(160)  # the phone sends audio between presses
        for packet in packets:
            if not starts or starts[-1] != packet.timestamp:
                starts.append(packet.timestamp)
            arrivals.extend((now + delay, len(arrivals), packet) for delay in channel.delays())
        now += 0.02
    assert len(starts) == len(pressed)
    arrivals.sort(key=lambda a: (a[0], a[1]))
    through = {packet.timestamp for _, _, packet in arrivals}
    expected = [(ts, digit) for ts, digit in zip(starts, pressed, strict=True) if ts in through]

    rx = receiver()
    reported: list[tuple[int, str]] = []
    for when, _, packet in arrivals:
        while (due := rx.next_timer()) is not None and due <= when:
            rx.handle_timer(due)
        reported += [
            (e.timestamp, e.digit) for e in rx.receive(packet, when) if isinstance(e, rfc4733.PressStarted)
        ]
    print(f"{profile}: {len(pressed) - len(expected)} of {len(pressed)} presses lost every packet")
    assert reported == expected, f"{len(pressed) - len(expected)} presses wiped out, {len(reported)} reported"
    if profile in ("loss", "jitter", "duplicates", "all"):
        assert len(expected) == len(pressed)  # no press lost every packet: the socket test's claim holds
