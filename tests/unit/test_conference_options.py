"""Tests for conference input validation: conferenceDtmfOptions (conference-dtmf.md §1), conference ids
(§4) and music-on-hold classes."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tonebridge.conference.options import (
    MOH_CLASSES,
    DtmfMode,
    DtmfOptions,
    InvalidField,
    validate_conference_id,
    validate_moh_class,
)


def test_defaults() -> None:
    options = DtmfOptions()
    assert options == DtmfOptions(mode=DtmfMode.IGNORE, max_digits=1, timeout_ms=3000)
    assert DtmfOptions.from_json({}) == options
    assert DtmfOptions.from_json(None) == options


def test_options_are_frozen() -> None:
    options = DtmfOptions()
    with pytest.raises(AttributeError):
        options.max_digits = 3  # type: ignore[misc]


def test_string_mode_in_constructor_becomes_enum() -> None:
    assert DtmfOptions(mode="detect").mode is DtmfMode.DETECT  # type: ignore[arg-type]


def test_seed_example_spelling_timoutmills() -> None:
    options = DtmfOptions.from_json({"mode": "detect", "maxDigits": 2, "timoutMills": 2500})
    assert options == DtmfOptions(DtmfMode.DETECT, 2, 2500)


def test_sdk_snake_case_aliases() -> None:
    options = DtmfOptions.from_json({"mode": "forward", "max_digits": 4, "timeout_mills": 800})
    assert options == DtmfOptions(DtmfMode.FORWARD, 4, 800)


@pytest.mark.parametrize("alias", ["timoutMills", "timeout_mills"])
def test_camel_case_timeout_wins_over_alias(alias: str) -> None:
    options = DtmfOptions.from_json({"timeoutMills": 1000, alias: 2500})
    assert options.timeout_ms == 1000


def test_camel_case_max_digits_wins_over_alias() -> None:
    assert DtmfOptions.from_json({"maxDigits": 3, "max_digits": 5}).max_digits == 3


def test_camel_case_wins_even_when_alias_is_invalid() -> None:
    # The alias is not consulted at all when the real name is present.
    assert DtmfOptions.from_json({"timeoutMills": 1000, "timoutMills": "x"}).timeout_ms == 1000


def test_null_counts_as_absent() -> None:
    options = DtmfOptions.from_json(
        {"mode": None, "maxDigits": None, "timeoutMills": None, "timoutMills": 900}
    )
    assert options == DtmfOptions(timeout_ms=900)


def test_unknown_keys_are_ignored() -> None:
    assert DtmfOptions.from_json({"mode": "detect", "colour": "blue"}).mode is DtmfMode.DETECT


@pytest.mark.parametrize("mode", ["ignore", "forward", "detect"])
def test_each_mode(mode: str) -> None:
    assert DtmfOptions.from_json({"mode": mode}).mode.value == mode


def test_mode_is_matched_without_regard_to_case() -> None:
    assert DtmfOptions.from_json({"mode": "Detect"}).mode is DtmfMode.DETECT


@pytest.mark.parametrize("value", ["collect", "", 1, True, ["detect"]])
def test_bad_mode_names_the_field(value: object) -> None:
    with pytest.raises(InvalidField) as info:
        DtmfOptions.from_json({"mode": value})
    assert info.value.field == "mode"
    assert "ignore, forward, detect" in info.value.message


@pytest.mark.parametrize("field", ["maxDigits", "max_digits"])
@pytest.mark.parametrize("value", [0, 33, -1, 1000])
def test_max_digits_out_of_range(field: str, value: int) -> None:
    with pytest.raises(InvalidField) as info:
        DtmfOptions.from_json({field: value})
    assert info.value.field == field
    assert "1 to 32" in info.value.message or "from 1 to 32" in info.value.message


@pytest.mark.parametrize("value", [1, 32])
def test_max_digits_bounds_are_inclusive(value: int) -> None:
    assert DtmfOptions.from_json({"maxDigits": value}).max_digits == value


@pytest.mark.parametrize("field", ["timeoutMills", "timoutMills", "timeout_mills"])
@pytest.mark.parametrize("value", [99, 60001, 0])
def test_timeout_out_of_range_names_the_field_as_written(field: str, value: int) -> None:
    with pytest.raises(InvalidField) as info:
        DtmfOptions.from_json({field: value})
    assert info.value.field == field
    assert "100 to 60000" in info.value.message


@pytest.mark.parametrize("value", [100, 60000])
def test_timeout_bounds_are_inclusive(value: int) -> None:
    assert DtmfOptions.from_json({"timeoutMills": value}).timeout_ms == value


@pytest.mark.parametrize("value", [True, False, "2", 2.0, 2.5, [2], {"n": 2}])
@pytest.mark.parametrize("field", ["maxDigits", "timeoutMills"])
def test_non_integers_are_refused(field: str, value: object) -> None:
    with pytest.raises(InvalidField) as info:
        DtmfOptions.from_json({field: value})
    assert info.value.field == field
    assert "integer" in info.value.message


@pytest.mark.parametrize("obj", [[], "detect", 3])
def test_options_must_be_an_object(obj: object) -> None:
    with pytest.raises(InvalidField) as info:
        DtmfOptions.from_json(obj)  # type: ignore[arg-type]
    assert info.value.field == "conferenceDtmfOptions"


def test_constructor_validates_too() -> None:
    with pytest.raises(InvalidField):
        DtmfOptions(max_digits=0)
    with pytest.raises(InvalidField):
        DtmfOptions(timeout_ms=50)
    with pytest.raises(InvalidField):
        DtmfOptions(mode="loud")  # type: ignore[arg-type]


def test_invalid_field_is_a_value_error_with_readable_text() -> None:
    error = InvalidField("maxDigits", "must be from 1 to 32 (got 40)")
    assert isinstance(error, ValueError)
    assert str(error) == "maxDigits: must be from 1 to 32 (got 40)"


@given(
    mode=st.sampled_from(list(DtmfMode)),
    max_digits=st.integers(1, 32),
    timeout_ms=st.integers(100, 60000),
)
def test_json_round_trip(mode: DtmfMode, max_digits: int, timeout_ms: int) -> None:
    options = DtmfOptions(mode, max_digits, timeout_ms)
    assert DtmfOptions.from_json(options.to_json()) == options
    assert options.timeout_s == timeout_ms / 1000


@pytest.mark.parametrize("cid", ["myconf#1", "a", "x" * 64, "room with spaces", "Ærø-Δ/😀", " "])
def test_valid_conference_ids_are_returned_unchanged(cid: str) -> None:
    assert validate_conference_id(cid) == cid


@pytest.mark.parametrize(
    "cid", ["", "x" * 65, "bad\nid", "tab\tid", "nul\x00", "del\x7f", "zw\u200bsp", "line\u2028sep"]
)
def test_invalid_conference_ids(cid: str) -> None:
    with pytest.raises(InvalidField) as info:
        validate_conference_id(cid)
    assert info.value.field == "conferenceId"


def test_conference_id_counts_characters_not_bytes() -> None:
    assert validate_conference_id("é" * 64) == "é" * 64


@pytest.mark.parametrize("cid", [None, 12, b"room"])
def test_conference_id_must_be_a_string(cid: object) -> None:
    with pytest.raises(InvalidField):
        validate_conference_id(cid)


def test_moh_classes() -> None:
    assert MOH_CLASSES == ("ring", "music1", "music2", "music3")
    for name in MOH_CLASSES:
        assert validate_moh_class(name) == name
    with pytest.raises(InvalidField) as info:
        validate_moh_class("music4", "moh")
    assert info.value.field == "moh"
    with pytest.raises(InvalidField):
        validate_moh_class("Music1")
