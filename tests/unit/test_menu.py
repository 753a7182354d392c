"""Tests for the runMenu state machine (tonebridge.svaml.menu), driven by a fake clock: prompts, barge-in,
options, sequences, repeats, per-key and overall timeouts, hang-up and errors (reference notes §3.5)."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tonebridge.svaml.menu import MenuEffect, MenuResult, MenuRunner, PlayPrompt, StopPrompt
from tonebridge.svaml.models import Prompt, RunMenuAction, parse_svaml


def spec(menus: list[dict[str, Any]], **fields: Any) -> RunMenuAction:
    action = parse_svaml({"action": {"name": "runMenu", "menus": menus, **fields}}).action
    assert isinstance(action, RunMenuAction)
    return action


MAIN = {
    "id": "main",
    "mainPrompt": "#tts[Press 1 for sales or 2 for your PIN]",
    "repeatPrompt": "#tts[Sorry, try again]",
    "repeats": 2,
    "timeoutMills": 5000,
    "options": [{"dtmf": "1", "action": "return(sales)"}, {"dtmf": "2", "action": "menu(pin)"}],
}
PIN = {
    "id": "pin",
    "mainPrompt": "#tts[Enter your PIN]",
    "maxDigits": 4,
    "timeoutMills": 3000,
    "maxTimeoutMills": 10000,
    "repeats": 1,
}
MAIN_PROMPT = (Prompt("tts", "Press 1 for sales or 2 for your PIN"),)
REPEAT_PROMPT = (Prompt("tts", "Sorry, try again"),)


class Clock:
    """A fake clock that drives the runner: ``advance`` fires every timer that falls due on the way."""

    def __init__(self, runner: MenuRunner, now: float = 100.0) -> None:
        self.runner = runner
        self.now = now
        self.effects: list[MenuEffect] = []

    def record(self, effects: list[MenuEffect]) -> list[MenuEffect]:
        self.effects.extend(effects)
        return effects

    def advance(self, seconds: float) -> list[MenuEffect]:
        end = self.now + seconds
        out: list[MenuEffect] = []
        while (deadline := self.runner.next_timer()) is not None and deadline <= end:
            self.now = deadline
            out += self.runner.handle_timer(self.now)
        self.now = end
        return self.record(out)

    def start(self) -> list[MenuEffect]:
        return self.record(self.runner.start(self.now))

    def finish_prompt(self, after: float = 2.0) -> list[MenuEffect]:
        self.now += after
        return self.record(self.runner.prompt_finished(self.now))

    def press(self, keys: str, gap: float = 0.5) -> list[MenuEffect]:
        out: list[MenuEffect] = []
        for key in keys:
            out += self.advance(gap)
            out += self.record(self.runner.press(key, self.now))
        return out


def make(menus: list[dict[str, Any]] | None = None, **fields: Any) -> Clock:
    return Clock(MenuRunner(spec(menus or [MAIN, PIN], **fields), now=100.0))


def results(effects: list[MenuEffect]) -> list[MenuResult]:
    return [e for e in effects if isinstance(e, MenuResult)]


def test_start_plays_the_main_prompt_and_no_timer_runs_during_it() -> None:
    clock = make()
    assert clock.start() == [PlayPrompt(MAIN_PROMPT, "en-US", "main", repeat=False)]
    assert clock.runner.prompting and clock.runner.next_timer() is None
    clock.finish_prompt(after=3.0)
    assert clock.runner.next_timer() == pytest.approx(103.0 + 5.0)


def test_locale_of_the_action_is_used_for_prompts() -> None:
    clock = make(locale="sv-SE")
    (play,) = clock.start()
    assert isinstance(play, PlayPrompt) and play.locale == "sv-SE"


def test_option_return() -> None:
    clock = make()
    clock.start()
    clock.finish_prompt()
    assert clock.press("1") == [MenuResult("main", "return", "sales", "dtmf")]
    assert clock.runner.done and clock.runner.next_timer() is None
    assert clock.runner.result == MenuResult("main", "return", "sales")


def test_option_menu_enters_the_sub_menu_and_sequence_ends_at_max_digits() -> None:
    clock = make()
    clock.start()
    clock.finish_prompt()
    assert clock.press("2") == [PlayPrompt((Prompt("tts", "Enter your PIN"),), "en-US", "pin")]
    assert clock.runner.menu_id == "pin"
    clock.finish_prompt()
    assert clock.press("123") == []
    assert clock.runner.digits == "123"
    assert clock.press("4") == [MenuResult("pin", "sequence", "1234")]


def test_main_menu_selects_the_first_menu() -> None:
    clock = make([MAIN, PIN], mainMenu="pin")
    (play,) = clock.start()
    assert isinstance(play, PlayPrompt) and play.menu_id == "pin"


def test_barge_in_stops_the_prompt_and_takes_the_key() -> None:
    clock = make()
    clock.start()
    assert clock.press("1") == [StopPrompt(), MenuResult("main", "return", "sales")]
    # A late "prompt finished" from the stopped prompt changes nothing.
    assert clock.runner.prompt_finished(clock.now) == []


def test_barge_in_to_a_sequence_menu_opens_input_at_the_key() -> None:
    clock = make([MAIN, PIN], mainMenu="pin")
    clock.start()
    assert clock.press("9", gap=1.0) == [StopPrompt()]
    assert clock.runner.digits == "9"
    # The per-key timeout runs from the key; no StopPrompt is sent a second time.
    assert clock.runner.next_timer() == pytest.approx(clock.now + 3.0)
    assert clock.press("8") == []


def test_without_barge_keys_during_a_prompt_are_ignored() -> None:
    clock = make(barge=False)
    clock.start()
    assert clock.press("1") == []
    assert clock.runner.prompting and not clock.runner.done
    clock.finish_prompt()
    assert results(clock.press("1")) == [MenuResult("main", "return", "sales")]


def test_invalid_key_plays_the_repeat_prompt_then_gives_invalidinput() -> None:
    clock = make()
    clock.start()
    clock.finish_prompt()
    for _ in range(2):  # repeats = 2
        assert clock.press("7") == [PlayPrompt(REPEAT_PROMPT, "en-US", "main", repeat=True)]
        clock.finish_prompt()
    assert clock.press("7") == [MenuResult("main", "invalidinput", "7")]


def test_invalid_key_during_a_repeat_prompt_barges_it() -> None:
    clock = make()
    clock.start()
    clock.finish_prompt()
    clock.press("9")
    assert clock.press("9") == [StopPrompt(), PlayPrompt(REPEAT_PROMPT, "en-US", "main", repeat=True)]


def test_timeout_repeats_then_gives_timeout_at_exact_times() -> None:
    clock = make()
    clock.start()
    clock.finish_prompt(after=2.0)  # input opens at 102
    assert clock.runner.handle_timer(106.999) == []  # early: nothing
    assert clock.advance(4.999) == []
    assert clock.advance(0.001) == [PlayPrompt(REPEAT_PROMPT, "en-US", "main", repeat=True)]
    assert clock.now == pytest.approx(107.0)
    clock.finish_prompt(after=1.0)
    assert clock.advance(5.0) == [PlayPrompt(REPEAT_PROMPT, "en-US", "main", repeat=True)]
    clock.finish_prompt(after=1.0)
    assert clock.advance(4.9) == []
    assert clock.advance(0.1) == [MenuResult("main", "timeout", "")]


def test_repeats_zero_gives_the_result_at_the_first_timeout() -> None:
    clock = make([{**MAIN, "repeats": 0}, PIN])
    clock.start()
    clock.finish_prompt()
    assert clock.advance(5.0) == [MenuResult("main", "timeout", "")]


def test_missing_repeat_prompt_repeats_the_main_prompt() -> None:
    menu = {k: v for k, v in MAIN.items() if k != "repeatPrompt"}
    clock = make([menu, PIN])
    clock.start()
    clock.finish_prompt()
    assert clock.advance(5.0) == [PlayPrompt(MAIN_PROMPT, "en-US", "main", repeat=True)]


def test_repeats_reset_when_entering_a_menu() -> None:
    clock = make()
    clock.start()
    clock.finish_prompt()
    clock.press("7")  # one repeat used in main
    clock.finish_prompt()
    clock.press("2")  # into pin, which has repeats = 1
    clock.finish_prompt()
    assert clock.advance(3.0) == [PlayPrompt((Prompt("tts", "Enter your PIN"),), "en-US", "pin", repeat=True)]
    clock.finish_prompt()
    assert clock.advance(3.0) == [MenuResult("pin", "timeout", "")]


def test_sequence_ends_with_hash_which_is_not_in_the_value() -> None:
    clock = make([MAIN, PIN], mainMenu="pin")
    clock.start()
    clock.finish_prompt()
    assert clock.press("12#") == [MenuResult("pin", "sequence", "12")]


def test_hash_alone_is_invalid_input() -> None:
    clock = make([MAIN, PIN], mainMenu="pin")
    clock.start()
    clock.finish_prompt()
    assert clock.press("#") == [PlayPrompt((Prompt("tts", "Enter your PIN"),), "en-US", "pin", repeat=True)]
    clock.finish_prompt()
    assert clock.press("#") == [MenuResult("pin", "invalidinput", "#")]


def test_sequence_ends_on_the_per_key_timeout_after_a_key() -> None:
    clock = make([MAIN, PIN], mainMenu="pin")
    clock.start()
    clock.finish_prompt()
    clock.press("4", gap=2.9)  # inside the 3 s to the first key
    clock.press("2", gap=2.9)  # inside 3 s from the last key
    assert clock.advance(2.999) == []
    assert clock.advance(0.001) == [MenuResult("pin", "sequence", "42")]


def test_max_timeout_caps_the_whole_attempt() -> None:
    clock = make([MAIN, {**PIN, "maxDigits": 10}], mainMenu="pin")
    clock.start()
    clock.finish_prompt()  # input opens at 102; overall cap 10 s -> 112
    clock.press("1234", gap=2.5)  # keys at 104.5, 107, 109.5, 112 (the cap fires first at 112)
    assert results(clock.effects) == [MenuResult("pin", "sequence", "123")]
    assert clock.runner.result is not None and clock.now == pytest.approx(112.0)


def test_max_timeout_without_keys_counts_as_a_timeout() -> None:
    clock = make(
        [
            {
                "id": "main",
                "timeoutMills": 5000,
                "maxTimeoutMills": 2000,
                "repeats": 0,
                "options": [{"dtmf": "1", "action": "return(x)"}],
            }
        ]
    )
    clock.start()
    assert clock.runner.next_timer() == pytest.approx(102.0)  # no prompt: input opens at once
    assert clock.advance(2.0) == [MenuResult("main", "timeout", "")]


def test_single_key_menu_without_options_returns_a_sequence_and_hash_is_a_key() -> None:
    clock = make([{"id": "main", "maxDigits": 1}])
    clock.start()
    assert clock.press("#") == [MenuResult("main", "sequence", "#")]


def test_sequence_equal_to_an_option_takes_the_option() -> None:
    menu = {
        "id": "main",
        "maxDigits": 4,
        "options": [{"dtmf": "1234", "action": "return(secret)"}, {"dtmf": "9", "action": "menu(other)"}],
    }
    other = {"id": "other", "mainPrompt": "other"}
    clock = make([menu, other])
    clock.start()
    assert clock.press("1234") == [MenuResult("main", "return", "secret")]
    clock = make([menu, other])
    clock.start()
    assert clock.press("9#") == [PlayPrompt((Prompt("file", "other"),), "en-US", "other")]


def test_hangup_reports_keys_collected_so_far() -> None:
    clock = make([MAIN, PIN], mainMenu="pin")
    clock.start()
    clock.finish_prompt()
    clock.press("55")
    assert clock.runner.hangup(clock.now) == [MenuResult("pin", "hangup", "55")]
    assert clock.runner.hangup(clock.now) == []
    assert clock.runner.press("1", clock.now) == [] and clock.runner.handle_timer(clock.now + 99) == []


def test_hangup_during_a_prompt_stops_it() -> None:
    clock = make()
    clock.start()
    assert clock.runner.hangup(clock.now) == [StopPrompt(), MenuResult("main", "hangup", "")]


def test_fail_gives_error() -> None:
    clock = make()
    clock.start()
    assert clock.runner.fail(clock.now) == [StopPrompt(), MenuResult("main", "error", "")]
    assert clock.runner.fail(clock.now) == []


def test_misuse_raises() -> None:
    clock = make()
    with pytest.raises(RuntimeError):
        clock.runner.press("1", clock.now)
    clock.start()
    with pytest.raises(RuntimeError):
        clock.runner.start(clock.now)
    with pytest.raises(ValueError):
        clock.runner.press("x", clock.now)
    with pytest.raises(ValueError):
        clock.runner.press("12", clock.now)


def test_lower_case_letters_are_keys() -> None:
    clock = make([{"id": "main", "options": [{"dtmf": "A", "action": "return(alpha)"}]}])
    clock.start()
    assert clock.press("a") == [MenuResult("main", "return", "alpha")]


def test_result_json_is_the_pie_menu_result() -> None:
    assert MenuResult("main", "sequence", "1234").to_json() == {
        "menuId": "main",
        "type": "sequence",
        "value": "1234",
        "inputMethod": "dtmf",
    }


events = st.lists(
    st.one_of(
        st.tuples(st.just("press"), st.sampled_from("0123456789*#AB"), st.floats(0, 6)),
        st.tuples(st.just("finish"), st.just(""), st.floats(0, 6)),
        st.tuples(st.just("wait"), st.just(""), st.floats(0, 30)),
    ),
    max_size=40,
)


@settings(max_examples=150, deadline=None)
@given(events, st.booleans())
def test_any_event_order_ends_in_at_most_one_result_and_always_ends(
    script: list[tuple[str, str, float]], barge: bool
) -> None:
    clock = make(barge=barge)
    clock.start()
    for kind, key, gap in script:
        if kind == "press":
            clock.press(key, gap=gap)
        elif kind == "finish":
            if clock.runner.prompting:
                clock.finish_prompt(after=gap)
        else:
            clock.advance(gap)
        assert len(results(clock.effects)) <= 1
        if clock.runner.done:
            assert isinstance(clock.effects[-1], MenuResult) and clock.runner.next_timer() is None
    # With nobody pressing, every prompt ending and every timer firing must end the menu.
    for _ in range(20):
        if clock.runner.done:
            break
        if clock.runner.prompting:
            clock.finish_prompt()
        clock.advance(60.0)
    assert clock.runner.done and len(results(clock.effects)) == 1
