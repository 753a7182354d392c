"""Conference input validation: DTMF options, conference ids and music-on-hold classes.

Parses what clients send (``conferenceDtmfOptions``, ``conferenceId``, ``mohClass``/``moh``) into typed,
validated values, raising :class:`InvalidField` that names the field exactly as the client wrote it, so the
API layer can answer 400/40001 with a message that tells the client what to fix
(shared/spec/conference-dtmf.md §1, sinch-voice-v1.md §3).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

__all__ = [
    "DEFAULT_HOLD_MOH",
    "MAX_DIGITS_RANGE",
    "MOH_CLASSES",
    "TIMEOUT_MS_RANGE",
    "DtmfMode",
    "DtmfOptions",
    "InvalidField",
    "validate_conference_id",
    "validate_moh_class",
]

MAX_DIGITS_RANGE = (1, 32)
TIMEOUT_MS_RANGE = (100, 60_000)
CONFERENCE_ID_MAX_CHARS = 64

#: Music-on-hold classes a client may name (``mohClass`` on callouts, ``moh`` on connectConf and onhold).
MOH_CLASSES: tuple[str, ...] = ("ring", "music1", "music2", "music3")

#: Played to a held participant when the ``onhold`` command names no ``moh`` and the participant joined
#: without a ``mohClass`` (the Python SDK sends a bare ``{"command": "onhold"}``).
DEFAULT_HOLD_MOH = "music1"


class InvalidField(ValueError):
    """A client-supplied field is wrong. ``field`` is spelled as the client wrote it."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


class DtmfMode(StrEnum):
    """What a participant's key presses do (conference-dtmf.md §3)."""

    IGNORE = "ignore"
    FORWARD = "forward"
    DETECT = "detect"


def _parse_mode(value: object, field: str) -> DtmfMode:
    # Matched without regard to case, as SVAML names are (sinch-voice-v1.md §4); the .NET SDK's enum
    # names are capitalised (Ignore, Forward, Detect).
    if isinstance(value, DtmfMode):
        return value
    if not isinstance(value, str):
        raise InvalidField(field, f"must be a string, one of ignore, forward, detect (got {value!r})")
    try:
        return DtmfMode(value.lower())
    except ValueError:
        raise InvalidField(field, f"must be one of ignore, forward, detect (got {value!r})") from None


def _parse_int(value: object, field: str, bounds: tuple[int, int]) -> int:
    low, high = bounds
    # bool is a subclass of int in Python; JSON true is not a number.
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidField(field, f"must be an integer from {low} to {high} (got {value!r})")
    if not low <= value <= high:
        raise InvalidField(field, f"must be from {low} to {high} (got {value})")
    return value


@dataclass(frozen=True, slots=True)
class DtmfOptions:
    """A participant's ``conferenceDtmfOptions``: mode, digits per collection, inter-digit timeout."""

    mode: DtmfMode = DtmfMode.IGNORE
    max_digits: int = 1
    timeout_ms: int = 3000

    def __post_init__(self) -> None:
        object.__setattr__(self, "mode", _parse_mode(self.mode, "mode"))
        _parse_int(self.max_digits, "maxDigits", MAX_DIGITS_RANGE)
        _parse_int(self.timeout_ms, "timeoutMills", TIMEOUT_MS_RANGE)

    @property
    def timeout_s(self) -> float:
        return self.timeout_ms / 1000.0

    @classmethod
    def from_json(cls, obj: Mapping[str, Any] | None) -> DtmfOptions:
        """Parse a decoded ``conferenceDtmfOptions`` object.

        Unknown keys are ignored and JSON ``null`` counts as absent (tolerant reader: the Python SDK sends
        nulls for unset fields). The camelCase name wins over an alias when both are present; the seed's
        ``timoutMills`` and the SDK's unconverted ``max_digits``/``timeout_mills`` are the aliases.
        """
        if obj is None:
            return cls()
        if not isinstance(obj, Mapping):
            raise InvalidField("conferenceDtmfOptions", f"must be an object (got {type(obj).__name__})")

        def pick(*names: str) -> tuple[str, object] | None:
            for name in names:
                if obj.get(name) is not None:
                    return name, obj[name]
            return None

        kwargs: dict[str, Any] = {}
        if (found := pick("mode")) is not None:
            kwargs["mode"] = _parse_mode(found[1], found[0])
        if (found := pick("maxDigits", "max_digits")) is not None:
            kwargs["max_digits"] = _parse_int(found[1], found[0], MAX_DIGITS_RANGE)
        if (found := pick("timeoutMills", "timoutMills", "timeout_mills")) is not None:
            kwargs["timeout_ms"] = _parse_int(found[1], found[0], TIMEOUT_MS_RANGE)
        return cls(**kwargs)

    def to_json(self) -> dict[str, object]:
        return {"mode": self.mode.value, "maxDigits": self.max_digits, "timeoutMills": self.timeout_ms}


def validate_conference_id(value: object, field: str = "conferenceId") -> str:
    """Return ``value`` unchanged if it is a valid conference id (1..64 printable characters).

    Ids are compared exactly, so nothing is trimmed or case-folded (conference-dtmf.md §4).
    """
    if not isinstance(value, str):
        raise InvalidField(field, f"must be a string (got {type(value).__name__})")
    if not value:
        raise InvalidField(field, "must not be empty")
    if len(value) > CONFERENCE_ID_MAX_CHARS:
        raise InvalidField(field, f"must be at most {CONFERENCE_ID_MAX_CHARS} characters (got {len(value)})")
    # str.isprintable() is False for control, format, surrogate, private-use and unassigned code points
    # and for every separator except the ASCII space.
    for index, char in enumerate(value):
        if not char.isprintable():
            raise InvalidField(
                field, f"must contain only printable characters (U+{ord(char):04X} at {index})"
            )
    return value


def validate_moh_class(value: object, field: str = "mohClass") -> str:
    """Return ``value`` if it names a built-in music-on-hold class."""
    if not isinstance(value, str) or value not in MOH_CLASSES:
        raise InvalidField(field, f"must be one of {', '.join(MOH_CLASSES)} (got {value!r})")
    return value
