"""The Sinch application's API operations: what api/calling.py's routes call (`CallingApplication`).

`SinchOperations` answers for one `SinchApplication`: it places callouts, reads and PATCHes its calls,
manages the participants of its conferences, and reads and changes the applications' numbers and callback
URLs. An application sees only its own calls and conferences; another's id raises a domain error
(calls/errors.py), as does an ended call.
"""

from __future__ import annotations

import secrets
from typing import TYPE_CHECKING, Any

from tonebridge.calls.applications import query_number
from tonebridge.calls.call import CallState
from tonebridge.calls.errors import CallNotFound, CallNotLive, ConferenceNotFound, NotAParticipant
from tonebridge.calls.records import call_record, call_resource
from tonebridge.calls.requests import CallbackUrls, CallLeg, Callout, ParticipantCommand, ParticipantUpdate
from tonebridge.calls.session import Destination, Session
from tonebridge.calls.sinch import SinchApplication, SinchCall
from tonebridge.svaml import interpreter as ops
from tonebridge.svaml.models import Svaml

if TYPE_CHECKING:
    from tonebridge.calls.conferencing import ConferenceService

__all__ = ["SinchOperations"]


class SinchOperations:
    """api/calling.py's `CallingApplication`, on the calls, conferences and settings of `app`."""

    def __init__(self, app: SinchApplication) -> None:
        self.app = app

    # Lookups -------------------------------------------------------------------------------------------

    def secret_for(self, key: str) -> str | None:
        return self.app.apps.secret_for(key)

    def _own_call(self, key: str, call_id: str) -> Session | None:
        call = self.app.calls.get(call_id)
        if call is None or call.app_key != key:
            return None
        assert self.app.engine is not None
        return self.app.engine.find(call_id)

    def _check_conference(self, key: str, conference_id: str) -> None:
        assert self.app.conferences is not None
        if (
            self.app.conference_owner.get(conference_id) != key
            or self.app.conferences.rooms.get(conference_id) is None
        ):
            raise ConferenceNotFound(conference_id)

    # Calls ---------------------------------------------------------------------------------------------

    async def callout(self, key: str, callout: Callout) -> str:
        engine = self.app.engine
        assert engine is not None
        call = SinchCall.placed(key, callout)
        destination = Destination(call.destination["type"], call.destination["endpoint"])
        call_id = secrets.token_hex(16)
        # Known before the call is placed: an unreachable destination ends it inside originate.
        self.app.calls[call_id] = call
        session = await engine.originate(destination, cli=call.cli, call_id=call_id)
        if session.call.active:
            if callout.max_duration:
                engine.limit_duration(session, float(callout.max_duration))
            self.app.save(session, call)
        return call_id

    def call_info(self, key: str, call_id: str) -> dict[str, Any]:
        engine = self.app.engine
        call = self.app.calls.get(call_id)
        record = self.app.store.get_call(call_id)
        if (call is None or call.app_key != key) and (record is None or record.get("app_key") != key):
            raise CallNotFound(call_id)
        session = engine.find(call_id) if engine else None
        if session is not None and call is not None:
            assert engine is not None
            record = call_record(session.call, call, engine.now())
        assert record is not None
        return call_resource(call_id, record)

    async def update_call(self, key: str, call_id: str, svaml: Svaml, leg: CallLeg | None) -> None:
        """PATCH a live call. An action its state does not allow raises SvamlError (a 400, as a malformed
        document is)."""
        session = self._own_call(key, call_id)
        if session is None or not session.call.active:
            raise CallNotLive(call_id)
        call = self.app.calls[call_id]
        plan = ops.plan(
            svaml,
            ops.CallContext(
                event="patch", answered=session.call.state is CallState.ANSWERED, parked=call.parked
            ),
        )
        if call.parked:
            call.unpark()  # the PATCH is the postponed ICE answer
        self.app.run_patch(session, call, plan)

    # Conferences ---------------------------------------------------------------------------------------

    def conference_participants(self, key: str, conference_id: str) -> list[dict[str, Any]]:
        self._check_conference(key, conference_id)
        assert self.app.conferences is not None
        return [
            {k: p[k] for k in ("cli", "id", "duration", "muted", "onhold")}
            for p in self.app.conferences.participants(conference_id)
        ]

    def kick_all(self, key: str, conference_id: str) -> None:
        self._check_conference(key, conference_id)
        assert self.app.conferences is not None
        self.app.conferences.kick_all(conference_id)

    def _participant(self, key: str, conference_id: str, call_id: str) -> ConferenceService:
        self._check_conference(key, conference_id)
        service = self.app.conferences
        assert service is not None
        room = service.rooms.get(conference_id)
        if room is None or call_id not in room:
            raise NotAParticipant(call_id, conference_id)
        return service

    def kick_participant(self, key: str, conference_id: str, call_id: str) -> None:
        self._participant(key, conference_id, call_id).kick(call_id, conference_id)

    def manage_participant(
        self, key: str, conference_id: str, call_id: str, update: ParticipantUpdate
    ) -> None:
        service = self._participant(key, conference_id, call_id)
        if update.command is ParticipantCommand.MUTE:
            service.mute(call_id, conference_id)
        elif update.command is ParticipantCommand.UNMUTE:
            service.unmute(call_id, conference_id)
        elif update.command is ParticipantCommand.ONHOLD:
            service.hold(call_id, update.moh, conference_id)
        elif update.command is ParticipantCommand.RESUME:
            service.resume(call_id, conference_id)
        if update.dtmf_options is not None:
            service.set_options(call_id, update.dtmf_options, conference_id)

    # Configuration -------------------------------------------------------------------------------------

    def list_numbers(self, key: str) -> list[dict[str, str]]:
        return self.app.apps.list_numbers(key)

    def assign_numbers(self, key: str, numbers: list[str]) -> None:
        self.app.apps.assign_numbers(key, numbers)

    def unassign_number(self, key: str, number: str) -> None:
        self.app.apps.unassign_number(key, number)

    def callback_urls(self, key: str) -> dict[str, str]:
        return self.app.apps.callback_urls(key)

    def set_callback_urls(self, key: str, urls: CallbackUrls) -> None:
        self.app.apps.set_callback_urls(key, urls)

    def query_number(self, number: str) -> dict[str, Any]:
        return query_number(number)
