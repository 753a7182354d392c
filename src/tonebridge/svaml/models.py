"""SVAML documents: parse what an application answers into typed, validated models.

A SVAML document is ``{"instructions": [...], "action": {...}}`` (sinch-voice-v1.md §4). This module turns
the decoded JSON into frozen pydantic models and refuses anything malformed with :class:`SvamlError`, whose
``path`` names the offending field as the client wrote it (``action.conferenceDtmfOptions.maxDigits``,
``instructions[2].text``), so the API layer can answer 400/40001 with a message that says what to fix.

Reading rules (sinch-voice-v1.md §4, reference notes §3.1):
- action and instruction ``name`` are matched without regard to case (Sinch's own docs write
  ``ConnectConf``, ``runmenu``, ``connectPSTN``);
- every field is accepted in camelCase and in the snake_case the Python SDK 1.1.4's SVAML helpers send
  unconverted (``conference_id``, ``max_digits``); camelCase wins when both are present;
- unknown fields are ignored and JSON ``null`` counts as absent (tolerant reader);
- an unknown action or instruction name raises :class:`UnknownName`, so the engine can apply its
  documented default instead of failing the request as malformed.
"""

from __future__ import annotations

import html
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Annotated, Any, ClassVar, Literal, NoReturn

from pydantic import (
    AfterValidator,
    AliasChoices,
    AliasGenerator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PlainSerializer,
    StrictBool,
    StrictInt,
    StrictStr,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic.alias_generators import to_camel
from pydantic_core import PydanticCustomError

from tonebridge.conference.options import (
    DtmfOptions,
    InvalidField,
    validate_conference_id,
    validate_moh_class,
)
from tonebridge.keys import DTMF_KEYS

__all__ = [
    "DEFAULT_LOCALE",
    "DTMF_KEYS",
    "MAX_CALL_HEADER_BYTES",
    "MAX_COOKIE_BYTES",
    "MAX_DURATION_S",
    "MAX_PARK_DURATION_S",
    "MAX_TTS_CHARS",
    "Action",
    "AmdOptions",
    "AnswerInstruction",
    "CallHeader",
    "ConnectConfAction",
    "ConnectMxpAction",
    "ConnectPstnAction",
    "ConnectSipAction",
    "ContinueAction",
    "Destination",
    "HangupAction",
    "Instruction",
    "Menu",
    "MenuOption",
    "OptionAction",
    "ParkAction",
    "PlayFilesInstruction",
    "Prompt",
    "RunMenuAction",
    "SayInstruction",
    "SendDtmfInstruction",
    "SetCookieInstruction",
    "StartRecordingInstruction",
    "StopRecordingInstruction",
    "Svaml",
    "SvamlError",
    "UnknownName",
    "cookie_bytes",
    "format_prompts",
    "parse_prompts",
    "parse_svaml",
]

#: Locale for text to speak when neither the instruction nor the action names one (Sinch's default).
DEFAULT_LOCALE = "en-US"
#: TTS characters per text (``say.text``, one prompt string): Sinch's default per-application limit.
MAX_TTS_CHARS = 600
#: Cookie data (key plus value, UTF-8) and each call header (key plus value, UTF-8).
MAX_COOKIE_BYTES = 1024
MAX_CALL_HEADER_BYTES = 1024
#: ``maxDuration`` on connectPstn and connectSip, and on park (reference notes §6).
MAX_DURATION_S = 14_400
MAX_PARK_DURATION_S = 600
#: Keys a menu option or a sendDtmf value may name (conference-dtmf.md §2), plus ``w`` in sendDtmf.
MENU_ID_MAX_CHARS = 64


# ---------------------------------------------------------------------------------------------- errors


class SvamlError(ValueError):
    """A SVAML document is wrong. ``path`` names the field (``action.menus[0].options[1].action``)."""

    def __init__(self, path: str, message: str) -> None:
        super().__init__(f"{path}: {message}" if path else message)
        self.path = path
        self.message = message


class UnknownName(SvamlError):
    """An action or instruction ``name`` Tonebridge does not know (or does not run); ``name`` as sent."""

    def __init__(self, path: str, name: str, message: str | None = None) -> None:
        super().__init__(path, message or f"unknown name {name!r}")
        self.name = name


class _AtPath(Exception):
    """Raised inside a model validator to name a field below the model (not a ValueError, so pydantic
    lets it through unchanged and :func:`_validate` can prefix the model's own path)."""

    def __init__(self, path: str, message: str) -> None:
        super().__init__(message)
        self.path = path
        self.message = message


def _fail(message: str) -> NoReturn:
    raise PydanticCustomError("svaml", "{msg}", {"msg": message})


def _join(path: str, part: str | int) -> str:
    if isinstance(part, int):
        return f"{path}[{part}]"
    return f"{path}.{part}" if path else part


# --------------------------------------------------------------------------------------------- prompts

PromptKind = Literal["tts", "ssml", "href", "file"]


@dataclass(frozen=True, slots=True)
class Prompt:
    """One part of a prompt string.

    ``kind`` ``tts`` and ``ssml`` carry text to speak in ``value`` (SSML is read as plain text: its tags
    are stripped and entities decoded); ``href`` a URL; ``file`` a pre-recorded file id.
    """

    kind: PromptKind
    value: str

    @property
    def is_speech(self) -> bool:
        return self.kind in ("tts", "ssml")


_TAGGED = re.compile(r"#(tts|ssml|href)\[", re.IGNORECASE)
_SSML_TAG = re.compile(r"<[^>]*>")
_SPACES = re.compile(r"\s+")


def _ssml_text(markup: str) -> str:
    # Tags become spaces so that "<s>one</s><s>two</s>" does not read as "onetwo".
    return _SPACES.sub(" ", html.unescape(_SSML_TAG.sub(" ", markup))).strip()


def _ends_part(text: str, end: int) -> bool:
    rest = text[end + 1 :].lstrip()
    return not rest or rest.startswith(";")


def _closing_bracket(text: str, start: int) -> int:
    """Index of the "]" that closes a part opened just before ``start``, or -1.

    Brackets inside the text nest ("#tts[press [1]; or wait]"). When they do not balance, the part ends at
    the first "]" followed only by spaces and then ";" or the end of the string.
    """
    depth = 0
    for index in range(start, len(text)):
        char = text[index]
        if char == "[":
            depth += 1
        elif char == "]":
            if depth == 0:
                if _ends_part(text, index):
                    return index
                break
            depth -= 1
    index = text.find("]", start)
    while index >= 0:
        if _ends_part(text, index):
            return index
        index = text.find("]", index + 1)
    return -1


def _split_prompts(text: str) -> tuple[Prompt, ...]:
    """Split a prompt string into parts; raises ValueError with a message naming the problem."""
    prompts: list[Prompt] = []
    i, n = 0, len(text)
    while i < n:
        while i < n and (text[i].isspace() or text[i] == ";"):
            i += 1
        if i >= n:
            break
        tagged = _TAGGED.match(text, i)
        if tagged is not None:
            kind = tagged.group(1).lower()
            start = tagged.end()
            end = _closing_bracket(text, start)
            if end < 0:
                raise ValueError(f"#{kind}[ at character {i} has no closing ']' before ';' or the end")
            inner = text[start:end]
            i = end + 1
            if kind == "tts":
                value = inner.strip()
            elif kind == "ssml":
                value = _ssml_text(inner)
            else:
                value = inner.strip()
                if not value:
                    raise ValueError("#href[] needs a URL")
            if value:
                prompts.append(Prompt(kind, value))  # type: ignore[arg-type]
            continue
        end = text.find(";", i)
        if end < 0:
            end = n
        part = text[i:end].strip()
        i = end
        if part.startswith("#"):
            raise ValueError(f"unknown prompt form {part[:16]!r}: use #tts[...], #ssml[...] or #href[...]")
        lowered = part.lower()
        kind = "href" if lowered.startswith(("http://", "https://")) else "file"
        prompts.append(Prompt(kind, part))  # type: ignore[arg-type]
    spoken = sum(len(p.value) for p in prompts if p.is_speech)
    if spoken > MAX_TTS_CHARS:
        raise ValueError(f"text to speak is {spoken} characters; at most {MAX_TTS_CHARS}")
    return tuple(prompts)


def parse_prompts(text: str, *, path: str = "prompts") -> list[Prompt]:
    """Parse a prompt string: ``#tts[...]``, ``#ssml[...]``, ``#href[URL]`` and bare file ids (a bare
    ``http(s)://`` URL counts as ``#href``), separated by ``;`` (reference notes §3.2).

    Raises :class:`SvamlError` at ``path`` for an unterminated or unknown ``#form[``, an empty ``#href[]``
    or more than :data:`MAX_TTS_CHARS` characters of text to speak.
    """
    if not isinstance(text, str):
        raise SvamlError(path, f"must be a string (got {type(text).__name__})")
    try:
        return list(_split_prompts(text))
    except ValueError as exc:
        raise SvamlError(path, str(exc)) from None


def format_prompts(prompts: tuple[Prompt, ...] | list[Prompt]) -> str:
    """The prompt string for ``prompts`` (inverse of :func:`parse_prompts`; SSML comes back as ``#ssml``
    of its plain text)."""
    parts = []
    for p in prompts:
        parts.append(p.value if p.kind == "file" else f"#{p.kind}[{p.value}]")
    return ";".join(parts)


def _prompt_field(value: object) -> object:
    if isinstance(value, str):
        try:
            return _split_prompts(value)
        except ValueError as exc:
            _fail(str(exc))
    if isinstance(value, tuple) and all(isinstance(p, Prompt) for p in value):
        return value
    _fail(f"must be a prompt string (got {type(value).__name__})")


PromptString = Annotated[
    tuple[Prompt, ...],
    BeforeValidator(_prompt_field),
    PlainSerializer(format_prompts, return_type=str),
]


# ------------------------------------------------------------------------------------- scalar checks

_LOCALE = re.compile(r"[A-Za-z]{2,3}(?:[-_][A-Za-z0-9]{1,8})*")
_NUMBER = re.compile(r"\+?[0-9]{1,20}")
# RFC 3261 §25.1: a header name is a token.
_TOKEN = re.compile(r"[A-Za-z0-9\-.!%*_+`'~]+")


def _no_controls(value: str) -> str:
    # These strings end up in SIP headers or URIs: a CR or LF would let the client inject header lines
    # (RFC 3261 §7.3.1: a header field value ends at CRLF).
    for index, char in enumerate(value):
        if ord(char) < 0x20 or ord(char) == 0x7F:
            _fail(f"must not contain control characters (U+{ord(char):04X} at {index})")
    return value


def _header_name(value: str) -> str:
    if not _TOKEN.fullmatch(value):
        _fail(f"must be a header name (an RFC 3261 token) (got {value!r})")
    return value


def _locale(value: str) -> str:
    if not _LOCALE.fullmatch(value):
        _fail(f"must be a locale such as en-US (got {value!r})")
    return value


def _number(value: str) -> str:
    if not _NUMBER.fullmatch(value):
        _fail(f"must be a number in E.164 form such as +46700000000 (got {value!r})")
    return value


def _nonempty(value: str) -> str:
    if not value.strip():
        _fail("must not be empty")
    return value


def _dtmf_value(value: str) -> str:
    out = []
    for index, char in enumerate(value):
        if char in "wW":
            out.append("w")
        elif char.upper() in DTMF_KEYS:
            out.append(char.upper())
        else:
            _fail(f"may contain only 0-9, *, #, A-D and w (got {char!r} at {index})")
    if not out:
        _fail("must not be empty")
    return "".join(out)


def _conference_id(value: str) -> str:
    try:
        return validate_conference_id(value)
    except InvalidField as exc:
        _fail(exc.message)


def _moh(value: str) -> str:
    try:
        return validate_moh_class(value)
    except InvalidField as exc:
        _fail(exc.message)


def _dtmf_options(value: object) -> DtmfOptions:
    if isinstance(value, DtmfOptions):
        return value
    try:
        return DtmfOptions.from_json(value)  # type: ignore[arg-type]
    except InvalidField as exc:
        if exc.field == "conferenceDtmfOptions":
            _fail(exc.message)
        # The inner field, as the client spelt it, is appended to the path by _validate.
        raise PydanticCustomError("svaml_nested", "{msg}", {"msg": exc.message, "field": exc.field}) from None


def _transport(value: str) -> str:
    lowered = value.lower()
    if lowered not in ("udp", "tcp", "tls"):
        _fail(f"must be one of udp, tcp, tls (got {value!r})")
    return lowered


def _indications(value: object) -> object:
    # The Java SDK allows `false` for "no ringback indications".
    if value is False:
        return None
    return value


def _country(value: str) -> str:
    if not re.fullmatch(r"[A-Za-z]{2}", value):
        _fail(f"must be a two-letter country code such as us or se (got {value!r})")
    return value.lower()


def _destination(value: object) -> object:
    # A bare string is the endpoint itself (some tutorials write "destination": "user@host").
    if isinstance(value, str):
        return {"endpoint": value}
    return value


def _option_dtmf(value: object) -> object:
    # SKILLS examples write "dtmf": 1; every SDK sends a string.
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    return value


def _menu_keys(value: str) -> str:
    upper = value.upper()
    if not upper or any(c not in DTMF_KEYS for c in upper) or len(upper) > 32:
        _fail(f"must be 1 to 32 keys from 0-9, *, #, A-D (got {value!r})")
    return upper


LocaleStr = Annotated[StrictStr, AfterValidator(_locale)]
SafeStr = Annotated[StrictStr, AfterValidator(_no_controls)]
Duration = Annotated[StrictInt, Field(ge=1, le=MAX_DURATION_S)]


# ---------------------------------------------------------------------------------------------- models


def _aliases(name: str) -> AliasChoices:
    # camelCase first, so it wins when a client sends both spellings.
    return AliasChoices(to_camel(name), name)


class _Model(BaseModel):
    model_config = ConfigDict(
        frozen=True,
        extra="ignore",
        arbitrary_types_allowed=True,
        alias_generator=AliasGenerator(validation_alias=_aliases, serialization_alias=to_camel),
    )

    @model_validator(mode="before")
    @classmethod
    def _drop_nulls(cls, data: Any) -> Any:
        # The Python SDK sends null for every unset field: null means "not given".
        if isinstance(data, Mapping):
            return {k: v for k, v in data.items() if v is not None}
        return data

    def to_json(self) -> dict[str, Any]:
        """The camelCase JSON form (for logs and the delivery log)."""
        return self.model_dump(mode="json", by_alias=True, exclude_none=True)


class _Named(_Model):
    name: ClassVar[str]

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, **super().to_json()}


class Destination(_Model):
    """``{type, endpoint}``; a bare string is read as the endpoint."""

    type: SafeStr | None = None
    endpoint: Annotated[SafeStr, AfterValidator(_nonempty)]


class CallHeader(_Model):
    """A call header ``{key, value}``: a SIP token name and a value of at most 1,024 bytes with the key."""

    key: Annotated[StrictStr, AfterValidator(_header_name)]
    value: SafeStr = ""

    @field_validator("value")
    @classmethod
    def _size(cls, value: str, info: ValidationInfo) -> str:
        # Checked on the field (not the model) so that the error keeps its place in the list.
        size = len(str(info.data.get("key", "")).encode()) + len(value.encode())
        if size > MAX_CALL_HEADER_BYTES:
            _fail(f"key and value are {size} bytes; at most {MAX_CALL_HEADER_BYTES}")
        return value


CallHeaders = tuple[CallHeader, ...]


# Instructions -----------------------------------------------------------------------------------------


class PlayFilesInstruction(_Named):
    """``playFiles``: ``ids`` (each a prompt string) and ``locale`` for the text to speak."""

    name: ClassVar[str] = "playFiles"
    ids: tuple[StrictStr, ...]
    locale: LocaleStr | None = None

    @model_validator(mode="after")
    def _check(self) -> PlayFilesInstruction:
        spoken = 0
        for index, item in enumerate(self.ids):
            try:
                spoken += sum(len(p.value) for p in _split_prompts(item) if p.is_speech)
            except ValueError as exc:
                raise _AtPath(f"ids[{index}]", str(exc)) from None
        if spoken > MAX_TTS_CHARS:
            raise _AtPath("ids", f"text to speak is {spoken} characters; at most {MAX_TTS_CHARS}")
        return self

    @property
    def prompts(self) -> tuple[Prompt, ...]:
        return tuple(p for item in self.ids for p in _split_prompts(item))


class SayInstruction(_Named):
    """``say``: ``text`` (at most 600 characters) in ``locale``."""

    name: ClassVar[str] = "say"
    text: Annotated[StrictStr, Field(max_length=MAX_TTS_CHARS)]
    locale: LocaleStr | None = None


class SendDtmfInstruction(_Named):
    """``sendDtmf``: ``value`` of keys (``0-9 * # A-D``) and ``w`` (a 500 ms pause)."""

    name: ClassVar[str] = "sendDtmf"
    value: Annotated[StrictStr, AfterValidator(_dtmf_value)]


def cookie_bytes(key: str, value: str) -> int:
    """What a cookie counts against :data:`MAX_COOKIE_BYTES` (key plus value, UTF-8)."""
    return len(key.encode()) + len(value.encode())


class SetCookieInstruction(_Named):
    """``setCookie``: ``key`` and ``value``, echoed back in later callbacks of the call."""

    name: ClassVar[str] = "setCookie"
    key: Annotated[StrictStr, AfterValidator(_nonempty)]
    value: StrictStr = ""

    @model_validator(mode="after")
    def _check(self) -> SetCookieInstruction:
        size = cookie_bytes(self.key, self.value)
        if size > MAX_COOKIE_BYTES:
            raise _AtPath("value", f"key and value are {size} bytes; at most {MAX_COOKIE_BYTES}")
        return self


class AnswerInstruction(_Named):
    name: ClassVar[str] = "answer"


class StartRecordingInstruction(_Named):
    """``startRecording``; ``options`` (legacy ``recordingOptions``) are kept as sent."""

    name: ClassVar[str] = "startRecording"
    options: dict[str, Any] | None = Field(
        None, validation_alias=AliasChoices("options", "recordingOptions", "recording_options")
    )


class StopRecordingInstruction(_Named):
    name: ClassVar[str] = "stopRecording"


Instruction = (
    PlayFilesInstruction
    | SayInstruction
    | SendDtmfInstruction
    | SetCookieInstruction
    | AnswerInstruction
    | StartRecordingInstruction
    | StopRecordingInstruction
)


# Actions ----------------------------------------------------------------------------------------------


class HangupAction(_Named):
    name: ClassVar[str] = "hangup"


class ContinueAction(_Named):
    name: ClassVar[str] = "continue"


class ConnectConfAction(_Named):
    """``connectConf``: join ``conferenceId`` with ``conferenceDtmfOptions`` and hold music ``moh``."""

    name: ClassVar[str] = "connectConf"
    conference_id: Annotated[StrictStr, AfterValidator(_conference_id)]
    conference_dtmf_options: Annotated[
        DtmfOptions, BeforeValidator(_dtmf_options), PlainSerializer(DtmfOptions.to_json)
    ] = DtmfOptions()
    moh: Annotated[StrictStr, AfterValidator(_moh)] | None = None

    @model_validator(mode="before")
    @classmethod
    def _legacy_dtmf_mode(cls, data: Any) -> Any:
        # The old server SDK sent a flat "dtmfMode" on actions; read it when no options object came.
        if isinstance(data, Mapping) and data.get("dtmfMode") is not None:
            if data.get("conferenceDtmfOptions") is None and data.get("conference_dtmf_options") is None:
                return {**data, "conferenceDtmfOptions": {"mode": data["dtmfMode"]}}
        return data


class AmdOptions(_Model):
    """Answering-machine detection on ``connectPstn``: ``{enabled, async}``."""

    enabled: StrictBool = False
    async_: StrictBool = Field(
        False, validation_alias=AliasChoices("async", "async_"), serialization_alias="async"
    )


class ConnectPstnAction(_Named):
    """``connectPstn``: bridge the call to ``number`` (default: the number the caller dialled)."""

    name: ClassVar[str] = "connectPstn"
    number: Annotated[StrictStr, AfterValidator(_number)] | None = None
    cli: SafeStr | None = None
    max_duration: Duration | None = None
    dial_timeout: Duration | None = None
    dtmf: Annotated[StrictStr, AfterValidator(_dtmf_value)] | None = None
    indications: Annotated[
        Annotated[StrictStr, AfterValidator(_country)] | None, BeforeValidator(_indications)
    ] = None
    locale: LocaleStr | None = None
    suppress_callbacks: StrictBool = False
    amd: AmdOptions | None = None


class ConnectSipAction(_Named):
    """``connectSip``: bridge the call to a SIP ``destination``."""

    name: ClassVar[str] = "connectSip"
    destination: Annotated[Destination, BeforeValidator(_destination)]
    cli: SafeStr | None = None
    max_duration: Duration | None = None
    transport: Annotated[StrictStr, AfterValidator(_transport)] = "udp"
    call_headers: CallHeaders = ()
    suppress_callbacks: StrictBool = False
    moh: Annotated[StrictStr, AfterValidator(_moh)] | None = None


class ConnectMxpAction(_Named):
    """``connectMxp``: bridge the call to an app user; ``callHeaders`` (Java SDK: ``callheaders``)."""

    name: ClassVar[str] = "connectMxp"
    destination: Annotated[Destination, BeforeValidator(_destination)]
    call_headers: CallHeaders = Field(
        (), validation_alias=AliasChoices("callHeaders", "call_headers", "callheaders")
    )


@dataclass(frozen=True, slots=True)
class OptionAction:
    """A menu option's action: ``menu(<id>)`` jumps to a menu, ``return(<value>)`` ends with a PIE."""

    kind: Literal["menu", "return"]
    value: str

    def __str__(self) -> str:
        return f"{self.kind}({self.value})"


# The Java SDK's docs write "return (value)": whitespace is allowed around the parentheses.
_OPTION_ACTION = re.compile(r"\s*(menu|return)\s*\((.*)\)\s*", re.IGNORECASE | re.DOTALL)


def _option_action(value: object) -> OptionAction:
    if isinstance(value, OptionAction):
        return value
    if not isinstance(value, str):
        _fail(f"must be a string such as menu(main) or return(ok) (got {type(value).__name__})")
    match = _OPTION_ACTION.fullmatch(value)
    if match is None:
        _fail(f"must be menu(<id>) or return(<value>) (got {value!r})")
    return OptionAction(match.group(1).lower(), match.group(2).strip())  # type: ignore[arg-type]


class MenuOption(_Model):
    """``{dtmf, action}``: the keys (a string; a number is accepted) and what they do."""

    dtmf: Annotated[StrictStr, BeforeValidator(_option_dtmf), AfterValidator(_menu_keys)]
    action: Annotated[OptionAction, BeforeValidator(_option_action), PlainSerializer(str, return_type=str)]


class Menu(_Model):
    """One menu of a ``runMenu``. Defaults: ``repeats`` 3, ``timeoutMills`` 5000, ``maxTimeoutMills``
    20000 (reference notes §3.5); an absent ``repeatPrompt`` repeats the ``mainPrompt``."""

    id: Annotated[StrictStr, Field(min_length=1, max_length=MENU_ID_MAX_CHARS)]
    main_prompt: PromptString = ()
    repeat_prompt: PromptString = ()
    repeats: Annotated[StrictInt, Field(ge=0, le=10)] = 3
    max_digits: Annotated[StrictInt, Field(ge=1, le=32)] | None = None
    timeout_mills: Annotated[StrictInt, Field(ge=100, le=300_000)] = 5000
    max_timeout_mills: Annotated[StrictInt, Field(ge=100, le=600_000)] = 20_000
    options: tuple[MenuOption, ...] = ()

    @property
    def collects(self) -> bool:
        """Whether input is a digit sequence (``maxDigits`` > 1, or 1 with no options) rather than one key
        matched against the options."""
        return self.max_digits is not None and (self.max_digits > 1 or not self.options)

    def option_for(self, keys: str) -> MenuOption | None:
        for option in self.options:
            if option.dtmf == keys:
                return option
        return None


class RunMenuAction(_Named):
    """``runMenu``: play menus and collect keys; the result goes to the app in a PIE."""

    name: ClassVar[str] = "runMenu"
    # The .NET SDK serialises `barge` as "badge".
    barge: StrictBool = Field(True, validation_alias=AliasChoices("barge", "badge"))
    locale: LocaleStr | None = None
    main_menu: StrictStr | None = None
    enable_voice: StrictBool = False
    menus: Annotated[tuple[Menu, ...], Field(min_length=1)]

    @model_validator(mode="after")
    def _check(self) -> RunMenuAction:
        seen: dict[str, int] = {}
        for index, menu in enumerate(self.menus):
            if menu.id in seen:
                raise _AtPath(f"menus[{index}].id", f"duplicate menu id {menu.id!r}")
            seen[menu.id] = index
        if self.main_menu is not None and self.main_menu not in seen:
            raise _AtPath("mainMenu", f"no menu has the id {self.main_menu!r}")
        if self.main_menu is None and "main" not in seen:
            raise _AtPath("mainMenu", "is required when no menu has the id 'main'")
        for index, menu in enumerate(self.menus):
            keys_seen: set[str] = set()
            for o_index, option in enumerate(menu.options):
                where = f"menus[{index}].options[{o_index}]"
                if option.dtmf in keys_seen:
                    raise _AtPath(f"{where}.dtmf", f"duplicate option {option.dtmf!r}")
                keys_seen.add(option.dtmf)
                if len(option.dtmf) > 1 and not menu.collects:
                    raise _AtPath(
                        f"{where}.dtmf",
                        f"{option.dtmf!r} has several keys; the menu needs maxDigits of at least "
                        f"{len(option.dtmf)}",
                    )
                if option.action.kind == "menu" and option.action.value not in seen:
                    raise _AtPath(f"{where}.action", f"no menu has the id {option.action.value!r}")
        return self

    @property
    def start_menu_id(self) -> str:
        """``mainMenu`` if given, else ``main`` (reference notes §3.5, start rule)."""
        return self.main_menu if self.main_menu is not None else "main"

    def menu(self, menu_id: str) -> Menu:
        for menu in self.menus:
            if menu.id == menu_id:
                return menu
        raise KeyError(menu_id)


class ParkAction(_Named):
    """``park``: hold the call, playing ``introPrompt`` once and ``holdPrompt`` in a loop, until a PATCH
    unparks it or ``maxDuration`` (at most 600 s, the default) passes."""

    name: ClassVar[str] = "park"
    locale: LocaleStr | None = None
    intro_prompt: PromptString = ()
    hold_prompt: PromptString = ()
    max_duration: Annotated[StrictInt, Field(ge=1, le=MAX_PARK_DURATION_S)] = MAX_PARK_DURATION_S


Action = (
    HangupAction
    | ContinueAction
    | ConnectConfAction
    | ConnectPstnAction
    | ConnectSipAction
    | ConnectMxpAction
    | RunMenuAction
    | ParkAction
)


class Svaml(_Model):
    """A parsed SVAML document: instructions run in order, then the action (None when absent)."""

    instructions: list[Instruction] = []
    action: Action | None = None

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"instructions": [i.to_json() for i in self.instructions]}
        if self.action is not None:
            out["action"] = self.action.to_json()
        return out


# ---------------------------------------------------------------------------------------------- parsing

_INSTRUCTIONS: dict[str, type[_Named]] = {
    cls.name.lower(): cls
    for cls in (
        PlayFilesInstruction,
        SayInstruction,
        SendDtmfInstruction,
        SetCookieInstruction,
        AnswerInstruction,
        StartRecordingInstruction,
        StopRecordingInstruction,
    )
}
_ACTIONS: dict[str, type[_Named]] = {
    cls.name.lower(): cls
    for cls in (
        HangupAction,
        ContinueAction,
        ConnectConfAction,
        ConnectPstnAction,
        ConnectSipAction,
        ConnectMxpAction,
        RunMenuAction,
        ParkAction,
    )
}
#: Known to Sinch, not run by Tonebridge: reported as UnknownName so the engine applies its default.
_NOT_SUPPORTED = {
    "connectstream": "connectStream (closed beta at Sinch) is not supported",
    "reportcallstatus": "ReportCallStatus (legacy, DiCE replies only) is not supported",
}


_TYPE_MESSAGES = {
    "int_type": "must be an integer",
    "int_from_float": "must be an integer",
    "string_type": "must be a string",
    "bool_type": "must be true or false",
    "dict_type": "must be an object",
    "model_type": "must be an object",
    "model_attributes_type": "must be an object",
    "tuple_type": "must be an array",
    "list_type": "must be an array",
}


def _shown(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def _message(error: Mapping[str, Any]) -> str:
    kind = error["type"]
    ctx = error.get("ctx") or {}
    value = error.get("input")
    if kind == "missing":
        return "is required"
    if kind in ("svaml", "svaml_nested"):
        return str(ctx["msg"])
    if kind in _TYPE_MESSAGES:
        return f"{_TYPE_MESSAGES[kind]} (got {_shown(value)})"
    if kind == "greater_than_equal":
        return f"must be at least {ctx['ge']} (got {_shown(value)})"
    if kind == "less_than_equal":
        return f"must be at most {ctx['le']} (got {_shown(value)})"
    if kind == "string_too_long":
        return f"must be at most {ctx['max_length']} characters (got {len(value)})"
    if kind == "string_too_short":
        return f"must be at least {ctx['min_length']} characters"
    if kind == "too_short":
        return f"must have at least {ctx['min_length']} item(s)"
    return f"{error['msg']} (got {_shown(value)})"


def _validate(cls: type[_Model], obj: object, path: str) -> Any:
    try:
        return cls.model_validate(obj)
    except _AtPath as exc:
        raise SvamlError(_join(path, exc.path), exc.message) from None
    except ValidationError as exc:
        error = exc.errors()[0]
        where = path
        for part in error["loc"]:
            where = _join(where, part)
        if error["type"] == "svaml_nested":
            where = _join(where, error["ctx"]["field"])
        raise SvamlError(where, _message(error)) from None


def _named(obj: object, path: str, table: dict[str, type[_Named]], what: str) -> _Named:
    if not isinstance(obj, Mapping):
        raise SvamlError(path, f"must be an object with a name (got {type(obj).__name__})")
    name = obj.get("name")
    if name is None:
        raise SvamlError(_join(path, "name"), "is required")
    if not isinstance(name, str):
        raise SvamlError(_join(path, "name"), f"must be a string (got {name!r})")
    key = name.lower()
    if key in _NOT_SUPPORTED:
        raise UnknownName(_join(path, "name"), name, _NOT_SUPPORTED[key])
    cls = table.get(key)
    if cls is None:
        raise UnknownName(_join(path, "name"), name, f"unknown {what} {name!r}")
    return _validate(cls, obj, path)


def parse_svaml(obj: object) -> Svaml:
    """Parse a decoded SVAML document (a JSON string or bytes is decoded first).

    Raises :class:`SvamlError` naming the field at fault, or :class:`UnknownName` for an action or
    instruction name Tonebridge does not run.
    """
    if isinstance(obj, (str, bytes, bytearray)):
        try:
            obj = json.loads(obj)
        except (ValueError, UnicodeDecodeError) as exc:
            raise SvamlError("", f"SVAML is not valid JSON ({exc})") from None
    if not isinstance(obj, Mapping):
        raise SvamlError("", f"SVAML must be a JSON object (got {type(obj).__name__})")
    raw_instructions = obj.get("instructions")
    if raw_instructions is None:
        raw_instructions = []
    if not isinstance(raw_instructions, list):
        raise SvamlError("instructions", f"must be an array (got {type(raw_instructions).__name__})")
    instructions: list[Any] = [
        _named(item, f"instructions[{index}]", _INSTRUCTIONS, "instruction")
        for index, item in enumerate(raw_instructions)
    ]
    action: Any = None
    raw_action = obj.get("action")
    if isinstance(raw_action, Mapping) and isinstance(raw_action.get("name"), str):
        # DOCS21 sends startRecording/stopRecording as the *action* of a call update: read them as that
        # instruction, run last, followed by `continue` (the call goes on as it was).
        legacy = _INSTRUCTIONS.get(raw_action["name"].lower())
        if legacy in (StartRecordingInstruction, StopRecordingInstruction):
            instructions.append(_validate(legacy, raw_action, "action"))
            raw_action = {"name": "continue"}
    if raw_action is not None:
        action = _named(raw_action, "action", _ACTIONS, "action")
    total = sum(cookie_bytes(i.key, i.value) for i in instructions if isinstance(i, SetCookieInstruction))
    if total > MAX_COOKIE_BYTES:
        raise SvamlError("instructions", f"cookies add up to {total} bytes; at most {MAX_COOKIE_BYTES}")
    return Svaml(instructions=instructions, action=action)
