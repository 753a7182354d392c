"""The ``runMenu`` state machine: prompts, key presses and timeouts in, effects and a menu result out.

Sans-IO on an injected clock, in the style of the other protocol cores: the engine calls :meth:`start`,
reports what happened (:meth:`prompt_finished`, :meth:`press`, :meth:`hangup`), asks
:meth:`MenuRunner.next_timer` when to call :meth:`MenuRunner.handle_timer`, and carries out the returned
effects in order. The last effect is always a :class:`MenuResult`, which the engine sends in a PIE
(sinch-voice-v1.md §2, ``menuResult``).

Rules (reference notes §3.5; where Sinch is silent the choice is marked *Tonebridge*):
- The first menu is ``mainMenu``, else ``main``. Entering a menu plays its ``mainPrompt``.
- Barge-in: with ``barge`` (the default) a key pressed during a prompt stops it and counts as input;
  without it, keys pressed during a prompt are ignored.
- A menu without ``maxDigits`` > 1 takes one key and matches it against the options: ``return(v)`` ends
  with a ``return`` result, ``menu(id)`` enters that menu, any other key is invalid input.
- A menu with ``maxDigits`` > 1 (or 1 and no options) collects a sequence, ended by ``maxDigits`` keys,
  by ``#`` (not part of the value; with ``maxDigits`` 1 ``#`` is a key), or by a timeout after at least
  one key. A sequence equal to an option's keys takes that option (*Tonebridge*), any other gives a
  ``sequence`` result.
- Timeouts: ``timeoutMills`` from the end of the prompt to the first key and between keys;
  ``maxTimeoutMills`` caps one whole input attempt, counted from when input opened (the prompt's end or a
  barge-in key) (*Tonebridge*).
- Repeats: on a timeout without keys, or on invalid input, the ``repeatPrompt`` (the ``mainPrompt`` when
  there is none, *Tonebridge*) is played and input opens again, at most ``repeats`` times per menu entry;
  after that the result is ``timeout`` or ``invalidinput`` (the invalid keys as the value).
- ``#`` alone in a sequence menu is invalid input (*Tonebridge*). A hang-up gives ``hangup`` with the keys
  collected so far; :meth:`MenuRunner.fail` gives ``error``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from tonebridge.svaml.models import DEFAULT_LOCALE, DTMF_KEYS, Menu, MenuOption, Prompt, RunMenuAction

__all__ = [
    "MenuEffect",
    "MenuResult",
    "MenuResultType",
    "MenuRunner",
    "PlayPrompt",
    "StopPrompt",
]

MenuResultType = Literal["return", "sequence", "timeout", "invalidinput", "hangup", "error"]


@dataclass(frozen=True, slots=True)
class PlayPrompt:
    """Play ``prompts`` (speech in ``locale``) and call :meth:`MenuRunner.prompt_finished` at their end.
    ``repeat`` tells a repeat after a timeout or invalid input from the main prompt of a menu."""

    prompts: tuple[Prompt, ...]
    locale: str
    menu_id: str
    repeat: bool = False


@dataclass(frozen=True, slots=True)
class StopPrompt:
    """Stop the prompt now playing (barge-in, or the menu ended)."""


@dataclass(frozen=True, slots=True)
class MenuResult:
    """How the menu ended: the PIE's ``menuResult``."""

    menu_id: str
    type: MenuResultType
    value: str = ""
    input_method: str = "dtmf"

    def to_json(self) -> dict[str, Any]:
        return {
            "menuId": self.menu_id,
            "type": self.type,
            "value": self.value,
            "inputMethod": self.input_method,
        }


MenuEffect = PlayPrompt | StopPrompt | MenuResult

_State = Literal["idle", "prompting", "waiting", "done"]


class MenuRunner:
    """Runs one ``runMenu`` action. ``now`` is the creation time (float seconds, the engine's clock)."""

    def __init__(self, spec: RunMenuAction, now: float) -> None:
        self.spec = spec
        self.created_at = now
        self.result: MenuResult | None = None
        self._state: _State = "idle"
        self._menu: Menu = spec.menu(spec.start_menu_id)
        self._repeats_used = 0
        self._digits = ""
        self._digit_deadline: float | None = None
        self._max_deadline: float | None = None

    # -- what the engine may read -------------------------------------------------------------------

    @property
    def menu_id(self) -> str:
        """The menu now running."""
        return self._menu.id

    @property
    def digits(self) -> str:
        """Keys collected in the current input attempt."""
        return self._digits

    @property
    def done(self) -> bool:
        return self._state == "done"

    @property
    def prompting(self) -> bool:
        return self._state == "prompting"

    def next_timer(self) -> float | None:
        """When :meth:`handle_timer` should be called next, or None (no timer runs during a prompt)."""
        if self._state != "waiting" or self._digit_deadline is None or self._max_deadline is None:
            return None
        return min(self._digit_deadline, self._max_deadline)

    # -- events ---------------------------------------------------------------------------------------

    def start(self, now: float) -> list[MenuEffect]:
        """Enter the first menu."""
        if self._state != "idle":
            raise RuntimeError("the menu has already started")
        return self._enter(self._menu, now)

    def prompt_finished(self, now: float) -> list[MenuEffect]:
        """The prompt played to its end: input opens. Ignored when no prompt is playing (a prompt stopped
        by barge-in may still report its end)."""
        if self._state == "prompting":
            self._open_input(now)
        return []

    def press(self, digit: str, now: float) -> list[MenuEffect]:
        """A key was pressed (``0-9 * # A-D``)."""
        if len(digit) != 1 or digit.upper() not in DTMF_KEYS:
            raise ValueError(f"not a DTMF key: {digit!r}")
        digit = digit.upper()
        if self._state == "idle":
            raise RuntimeError("press before start")
        if self._state == "done":
            return []  # a key racing the end of the menu
        effects: list[MenuEffect] = []
        if self._state == "prompting":
            if not self.spec.barge:
                return []
            effects.append(StopPrompt())
            self._open_input(now)
        menu = self._menu
        if not menu.collects:
            option = menu.option_for(digit)
            if option is None:
                return effects + self._retry("invalidinput", digit, now)
            return effects + self._choose(option, now)
        assert menu.max_digits is not None
        if digit == "#" and menu.max_digits > 1:
            if not self._digits:
                return effects + self._retry("invalidinput", "#", now)
            return effects + self._end_sequence(now)
        self._digits += digit
        if len(self._digits) >= menu.max_digits:
            return effects + self._end_sequence(now)
        self._digit_deadline = now + menu.timeout_mills / 1000.0
        return effects

    def handle_timer(self, now: float) -> list[MenuEffect]:
        """Call at or after :meth:`next_timer`; early calls do nothing."""
        deadline = self.next_timer()
        if deadline is None or now < deadline:
            return []
        if self._digits:
            return self._end_sequence(now)
        return self._retry("timeout", "", now)

    def hangup(self, now: float) -> list[MenuEffect]:
        """The caller hung up: ``hangup`` with the keys collected so far."""
        if self._state == "done":
            return []
        return self._finish("hangup", self._digits)

    def fail(self, now: float) -> list[MenuEffect]:
        """Something went wrong running the menu (for example no prompt could be played): ``error``."""
        if self._state == "done":
            return []
        return self._finish("error", "")

    # -- internals ------------------------------------------------------------------------------------

    def _enter(self, menu: Menu, now: float) -> list[MenuEffect]:
        self._menu = menu
        self._repeats_used = 0
        return self._prompt(menu.main_prompt, now, repeat=False)

    def _prompt(self, prompts: tuple[Prompt, ...], now: float, *, repeat: bool) -> list[MenuEffect]:
        self._digits = ""
        self._digit_deadline = self._max_deadline = None
        if not prompts:
            self._open_input(now)
            return []
        self._state = "prompting"
        return [PlayPrompt(prompts, self.spec.locale or DEFAULT_LOCALE, self._menu.id, repeat)]

    def _open_input(self, now: float) -> None:
        self._state = "waiting"
        self._digit_deadline = now + self._menu.timeout_mills / 1000.0
        self._max_deadline = now + self._menu.max_timeout_mills / 1000.0

    def _choose(self, option: MenuOption, now: float) -> list[MenuEffect]:
        if option.action.kind == "return":
            return self._finish("return", option.action.value)
        return self._enter(self.spec.menu(option.action.value), now)

    def _end_sequence(self, now: float) -> list[MenuEffect]:
        option = self._menu.option_for(self._digits)
        if option is not None:
            return self._choose(option, now)
        return self._finish("sequence", self._digits)

    def _retry(self, kind: MenuResultType, value: str, now: float) -> list[MenuEffect]:
        if self._repeats_used < self._menu.repeats:
            self._repeats_used += 1
            prompts = self._menu.repeat_prompt or self._menu.main_prompt
            return self._prompt(prompts, now, repeat=True)
        return self._finish(kind, value)

    def _finish(self, kind: MenuResultType, value: str) -> list[MenuEffect]:
        effects: list[MenuEffect] = [StopPrompt()] if self._state == "prompting" else []
        self._state = "done"
        self._digit_deadline = self._max_deadline = None
        self.result = MenuResult(self._menu.id, kind, value)
        effects.append(self.result)
        return effects
