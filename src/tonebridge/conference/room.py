"""Conference rooms and their participants: who is in the mix, who hears what, and what key presses do.

Pure logic on an injected clock (time ``now`` in float seconds). Every operation changes the directory and
returns a list of typed effects, in the order the call engine should apply them: media changes
(:class:`MixState`, :class:`RenderTone`, ...), key presses to send (:class:`ForwardPress`), PIEs to send
(:class:`CollectionDone`) and events for the conference's event stream (:class:`PressHandled`, ...).
The rules are those of shared/spec/conference-dtmf.md; section numbers below refer to it.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from enum import StrEnum

from tonebridge.conference.collector import CollectionDone, CollectionEndReason, DigitCollector, check_digit
from tonebridge.conference.options import (
    DEFAULT_HOLD_MOH,
    DtmfMode,
    DtmfOptions,
    validate_conference_id,
    validate_moh_class,
)
from tonebridge.keys import PressSource

__all__ = [
    "AlreadyJoined",
    "CollectionDone",
    "Conference",
    "ConferenceEnded",
    "ConferenceStarted",
    "Conferences",
    "Effect",
    "ForwardPress",
    "ForwardPressEnded",
    "LeftMix",
    "MixState",
    "NotInConference",
    "OptionsChanged",
    "Participant",
    "ParticipantJoined",
    "ParticipantLeft",
    "ParticipantState",
    "PressHandled",
    "PressOutcome",
    "PressSource",
    "RenderTone",
    "RenderToneEnded",
    "ReturnedToMix",
    "SuppressInband",
    "SuppressInbandEnded",
    "UnknownConference",
]


class ParticipantState(StrEnum):
    IN_MIX = "in_mix"
    #: A detect-mode collection is under way: out of the mix, neither heard nor hearing (§3 detect 1).
    COLLECTING = "collecting"
    #: Collections ended, their PIEs not yet completed (or the last collected key is still down, so that its
    #: in-band tone cannot leak into the mix, §3 detect 6): still out of the mix.
    AWAITING_PIE = "awaiting_pie"


class PressOutcome(StrEnum):
    IGNORED = "ignored"
    FORWARDED = "forwarded"
    COLLECTED = "collected"
    #: A ``#`` that ended a collection with maxDigits > 1; not part of the value.
    ENDED_COLLECTION = "ended_collection"


class LeaveReason(StrEnum):
    LEFT = "left"
    KICKED = "kicked"
    #: The call joined another conference.
    MOVED = "moved"


class NotInConference(KeyError):
    """The call is not a participant (of the named conference, when one was named)."""


class UnknownConference(KeyError):
    """No conference has this id (conferences exist from their first participant to their last)."""


class AlreadyJoined(ValueError):
    """The call is already a participant of this conference."""


# --- effects ---------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ConferenceStarted:
    conference_id: str


@dataclass(frozen=True, slots=True)
class ConferenceEnded:
    conference_id: str


@dataclass(frozen=True, slots=True)
class ParticipantJoined:
    call_id: str
    conference_id: str


@dataclass(frozen=True, slots=True)
class ParticipantLeft:
    """The participant is gone. ``reason`` kicked: the engine hangs the call up (its DiCE follows)."""

    call_id: str
    conference_id: str
    reason: LeaveReason


@dataclass(frozen=True, slots=True)
class MixState:
    """How the mixer must treat a participant's leg; emitted on join and whenever a value changes.

    ``contributes``: its audio goes into the room's sum. ``hears_room``: it hears the room minus itself.
    ``moh``: a music-on-hold class that overrides what it hears (held, or alone with a mohClass), else None.
    A leg that neither hears the room nor has ``moh`` hears silence.
    """

    call_id: str
    conference_id: str
    contributes: bool
    hears_room: bool
    moh: str | None


@dataclass(frozen=True, slots=True)
class LeftMix:
    """A detect-mode participant's first press took it out of the mix (no leave event for the others)."""

    call_id: str
    conference_id: str


@dataclass(frozen=True, slots=True)
class ReturnedToMix:
    call_id: str
    conference_id: str


@dataclass(frozen=True, slots=True)
class ForwardPress:
    """Start sending ``digit`` to ``to_call_id``: RFC 4733 if it negotiated telephone-event, else in band."""

    to_call_id: str
    digit: str
    from_call_id: str


@dataclass(frozen=True, slots=True)
class ForwardPressEnded:
    """The forwarded key was released: end the receiver's event or tone. Sent once per ForwardPress whose
    receiver is still a participant."""

    to_call_id: str
    digit: str
    from_call_id: str


@dataclass(frozen=True, slots=True)
class RenderTone:
    """Render ``digit``'s Q.23 tone pair into ``call_id``'s contribution until RenderToneEnded (§3 ignore)."""

    call_id: str
    digit: str


@dataclass(frozen=True, slots=True)
class RenderToneEnded:
    call_id: str
    digit: str


@dataclass(frozen=True, slots=True)
class SuppressInband:
    """Keep ``call_id``'s own in-band ``digit`` out of the mix: receivers get the forwarded press instead,
    and must not hear it a second time (§3 forward)."""

    call_id: str
    digit: str


@dataclass(frozen=True, slots=True)
class SuppressInbandEnded:
    call_id: str
    digit: str


@dataclass(frozen=True, slots=True)
class PressHandled:
    """One key press, for the event stream and metrics (§5). ``receivers`` lists the forward receivers."""

    call_id: str
    digit: str
    source: PressSource
    mode: DtmfMode
    outcome: PressOutcome
    conference_id: str = ""
    receivers: tuple[str, ...] = ()

    def describe(self) -> str:
        if self.outcome is PressOutcome.FORWARDED:
            return f"forwarded to {len(self.receivers)}"
        return self.outcome.value


@dataclass(frozen=True, slots=True)
class OptionsChanged:
    call_id: str
    conference_id: str
    options: DtmfOptions


Effect = (
    ConferenceStarted
    | ConferenceEnded
    | ParticipantJoined
    | ParticipantLeft
    | MixState
    | LeftMix
    | ReturnedToMix
    | ForwardPress
    | ForwardPressEnded
    | RenderTone
    | RenderToneEnded
    | SuppressInband
    | SuppressInbandEnded
    | PressHandled
    | CollectionDone
    | OptionsChanged
)


# --- state -----------------------------------------------------------------------------------------------


@dataclass(slots=True)
class _Press:
    """The key a participant is holding down and what its end must undo."""

    digit: str
    source: PressSource
    started_at: float
    receivers: list[str] = field(default_factory=list)
    render: bool = False
    suppress: bool = False
    collector: DigitCollector | None = None


@dataclass(slots=True, eq=False)
class Participant:
    call_id: str
    conference_id: str
    cli: str
    joined_at: float
    options: DtmfOptions
    moh_class: str | None = None
    muted: bool = False
    on_hold: bool = False
    #: What a held participant hears; set by hold().
    hold_moh: str | None = None
    _collector: DigitCollector | None = field(default=None, repr=False)
    _pending: list[int] = field(default_factory=list, repr=False)
    _next_seq: int = field(default=0, repr=False)
    _press: _Press | None = field(default=None, repr=False)

    @property
    def state(self) -> ParticipantState:
        if self._collector is not None:
            return ParticipantState.COLLECTING
        if self._pending or (self._press is not None and self._press.collector is not None):
            return ParticipantState.AWAITING_PIE
        return ParticipantState.IN_MIX

    @property
    def collected(self) -> str:
        """Digits of the collection under way ("" if none)."""
        return self._collector.digits if self._collector is not None else ""

    @property
    def pending_pies(self) -> tuple[int, ...]:
        """Sequence numbers of ended collections whose PIE has not completed, oldest first."""
        return tuple(self._pending)

    def duration(self, now: float) -> int:
        """Whole seconds in the conference so far."""
        return max(0, int(now - self.joined_at))


@dataclass(slots=True, eq=False)
class Conference:
    conference_id: str
    created_at: float
    participants: dict[str, Participant] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.participants)

    def __iter__(self) -> Iterator[Participant]:
        return iter(self.participants.values())

    def __contains__(self, call_id: object) -> bool:
        return call_id in self.participants


def _mix_state(p: Participant, conf: Conference) -> MixState:
    in_mix = p.state is ParticipantState.IN_MIX
    if p.on_hold:
        moh = p.hold_moh
    elif in_mix and len(conf) == 1:
        moh = p.moh_class
    else:
        moh = None
    return MixState(
        call_id=p.call_id,
        conference_id=conf.conference_id,
        contributes=in_mix and not p.muted and not p.on_hold,
        hears_room=in_mix and not p.on_hold,
        moh=moh,
    )


_Snapshot = dict[str, tuple[ParticipantState, MixState]]


class Conferences:
    """The directory of rooms: a room is created by its first join and removed after its last leave."""

    def __init__(self) -> None:
        self._rooms: dict[str, Conference] = {}
        self._where: dict[str, str] = {}
        self._collecting: set[str] = set()

    # --- queries -----------------------------------------------------------------------------------------

    def __contains__(self, conference_id: object) -> bool:
        return conference_id in self._rooms

    def __len__(self) -> int:
        return len(self._rooms)

    def get(self, conference_id: str) -> Conference | None:
        return self._rooms.get(conference_id)

    def conference_ids(self) -> list[str]:
        return list(self._rooms)

    def conference_of(self, call_id: str) -> str | None:
        return self._where.get(call_id)

    def participant(self, call_id: str, conference_id: str | None = None) -> Participant:
        """The participant, raising NotInConference if absent (or in another conference than the one named)."""
        where = self._where.get(call_id)
        if where is None or (conference_id is not None and where != conference_id):
            suffix = f" {conference_id!r}" if conference_id is not None else ""
            raise NotInConference(f"call {call_id!r} is not in conference{suffix}")
        return self._rooms[where].participants[call_id]

    def hears_room(self, call_id: str) -> bool:
        """True when the participant hears the room (minus itself): in the mix and not on hold."""
        return self.mix_state(call_id).hears_room

    def contributes(self, call_id: str) -> bool:
        """True when the participant's audio reaches the mix: in the mix, not muted, not on hold."""
        return self.mix_state(call_id).contributes

    def alone(self, call_id: str) -> bool:
        """True when the participant is the only one in its conference."""
        return len(self._rooms[self.participant(call_id).conference_id]) == 1

    def moh_for(self, call_id: str) -> str | None:
        """The music-on-hold class the participant hears now, or None."""
        return self.mix_state(call_id).moh

    def mix_state(self, call_id: str) -> MixState:
        p = self.participant(call_id)
        return _mix_state(p, self._rooms[p.conference_id])

    def participants_info(self, conference_id: str, now: float) -> list[dict[str, object]]:
        """``GET /calling/v1/conferences/id/{id}``'s participants: exactly cli, id, duration, muted, onhold."""
        conf = self._room(conference_id)
        return [
            {
                "cli": p.cli,
                "id": p.call_id,
                "duration": p.duration(now),
                "muted": p.muted,
                "onhold": p.on_hold,
            }
            for p in conf
        ]

    # --- membership --------------------------------------------------------------------------------------

    def join(
        self,
        conference_id: str,
        call_id: str,
        cli: str = "",
        options: DtmfOptions | None = None,
        moh_class: str | None = None,
        now: float = 0.0,
    ) -> list[Effect]:
        """Add the call to the conference, creating the conference if needed.

        A call that is in another conference leaves it first (reason ``moved``).
        """
        validate_conference_id(conference_id)
        if moh_class is not None:
            validate_moh_class(moh_class)
        effects: list[Effect] = []
        where = self._where.get(call_id)
        if where == conference_id:
            raise AlreadyJoined(f"call {call_id!r} is already in conference {conference_id!r}")
        if where is not None:
            effects += self._remove(call_id, LeaveReason.MOVED, now)
        conf = self._rooms.get(conference_id)
        if conf is None:
            conf = self._rooms[conference_id] = Conference(conference_id, now)
            effects.append(ConferenceStarted(conference_id))
        before = self._snapshot(conf)
        conf.participants[call_id] = Participant(
            call_id=call_id,
            conference_id=conference_id,
            cli=cli,
            joined_at=now,
            options=options if options is not None else DtmfOptions(),
            moh_class=moh_class,
        )
        self._where[call_id] = conference_id
        effects.append(ParticipantJoined(call_id, conference_id))
        effects += self._diff(conf, before)
        return effects

    def leave(self, call_id: str, now: float) -> list[Effect]:
        """The call hung up. Digits collected so far go out first as a CollectionDone (§4)."""
        self.participant(call_id)
        return self._remove(call_id, LeaveReason.LEFT, now)

    def kick(self, call_id: str, now: float, conference_id: str | None = None) -> list[Effect]:
        """Remove the participant; the engine hangs the call up after sending any CollectionDone (§4)."""
        self.participant(call_id, conference_id)
        return self._remove(call_id, LeaveReason.KICKED, now)

    def kick_all(self, conference_id: str, now: float) -> list[Effect]:
        conf = self._room(conference_id)
        effects: list[Effect] = []
        for call_id in list(conf.participants):
            effects += self._remove(call_id, LeaveReason.KICKED, now)
        return effects

    # --- participant commands ----------------------------------------------------------------------------

    def mute(self, call_id: str, conference_id: str | None = None) -> list[Effect]:
        return self._update(call_id, conference_id, muted=True)

    def unmute(self, call_id: str, conference_id: str | None = None) -> list[Effect]:
        return self._update(call_id, conference_id, muted=False)

    def hold(self, call_id: str, moh: str | None = None, conference_id: str | None = None) -> list[Effect]:
        """Put on hold: it hears ``moh`` (else its mohClass, else DEFAULT_HOLD_MOH), is not heard and
        receives no forwarded presses (§4)."""
        if moh is not None:
            validate_moh_class(moh, "moh")
        p = self.participant(call_id, conference_id)
        return self._update(
            call_id, conference_id, on_hold=True, hold_moh=moh or p.moh_class or DEFAULT_HOLD_MOH
        )

    def resume(self, call_id: str, conference_id: str | None = None) -> list[Effect]:
        return self._update(call_id, conference_id, on_hold=False, hold_moh=None)

    def set_options(
        self, call_id: str, options: DtmfOptions, conference_id: str | None = None
    ) -> list[Effect]:
        """Change the DTMF options. They decide from the next press on; a collection already under way ends
        under the options it began with."""
        p = self.participant(call_id, conference_id)
        p.options = options
        return [OptionsChanged(call_id, p.conference_id, options)]

    # --- key presses -------------------------------------------------------------------------------------

    def press_started(self, call_id: str, digit: str, source: str, now: float) -> list[Effect]:
        """A key went down on ``call_id``'s leg (one physical press, already de-duplicated, §2)."""
        digit = check_digit(digit)
        src = PressSource(source)
        p = self.participant(call_id)
        conf = self._rooms[p.conference_id]
        effects: list[Effect] = []
        if p._press is not None:
            # The previous key's end never came: it ended when this one began.
            effects += self._end_press(p, conf, now)
        before = self._snapshot(conf)
        press = _Press(digit, src, now)
        p._press = press
        handled: list[Effect] = []
        mode = p.options.mode

        if p._collector is not None or mode is DtmfMode.DETECT:
            if p._collector is None:
                # The first press of a collection; presses before the previous collection's PIE completed
                # start the next one, so none is lost (§3 detect 5).
                p._collector = DigitCollector(
                    p.options, call_id=call_id, conference_id=conf.conference_id, seq=p._next_seq
                )
                p._next_seq += 1
                self._collecting.add(call_id)
            collector = p._collector
            mode = DtmfMode.DETECT
            press.collector = collector
            done = collector.press_started(digit, now)
            ended_by_hash = done is not None and done.reason is CollectionEndReason.HASH
            outcome = PressOutcome.ENDED_COLLECTION if ended_by_hash else PressOutcome.COLLECTED
            handled.append(PressHandled(call_id, digit, src, mode, outcome, conf.conference_id))
            if done is not None:
                handled += self._collection_done(p, done)
        elif mode is DtmfMode.FORWARD:
            receivers = [
                q.call_id
                for q in conf
                if q.call_id != call_id and not q.on_hold and q.state is ParticipantState.IN_MIX
            ]
            press.receivers = receivers
            if src is PressSource.INBAND:
                press.suppress = True
                handled.append(SuppressInband(call_id, digit))
            handled += [ForwardPress(r, digit, call_id) for r in receivers]
            handled.append(
                PressHandled(
                    call_id, digit, src, mode, PressOutcome.FORWARDED, conf.conference_id, tuple(receivers)
                )
            )
        else:
            # ignore: an in-band tone is already audio; an out-of-band press is made audible (§3 ignore).
            if src is not PressSource.INBAND and _mix_state(p, conf).contributes:
                press.render = True
                handled.append(RenderTone(call_id, digit))
            handled.append(PressHandled(call_id, digit, src, mode, PressOutcome.IGNORED, conf.conference_id))

        effects += self._diff(conf, before)
        effects += handled
        return effects

    def press_ended(self, call_id: str, now: float) -> list[Effect]:
        """The key on ``call_id``'s leg was released. An end with no press (or after leaving) is ignored."""
        where = self._where.get(call_id)
        if where is None:
            return []
        conf = self._rooms[where]
        p = conf.participants[call_id]
        if p._press is None:
            return []
        before = self._snapshot(conf)
        effects = self._end_press(p, conf, now)
        return self._diff(conf, before) + effects

    def pie_completed(self, call_id: str, now: float, seq: int | None = None) -> list[Effect]:
        """The PIE of collection ``seq`` (default: the oldest pending) completed or its first attempt timed
        out (§3 detect 4). Completing ``seq`` also completes earlier ones, since PIEs of a call go in order.
        Repeats and completions for calls that have left are ignored."""
        where = self._where.get(call_id)
        if where is None:
            return []
        conf = self._rooms[where]
        p = conf.participants[call_id]
        if not p._pending:
            return []
        before = self._snapshot(conf)
        last = p._pending[0] if seq is None else seq
        p._pending = [s for s in p._pending if s > last]
        return self._diff(conf, before)

    # --- timers ------------------------------------------------------------------------------------------

    def next_timer(self) -> float | None:
        """The earliest time handle_timer must be called, or None."""
        deadlines = [
            t for t in (self._collector_of(c).next_timer() for c in self._collecting) if t is not None
        ]
        return min(deadlines, default=None)

    def handle_timer(self, now: float) -> list[Effect]:
        """End every collection whose inter-digit timeout has passed (in deadline order)."""
        due: list[tuple[float, str]] = []
        for call_id in self._collecting:
            deadline = self._collector_of(call_id).next_timer()
            if deadline is not None and deadline <= now:
                due.append((deadline, call_id))
        effects: list[Effect] = []
        for _, call_id in sorted(due):
            p = self.participant(call_id)
            conf = self._rooms[p.conference_id]
            before = self._snapshot(conf)
            assert p._collector is not None
            done = p._collector.handle_timer(now)
            if done is not None:
                effects += self._collection_done(p, done)
            effects += self._diff(conf, before)
        return effects

    # --- internals ---------------------------------------------------------------------------------------

    def _room(self, conference_id: str) -> Conference:
        conf = self._rooms.get(conference_id)
        if conf is None:
            raise UnknownConference(f"no conference {conference_id!r}")
        return conf

    def _collector_of(self, call_id: str) -> DigitCollector:
        collector = self.participant(call_id)._collector
        assert collector is not None
        return collector

    def _collection_done(self, p: Participant, done: CollectionDone) -> list[Effect]:
        p._collector = None
        p._pending.append(done.seq)
        self._collecting.discard(p.call_id)
        return [done]

    def _update(self, call_id: str, conference_id: str | None, **changes: object) -> list[Effect]:
        p = self.participant(call_id, conference_id)
        conf = self._rooms[p.conference_id]
        before = self._snapshot(conf)
        for name, value in changes.items():
            setattr(p, name, value)
        return self._diff(conf, before)

    def _end_press(self, p: Participant, conf: Conference, now: float) -> list[Effect]:
        press = p._press
        assert press is not None
        p._press = None
        effects: list[Effect] = []
        if press.collector is not None and press.collector is p._collector:
            press.collector.press_ended(now)
        if press.render:
            effects.append(RenderToneEnded(p.call_id, press.digit))
        if press.suppress:
            effects.append(SuppressInbandEnded(p.call_id, press.digit))
        effects += [ForwardPressEnded(r, press.digit, p.call_id) for r in press.receivers if r in conf]
        return effects

    def _remove(self, call_id: str, reason: LeaveReason, now: float) -> list[Effect]:
        conf = self._rooms[self._where[call_id]]
        p = conf.participants[call_id]
        effects: list[Effect] = []
        if p._collector is not None:
            done = p._collector.cut_short(now)
            p._collector = None
            self._collecting.discard(call_id)
            if done is not None:
                effects.append(done)
        if p._press is not None:
            press, p._press = p._press, None
            # The leaving leg needs no tone ended; its receivers do.
            effects += [ForwardPressEnded(r, press.digit, call_id) for r in press.receivers if r in conf]
        before = self._snapshot(conf)
        del conf.participants[call_id]
        del self._where[call_id]
        before.pop(call_id)
        for other in conf:
            if other._press is not None and call_id in other._press.receivers:
                other._press.receivers.remove(call_id)
        effects.append(ParticipantLeft(call_id, conf.conference_id, reason))
        effects += self._diff(conf, before)
        if not conf.participants:
            del self._rooms[conf.conference_id]
            effects.append(ConferenceEnded(conf.conference_id))
        return effects

    def _snapshot(self, conf: Conference) -> _Snapshot:
        return {p.call_id: (p.state, _mix_state(p, conf)) for p in conf}

    def _diff(self, conf: Conference, before: _Snapshot) -> list[Effect]:
        """Effects for every participant whose place in the mix changed since ``before``."""
        effects: list[Effect] = []
        for p in conf:
            state, mix = p.state, _mix_state(p, conf)
            old = before.get(p.call_id)
            if old is not None:
                was_in = old[0] is ParticipantState.IN_MIX
                is_in = state is ParticipantState.IN_MIX
                if was_in and not is_in:
                    effects.append(LeftMix(p.call_id, conf.conference_id))
                elif is_in and not was_in:
                    effects.append(ReturnedToMix(p.call_id, conf.conference_id))
            if old is None or old[1] != mix:
                effects.append(mix)
        return effects
