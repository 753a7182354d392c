"""What the call engine and the applications share about calls: a call's `Session`, a callout's
`Destination`, and the `CallHandler` the engine asks about each new inbound call.

Kept apart from calls/engine.py so that what an application holds (a session, a destination) reads
without the engine's machinery; calls/engine.py re-exports all three, where most callers import them from.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

from tonebridge.calls.call import Call
from tonebridge.calls.core import InboundCall, OutboundCall
from tonebridge.config import TrunkConfig
from tonebridge.media.endpoint import MediaLeg
from tonebridge.sip import sdp
from tonebridge.sip.dialog import Dialog
from tonebridge.sip.message import Request
from tonebridge.sip.stack import IncomingRequest
from tonebridge.sip.transport import Peer

if TYPE_CHECKING:
    from tonebridge.calls.engine import CallEngine


class CallHandler(Protocol):
    """What the engine asks of whoever decides about calls (the application; the softphone)."""

    async def incoming(self, engine: CallEngine, session: Session) -> None:
        """A new inbound call: answer it (engine.answer), reject it (engine.reject), or leave it ringing."""


@dataclass
class Destination:
    """Where a callout goes: `number` (via the trunk), `username` (a registered user) or `sip` (a URI)."""

    type: str
    endpoint: str


@dataclass(eq=False)
class Session:
    """Everything the engine keeps about one call: its record, its media leg and its core (what an application
    keeps about a call it keeps itself, by call id).

    `core` is None only for a callout that failed before any SIP was sent (an unknown destination); its
    `invite` is then a placeholder naming the destination.
    """

    call: Call
    leg: MediaLeg
    peer: Peer
    core: InboundCall | OutboundCall | None = None
    incoming: IncomingRequest | None = None
    trunk: TrunkConfig | None = None
    answered_event: asyncio.Event = field(default_factory=asyncio.Event)
    ended_event: asyncio.Event = field(default_factory=asyncio.Event)
    placeholder_invite: Request | None = field(default=None, repr=False)

    @property
    def call_id(self) -> str:
        return self.call.call_id

    @property
    def invite(self) -> Request:
        """The INVITE that made the call (for a callout, the latest: a digest retry replaces the first)."""
        if self.core is not None:
            return self.core.invite
        assert self.placeholder_invite is not None
        return self.placeholder_invite

    @property
    def dialog(self) -> Dialog | None:
        return self.core.dialog if self.core is not None else None

    @property
    def media(self) -> sdp.NegotiatedMedia | None:
        return self.core.media if self.core is not None else None

    async def wait_answered(self, timeout: float | None = None) -> bool:
        """True once answered, False if the call ended first (or the timeout passed)."""
        answered = asyncio.ensure_future(self.answered_event.wait())
        ended = asyncio.ensure_future(self.ended_event.wait())
        try:
            await asyncio.wait({answered, ended}, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
        finally:
            answered.cancel()
            ended.cancel()
        return self.answered_event.is_set() and self.call.active
