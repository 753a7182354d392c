"""Tests for the detect-mode digit collector: the end rules of conference-dtmf.md §3 detect step 2."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tonebridge.conference.collector import (
    CollectionDone,
    CollectionEndReason,
    CollectionFinished,
    DigitCollector,
    check_digit,
)
from tonebridge.conference.options import DtmfOptions


def collector(max_digits: int = 4, timeout_ms: int = 3000) -> DigitCollector:
    return DigitCollector(
        DtmfOptions("detect", max_digits, timeout_ms),  # type: ignore[arg-type]
        call_id="call-1",
        conference_id="myconf#1",
        seq=7,
    )


def press(c: DigitCollector, digit: str, start: float, length: float = 0.1) -> CollectionDone | None:
    done = c.press_started(digit, start)
    if done is None:
        c.press_ended(start + length)
    return done


def test_ends_when_max_digits_reached_at_the_press_start() -> None:
    c = collector(max_digits=3)
    assert press(c, "1", 0.0) is None
    assert press(c, "2", 0.5) is None
    done = c.press_started("3", 1.0)
    assert done == CollectionDone(
        "call-1", "myconf#1", "123", seq=7, reason=CollectionEndReason.MAX_DIGITS, ended_at=1.0
    )
    assert c.done and c.next_timer() is None


def test_max_digits_one_ends_on_the_first_press() -> None:
    c = collector(max_digits=1)
    done = c.press_started("5", 2.0)
    assert done is not None and done.digits == "5" and done.reason is CollectionEndReason.MAX_DIGITS


def test_hash_is_an_ordinary_digit_when_max_digits_is_one() -> None:
    c = collector(max_digits=1)
    done = c.press_started("#", 0.0)
    assert done is not None and done.digits == "#" and done.reason is CollectionEndReason.MAX_DIGITS


def test_hash_ends_collection_and_is_not_part_of_the_value() -> None:
    c = collector(max_digits=4)
    press(c, "4", 0.0)
    press(c, "2", 0.3)
    done = c.press_started("#", 0.6)
    assert done is not None
    assert done.digits == "42" and done.reason is CollectionEndReason.HASH and done.ended_at == 0.6


def test_hash_alone_ends_with_an_empty_value() -> None:
    done = collector(max_digits=2).press_started("#", 0.0)
    assert done is not None and done.digits == "" and done.reason is CollectionEndReason.HASH


def test_star_is_an_ordinary_digit() -> None:
    c = collector(max_digits=2)
    press(c, "*", 0.0)
    done = c.press_started("*", 0.5)
    assert done is not None and done.digits == "**"


def test_timeout_runs_from_the_end_of_the_last_press() -> None:
    c = collector(max_digits=4, timeout_ms=2500)
    c.press_started("7", 10.0)
    assert c.next_timer() is None  # a key that is down stops the clock
    assert c.handle_timer(20.0) is None
    c.press_ended(10.5)
    assert c.next_timer() == 13.0
    assert c.handle_timer(12.999) is None
    done = c.handle_timer(13.0)
    assert (
        done is not None
        and done.digits == "7"
        and done.reason is CollectionEndReason.TIMEOUT
        and done.ended_at == 13.0
    )
    assert c.next_timer() is None
    assert c.handle_timer(20.0) is None


def test_a_new_press_cancels_the_running_timeout() -> None:
    c = collector(max_digits=4, timeout_ms=1000)
    press(c, "1", 0.0)  # ends at 0.1 -> deadline 1.1
    c.press_started("2", 1.0)
    assert c.next_timer() is None
    assert c.handle_timer(1.1) is None
    c.press_ended(1.9)
    assert c.next_timer() == pytest.approx(2.9)
    done = c.handle_timer(2.9)
    assert done is not None and done.digits == "12"


def test_long_press_does_not_time_out() -> None:
    c = collector(max_digits=4, timeout_ms=100)
    c.press_started("9", 0.0)
    assert c.handle_timer(5.0) is None
    c.press_ended(5.0)
    assert c.handle_timer(5.05) is None
    assert c.handle_timer(5.1) is not None


def test_repeated_digits_are_kept() -> None:
    c = collector(max_digits=4)
    press(c, "1", 0.0)
    press(c, "1", 0.2)
    press(c, "2", 0.4)
    done = c.press_started("3", 0.6)
    assert done is not None and done.digits == "1123"


def test_stray_press_end_is_ignored() -> None:
    c = collector()
    c.press_ended(1.0)
    assert c.next_timer() is None
    press(c, "1", 2.0)
    c.press_ended(9.0)  # a second end for the same press does not move the deadline
    assert c.next_timer() == pytest.approx(5.1)


def test_press_after_done_is_a_precise_error() -> None:
    c = collector(max_digits=1)
    c.press_started("1", 0.0)
    with pytest.raises(CollectionFinished):
        c.press_started("2", 0.1)


def test_end_after_done_is_ignored() -> None:
    c = collector(max_digits=1)
    c.press_started("1", 0.0)
    c.press_ended(0.2)
    assert c.next_timer() is None


@pytest.mark.parametrize("digit", ["E", "11", "", "x", " "])
def test_invalid_digits_are_refused(digit: str) -> None:
    with pytest.raises(ValueError):
        collector().press_started(digit, 0.0)


def test_lower_case_letters_are_canonicalised() -> None:
    assert check_digit("a") == "A"
    c = collector(max_digits=1)
    done = c.press_started("d", 0.0)
    assert done is not None and done.digits == "D"


def test_cut_short_returns_the_digits_so_far() -> None:
    c = collector()
    press(c, "3", 0.0)
    done = c.cut_short(0.5)
    assert done is not None and done.digits == "3" and done.reason is CollectionEndReason.LEFT
    assert c.done and c.cut_short(0.6) is None


def test_cut_short_with_nothing_collected_is_none() -> None:
    c = collector(max_digits=3)
    c.press_started("#", 0.0)  # ended by hash already
    assert c.cut_short(0.5) is None
    fresh = collector()
    assert fresh.cut_short(0.0) is None


@given(
    st.lists(st.sampled_from("0123456789*ABCD"), min_size=1, max_size=40),
    st.integers(1, 32),
)
def test_value_is_a_prefix_of_the_keys_capped_at_max_digits(keys: list[str], max_digits: int) -> None:
    c = collector(max_digits=max_digits, timeout_ms=60000)
    result = None
    for i, key in enumerate(keys):
        result = press(c, key, float(i))
        if result is not None:
            break
    if result is None:
        c.press_ended(float(len(keys)))
        result = c.handle_timer(float(len(keys)) + 60.0)
    assert result is not None
    assert result.digits == "".join(keys)[:max_digits]
    assert len(result.digits) <= max_digits
