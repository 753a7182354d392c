"""Tests for the vectorised conference mixer, checked against a plain per-leg reference."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from tonebridge.media.mixer import Mixer, UnknownLeg
from tonebridge.media.players import LoopSource

FS = 160


def const(value: int) -> np.ndarray:
    return np.full(FS, value, dtype=np.int16)


def ramp(seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(-8000, 8000, FS).astype(np.int16)


def reference(legs: dict, frames: dict) -> dict:
    """What each leg should hear, computed one leg and one sample at a time in Python ints."""
    heard = {}
    for leg_id, (room, _contributing, hearing) in legs.items():
        if not hearing:
            heard[leg_id] = [0] * FS
            continue
        out = []
        for i in range(FS):
            total = sum(
                int(frames[other][i])
                for other, (other_room, other_contributing, _) in legs.items()
                if other != leg_id
                and other_room == room
                and other_contributing
                and frames.get(other) is not None
            )
            out.append(max(-32768, min(32767, total)))
        heard[leg_id] = out
    return heard


def test_two_legs_hear_each_other_not_themselves() -> None:
    m = Mixer()
    m.add_leg("a", "r")
    m.add_leg("b", "r")
    a, b = ramp(1), ramp(2)
    out = m.mix({"a": a, "b": b})
    assert np.array_equal(out["a"], b) and np.array_equal(out["b"], a)
    assert out["a"].dtype == np.int16


def test_three_legs_hear_the_sum_of_the_others() -> None:
    m = Mixer()
    for leg in "abc":
        m.add_leg(leg, "r")
    out = m.mix({"a": const(100), "b": const(20), "c": const(3)})
    assert out["a"][0] == 23 and out["b"][0] == 103 and out["c"][0] == 120


def test_rooms_are_separate() -> None:
    m = Mixer()
    m.add_leg("a1", "room-a")
    m.add_leg("b1", "room-b")
    m.add_leg("a2", "room-a")
    m.add_leg("b2", "room-b")
    out = m.mix({"a1": const(1), "a2": const(2), "b1": const(10), "b2": const(20)})
    assert [int(out[k][0]) for k in ("a1", "a2", "b1", "b2")] == [2, 1, 20, 10]


def test_alone_in_a_room_hears_silence() -> None:
    m = Mixer()
    m.add_leg("a", "r")
    assert not m.mix({"a": const(500)})["a"].any()


def test_missing_frames_are_silence() -> None:
    m = Mixer()
    for leg in "abc":
        m.add_leg(leg, "r")
    out = m.mix({"a": const(7), "b": None})
    assert out["c"][0] == 7 and out["b"][0] == 7 and out["a"][0] == 0


def test_not_contributing_is_not_heard_but_still_hears() -> None:
    m = Mixer()
    for leg in "abc":
        m.add_leg(leg, "r")
    m.set_contributing("a", False)
    out = m.mix({"a": const(1000), "b": const(10), "c": const(1)})
    assert out["b"][0] == 1 and out["c"][0] == 10
    assert out["a"][0] == 11
    m.set_contributing("a", True)
    assert m.mix({"a": const(1000), "b": const(10), "c": const(1)})["b"][0] == 1001


def test_not_hearing_gets_silence_but_is_still_heard() -> None:
    m = Mixer()
    m.add_leg("a", "r")
    m.add_leg("b", "r")
    m.set_hearing("a", False)
    out = m.mix({"a": const(5), "b": const(9)})
    assert not out["a"].any() and out["b"][0] == 5


def test_sums_saturate_to_int16_after_int32_accumulation() -> None:
    m = Mixer()
    for leg in "abcd":
        m.add_leg(leg, "r")
    out = m.mix({"a": const(30000), "b": const(30000), "c": const(-30000), "d": const(30000)})
    # a hears 30000 - 30000 + 30000: an int16 running sum would have wrapped on the way.
    assert out["a"][0] == 30000
    assert out["c"][0] == 32767
    out = m.mix({"a": const(-30000), "b": const(-30000), "c": const(-30000), "d": const(0)})
    assert out["d"][0] == -32768


def test_override_replaces_what_the_leg_hears() -> None:
    m = Mixer()
    m.add_leg("a", "r")
    m.add_leg("b", "r")
    music = LoopSource(np.arange(FS * 3, dtype=np.int16))
    m.set_override("a", music)
    m.set_hearing("a", False)  # a held leg: hears only the music
    out = m.mix({"a": const(1), "b": const(2)})
    assert np.array_equal(out["a"], np.arange(FS))
    assert out["b"][0] == 1
    out = m.mix({"a": const(1), "b": const(2)})
    assert np.array_equal(out["a"], np.arange(FS, 2 * FS))
    m.set_override("a", None)
    m.set_hearing("a", True)
    assert m.mix({"a": const(1), "b": const(2)})["a"][0] == 2


def test_a_shared_source_advances_once_per_tick() -> None:
    m = Mixer()
    music = LoopSource(np.arange(FS * 4, dtype=np.int16))
    for leg in ("a", "b", "c"):
        m.add_leg(leg, leg)  # three rooms
        m.set_override(leg, music)
    first = m.mix({})
    second = m.mix({})
    for leg in "abc":
        assert np.array_equal(first[leg], np.arange(FS))
        assert np.array_equal(second[leg], np.arange(FS, 2 * FS))


def test_override_survives_membership_changes() -> None:
    m = Mixer()
    m.add_leg("a", "r")
    m.set_override("a", LoopSource(const(77)))
    m.add_leg("b", "r")
    m.remove_leg("b")
    m.add_leg("c", "other")
    out = m.mix({"c": const(3)})
    assert out["a"][0] == 77 and out["c"][0] == 0


def test_move_and_remove_leg() -> None:
    m = Mixer()
    for leg in "abc":
        m.add_leg(leg, "r1")
    m.move_leg("c", "r2")
    out = m.mix({"a": const(1), "b": const(2), "c": const(4)})
    assert [int(out[k][0]) for k in "abc"] == [2, 1, 0]
    assert m.room_of("c") == "r2"
    m.remove_leg("a")
    out = m.mix({"a": const(1), "b": const(2), "c": const(4)})  # a's frame is ignored now
    assert set(out) == {"b", "c"} and out["b"][0] == 0
    m.add_leg("a", "r2")
    assert m.mix({"a": const(1), "c": const(4)})["a"][0] == 4


def test_errors_are_precise() -> None:
    m = Mixer()
    m.add_leg("a", "r")
    with pytest.raises(ValueError, match="already"):
        m.add_leg("a", "r")
    for op, args in (
        (m.remove_leg, ()),
        (m.move_leg, ("r",)),
        (m.set_contributing, (True,)),
        (m.set_hearing, (True,)),
        (m.set_override, (None,)),
    ):
        with pytest.raises(UnknownLeg):
            op("ghost", *args)
    with pytest.raises(ValueError, match="shape"):
        m.mix({"a": np.zeros(80, dtype=np.int16)})
    with pytest.raises(ValueError, match="int16"):
        m.mix({"a": np.zeros(FS, dtype=np.float64)})


def test_empty_mixer() -> None:
    m = Mixer()
    assert m.mix({}) == {} and m.layout() == [] and m.mix_stack(np.zeros((0, FS), np.int16)).shape == (0, FS)
    assert len(m) == 0


def test_index_arrays_are_rebuilt_only_on_membership_changes(monkeypatch: pytest.MonkeyPatch) -> None:
    m = Mixer()
    calls = []
    original = m._rebuild

    def counting() -> None:
        calls.append(1)
        original()

    monkeypatch.setattr(m, "_rebuild", counting)
    for i in range(10):
        m.add_leg(i, i % 3)
    m.mix({})
    assert len(calls) == 1
    for tick in range(5):
        m.set_contributing(tick, tick % 2 == 0)
        m.set_hearing(tick, False)
        m.set_override(tick, LoopSource(const(1)))
        m.mix({})
    assert len(calls) == 1
    m.move_leg(0, 2)
    m.mix({})
    assert len(calls) == 2


def test_outputs_are_not_reused_between_ticks() -> None:
    m = Mixer()
    m.add_leg("a", "r")
    m.add_leg("b", "r")
    first = m.mix({"a": const(1), "b": const(2)})
    kept = first["a"].copy()
    m.mix({"a": const(8), "b": const(9)})
    assert np.array_equal(first["a"], kept)


_leg_config = st.tuples(st.integers(0, 3), st.booleans(), st.booleans())


@settings(max_examples=60, deadline=None)
@given(
    st.dictionaries(st.integers(0, 40), _leg_config, max_size=14),
    st.data(),
)
def test_matches_the_per_leg_reference(config: dict, data: st.DataObject) -> None:
    m = Mixer()
    legs = {}
    for leg_id, (room, contributing, hearing) in config.items():
        m.add_leg(leg_id, room)
        m.set_contributing(leg_id, contributing)
        m.set_hearing(leg_id, hearing)
        legs[leg_id] = (room, contributing, hearing)
    frames = {
        leg_id: data.draw(st.one_of(st.none(), hnp.arrays(np.int16, FS)), label=f"frame {leg_id}")
        for leg_id in config
    }
    out = m.mix(frames)
    expected = reference(legs, frames)
    assert set(out) == set(expected)
    for leg_id in config:
        assert out[leg_id].tolist() == expected[leg_id], leg_id
    # The tick's form: one stack in layout order in, one out, the same numbers.
    order = m.layout()
    stack = np.zeros((len(order), FS), np.int16)
    for row, leg_id in enumerate(order):
        if frames[leg_id] is not None:
            stack[row] = frames[leg_id]
    heard = m.mix_stack(stack)
    for row, leg_id in enumerate(order):
        assert heard[row].tolist() == expected[leg_id], leg_id


def test_mix_stack_refuses_a_stack_of_the_wrong_shape() -> None:
    m = Mixer()
    m.add_leg("u", "r")
    with pytest.raises(ValueError, match="shape"):
        m.mix_stack(np.zeros((2, FS), np.int16))


def test_other_frame_sizes() -> None:
    m = Mixer(frame_size=240)
    m.add_leg("a", "r")
    m.add_leg("b", "r")
    out = m.mix({"a": np.full(240, 3, np.int16), "b": None})
    assert out["b"].shape == (240,) and out["b"][0] == 3
    with pytest.raises(ValueError):
        Mixer(frame_size=0)
