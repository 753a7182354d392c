"""The native cores against the Python references: the same frames, presses, statistics and codes for the same
inputs, over random sequences (hypothesis) that dwell on the edges (wraparound, reordering, duplicates, SSRC
changes, jumps, boundary times)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tonebridge import _mediaplane
from tonebridge.media import g711, jitter, native, rfc4733
from tonebridge.media.rfc4733 import TelephoneEvent
from tonebridge.media.rtp import RtpPacket, RtpReceiveStats

SETTINGS = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
MASK = 0xFFFFFFFF
SSRCS = (0x11111111, 0x22222222, 0xFFFFFFFF)
NEAR_WRAP = st.one_of(st.integers(0, MASK), st.integers(MASK - 40_000, MASK))

# G.711 -----------------------------------------------------------------------------------------------


def test_g711_tables_match_bit_for_bit() -> None:
    samples = np.arange(-32768, 32768, dtype=np.int16)
    codes = bytes(range(256))
    assert _mediaplane.ulaw_encode(samples) == g711.ulaw_encode(samples).tobytes()
    assert _mediaplane.alaw_encode(samples) == g711.alaw_encode(samples).tobytes()
    assert _mediaplane.ulaw_decode(codes) == g711.ulaw_decode(codes).tobytes()
    assert _mediaplane.alaw_decode(codes) == g711.alaw_decode(codes).tobytes()


def test_g711_functions_check_their_buffers() -> None:
    with pytest.raises(TypeError, match="int16"):
        _mediaplane.ulaw_encode(np.zeros(4, dtype=np.int32))
    with pytest.raises(TypeError):
        _mediaplane.alaw_decode(np.zeros(4, dtype=np.int16))
    with pytest.raises(ValueError, match="contiguous"):
        _mediaplane.ulaw_encode(np.zeros(8, dtype=np.int16)[::2])
    assert _mediaplane.ulaw_encode(np.zeros(0, dtype=np.int16)) == b""


# Jitter buffer ---------------------------------------------------------------------------------------

SIZES = st.one_of(st.sampled_from([0, 80, 160, 240, 320, 480]), st.integers(0, 2000))
PUSH = st.tuples(
    st.just("push"),
    st.sampled_from([0, 0, 0, 0, 1, 2]),  # mostly one SSRC, sometimes a change
    st.sampled_from(["next", "next", "next", "reorder", "dup", "jump", "far"]),
    st.integers(-4000, 4000),
    NEAR_WRAP,
    SIZES,
)
JITTER_OPS = st.lists(
    st.one_of(PUSH, st.just(("pop",)), st.just(("pop",)), st.just(("reset",))), min_size=1, max_size=150
)
JITTER_FIELDS = (*native._JITTER_COUNTERS, "depth", "capacity")


def jitter_state(buffer: jitter.JitterBuffer | native.JitterBuffer) -> dict[str, int]:
    return {name: getattr(buffer, name) for name in JITTER_FIELDS}


@SETTINGS
@given(
    st.sampled_from([80, 160, 240]),
    st.integers(0, 5),
    st.integers(1, 60),
    NEAR_WRAP,
    JITTER_OPS,
    st.integers(0, 150),
)
def test_jitter_buffers_agree(
    frame: int, delay: int, extra: int, ts0: int, ops: list[tuple], pop_run: int
) -> None:
    reference = jitter.JitterBuffer(frame_samples=frame, delay_frames=delay, max_frames=delay + extra)
    candidate = native.JitterBuffer(frame_samples=frame, delay_frames=delay, max_frames=delay + extra)
    end = ts0  # just past the newest packet pushed
    last = ts0
    counter = 0
    # A long run of pops at the end crosses the drift window.
    for op in [*ops, *[("pop",)] * pop_run]:
        if op[0] == "push":
            _, ssrc_index, mode, delta, anywhere, size = op
            timestamp = {
                "next": end,
                "reorder": end + delta,
                "dup": last,
                "jump": anywhere,
                "far": end + delta * 1000,
            }[mode] & MASK
            counter += 1
            samples = ((np.arange(size) * 7 + counter * 1013) % 60000 - 30000).astype(np.int16)
            packet = RtpPacket(0, 0, timestamp, SSRCS[ssrc_index], b"")
            reference.push(packet, samples)
            candidate.push(packet, samples)
            last = timestamp
            end = (timestamp + size) & MASK
        elif op[0] == "pop":
            expected, got = reference.pop(), candidate.pop()
            assert (expected is None) == (got is None)
            if expected is not None:
                assert got is not None and got.dtype == np.int16
                np.testing.assert_array_equal(got, expected)
        else:
            reference.reset()
            candidate.reset()
        assert jitter_state(candidate) == jitter_state(reference)


@settings(max_examples=100, deadline=None)
@given(
    st.integers(0, 4),
    NEAR_WRAP,
    st.lists(st.sampled_from([1, 1, 1, 1, 2, 2, 0, 3]), min_size=100, max_size=400),
    st.lists(st.integers(0, 399), max_size=10),
)
def test_jitter_buffers_agree_on_steady_streams(
    delay: int, ts0: int, per_tick: list[int], swapped: list[int]
) -> None:
    """A sender running fast or slow for hundreds of ticks, with a few reordered pairs: the drift control."""
    reference = jitter.JitterBuffer(delay_frames=delay)
    candidate = native.JitterBuffer(delay_frames=delay)
    timestamp = ts0
    for tick, count in enumerate(per_tick):
        stamps = [(timestamp + 160 * i) & MASK for i in range(count)]
        if tick in swapped:
            stamps.reverse()
        for stamp in stamps:
            samples = np.full(160, stamp % 20000, dtype=np.int16)
            packet = RtpPacket(0, 0, stamp, 7, b"")
            reference.push(packet, samples)
            candidate.push(packet, samples)
        timestamp = (timestamp + 160 * count) & MASK
        expected, got = reference.pop(), candidate.pop()
        assert (expected is None) == (got is None)
        if expected is not None:
            np.testing.assert_array_equal(got, expected)
        assert jitter_state(candidate) == jitter_state(reference)
    assert candidate.drift_drops == reference.drift_drops


def test_jitter_core_checks_its_arguments() -> None:
    with pytest.raises(ValueError, match="delay_frames"):
        _mediaplane.JitterCore(delay_frames=5, max_frames=5)
    with pytest.raises(ValueError, match="frame_samples"):
        _mediaplane.JitterCore(frame_samples=0)
    core = _mediaplane.JitterCore()
    with pytest.raises(ValueError, match="at least 160"):
        core.pop_into(np.zeros(159, dtype=np.int16))
    frozen = np.zeros(160, dtype=np.int16)
    frozen.flags.writeable = False
    with pytest.raises(ValueError, match="writable"):
        core.pop_into(frozen)
    with pytest.raises(TypeError, match="int16"):
        core.push(1, 0, np.zeros(160, dtype=np.float32))
    core.push(1, 0, np.zeros(0, dtype=np.int16))
    assert core.pushed == 0


# RFC 4733 receiver -----------------------------------------------------------------------------------

STEPS = st.one_of(
    st.sampled_from([0.0, 0.001, 0.02, 0.1, 0.29, 0.3, 0.31, 0.49, 0.5, 0.51, 0.7, 1.5]), st.floats(0, 3)
)
PACKET = st.tuples(
    st.just("packet"),
    st.sampled_from([0, 0, 0, 1, 2]),
    st.one_of(st.integers(0, 7), st.integers(-9000, 9000), NEAR_WRAP),  # a pool index, an offset or anywhere
    st.sampled_from([1, 1, 1, 5, 11, 15, 16, 20]),
    st.booleans(),
    st.one_of(st.sampled_from([0, 160, 320, 2240, 0xFFFF]), st.integers(0, 0xFFFF)),
    st.sampled_from([4, 4, 4, 4, 8, 0, 3]),  # payload length: a short one is malformed
    STEPS,
)
EVENT_OPS = st.lists(st.one_of(PACKET, st.tuples(st.just("timer"), STEPS)), min_size=1, max_size=120)


@SETTINGS
@given(
    NEAR_WRAP, st.floats(0, 10_000), st.sampled_from([0.5, 0.2, 1.0]), st.sampled_from([32, 2, 0]), EVENT_OPS
)
def test_event_receivers_agree(
    base: int, now: float, timeout: float, remembered: int, ops: list[tuple]
) -> None:
    reference = rfc4733.TelephoneEventReceiver(timeout=timeout, remembered=remembered)
    candidate = native.TelephoneEventReceiver(timeout=timeout, remembered=remembered)
    seq = 0
    for op in ops:
        now += op[-1]
        if op[0] == "packet":
            _, ssrc_index, when, event, end, duration, length, _ = op
            if 0 <= when <= 7:
                timestamp = base + when * 800
            elif abs(when) <= 9000:
                timestamp = base + when
            else:
                timestamp = when
            payload = TelephoneEvent(event, end, 10, duration).serialize() * 2
            packet = RtpPacket(101, seq & 0xFFFF, timestamp & MASK, SSRCS[ssrc_index], payload[:length])
            seq += 1
            assert candidate.receive(packet, now) == reference.receive(packet, now)
        else:
            timer = reference.next_timer()
            if timer is not None and timer <= now:
                assert candidate.handle_timer(now) == reference.handle_timer(now)
            else:
                assert candidate.handle_timer(now) == reference.handle_timer(now) == []
        assert candidate.next_timer() == reference.next_timer()
        assert (candidate.malformed, candidate.ignored) == (reference.malformed, reference.ignored)


# Receive statistics ----------------------------------------------------------------------------------

UPDATE = st.tuples(
    st.sampled_from([0, 0, 0, 0, 0, 1]),
    st.one_of(
        st.just(1),
        st.just(1),
        st.integers(-200, 200),
        st.integers(2900, 3100),
        st.integers(65400, 65535),
        st.integers(0, 0xFFFF),
    ),
    st.sampled_from(["next", "same", "random"]),
    st.integers(-400, 400),
    st.booleans(),
)
STATS_FIELDS = (
    "ssrc",
    "ssrc_changes",
    "received",
    "lost",
    "jitter",
    "extended_max_seq",
    "expected",
    "fraction_lost",
)


@SETTINGS
@given(st.integers(0, 0xFFFF), NEAR_WRAP, NEAR_WRAP, st.lists(UPDATE, min_size=1, max_size=200))
def test_receive_statistics_agree(seq0: int, ts0: int, arrival0: int, updates: list[tuple]) -> None:
    reference = RtpReceiveStats()
    candidate = _mediaplane.ReceiveStatsCore()
    assert candidate.ssrc is None and candidate.expected == 0
    seq, timestamp, arrival = seq0, ts0, arrival0
    for ssrc_index, seq_step, ts_mode, wobble, close in updates:
        seq = (seq + seq_step) & 0xFFFF
        if ts_mode == "next":
            timestamp = (timestamp + 160) & MASK
        elif ts_mode == "random":
            timestamp = (timestamp + wobble * 997) & MASK
        arrival = (arrival + 160 + wobble) & MASK
        packet = RtpPacket(0, seq, timestamp, SSRCS[ssrc_index], b"")
        assert candidate.update(packet.ssrc, seq, timestamp, arrival) == reference.update(packet, arrival)
        for name in STATS_FIELDS:
            assert getattr(candidate, name) == getattr(reference, name), name
        if close:
            assert candidate.close_interval() == reference.close_interval()
