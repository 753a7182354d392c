"""The jitter buffer: continuity for any packet time, reordering, duplicates, late packets, resyncs."""

from __future__ import annotations

import numpy as np
import pytest

from tonebridge.media import jitter, native
from tonebridge.media.rtp import RtpPacket

FRAME = 160

AnyJitterBuffer = jitter.JitterBuffer | native.JitterBuffer


@pytest.fixture(params=[jitter.JitterBuffer, native.JitterBuffer], ids=["python", "native"])
def JitterBuffer(request: pytest.FixtureRequest) -> type[AnyJitterBuffer]:
    """Every test runs against the Python reference and the native core."""
    return request.param


def tone(n: int, freq: float = 1000.0) -> np.ndarray:
    return (8000 * np.sin(2 * np.pi * freq * np.arange(n) / 8000)).astype(np.int16)


def packet(ts: int, seq: int = 0, ssrc: int = 1) -> RtpPacket:
    return RtpPacket(0, seq & 0xFFFF, ts & 0xFFFFFFFF, ssrc, b"")


def chop(signal: np.ndarray, ptime_samples: int, ts0: int) -> list[tuple[RtpPacket, np.ndarray]]:
    return [
        (packet(ts0 + i, seq=i // ptime_samples), signal[i : i + ptime_samples])
        for i in range(0, signal.size, ptime_samples)
    ]


def play(
    buffer: AnyJitterBuffer, packets: list[tuple[RtpPacket, np.ndarray]], ptime_samples: int, ticks: int
) -> list[np.ndarray | None]:
    """Packets arrive on their own schedule (every ptime) and frames are popped every 20 ms."""
    out: list[np.ndarray | None] = []
    arrivals = [(i * ptime_samples, p, s) for i, (p, s) in enumerate(packets)]
    for tick in range(ticks):
        now = tick * FRAME
        while arrivals and arrivals[0][0] <= now:
            _, p, s = arrivals.pop(0)
            buffer.push(p, s)
        out.append(buffer.pop())
    return out


@pytest.mark.parametrize("ptime_ms", [10, 20, 30, 40, 60])
def test_any_packet_time_comes_out_as_continuous_frames(
    ptime_ms: int, JitterBuffer: type[AnyJitterBuffer]
) -> None:
    ptime = ptime_ms * 8
    signal = tone(8000)  # one second of 1 kHz
    buffer = JitterBuffer()
    frames = play(buffer, chop(signal, ptime, ts0=0xFFFFF000), ptime, ticks=80)  # timestamps wrap too
    leading = 0
    while frames[leading] is None:
        leading += 1
    assert leading <= buffer.delay_frames + ptime // FRAME
    body = frames[leading : leading + 8000 // FRAME]
    assert all(f is not None and f.dtype == np.int16 and f.size == FRAME for f in body)
    np.testing.assert_array_equal(np.concatenate(body), signal)
    assert buffer.late == buffer.duplicates == buffer.overflow_samples == 0
    assert all(f is None for f in frames[leading + 8000 // FRAME :])


def test_30ms_tone_is_continuous_at_the_frame_joins(JitterBuffer: type[AnyJitterBuffer]) -> None:
    signal = tone(4800)
    buffer = JitterBuffer()
    frames = [f for f in play(buffer, chop(signal, 240, ts0=1234), 240, ticks=40) if f is not None]
    joined = np.concatenate(frames).astype(np.int32)
    # No clicks: a 1 kHz sine at 8000 peak moves at most ~6300 between samples.
    assert np.max(np.abs(np.diff(joined))) < 6400
    assert joined.size == 4800


def test_reordered_packets_fall_into_place(JitterBuffer: type[AnyJitterBuffer]) -> None:
    signal = tone(8 * FRAME)
    packets = chop(signal, FRAME, ts0=0)
    order = [0, 2, 1, 3, 5, 4, 6, 7]
    buffer = JitterBuffer(delay_frames=2)
    for i in order[:3]:
        buffer.push(*packets[i])
    frames = [buffer.pop(), buffer.pop()]  # the delay
    for i in order[3:]:
        buffer.push(*packets[i])
    frames += [buffer.pop() for _ in range(8)]
    assert frames[:2] == [None, None]
    np.testing.assert_array_equal(np.concatenate(frames[2:]), signal)


def test_duplicates_are_ignored_and_counted(JitterBuffer: type[AnyJitterBuffer]) -> None:
    packets = chop(tone(3 * FRAME), FRAME, ts0=0)
    buffer = JitterBuffer(delay_frames=0)
    for p, s in packets + packets[1:2]:
        buffer.push(p, s)
    assert buffer.duplicates == 1
    np.testing.assert_array_equal(np.concatenate([buffer.pop() for _ in range(3)]), tone(3 * FRAME))


def test_late_packets_are_dropped_and_counted(JitterBuffer: type[AnyJitterBuffer]) -> None:
    packets = chop(tone(4 * FRAME), FRAME, ts0=0)
    buffer = JitterBuffer(delay_frames=0)
    buffer.push(*packets[0])
    buffer.push(*packets[2])
    assert buffer.pop() is not None
    assert buffer.pop() is None  # packet 1 missing: the caller conceals
    buffer.push(*packets[1])  # too late now
    assert buffer.late == 1
    np.testing.assert_array_equal(buffer.pop(), packets[2][1])
    assert buffer.underruns == 1


def test_a_missing_packet_leaves_silence_inside_a_frame(JitterBuffer: type[AnyJitterBuffer]) -> None:
    # 10 ms packets: the second half of a frame lost, the first half played, the rest zero.
    packets = chop(tone(2 * FRAME), 80, ts0=0)
    buffer = JitterBuffer(delay_frames=0)
    for i in (0, 2, 3):
        buffer.push(*packets[i])
    first = buffer.pop()
    assert first is not None
    np.testing.assert_array_equal(first[:80], packets[0][1])
    assert not first[80:].any()


def test_sender_that_slips_behind_is_followed_after_a_few_late_packets(
    JitterBuffer: type[AnyJitterBuffer],
) -> None:
    buffer = JitterBuffer(delay_frames=1)
    for i in range(5):
        buffer.push(packet(i * FRAME, i), tone(FRAME))
        buffer.pop()
    for _ in range(25):  # the sender pauses 0.5 s and resumes without moving its timestamps
        buffer.pop()
    for i in range(5, 10):
        buffer.push(packet(i * FRAME, i), tone(FRAME))
    assert buffer.late == 3 and buffer.resyncs == 2
    frames = [buffer.pop() for _ in range(4)]
    assert sum(f is not None for f in frames) >= 2


def test_ssrc_change_resyncs_at_once(JitterBuffer: type[AnyJitterBuffer]) -> None:
    buffer = JitterBuffer(delay_frames=1)
    buffer.push(packet(1000, ssrc=1), tone(FRAME))
    buffer.pop()
    buffer.pop()
    buffer.push(packet(987654, ssrc=2), np.full(FRAME, 7, dtype=np.int16))
    assert buffer.resyncs == 2
    assert buffer.pop() is None  # the delay again
    np.testing.assert_array_equal(buffer.pop(), np.full(FRAME, 7, dtype=np.int16))


@pytest.mark.parametrize("jump", [10 * 8000, -10 * 8000])
def test_timestamp_jumps_resync(jump: int, JitterBuffer: type[AnyJitterBuffer]) -> None:
    buffer = JitterBuffer(delay_frames=0)
    buffer.push(packet(50_000), tone(FRAME))
    assert buffer.pop() is not None
    buffer.push(packet(50_000 + FRAME + jump), np.full(FRAME, 3, dtype=np.int16))
    assert buffer.resyncs == 2 and buffer.late == 0
    np.testing.assert_array_equal(buffer.pop(), np.full(FRAME, 3, dtype=np.int16))


def test_memory_is_bounded_when_packets_run_ahead(JitterBuffer: type[AnyJitterBuffer]) -> None:
    buffer = JitterBuffer(delay_frames=2, max_frames=10)
    for i in range(30):  # pushed without any pop
        buffer.push(packet(i * FRAME, i), np.full(FRAME, i, dtype=np.int16))
    assert buffer.depth <= 10 * FRAME
    assert buffer.overflow_samples > 0
    frames = [buffer.pop() for _ in range(10)]
    assert all(f is not None for f in frames)
    # The newest audio is kept, in order.
    assert [int(f[0]) for f in frames] == list(range(20, 30))


def test_drift_is_bounded_when_the_sender_runs_fast(JitterBuffer: type[AnyJitterBuffer]) -> None:
    buffer = JitterBuffer(delay_frames=2)
    ts = 0
    for tick in range(3000):  # a minute, the sender 0.5 % fast: 201 frames for every 200 ticks
        per_tick = 2 if tick % 200 == 0 else 1
        for _ in range(per_tick):
            buffer.push(packet(ts), tone(FRAME))
            ts += FRAME
        buffer.pop()
    assert buffer.drift_drops > 0
    assert buffer.depth <= (buffer.delay_frames + 4) * FRAME
    assert buffer.overflow_samples == 0


def test_nothing_before_the_first_packet(JitterBuffer: type[AnyJitterBuffer]) -> None:
    buffer = JitterBuffer()
    assert buffer.pop() is None
    assert buffer.underruns == 0
    with pytest.raises(ValueError, match="delay_frames"):
        JitterBuffer(delay_frames=50, max_frames=50)
