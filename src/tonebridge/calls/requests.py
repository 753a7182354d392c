"""The typed requests the Sinch application acts on: a callout, a participant update, a call leg, callback URLs.

api/ builds them from JSON (every fault there is a 400 naming the field); calls/ trusts them, so nothing here
validates again.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum

from tonebridge.conference.options import DtmfOptions

__all__ = ["CallLeg", "CallbackUrls", "Callout", "CalloutMethod", "ParticipantCommand", "ParticipantUpdate"]


class CalloutMethod(StrEnum):
    CONFERENCE = "conferenceCallout"
    TTS = "ttsCallout"
    CUSTOM = "customCallout"


@dataclass(frozen=True)
class Callout:
    """A callout to place: where, as whom, and what to do once answered (by method)."""

    method: CalloutMethod
    destination: dict[str, str]  # {"type": number | username | sip, "endpoint"}, as DiCE `to` repeats it
    cli: str = ""
    domain: str = "pstn"
    custom: str | None = None
    locale: str = "en-US"
    dtmf: str | None = None  # sent once answered; `w` is a 500 ms pause
    max_duration: int | None = None
    enable_ace: bool = False
    enable_dice: bool = False
    enable_pie: bool = False
    # conferenceCallout
    conference_id: str | None = None
    dtmf_options: DtmfOptions | None = None
    moh: str | None = None
    greeting: str | None = None
    # ttsCallout
    text: str | None = None
    prompts: str | None = None
    # customCallout: per callback (ice, ace, pie), SVAML as JSON text or a URL to ask
    custom_svaml: Mapping[str, str] = field(default_factory=dict)


class ParticipantCommand(StrEnum):
    MUTE = "mute"
    UNMUTE = "unmute"
    ONHOLD = "onhold"
    RESUME = "resume"


@dataclass(frozen=True)
class ParticipantUpdate:
    """A PATCH of a conference participant: a command, new DTMF options, or both."""

    command: ParticipantCommand | None = None
    dtmf_options: DtmfOptions | None = None
    moh: str | None = None  # the music a held participant hears


class CallLeg(StrEnum):
    CALLER = "caller"
    CALLEE = "callee"
    BOTH = "both"


@dataclass(frozen=True)
class CallbackUrls:
    """New callback URLs; None leaves a URL as it is, "" clears it."""

    primary: str | None = None
    fallback: str | None = None
