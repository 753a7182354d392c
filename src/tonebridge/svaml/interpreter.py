"""Turn a parsed SVAML document into the ordered call operations the engine executes.

Pure: :func:`plan` looks only at the document and a :class:`CallContext` (which callback the document
answers and whether the call is answered) and returns typed operations; it does no I/O and keeps no
state. The engine runs the operations in order; the last one is always the single terminal operation
that comes from the action.

Rules where Sinch's documents are silent (docs/svaml.md lists them all):
- a call that is not answered yet is answered (``Answer``) just before the first operation that needs
  media towards the caller (a prompt, digits, recording, a conference, a menu, park), unless an ``answer``
  instruction came first; bridging actions (connectPstn/Sip/Mxp) and hangup do not answer it;
- an ``answer`` instruction on an answered call is dropped;
- a locale the document does not give stays None in ``Play``, ``Park`` and ``DialPstn``: the engine then
  uses the call's own locale (a callout's ``locale``), else ``DEFAULT_LOCALE`` (en-US);
- a document without an action ends with ``Hangup`` when it answers an ICE (there is no planned call to go
  on with) and ``Continue`` otherwise;
- a PATCH of a live call allows only hangup, continue and park (the SDKs' ``ManagedCallSvamlAction``); a
  PATCH of a parked call supplies the postponed ICE answer, so ICE's rules apply;
- ``continue`` is refused in an ICE answer (nothing to continue); on a PATCH it means "no change" (a
  parked call stays parked); every action is accepted after ACE and PIE (a liberal reading of the
  reference notes §2.8).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from tonebridge.conference.options import DtmfOptions
from tonebridge.svaml.models import (
    Action,
    AmdOptions,
    AnswerInstruction,
    CallHeader,
    ConnectConfAction,
    ConnectMxpAction,
    ConnectPstnAction,
    ConnectSipAction,
    ContinueAction,
    HangupAction,
    ParkAction,
    PlayFilesInstruction,
    Prompt,
    RunMenuAction,
    SayInstruction,
    SendDtmfInstruction,
    SetCookieInstruction,
    StartRecordingInstruction,
    StopRecordingInstruction,
    Svaml,
    SvamlError,
)

__all__ = [
    "Answer",
    "CallContext",
    "CallEvent",
    "Continue",
    "DialMxp",
    "DialPstn",
    "DialSip",
    "Hangup",
    "JoinConference",
    "Operation",
    "Park",
    "Play",
    "RunMenu",
    "SendDigits",
    "SetCookie",
    "StartRecording",
    "StopRecording",
    "TerminalOperation",
    "plan",
]

CallEvent = Literal["ice", "ace", "pie", "patch"]
_EVENTS = ("ice", "ace", "pie", "patch")


@dataclass(frozen=True, slots=True)
class CallContext:
    """What the document answers: ``event`` (``ice``, ``ace``, ``pie`` or ``patch`` for a call update),
    whether the call is ``answered``, and whether it is ``parked`` (a PATCH then unparks it)."""

    event: CallEvent
    answered: bool
    parked: bool = False

    def __post_init__(self) -> None:
        if self.event not in _EVENTS:
            raise ValueError(f"event must be one of {', '.join(_EVENTS)} (got {self.event!r})")


# Operations ------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Answer:
    """Answer the call (SIP 200 OK to the INVITE)."""


@dataclass(frozen=True, slots=True)
class Play:
    """Play ``prompts`` to the caller, back to back; speech in ``locale`` (None: the document named none,
    so the call's own locale applies, else :data:`DEFAULT_LOCALE`)."""

    prompts: tuple[Prompt, ...]
    locale: str | None = None


@dataclass(frozen=True, slots=True)
class SendDigits:
    """Send DTMF into the call: keys ``0-9 * # A-D``, ``w`` = a 500 ms pause."""

    value: str


@dataclass(frozen=True, slots=True)
class SetCookie:
    """Remember ``key`` = ``value``; sent back in ``cookies`` of later callbacks of the call."""

    key: str
    value: str


@dataclass(frozen=True, slots=True)
class StartRecording:
    """Start recording the call; ``options`` as the application sent them (destination, format...)."""

    options: Mapping[str, Any] | None = None


@dataclass(frozen=True, slots=True)
class StopRecording:
    """Stop recording the call."""


@dataclass(frozen=True, slots=True)
class JoinConference:
    """Join (creating if needed) conference ``conference_id``."""

    conference_id: str
    options: DtmfOptions = field(default_factory=DtmfOptions)
    moh: str | None = None


@dataclass(frozen=True, slots=True)
class RunMenu:
    """Run a menu (see :class:`tonebridge.svaml.menu.MenuRunner`); its result goes out in a PIE."""

    menu_spec: RunMenuAction


@dataclass(frozen=True, slots=True)
class Hangup:
    """End the call."""


@dataclass(frozen=True, slots=True)
class Continue:
    """Go on as planned: what the callout asked for after ACE, nothing new after a call update."""


@dataclass(frozen=True, slots=True)
class DialPstn:
    """Bridge the call to a PSTN number (``number`` None: the number the caller dialled)."""

    number: str | None = None
    cli: str | None = None
    max_duration: int | None = None
    dial_timeout: int | None = None
    dtmf: str | None = None
    indications: str | None = None
    locale: str | None = None
    suppress_callbacks: bool = False
    amd: AmdOptions | None = None


@dataclass(frozen=True, slots=True)
class DialSip:
    """Bridge the call to a SIP endpoint."""

    destination: str
    cli: str | None = None
    max_duration: int | None = None
    transport: str = "udp"
    call_headers: tuple[CallHeader, ...] = ()
    suppress_callbacks: bool = False
    moh: str | None = None


@dataclass(frozen=True, slots=True)
class DialMxp:
    """Bridge the call to an app user (MXP)."""

    destination: str
    call_headers: tuple[CallHeader, ...] = ()


@dataclass(frozen=True, slots=True)
class Park:
    """Hold the call: intro once, then the hold prompts looped, until unparked or ``max_duration`` s."""

    intro_prompts: tuple[Prompt, ...]
    hold_prompts: tuple[Prompt, ...]
    locale: str | None = None
    max_duration: int = 600


TerminalOperation = JoinConference | RunMenu | Hangup | Continue | DialPstn | DialSip | DialMxp | Park
Operation = Answer | Play | SendDigits | SetCookie | StartRecording | StopRecording | TerminalOperation

# Operations that send media to the caller, so the call must be answered first.
_NEEDS_MEDIA = (Play, SendDigits, StartRecording, JoinConference, RunMenu, Park)

# Actions a PATCH of a live (not parked) call may carry (sinch-voice-v1.md §3, PATCH calls).
_PATCH_ACTIONS = (HangupAction, ContinueAction, ParkAction)


def _check_allowed(action: Action, context: CallContext) -> None:
    if context.event == "patch" and not context.parked and not isinstance(action, _PATCH_ACTIONS):
        raise SvamlError(
            "action.name",
            f"{action.name} cannot update a live call; use hangup, continue or park",
        )
    if isinstance(action, ContinueAction) and context.event == "ice":
        raise SvamlError("action.name", "continue has nothing to go on with in an answer to an incoming call")


def _terminal(action: Action | None, context: CallContext) -> TerminalOperation:
    if action is None:
        return Hangup() if context.event == "ice" else Continue()
    _check_allowed(action, context)
    if isinstance(action, HangupAction):
        return Hangup()
    if isinstance(action, ContinueAction):
        return Continue()
    if isinstance(action, ConnectConfAction):
        return JoinConference(action.conference_id, action.conference_dtmf_options, action.moh)
    if isinstance(action, RunMenuAction):
        return RunMenu(action)
    if isinstance(action, ConnectPstnAction):
        return DialPstn(
            number=action.number,
            cli=action.cli,
            max_duration=action.max_duration,
            dial_timeout=action.dial_timeout,
            dtmf=action.dtmf,
            indications=action.indications,
            locale=action.locale,
            suppress_callbacks=action.suppress_callbacks,
            amd=action.amd,
        )
    if isinstance(action, ConnectSipAction):
        return DialSip(
            destination=action.destination.endpoint,
            cli=action.cli,
            max_duration=action.max_duration,
            transport=action.transport,
            call_headers=action.call_headers,
            suppress_callbacks=action.suppress_callbacks,
            moh=action.moh,
        )
    if isinstance(action, ConnectMxpAction):
        return DialMxp(action.destination.endpoint, action.call_headers)
    if isinstance(action, ParkAction):
        return Park(
            intro_prompts=action.intro_prompt,
            hold_prompts=action.hold_prompt,
            locale=action.locale,
            max_duration=action.max_duration,
        )
    raise AssertionError(f"unhandled action {action!r}")  # every Action member is handled above


def plan(svaml: Svaml, context: CallContext) -> list[Operation]:
    """The operations, in order, that carry out ``svaml`` on a call in ``context``.

    Raises :class:`SvamlError` (path ``action.name``) when the action is not allowed in this context; the
    API answers a PATCH with 400, and a callback's caller applies the callback's documented default.
    """
    terminal = _terminal(svaml.action, context)
    body: list[Operation] = []
    for instruction in svaml.instructions:
        if isinstance(instruction, AnswerInstruction):
            body.append(Answer())
        elif isinstance(instruction, PlayFilesInstruction):
            body.append(Play(instruction.prompts, instruction.locale))
        elif isinstance(instruction, SayInstruction):
            body.append(Play((Prompt("tts", instruction.text),), instruction.locale))
        elif isinstance(instruction, SendDtmfInstruction):
            body.append(SendDigits(instruction.value))
        elif isinstance(instruction, SetCookieInstruction):
            body.append(SetCookie(instruction.key, instruction.value))
        elif isinstance(instruction, StartRecordingInstruction):
            body.append(StartRecording(instruction.options))
        elif isinstance(instruction, StopRecordingInstruction):
            body.append(StopRecording())
        else:  # every Instruction member is handled above
            raise AssertionError(f"unhandled instruction {instruction!r}")
    body.append(terminal)

    operations: list[Operation] = []
    answered = context.answered
    for op in body:
        if isinstance(op, Answer):
            if answered:
                continue  # answering twice (or an answered call) is a no-op, not an error
            answered = True
        elif not answered and isinstance(op, _NEEDS_MEDIA):
            operations.append(Answer())
            answered = True
        operations.append(op)
    return operations
