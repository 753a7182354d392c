"""Conference rooms on live calls: the glue between the call engine, the pure room logic and the mixer.

Each 20 ms media tick, every leg in a room gives the frame it heard, the mixer makes what each participant
hears, and each leg sends that (plus any digit it is being sent). Room operations (join, mute, hold,
kick...) and key presses go to `conference.room.Conferences`, whose effects are applied here: mixer
settings, digits forwarded to other legs, tones rendered into a sender's contribution, collections handed
to the consumer (which sends the PIE) and calls hung up when kicked.

In-band tones of a participant in `forward` or `detect` mode must not reach the room (conference-dtmf.md
§3): such legs pass through `InbandGates`, a three-frame delay line that blanks every frame in which
the Q.23 classifier sees a tone pair, and the frames around it, before the audio is mixed.
"""

from __future__ import annotations

import functools
import logging
from collections import deque
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, assert_never

import numpy as np

from tonebridge.calls.call import EndReason
from tonebridge.calls.events import CallAnswered, CallEnded, CallEvent, KeyPressed
from tonebridge.conference import room as r
from tonebridge.conference.collector import CollectionDone
from tonebridge.conference.options import DtmfMode, DtmfOptions
from tonebridge.events import EventBus
from tonebridge.histogram import Histogram
from tonebridge.looptimer import LoopTimer
from tonebridge.media.dtmf import DtmfDetectorBank
from tonebridge.media.endpoint import FRAME_SAMPLES, Press
from tonebridge.media.mixer import Mixer
from tonebridge.media.players import make_moh
from tonebridge.media.tones import DtmfToneRenderer

if TYPE_CHECKING:
    from tonebridge.calls.engine import CallEngine
    from tonebridge.calls.session import Session

log = logging.getLogger("tonebridge.conference")

# A forwarded or rendered key lasts as long as it is held at its source, and at least this long: a press
# known only by its instant (SIP INFO, an in-band press reported when it ends) must still be heard as one.
# Q.24 asks for 40 ms of tone; 120 ms leaves margin, and the sender's 60 ms gap separates repeats.
FORWARDED_PRESS_MIN_MS = 120
RENDERED_PRESS_MIN_MS = 120
GATE_DELAY_FRAMES = 3
PIE_LATENCY_SAMPLES = 1000
# Milliseconds, shaped for an HTTP callback: a local backend answers in a few, a remote one in tens to
# hundreds, and seconds mean retries.
PIE_LATENCY_BOUNDS_MS = (1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000)

CollectionConsumer = Callable[["Session", CollectionDone], Awaitable[None] | None]


class InbandGates:
    """The in-band gates of every gated leg, as arrays: each delays its leg's audio by a few frames and
    blanks frames that carry a DTMF tone pair (and their neighbours), so a tone is gone from the mix from
    its first sample. Classification is the detector's own per-block verdict, batched over every gated leg
    of the tick; one `push` per tick serves them all."""

    def __init__(self, delay: int = GATE_DELAY_FRAMES) -> None:
        self.delay = delay
        self.ids: list[str] = []
        self._index: dict[str, int] = {}
        self.frames = np.zeros((0, delay, FRAME_SAMPLES), dtype=np.int16)
        self.blank = np.zeros((0, delay), dtype=bool)
        self.hangover = np.zeros(0, dtype=np.int8)
        # While the room forwards a leg's own in-band key, none of its audio may reach the mix, even where
        # the classifier loses the tone (its tail, a twist it does not accept).
        self.suppressing = np.zeros(0, dtype=bool)
        self._slot = 0  # the ring position of the oldest frame, the same for every leg
        self.version = 0

    def __contains__(self, call_id: object) -> bool:
        return call_id in self._index

    def __len__(self) -> int:
        return len(self.ids)

    def add(self, call_id: str) -> None:
        if call_id in self._index:
            return
        self._index[call_id] = len(self.ids)
        self.ids.append(call_id)
        self.frames = np.concatenate([self.frames, np.zeros((1, self.delay, FRAME_SAMPLES), np.int16)])
        self.blank = np.concatenate([self.blank, np.zeros((1, self.delay), bool)])
        self.hangover = np.append(self.hangover, np.int8(0))
        self.suppressing = np.append(self.suppressing, False)
        self.version += 1

    def remove(self, call_id: str) -> None:
        index = self._index.pop(call_id, None)
        if index is None:
            return
        del self.ids[index]
        self._index = {cid: i for i, cid in enumerate(self.ids)}
        self.frames = np.delete(self.frames, index, axis=0)
        self.blank = np.delete(self.blank, index, axis=0)
        self.hangover = np.delete(self.hangover, index)
        self.suppressing = np.delete(self.suppressing, index)
        self.version += 1

    def set_suppressing(self, call_id: str, suppressing: bool) -> None:
        index = self._index.get(call_id)
        if index is not None:
            self.suppressing[index] = suppressing

    def push(self, frames: np.ndarray, tone: np.ndarray) -> np.ndarray:
        """The frames leaving the delay lines, for `frames` (one per gated leg, in `ids` order) entering;
        `tone` says which of them the classifier found a tone pair in."""
        tone = tone | self.suppressing
        # Blank what is still in the line: the tone's onset precedes its first confident block.
        self.blank[tone] = True
        self.hangover[tone] = 2
        held = ~tone & (self.hangover > 0)
        self.hangover[held] -= 1
        slot = self._slot
        out = self.frames[:, slot].copy()
        out[self.blank[:, slot]] = 0
        self.frames[:, slot] = frames
        self.blank[:, slot] = tone | held
        self._slot = (slot + 1) % self.delay
        return out


def _operation(method: Callable[..., Any]) -> Callable[..., Any]:
    """A room operation from the call layer: it runs under the media lock (the tick reads the same
    state) and re-arms the rooms' timer for whatever deadline it changed."""

    @functools.wraps(method)
    def locked(self: ConferenceService, *args: Any, **kwargs: Any) -> Any:
        with self.engine.clock.lock:
            result = method(self, *args, **kwargs)
        self._arm_timer()
        return result

    return locked


class ConferenceService:
    def __init__(
        self, engine: CallEngine, consumer: CollectionConsumer, events: EventBus | None = None
    ) -> None:
        self.engine = engine
        self.events = events or EventBus()
        # From the end of a collection to its PIE request leaving, and to the application's answer to it.
        self.pie_sent_ms: deque[float] = deque(maxlen=PIE_LATENCY_SAMPLES)
        self.pie_answered_ms: deque[float] = deque(maxlen=PIE_LATENCY_SAMPLES)
        # The same since start, for the Prometheus histograms (the deques keep only the latest).
        self.pie_sent_latency_ms = Histogram(PIE_LATENCY_BOUNDS_MS)
        self.pie_answered_latency_ms = Histogram(PIE_LATENCY_BOUNDS_MS)
        self.consumer = consumer
        self.rooms = r.Conferences()
        self.mixer = Mixer(FRAME_SAMPLES)
        self.members: dict[str, Session] = {}
        self._renderers: dict[str, DtmfToneRenderer] = {}
        self._rendering: set[str] = set()  # members whose renderer has tone or silence to play
        self.gates = InbandGates()
        self._classifier = DtmfDetectorBank()
        self._moh: dict[str, object] = {}
        # Where each member's frame is in the tick's arrays, rebuilt when the mixer's order or the gates
        # change: the plane rows in mixer order, each member's position, the gated members' positions.
        self._layout: tuple[int, int] | None = None
        self._rows = np.zeros(0, dtype=np.intp)
        self._position: dict[str, int] = {}
        self._gate_positions = np.zeros(0, dtype=np.intp)
        # Collection timeouts and the like: the rooms' next deadline, on the loop (never on the media tick).
        self._timer = LoopTimer(engine.now, self._timer_fired)

    # Operations --------------------------------------------------------------------------------------

    @_operation
    def join(
        self,
        session: Session,
        conference_id: str,
        options: DtmfOptions | None = None,
        moh_class: str | None = None,
    ) -> None:
        """Put an answered call into a room (created on first join). Raises InvalidField on bad input."""
        call_id = session.call_id
        now = self.engine.now()
        effects = self.rooms.join(conference_id, call_id, session.call.cli, options, moh_class, now)
        self.members[call_id] = session
        self.mixer.add_leg(call_id, conference_id)
        # From now on the room's tick drives this leg, not the leg's own source.
        self.engine.clock.remove_leg(session.leg)
        self._renderers[call_id] = DtmfToneRenderer()
        self._apply(effects)
        self._update_gate(call_id)
        self.engine.log_event(
            "conference_joined",
            session,
            conference_id=conference_id,
            mode=(options or DtmfOptions()).mode.value,
        )

    @_operation
    def leave(self, call_id: str) -> None:
        if call_id not in self.members:
            return
        self._apply(self.rooms.leave(call_id, self.engine.now()))

    @_operation
    def mute(self, call_id: str, conference_id: str | None = None) -> None:
        self._apply(self.rooms.mute(call_id, conference_id))

    @_operation
    def unmute(self, call_id: str, conference_id: str | None = None) -> None:
        self._apply(self.rooms.unmute(call_id, conference_id))

    @_operation
    def hold(self, call_id: str, moh: str | None = None, conference_id: str | None = None) -> None:
        self._apply(self.rooms.hold(call_id, moh, conference_id))

    @_operation
    def resume(self, call_id: str, conference_id: str | None = None) -> None:
        self._apply(self.rooms.resume(call_id, conference_id))

    @_operation
    def kick(self, call_id: str, conference_id: str | None = None) -> None:
        self._apply(self.rooms.kick(call_id, self.engine.now(), conference_id))

    @_operation
    def kick_all(self, conference_id: str) -> None:
        self._apply(self.rooms.kick_all(conference_id, self.engine.now()))

    @_operation
    def set_options(self, call_id: str, options: DtmfOptions, conference_id: str | None = None) -> None:
        self._apply(self.rooms.set_options(call_id, options, conference_id))
        self._update_gate(call_id)

    @_operation
    def on_call_event(self, event: CallEvent) -> None:
        """The engine's news: presses of participants go to their room; an ended call leaves it."""
        match event:
            case KeyPressed(session=session, press=press):
                self.on_press(session, press)
            case CallEnded(session=session):
                self.leave(session.call_id)
            case CallAnswered() | r.ConferenceEnded():
                pass
            case _:
                assert_never(event)

    def on_press(self, session: Session, press: Press) -> None:
        call_id = session.call_id
        if call_id not in self.members:
            return
        now = self.engine.now()
        if press.started:
            self._apply(self.rooms.press_started(call_id, press.digit, press.source, now))
        else:
            self._apply(self.rooms.press_ended(call_id, now))

    @_operation
    def collection_completed(self, call_id: str, seq: int | None = None) -> None:
        """The consumer finished with a collection (its PIE completed): the participant may return."""
        self._apply(self.rooms.pie_completed(call_id, self.engine.now(), seq))

    # The tick ----------------------------------------------------------------------------------------

    def tick(self, now: float, received: np.ndarray, out: np.ndarray, mask: np.ndarray) -> None:
        """The rooms' part of the media tick (media thread, under the lock): the members' received frames
        are gated, given their rendered tones and mixed; what each hears goes to its row of `out`."""
        if not self.members:
            return
        if self._layout != (self.mixer.version, self.gates.version):
            self._relayout()
        rows = self._rows
        frames = received[rows]  # a copy, in the mixer's order
        gated = self._gate_positions
        if gated.size:
            verdicts = self._classifier.classify(self.gates.ids, frames[gated])
            tones = (verdicts >= 0).any(axis=1)
        for call_id in list(self._rendering):
            renderer = self._renderers[call_id]
            tone = renderer.frame()
            if tone is not None:
                at = self._position[call_id]
                frames[at] = np.clip(frames[at].astype(np.int32) + tone, -32768, 32767)
            if not renderer.pending:
                self._rendering.discard(call_id)
        if gated.size:
            frames[gated] = self.gates.push(frames[gated], tones)
        out[rows] = self.mixer.mix_stack(frames)
        mask[rows] = 1

    def _relayout(self) -> None:
        order = self.mixer.layout()
        self._rows = np.fromiter(
            (self.members[call_id].leg.row for call_id in order), dtype=np.intp, count=len(order)
        )
        self._position = {call_id: at for at, call_id in enumerate(order)}
        self._gate_positions = np.asarray([self._position[cid] for cid in self.gates.ids], dtype=np.intp)
        self._layout = (self.mixer.version, self.gates.version)

    def _arm_timer(self) -> None:
        self._timer.arm(self.rooms.next_timer())

    def _timer_fired(self) -> None:
        with self.engine.clock.lock:
            self._apply(self.rooms.handle_timer(self.engine.now()))
        self._arm_timer()

    # Effects -----------------------------------------------------------------------------------------

    def _apply(self, effects: list[r.Effect]) -> None:
        for effect in effects:
            try:
                self._apply_one(effect)
            except Exception:
                log.exception("event=conference_effect_failed effect=%r", effect)

    def _apply_one(self, effect: r.Effect) -> None:
        # Exhaustive: a new kind of room effect fails the type check here instead of being dropped.
        match effect:
            case r.MixState():
                if effect.call_id not in self.mixer:
                    return
                self.mixer.set_contributing(effect.call_id, effect.contributes)
                self.mixer.set_hearing(effect.call_id, effect.hears_room)
                self.mixer.set_override(effect.call_id, self._moh_source(effect.moh) if effect.moh else None)
            case r.ForwardPress():
                target = self.members.get(effect.to_call_id)
                if target is not None:
                    target.leg.hold_digit(effect.digit, FORWARDED_PRESS_MIN_MS)
            case r.ForwardPressEnded():
                target = self.members.get(effect.to_call_id)
                if target is not None:
                    target.leg.release_digit(effect.digit)
            case r.RenderTone():
                renderer = self._renderers.get(effect.call_id)
                if renderer is not None:
                    renderer.hold(effect.digit, RENDERED_PRESS_MIN_MS)
                    self._rendering.add(effect.call_id)
            case r.RenderToneEnded():
                renderer = self._renderers.get(effect.call_id)
                if renderer is not None:
                    renderer.release(effect.digit)
            case r.SuppressInband():
                self.gates.set_suppressing(effect.call_id, True)
            case r.SuppressInbandEnded():
                self.gates.set_suppressing(effect.call_id, False)
            case CollectionDone():
                self._collection_done(effect)
            case r.PressHandled():
                self.events.counters[f"presses.{effect.source.value}.{effect.mode.value}"] += 1
                self.events.publish(
                    {
                        "type": "press",
                        "callId": effect.call_id,
                        "conferenceId": effect.conference_id,
                        "digit": effect.digit,
                        "source": effect.source.value,
                        "mode": effect.mode.value,
                        "outcome": effect.describe(),
                        "receivers": list(effect.receivers),
                    }
                )
                self.engine.log_event(
                    "conference_press",
                    self.members.get(effect.call_id),
                    conference_id=effect.conference_id,
                    digit=effect.digit,
                    source=effect.source.value,
                    mode=effect.mode.value,
                    outcome=effect.describe().replace(" ", "_"),
                )
            case r.LeftMix() | r.ReturnedToMix():
                left = isinstance(effect, r.LeftMix)
                self.events.publish(
                    {
                        "type": "left_mix" if left else "returned_to_mix",
                        "callId": effect.call_id,
                        "conferenceId": effect.conference_id,
                    }
                )
                self.engine.log_event(
                    "conference_left_mix" if left else "conference_returned",
                    self.members.get(effect.call_id),
                    conference_id=effect.conference_id,
                )
            case r.OptionsChanged():
                self.events.publish(
                    {
                        "type": "options_changed",
                        "callId": effect.call_id,
                        "conferenceId": effect.conference_id,
                        "mode": effect.options.mode.value,
                    }
                )
                self._update_gate(effect.call_id)
            case r.ParticipantJoined():
                self.events.publish(
                    {"type": "joined", "callId": effect.call_id, "conferenceId": effect.conference_id}
                )
            case r.ParticipantLeft():
                self.events.publish(
                    {
                        "type": "left",
                        "callId": effect.call_id,
                        "conferenceId": effect.conference_id,
                        "reason": effect.reason.value,
                    }
                )
                self._forget(effect.call_id)
                session = self.engine.find(effect.call_id)
                if session is not None:
                    self.engine.log_event(
                        "conference_left",
                        session,
                        conference_id=effect.conference_id,
                        reason=effect.reason.value,
                    )
                    if effect.reason is r.LeaveReason.KICKED and session.call.active:
                        self.engine.spawn(self.engine.hangup(session, EndReason.MANAGER_HANGUP))
            case r.ConferenceStarted():
                log.info("event=conference_started conference_id=%s", effect.conference_id)
                self.events.publish({"type": "conference_started", "conferenceId": effect.conference_id})
            case r.ConferenceEnded():
                log.info("event=conference_ended conference_id=%s", effect.conference_id)
                self.events.publish({"type": "conference_ended", "conferenceId": effect.conference_id})
                self.engine.publish(effect)  # the application's own bookkeeping (who owns the id) ends
            case _:
                assert_never(effect)

    def _collection_done(self, done: CollectionDone) -> None:
        session = self.members.get(done.call_id) or self.engine.find(done.call_id)
        self.engine.log_event(
            "collection_done",
            session,
            conference_id=done.conference_id,
            digits=done.digits or '""',
            reason=done.reason.value,
        )
        self.events.counters["collections"] += 1
        self.events.publish(
            {
                "type": "collection",
                "callId": done.call_id,
                "conferenceId": done.conference_id,
                "digits": done.digits,
                "reason": done.reason.value,
            }
        )
        if session is None:
            return
        self.events.publish({"type": "pie_sent", "callId": done.call_id, "conferenceId": done.conference_id})
        try:
            result = self.consumer(session, done)
        except Exception:
            log.exception("event=collection_consumer_failed call_id=%s", done.call_id)
            self.events.counters["pie_failures"] += 1
            self.collection_completed(done.call_id, done.seq)
            return
        if result is None:
            # Handled on the spot (the demo prints it): sent and answered now.
            self.pie_sent(done)
            self.pie_answered(done)
            self._pie_answered(done)
            return

        pending: Awaitable[None] = result

        async def await_consumer() -> None:
            try:
                await pending
            except Exception:
                self.events.counters["pie_failures"] += 1
                raise
            finally:
                self._pie_answered(done)

        self.engine.spawn(await_consumer())

    def _since_collection_ms(self, done: CollectionDone) -> float:
        return (self.engine.now() - done.ended_at) * 1000 if done.ended_at else 0.0

    def pie_sent(self, done: CollectionDone) -> None:
        """The collection's PIE request has left (its first attempt)."""
        latency = self._since_collection_ms(done)
        self.pie_sent_ms.append(latency)
        self.pie_sent_latency_ms.observe(latency)

    def pie_answered(self, done: CollectionDone) -> None:
        """The application accepted the collection's PIE (a 2xx, on whichever attempt)."""
        latency = self._since_collection_ms(done)
        self.pie_answered_ms.append(latency)
        self.pie_answered_latency_ms.observe(latency)

    def _pie_answered(self, done: CollectionDone) -> None:
        self.events.publish(
            {"type": "pie_answered", "callId": done.call_id, "conferenceId": done.conference_id}
        )
        self.collection_completed(done.call_id, done.seq)

    def _moh_source(self, name: str) -> object:
        if name not in self._moh:
            self._moh[name] = make_moh(name)
        return self._moh[name]

    def _update_gate(self, call_id: str) -> None:
        session = self.members.get(call_id)
        if session is None:
            return
        participant = self.rooms.participant(call_id)
        gated = session.leg.inband_detection and participant.options.mode is not DtmfMode.IGNORE
        if gated and call_id not in self.gates:
            self.gates.add(call_id)
        elif not gated and call_id in self.gates:
            self.gates.remove(call_id)
            self._classifier.remove(call_id)

    def _forget(self, call_id: str) -> None:
        session = self.members.pop(call_id, None)
        if call_id in self.mixer:
            self.mixer.remove_leg(call_id)
        self._renderers.pop(call_id, None)
        self._rendering.discard(call_id)
        if call_id in self.gates:
            self.gates.remove(call_id)
            self._classifier.remove(call_id)
        if session is not None:
            session.leg.release_held_digits()
        if session is not None and session.call.active:
            # Out of the room but still on the line: its own tick takes over again.
            self.engine.clock.add_leg(session.leg)

    def participants(self, conference_id: str) -> list[dict[str, object]]:
        return self.rooms.participants_info(conference_id, self.engine.now())
