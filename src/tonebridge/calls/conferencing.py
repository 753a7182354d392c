"""Conference rooms on live calls: the glue between the call engine, the pure room logic and the mixer.

Each 20 ms media tick, every leg in a room gives the frame it heard, the mixer makes what each participant
hears, and each leg sends that (plus any digit it is being sent). Room operations (join, mute, hold,
kick...) and key presses go to `conference.room.Conferences`, whose effects are applied here: mixer
settings, digits forwarded to other legs, tones rendered into a sender's contribution, collections handed
to the consumer (which sends the PIE) and calls hung up when kicked.

In-band tones of a participant in `forward` or `detect` mode must not reach the room (conference-dtmf.md
§3): such legs pass through an `InbandGate`, a three-frame delay line that blanks every frame in which
the Q.23 classifier sees a tone pair, and the frames around it, before the audio is mixed.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, assert_never

import numpy as np

from tonebridge.calls.call import EndReason
from tonebridge.calls.events import CallAnswered, CallEnded, CallEvent, KeyPressed
from tonebridge.conference import room as r
from tonebridge.conference.collector import CollectionDone
from tonebridge.conference.options import DtmfMode, DtmfOptions
from tonebridge.events import EventBus
from tonebridge.media.dtmf import DtmfDetectorBank
from tonebridge.media.endpoint import FRAME_SAMPLES, SILENCE, Press
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

CollectionConsumer = Callable[["Session", CollectionDone], Awaitable[None] | None]


class InbandGate:
    """Delays a leg's audio by a few frames and blanks frames that carry a DTMF tone pair (and their
    neighbours), so a tone is gone from the mix from its first sample. Classification is the detector's
    own per-block verdict, batched over every gated leg of the tick."""

    def __init__(self, delay: int = GATE_DELAY_FRAMES) -> None:
        self.frames: deque[np.ndarray] = deque([SILENCE] * delay)
        self.blank: deque[bool] = deque([False] * delay)
        self.hangover = 0
        # While the room forwards this leg's own in-band key, none of its audio may reach the mix, even
        # where the classifier loses the tone (its tail, a twist it does not accept).
        self.suppressing = False

    def push(self, frame: np.ndarray, tone: bool) -> np.ndarray:
        tone = tone or self.suppressing
        if tone:
            # Blank what is still in the line: the tone's onset precedes its first confident block.
            for i in range(len(self.blank)):
                self.blank[i] = True
            self.hangover = 2
        elif self.hangover:
            self.hangover -= 1
            tone = True
        self.frames.append(frame)
        self.blank.append(tone)
        out, blanked = self.frames.popleft(), self.blank.popleft()
        return SILENCE if blanked else out


class ConferenceService:
    def __init__(
        self, engine: CallEngine, consumer: CollectionConsumer, events: EventBus | None = None
    ) -> None:
        self.engine = engine
        self.events = events or EventBus()
        # From the end of a collection to its PIE request leaving, and to the application's answer to it.
        self.pie_sent_ms: deque[float] = deque(maxlen=PIE_LATENCY_SAMPLES)
        self.pie_answered_ms: deque[float] = deque(maxlen=PIE_LATENCY_SAMPLES)
        self.consumer = consumer
        self.rooms = r.Conferences()
        self.mixer = Mixer(FRAME_SAMPLES)
        self.members: dict[str, Session] = {}
        self._renderers: dict[str, DtmfToneRenderer] = {}
        self._gates: dict[str, InbandGate] = {}
        self._classifier = DtmfDetectorBank()
        self._moh: dict[str, object] = {}

    # Operations --------------------------------------------------------------------------------------

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
        codec = session.media.codec if session.media else "PCMU"
        self.members[call_id] = session
        self.mixer.add_leg(call_id, conference_id, codec)
        # From now on the room's tick drives this leg, not the leg's own source.
        self.engine.clock.legs.discard(session.leg)
        self._renderers[call_id] = DtmfToneRenderer()
        self._apply(effects)
        self._update_gate(call_id)
        self.engine.log_event(
            "conference_joined",
            session,
            conference_id=conference_id,
            mode=(options or DtmfOptions()).mode.value,
        )

    def leave(self, call_id: str) -> None:
        if call_id not in self.members:
            return
        self._apply(self.rooms.leave(call_id, self.engine.now()))

    def mute(self, call_id: str, conference_id: str | None = None) -> None:
        self._apply(self.rooms.mute(call_id, conference_id))

    def unmute(self, call_id: str, conference_id: str | None = None) -> None:
        self._apply(self.rooms.unmute(call_id, conference_id))

    def hold(self, call_id: str, moh: str | None = None, conference_id: str | None = None) -> None:
        self._apply(self.rooms.hold(call_id, moh, conference_id))

    def resume(self, call_id: str, conference_id: str | None = None) -> None:
        self._apply(self.rooms.resume(call_id, conference_id))

    def kick(self, call_id: str, conference_id: str | None = None) -> None:
        self._apply(self.rooms.kick(call_id, self.engine.now(), conference_id))

    def kick_all(self, conference_id: str) -> None:
        self._apply(self.rooms.kick_all(conference_id, self.engine.now()))

    def set_options(self, call_id: str, options: DtmfOptions, conference_id: str | None = None) -> None:
        self._apply(self.rooms.set_options(call_id, options, conference_id))
        self._update_gate(call_id)

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

    def collection_completed(self, call_id: str, seq: int | None = None) -> None:
        """The consumer finished with a collection (its PIE completed): the participant may return."""
        self._apply(self.rooms.pie_completed(call_id, self.engine.now(), seq))

    # The tick ----------------------------------------------------------------------------------------

    def tick(self, now: float) -> None:
        if not self.members:
            return
        frames: dict[str, np.ndarray] = {}
        gated_ids: list[str] = []
        gated_frames: list[np.ndarray] = []
        for call_id, session in self.members.items():
            frame = session.leg.receive_frame()
            if call_id in self._gates:
                gated_ids.append(call_id)
                gated_frames.append(frame)
            rendered = self._renderers[call_id].frame()
            if rendered is not None:
                frame = np.clip(frame.astype(np.int32) + rendered, -32768, 32767).astype(np.int16)
            frames[call_id] = frame
        if gated_ids:
            verdicts = self._classifier.classify(gated_ids, np.stack(gated_frames))
            for call_id, verdict in zip(gated_ids, verdicts, strict=True):
                frames[call_id] = self._gates[call_id].push(frames[call_id], bool((verdict >= 0).any()))
        heard = self.mixer.mix(frames)
        for call_id, session in list(self.members.items()):
            session.leg.send_frame(heard.get(call_id))
            session.leg.housekeeping(now)
        deadline = self.rooms.next_timer()
        if deadline is not None and deadline <= now:
            self._apply(self.rooms.handle_timer(now))

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
            case r.RenderToneEnded():
                renderer = self._renderers.get(effect.call_id)
                if renderer is not None:
                    renderer.release(effect.digit)
            case r.SuppressInband():
                gate = self._gates.get(effect.call_id)
                if gate is not None:
                    gate.suppressing = True
            case r.SuppressInbandEnded():
                gate = self._gates.get(effect.call_id)
                if gate is not None:
                    gate.suppressing = False
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
        self.pie_sent_ms.append(self._since_collection_ms(done))

    def pie_answered(self, done: CollectionDone) -> None:
        """The application accepted the collection's PIE (a 2xx, on whichever attempt)."""
        self.pie_answered_ms.append(self._since_collection_ms(done))

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
        if gated and call_id not in self._gates:
            self._gates[call_id] = InbandGate()
        elif not gated and call_id in self._gates:
            del self._gates[call_id]
            self._classifier.remove(call_id)

    def _forget(self, call_id: str) -> None:
        session = self.members.pop(call_id, None)
        if call_id in self.mixer:
            self.mixer.remove_leg(call_id)
        self._renderers.pop(call_id, None)
        if self._gates.pop(call_id, None) is not None:
            self._classifier.remove(call_id)
        if session is not None:
            session.leg.release_held_digits()
        if session is not None and session.call.active:
            # Out of the room but still on the line: its own tick takes over again.
            self.engine.clock.legs.add(session.leg)

    def participants(self, conference_id: str) -> list[dict[str, object]]:
        return self.rooms.participants_info(conference_id, self.engine.now())
