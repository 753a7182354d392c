"""RFC 4733 telephone-events: payloads, the receiver's one-press-per-press rule, the sender, round trips."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tonebridge.media import native, rfc4733
from tonebridge.media.rfc4733 import (
    DIGITS,
    RETRANSMIT_WINDOW_SECONDS,
    PressEnded,
    PressStarted,
    TelephoneEvent,
    TelephoneEventError,
    TelephoneEventSender,
    digit_to_event,
    event_to_digit,
)
from tonebridge.media.rtp import RtpPacket, RtpStream

PT = 101

AnyReceiver = rfc4733.TelephoneEventReceiver | native.TelephoneEventReceiver


@pytest.fixture(
    params=[rfc4733.TelephoneEventReceiver, native.TelephoneEventReceiver], ids=["python", "native"]
)
def TelephoneEventReceiver(request: pytest.FixtureRequest) -> type[AnyReceiver]:
    """Every receiver test runs against the Python reference and the native core."""
    return request.param


def ev(
    event: int, ts: int, duration: int, end: bool = False, seq: int = 0, ssrc: int = 1, marker: bool = False
) -> RtpPacket:
    return RtpPacket(PT, seq, ts, ssrc, TelephoneEvent(event, end, 10, duration).serialize(), marker)


def sipp_like_press(event: int, ts: int, updates: int = 13, ssrc: int = 1, seq0: int = 0) -> list[RtpPacket]:
    """A press as the SIPp pcaps send it: start with marker, updates every 160, three end packets."""
    out = [ev(event, ts, 160 * (i + 1), seq=seq0 + i, ssrc=ssrc, marker=(i == 0)) for i in range(updates)]
    final = 160 * (updates + 1)
    out += [ev(event, ts, final, end=True, seq=seq0 + updates + i, ssrc=ssrc) for i in range(3)]
    return out


def feed(receiver: AnyReceiver, packets: list[RtpPacket], t0: float = 0.0) -> list:
    events: list = []
    for i, packet in enumerate(packets):
        events += receiver.receive(packet, t0 + i * 0.02)
    return events


# Payload ---------------------------------------------------------------------------------------------


@given(st.integers(0, 255), st.booleans(), st.integers(0, 63), st.integers(0, 0xFFFF))
def test_payload_round_trip(event: int, end: bool, volume: int, duration: int) -> None:
    payload = TelephoneEvent(event, end, volume, duration)
    assert TelephoneEvent.parse(payload.serialize()) == payload


def test_payload_wire_format() -> None:
    # §2.3: event, E|R|volume, duration.
    assert TelephoneEvent(11, True, 10, 1280).serialize() == bytes([11, 0x80 | 10, 0x05, 0x00])
    # The reserved bit (0x40) is ignored.
    assert TelephoneEvent.parse(bytes([1, 0x4A, 0, 160])) == TelephoneEvent(1, False, 10, 160)
    with pytest.raises(TelephoneEventError, match="3 octets"):
        TelephoneEvent.parse(b"\x01\x02\x03")
    with pytest.raises(TelephoneEventError, match="volume"):
        TelephoneEvent(1, False, 64, 0).serialize()


def test_digit_maps() -> None:
    assert [digit_to_event(d) for d in "0123456789*#ABCD"] == list(range(16))
    assert digit_to_event("a") == 12
    assert "".join(event_to_digit(e) or "?" for e in range(17)) == DIGITS + "?"
    with pytest.raises(ValueError, match="not a DTMF key"):
        digit_to_event("E")


# Receiver --------------------------------------------------------------------------------------------


def test_one_press_gives_one_start_and_one_end(TelephoneEventReceiver: type[AnyReceiver]) -> None:
    receiver = TelephoneEventReceiver()
    events = feed(receiver, sipp_like_press(11, 8000))
    assert events == [PressStarted("#", 8000, 1), PressEnded("#", 8000, 1, 2240)]
    assert receiver.next_timer() is None


def test_retransmitted_start_and_updates_are_one_press(TelephoneEventReceiver: type[AnyReceiver]) -> None:
    receiver = TelephoneEventReceiver()
    packets = sipp_like_press(5, 100)
    packets = packets[:1] + packets[:1] + packets[1:4] + packets[2:4] + packets[4:] + packets[-3:]
    events = feed(receiver, packets)
    assert [type(e) for e in events] == [PressStarted, PressEnded]


def test_lost_start_packet_starts_at_the_first_update(TelephoneEventReceiver: type[AnyReceiver]) -> None:
    receiver = TelephoneEventReceiver()
    events = feed(receiver, sipp_like_press(3, 500)[2:])
    assert events == [PressStarted("3", 500, 1), PressEnded("3", 500, 1, 2240)]


def test_end_packet_alone_is_one_press(TelephoneEventReceiver: type[AnyReceiver]) -> None:
    receiver = TelephoneEventReceiver()
    events = feed(receiver, sipp_like_press(0, 42)[-2:])
    assert events == [PressStarted("0", 42, 1), PressEnded("0", 42, 1, 2240)]


def test_lost_end_packets_end_by_timer(TelephoneEventReceiver: type[AnyReceiver]) -> None:
    receiver = TelephoneEventReceiver(timeout=0.5)
    packets = sipp_like_press(7, 900)[:-3]
    events = feed(receiver, packets)
    assert events == [PressStarted("7", 900, 1)]
    last_seen = (len(packets) - 1) * 0.02
    assert receiver.next_timer() == pytest.approx(last_seen + 0.5)
    assert receiver.handle_timer(last_seen + 0.49) == []
    assert receiver.handle_timer(last_seen + 0.5) == [
        PressEnded("7", 900, 1, 160 * len(packets), timed_out=True)
    ]
    assert receiver.next_timer() is None
    # A straggling end packet after the timer is not a second press.
    assert receiver.receive(ev(7, 900, 2240, end=True), 10.0) == []


def test_new_event_ends_the_previous_one_whose_ends_were_lost(
    TelephoneEventReceiver: type[AnyReceiver],
) -> None:
    receiver = TelephoneEventReceiver()
    events = feed(receiver, sipp_like_press(1, 1000)[:5] + sipp_like_press(2, 5000, seq0=20))
    assert events == [
        PressStarted("1", 1000, 1),
        PressEnded("1", 1000, 1, 800, timed_out=True),
        PressStarted("2", 5000, 1),
        PressEnded("2", 5000, 1, 2240),
    ]


def test_same_digit_twice_is_two_presses(TelephoneEventReceiver: type[AnyReceiver]) -> None:
    receiver = TelephoneEventReceiver()
    events = feed(receiver, sipp_like_press(9, 1000) + sipp_like_press(9, 4000, seq0=16))
    assert [(type(e).__name__, e.digit, e.timestamp) for e in events] == [
        ("PressStarted", "9", 1000),
        ("PressEnded", "9", 1000),
        ("PressStarted", "9", 4000),
        ("PressEnded", "9", 4000),
    ]


def test_new_ssrc_does_not_duplicate_a_press(TelephoneEventReceiver: type[AnyReceiver]) -> None:
    receiver = TelephoneEventReceiver()
    press = sipp_like_press(4, 7777)
    moved = [RtpPacket(p.payload_type, p.sequence + 500, p.timestamp, 99, p.payload, p.marker) for p in press]
    events = feed(receiver, press[:6] + moved[6:] + press[-1:])
    assert [type(e) for e in events] == [PressStarted, PressEnded]
    # And a different press under a new SSRC (a SIPp pcap with its own SSRC) is taken at once.
    events = feed(receiver, sipp_like_press(4, 123, ssrc=1234), t0=5.0)
    assert events == [PressStarted("4", 123, 1234), PressEnded("4", 123, 1234, 2240)]


def test_late_packets_of_an_older_event_are_ignored(TelephoneEventReceiver: type[AnyReceiver]) -> None:
    receiver = TelephoneEventReceiver()
    older = sipp_like_press(1, 1000)
    newer = sipp_like_press(2, 3000, seq0=30)
    events = feed(receiver, older[:3] + newer[:3] + older[3:5] + newer[3:])
    assert [(type(e).__name__, e.digit) for e in events] == [
        ("PressStarted", "1"),
        ("PressEnded", "1"),
        ("PressStarted", "2"),
        ("PressEnded", "2"),
    ]


def test_same_packets_within_the_window_after_the_end_are_retransmissions(
    TelephoneEventReceiver: type[AnyReceiver],
) -> None:
    receiver = TelephoneEventReceiver()
    press = sipp_like_press(1, 13280)
    events = feed(receiver, press)
    last_end = (len(press) - 1) * 0.02
    assert [type(e) for e in events] == [PressStarted, PressEnded]
    # Its start, updates and end again, up to the window's last instant: all of them the press already over.
    late = press[:3] + press[-1:]
    step = (RETRANSMIT_WINDOW_SECONDS - 0.001) / len(late)
    ignored = receiver.ignored
    assert [receiver.receive(p, last_end + step * (i + 1)) for i, p in enumerate(late)] == [[]] * 4
    assert receiver.ignored == ignored + 4


def test_the_window_runs_from_the_last_end_packet(TelephoneEventReceiver: type[AnyReceiver]) -> None:
    receiver = TelephoneEventReceiver()
    press = sipp_like_press(6, 4000)
    events = feed(receiver, press[:-2])
    end = press[-1]
    # End packets spread out, each one within the window of the one before: still one press.
    t = (len(press) - 3) * 0.02
    for _ in range(3):
        t += RETRANSMIT_WINDOW_SECONDS * 0.9
        events += receiver.receive(end, t)
    assert [type(e) for e in events] == [PressStarted, PressEnded]


def test_same_packets_after_the_window_are_a_new_press(TelephoneEventReceiver: type[AnyReceiver]) -> None:
    """A sender that replays one recorded press for each press of a repeated digit (SIPp's pcaps)."""
    receiver = TelephoneEventReceiver()
    press = sipp_like_press(1, 13280)
    events = feed(receiver, press)
    last_end = (len(press) - 1) * 0.02
    events += feed(receiver, press, t0=last_end + RETRANSMIT_WINDOW_SECONDS + 0.02)
    assert events == [PressStarted("1", 13280, 1), PressEnded("1", 13280, 1, 2240)] * 2
    # The replay's own repeated end packets are again retransmissions of it.
    assert receiver.receive(press[-1], last_end * 2 + RETRANSMIT_WINDOW_SECONDS + 0.1) == []


def test_sipp_pcaps_played_1_1_2_give_three_presses(TelephoneEventReceiver: type[AnyReceiver]) -> None:
    """dtmf_2833_1.pcap twice then dtmf_2833_2.pcap, 700 ms apart: one SSRC, recorded timestamps."""
    receiver = TelephoneEventReceiver()
    started = []
    for index, (event, timestamp, seq0) in enumerate(((1, 13280, 7984), (1, 13280, 7984), (2, 23200, 8042))):
        packets = [
            ev(event, timestamp, 320 * i, seq=seq0 + i, ssrc=0x0E05384E, marker=(i == 0)) for i in range(7)
        ]
        packets += [ev(event, timestamp, 2240, end=True, seq=seq0 + 7, ssrc=0x0E05384E)] * 3
        times = [index * 0.7 + min(i, 7) * 0.02 for i in range(len(packets))]
        for packet, now in zip(packets, times, strict=True):
            started += [e.digit for e in receiver.receive(packet, now) if isinstance(e, PressStarted)]
    assert "".join(started) == "112"


def test_non_dtmf_and_malformed_payloads_are_counted_not_reported(
    TelephoneEventReceiver: type[AnyReceiver],
) -> None:
    receiver = TelephoneEventReceiver()
    assert receiver.receive(ev(16, 100, 160), 0.0) == []  # flash
    assert receiver.receive(RtpPacket(PT, 1, 100, 1, b"\x01"), 0.0) == []
    assert (receiver.ignored, receiver.malformed) == (1, 1)


# Sender ----------------------------------------------------------------------------------------------


def run_sender(sender: TelephoneEventSender, stream: RtpStream, ticks: int) -> list[list[RtpPacket]]:
    """Tick like the endpoint does: event packets when there are any, else an audio packet."""
    out = []
    for _ in range(ticks):
        packets = sender.tick(stream) if (sender.active or sender.pending) else []
        if not packets:
            stream.next_packet(b"\xff" * 160, 160)
        out.append(packets)
    return out


def test_sender_packets_of_one_press() -> None:
    stream = RtpStream(0, ssrc=5)
    start_ts = stream.timestamp
    sender = TelephoneEventSender(PT)
    sender.press("#", duration_ms=160, volume=12)
    assert sender.pending and not sender.active
    ticks = run_sender(sender, stream, 12)
    assert all(len(t) == 1 for t in ticks[:10]) and ticks[10:] == [[], []]
    packets = [t[0] for t in ticks[:10]]
    payloads = [TelephoneEvent.parse(p.payload) for p in packets]
    assert [p.marker for p in packets] == [True] + [False] * 9
    assert {p.timestamp for p in packets} == {start_ts}
    assert {p.payload_type for p in packets} == {PT}
    assert [p.duration for p in payloads] == [160, 320, 480, 640, 800, 960, 1120, 1280, 1280, 1280]
    assert [p.end for p in payloads] == [False] * 7 + [True] * 3
    assert {(p.event, p.volume) for p in payloads} == {(11, 12)}
    seqs = [p.sequence for p in packets]
    assert all((b - a) & 0xFFFF == 1 for a, b in zip(seqs, seqs[1:], strict=False))
    assert not sender.active and not sender.pending
    # The media clock ran on through the event: audio resumes where it would have been.
    assert stream.timestamp == (start_ts + 12 * 160) & 0xFFFFFFFF


def test_sender_active_while_sending_and_gap_between_presses() -> None:
    stream = RtpStream(0)
    sender = TelephoneEventSender(PT)
    sender.press("1", duration_ms=40)
    sender.press("2", duration_ms=40)
    actives = []
    sent = []
    for _ in range(14):
        packets = sender.tick(stream) if (sender.active or sender.pending) else []
        actives.append(sender.active)
        if not packets:
            stream.next_packet(b"", 160)
        sent.append(packets[0] if packets else None)
    pattern = "".join("E" if p else "." for p in sent)
    # 40 ms: start, end, end, end; then three ticks (60 ms) of audio; then the second press.
    assert pattern == "EEEE...EEEE..."
    assert actives[:4] == [True, True, True, False]
    first_ts = {p.timestamp for p in sent[:4] if p}
    second_ts = {p.timestamp for p in sent[7:11] if p}
    assert len(first_ts) == len(second_ts) == 1
    assert (second_ts.pop() - first_ts.pop()) & 0xFFFFFFFF == 7 * 160


def test_sender_rejects_bad_presses() -> None:
    sender = TelephoneEventSender(PT)
    with pytest.raises(ValueError, match="DTMF key"):
        sender.press("X")
    with pytest.raises(ValueError, match="duration field"):
        sender.press("1", duration_ms=9000)
    with pytest.raises(ValueError, match="at least one packet interval"):
        sender.press("1", duration_ms=10)


# Round trips -----------------------------------------------------------------------------------------


def round_trip(
    TelephoneEventReceiver: type[AnyReceiver],
    lose: set[int],
    digits: str = "5",
    duration_ms: int = 160,
    ticks: int = 40,
) -> list:
    stream = RtpStream(0, ssrc=77)
    sender = TelephoneEventSender(PT)
    receiver = TelephoneEventReceiver()
    for digit in digits:
        sender.press(digit, duration_ms=duration_ms)
    events: list = []
    index = 0
    for tick in range(ticks):
        now = tick * 0.02
        packets = sender.tick(stream) if (sender.active or sender.pending) else []
        for packet in packets:
            if index not in lose:
                events += receiver.receive(RtpPacket.parse(packet.serialize()), now)
            index += 1
        timer = receiver.next_timer()
        if timer is not None and timer <= now:
            events += receiver.handle_timer(now)
        if not packets:
            stream.next_packet(b"", 160)
    return events


def test_round_trip_clean(TelephoneEventReceiver: type[AnyReceiver]) -> None:
    events = round_trip(TelephoneEventReceiver, set())
    assert [type(e) for e in events] == [PressStarted, PressEnded]
    assert events[0].digit == events[1].digit == "5"
    assert events[1].duration == 1280 and not events[1].timed_out


def test_round_trip_with_lost_start(TelephoneEventReceiver: type[AnyReceiver]) -> None:
    events = round_trip(TelephoneEventReceiver, {0})
    assert [type(e) for e in events] == [PressStarted, PressEnded]
    assert events[1].duration == 1280


def test_round_trip_with_all_end_packets_lost(TelephoneEventReceiver: type[AnyReceiver]) -> None:
    events = round_trip(TelephoneEventReceiver, {7, 8, 9})
    assert [type(e) for e in events] == [PressStarted, PressEnded]
    assert events[1].timed_out and events[1].duration == 1120


def test_round_trip_of_several_digits_with_losses(TelephoneEventReceiver: type[AnyReceiver]) -> None:
    events = round_trip(TelephoneEventReceiver, {0, 7, 8, 9, 15}, digits="1#1", ticks=60)
    assert [(type(e).__name__, e.digit) for e in events] == [
        ("PressStarted", "1"),
        ("PressEnded", "1"),
        ("PressStarted", "#"),
        ("PressEnded", "#"),
        ("PressStarted", "1"),
        ("PressEnded", "1"),
    ]


def test_a_sender_whose_clock_jumps_back_a_long_way_gives_a_new_press(
    TelephoneEventReceiver: type[AnyReceiver],
) -> None:
    """SIPp replays recorded events under one SSRC: the second one's timestamp is 1.7 s older."""
    from tonebridge.media.rfc4733 import PressStarted, TelephoneEvent
    from tonebridge.media.rtp import RtpPacket

    receiver = TelephoneEventReceiver()
    started = []
    for event, timestamp, seq0 in ((4, 37120, 8121), (2, 23200, 8042)):
        for i, (end, duration) in enumerate(((False, 0), (False, 800), (True, 2240), (True, 2240))):
            payload = TelephoneEvent(event, end, 10, duration).serialize()
            packet = RtpPacket(101, seq0 + i, timestamp, 0x0E05384E, payload, marker=(i == 0))
            started += [
                e.digit for e in receiver.receive(packet, 1.0 + i * 0.02) if isinstance(e, PressStarted)
            ]
    assert started == ["4", "2"]
