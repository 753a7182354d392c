"""Held key presses: a digit forwarded or rendered from another leg lasts as long as it is held there
(RFC 4733 events and in-band tones), at least a minimum, at most one event's duration field."""

from __future__ import annotations

import numpy as np

from tonebridge.media.rfc4733 import MAX_DURATION, TelephoneEvent, TelephoneEventSender
from tonebridge.media.rtp import RtpStream
from tonebridge.media.tones import DtmfToneRenderer


def _events(sender: TelephoneEventSender, stream: RtpStream, ticks: int) -> list[TelephoneEvent]:
    out = []
    for _ in range(ticks):
        for packet in sender.tick(stream):
            out.append(TelephoneEvent.parse(packet.payload))
    return out


def test_held_event_lasts_until_release() -> None:
    sender, stream = TelephoneEventSender(101), RtpStream(0)
    sender.hold("5", min_ms=120)
    held = _events(sender, stream, 50)  # one second held
    assert len(held) == 50 and not any(e.end for e in held)
    sender.release("5")
    ended = _events(sender, stream, 10)
    assert [e.end for e in ended[:3]] == [True, True, True] and len(ended) == 3
    # The end packets carry the whole time held (at most one tick more), not a fixed length.
    assert 50 * 160 <= ended[0].duration <= 51 * 160
    assert not sender.active and not sender.pending


def test_release_before_the_minimum_keeps_the_minimum() -> None:
    sender, stream = TelephoneEventSender(101), RtpStream(0)
    sender.hold("1", min_ms=120)
    sender.release("1")  # a press known only by its instant (SIP INFO)
    events = _events(sender, stream, 20)
    assert events[-1].end and events[-1].duration == 120 * 8
    assert sum(1 for e in events if e.end) == 3


def test_a_hold_never_released_stops_at_the_duration_field() -> None:
    sender, stream = TelephoneEventSender(101), RtpStream(0)
    sender.hold("9")
    events = _events(sender, stream, MAX_DURATION // 160 + 10)
    assert events[-1].end and events[-1].duration <= MAX_DURATION


def test_release_of_a_digit_not_held_changes_nothing() -> None:
    sender, stream = TelephoneEventSender(101), RtpStream(0)
    sender.hold("2")
    sender.release("3")
    assert not any(e.end for e in _events(sender, stream, 20))


def _tone_samples(renderer: DtmfToneRenderer, frames: int) -> np.ndarray:
    return np.concatenate(
        [f if (f := renderer.frame()) is not None else np.zeros(160, np.int16) for _ in range(frames)]
    )


def test_held_tone_sounds_until_release_then_silence() -> None:
    renderer = DtmfToneRenderer()
    renderer.hold("5", min_ms=120)
    held = _tone_samples(renderer, 40)  # 800 ms
    assert np.all(np.abs(held.reshape(40, 160)).max(axis=1) > 1000)
    renderer.release("5")
    after = _tone_samples(renderer, 10)
    assert np.abs(after).max() == 0  # past its minimum: the tone stops at once, then its trailing silence
    assert not renderer.pending  # its trailing silence is shorter than those ten frames


def test_held_tone_released_early_plays_its_minimum() -> None:
    renderer = DtmfToneRenderer()
    renderer.hold("#", min_ms=120)
    renderer.release("#")
    samples = _tone_samples(renderer, 20)
    loud = np.flatnonzero(np.abs(samples) > 0)
    assert loud.size and loud[-1] < 120 * 8 and loud[-1] >= 120 * 8 - 40
    assert not renderer.pending
