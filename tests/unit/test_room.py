"""Tests for conference rooms: membership, mix state, and what key presses do in each mode
(shared/spec/conference-dtmf.md §3, §4, §5). A fake clock: every time is an argument."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tonebridge.conference.collector import CollectionDone, CollectionEndReason
from tonebridge.conference.options import DtmfMode, DtmfOptions, InvalidField
from tonebridge.conference.room import (
    AlreadyJoined,
    ConferenceEnded,
    Conferences,
    ConferenceStarted,
    Effect,
    ForwardPress,
    ForwardPressEnded,
    LeftMix,
    MixState,
    NotInConference,
    OptionsChanged,
    ParticipantJoined,
    ParticipantLeft,
    ParticipantState,
    PressHandled,
    PressOutcome,
    PressSource,
    RenderTone,
    RenderToneEnded,
    ReturnedToMix,
    SuppressInband,
    SuppressInbandEnded,
    UnknownConference,
)

IGNORE = DtmfOptions()
FORWARD = DtmfOptions(DtmfMode.FORWARD)
ROOM = "myconf#1"


def detect(max_digits: int = 1, timeout_ms: int = 3000) -> DtmfOptions:
    return DtmfOptions(DtmfMode.DETECT, max_digits, timeout_ms)


def of(effects: list[Effect], kind: type) -> list:
    return [e for e in effects if isinstance(e, kind)]


def room(*members: tuple[str, DtmfOptions]) -> Conferences:
    c = Conferences()
    for i, (call_id, options) in enumerate(members):
        c.join(ROOM, call_id, cli=f"+4670000000{i}", options=options, now=float(i))
    return c


def tap(
    c: Conferences, call_id: str, digit: str, source: str, start: float, length: float = 0.1
) -> list[Effect]:
    return c.press_started(call_id, digit, source, start) + c.press_ended(call_id, start + length)


# --- membership --------------------------------------------------------------------------------------------


def test_conference_exists_from_first_join_to_last_leave() -> None:
    c = Conferences()
    assert ROOM not in c
    first = c.join(ROOM, "a", now=0.0)
    assert first[:2] == [ConferenceStarted(ROOM), ParticipantJoined("a", ROOM)]
    second = c.join(ROOM, "b", now=1.0)
    assert not of(second, ConferenceStarted)
    assert ROOM in c and len(c) == 1
    assert not of(c.leave("a", 2.0), ConferenceEnded)
    last = c.leave("b", 3.0)
    assert last[-1] == ConferenceEnded(ROOM)
    assert ROOM not in c and c.get(ROOM) is None and c.conference_ids() == []


def test_conference_ids_are_compared_exactly() -> None:
    c = Conferences()
    c.join("Room", "a")
    c.join("room", "b")
    c.join("room ", "c")
    assert sorted(c.conference_ids()) == ["Room", "room", "room "]
    assert c.alone("a") and c.alone("b") and c.alone("c")


def test_join_refuses_an_invalid_conference_id_and_moh() -> None:
    c = Conferences()
    with pytest.raises(InvalidField) as info:
        c.join("x" * 65, "a")
    assert info.value.field == "conferenceId"
    with pytest.raises(InvalidField) as info:
        c.join(ROOM, "a", moh_class="jazz")
    assert info.value.field == "mohClass"
    assert len(c) == 0


def test_joining_twice_is_an_error_and_joining_elsewhere_moves() -> None:
    c = room(("a", IGNORE), ("b", IGNORE))
    with pytest.raises(AlreadyJoined):
        c.join(ROOM, "a")
    effects = c.join("other", "a", now=5.0)
    assert ParticipantLeft("a", ROOM, "moved") in effects
    assert c.conference_of("a") == "other"
    assert [p.call_id for p in c.get(ROOM) or []] == ["b"]


def test_participants_info_has_exactly_the_five_keys() -> None:
    c = Conferences()
    c.join(ROOM, "a", cli="+46706763763", now=100.0)
    c.join(ROOM, "b", cli="+46706763762", now=110.0)
    c.mute("a")
    c.hold("b", "music2")
    info = c.participants_info(ROOM, now=135.7)
    assert info == [
        {"cli": "+46706763763", "id": "a", "duration": 35, "muted": True, "onhold": False},
        {"cli": "+46706763762", "id": "b", "duration": 25, "muted": False, "onhold": True},
    ]
    with pytest.raises(UnknownConference):
        c.participants_info("nope", 0.0)


def test_unknown_call_raises_not_in_conference() -> None:
    c = room(("a", IGNORE))
    for op in (c.mute, c.unmute, c.resume, c.hold):
        with pytest.raises(NotInConference):
            op("ghost")
    with pytest.raises(NotInConference):
        c.kick("ghost", 0.0)
    with pytest.raises(NotInConference):
        c.leave("ghost", 0.0)
    with pytest.raises(NotInConference):
        c.press_started("ghost", "1", "rfc4733", 0.0)
    with pytest.raises(NotInConference):
        c.mute("a", conference_id="another room")
    assert c.press_ended("ghost", 0.0) == []
    assert c.pie_completed("ghost", 0.0) == []


# --- mix state: alone, mute, hold ----------------------------------------------------------------------------


def test_alone_participant_hears_its_moh_class_until_someone_joins() -> None:
    c = Conferences()
    effects = c.join(ROOM, "a", moh_class="music1", now=0.0)
    assert MixState("a", ROOM, contributes=True, hears_room=True, moh="music1") in effects
    assert c.alone("a") and c.moh_for("a") == "music1"
    effects = c.join(ROOM, "b", now=1.0)
    assert MixState("a", ROOM, True, True, None) in effects
    assert MixState("b", ROOM, True, True, None) in effects
    assert not c.alone("a") and c.moh_for("a") is None
    effects = c.leave("b", 2.0)
    assert MixState("a", ROOM, True, True, "music1") in effects


def test_alone_without_moh_class_hears_nothing_special() -> None:
    c = Conferences()
    c.join(ROOM, "a")
    assert c.alone("a") and c.moh_for("a") is None and c.hears_room("a")


def test_mute_stops_contribution_only() -> None:
    c = room(("a", IGNORE), ("b", IGNORE))
    assert c.mute("a") == [MixState("a", ROOM, contributes=False, hears_room=True, moh=None)]
    assert not c.contributes("a") and c.hears_room("a")
    assert c.mute("a") == []  # no change, no effect
    assert c.unmute("a") == [MixState("a", ROOM, True, True, None)]


def test_hold_plays_moh_and_removes_from_the_mix_both_ways() -> None:
    c = room(("a", IGNORE), ("b", IGNORE))
    assert c.hold("a", "music3") == [MixState("a", ROOM, contributes=False, hears_room=False, moh="music3")]
    p = c.participant("a")
    assert p.on_hold and p.hold_moh == "music3"
    assert c.resume("a") == [MixState("a", ROOM, True, True, None)]
    assert not c.participant("a").on_hold


def test_hold_without_moh_uses_moh_class_then_default() -> None:
    c = Conferences()
    c.join(ROOM, "a", moh_class="ring")
    c.join(ROOM, "b")
    c.hold("a")
    c.hold("b")
    assert c.moh_for("a") == "ring"
    assert c.moh_for("b") == "music1"


def test_hold_refuses_unknown_moh() -> None:
    c = room(("a", IGNORE))
    with pytest.raises(InvalidField) as info:
        c.hold("a", "music9")
    assert info.value.field == "moh"
    assert not c.participant("a").on_hold


# --- ignore mode ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("source", ["rfc4733", "info"])
def test_ignore_renders_out_of_band_presses_into_the_senders_contribution(source: str) -> None:
    c = room(("a", IGNORE), ("b", IGNORE))
    started = c.press_started("a", "5", source, 1.0)
    assert started == [
        RenderTone("a", "5"),
        PressHandled("a", "5", PressSource(source), DtmfMode.IGNORE, PressOutcome.IGNORED, ROOM),
    ]
    assert c.press_ended("a", 1.2) == [RenderToneEnded("a", "5")]
    assert c.press_ended("a", 1.3) == []


def test_ignore_leaves_inband_tones_as_audio() -> None:
    c = room(("a", IGNORE), ("b", IGNORE))
    effects = tap(c, "a", "5", "inband", 1.0)
    assert effects == [
        PressHandled("a", "5", PressSource.INBAND, DtmfMode.IGNORE, PressOutcome.IGNORED, ROOM)
    ]


def test_ignore_does_not_render_for_a_muted_or_held_participant() -> None:
    c = room(("a", IGNORE), ("b", IGNORE), ("h", IGNORE))
    c.mute("a")
    c.hold("h")
    for call_id in ("a", "h"):
        effects = tap(c, call_id, "1", "rfc4733", 1.0)
        assert not of(effects, RenderTone) and not of(effects, RenderToneEnded)
        assert of(effects, PressHandled)[0].outcome is PressOutcome.IGNORED


# --- forward mode --------------------------------------------------------------------------------------------


def test_forward_reaches_every_other_participant_in_the_mix_once() -> None:
    c = room(("s", FORWARD), ("r1", IGNORE), ("r2", FORWARD), ("held", IGNORE), ("muted", IGNORE))
    c.hold("held")
    c.mute("muted")  # a muted participant still hears, so it still receives
    effects = c.press_started("s", "7", "rfc4733", 10.0)
    assert of(effects, ForwardPress) == [
        ForwardPress("r1", "7", "s"),
        ForwardPress("r2", "7", "s"),
        ForwardPress("muted", "7", "s"),
    ]
    handled = of(effects, PressHandled)
    assert len(handled) == 1
    assert handled[0].outcome is PressOutcome.FORWARDED and handled[0].receivers == ("r1", "r2", "muted")
    assert handled[0].describe() == "forwarded to 3"
    assert not of(effects, SuppressInband) and not of(effects, RenderTone)
    ended = c.press_ended("s", 10.2)
    assert ended == [
        ForwardPressEnded("r1", "7", "s"),
        ForwardPressEnded("r2", "7", "s"),
        ForwardPressEnded("muted", "7", "s"),
    ]


def test_forward_skips_collecting_and_awaiting_pie_participants() -> None:
    c = room(("s", FORWARD), ("collecting", detect(3)), ("awaiting", detect(1)), ("r", IGNORE))
    tap(c, "collecting", "1", "rfc4733", 1.0)
    tap(c, "awaiting", "1", "rfc4733", 1.0)
    assert c.participant("collecting").state is ParticipantState.COLLECTING
    assert c.participant("awaiting").state is ParticipantState.AWAITING_PIE
    effects = c.press_started("s", "2", "info", 2.0)
    assert of(effects, ForwardPress) == [ForwardPress("r", "2", "s")]


def test_forward_with_nobody_to_receive() -> None:
    c = room(("s", FORWARD))
    effects = tap(c, "s", "9", "rfc4733", 0.0)
    assert effects == [
        PressHandled("s", "9", PressSource.RFC4733, DtmfMode.FORWARD, PressOutcome.FORWARDED, ROOM)
    ]
    assert effects[0].describe() == "forwarded to 0"


def test_forward_inband_suppresses_the_senders_own_tone_in_the_mix() -> None:
    c = room(("s", FORWARD), ("r", IGNORE))
    effects = c.press_started("s", "#", "inband", 0.0)
    assert effects[0] == SuppressInband("s", "#")
    assert ForwardPress("r", "#", "s") in effects
    assert c.press_ended("s", 0.1) == [SuppressInbandEnded("s", "#"), ForwardPressEnded("r", "#", "s")]


def test_forwarded_repeated_digits_stay_separate_presses() -> None:
    c = room(("s", FORWARD), ("r", IGNORE))
    sent = []
    for i, digit in enumerate("1123"):
        sent += of(tap(c, "s", digit, "rfc4733", i * 0.2), ForwardPress)
    assert "".join(f.digit for f in sent) == "1123"


def test_receiver_that_leaves_mid_press_gets_no_end() -> None:
    c = room(("s", FORWARD), ("r1", IGNORE), ("r2", IGNORE))
    c.press_started("s", "3", "rfc4733", 0.0)
    c.leave("r1", 0.05)
    assert c.press_ended("s", 0.1) == [ForwardPressEnded("r2", "3", "s")]


def test_receiver_put_on_hold_mid_press_still_gets_its_end() -> None:
    c = room(("s", FORWARD), ("r", IGNORE))
    c.press_started("s", "3", "rfc4733", 0.0)
    c.hold("r")
    assert c.press_ended("s", 0.1) == [ForwardPressEnded("r", "3", "s")]


def test_sender_that_leaves_mid_press_ends_its_receivers_events() -> None:
    c = room(("s", FORWARD), ("r", IGNORE))
    c.press_started("s", "3", "rfc4733", 0.0)
    effects = c.leave("s", 0.05)
    assert effects[0] == ForwardPressEnded("r", "3", "s")
    assert ParticipantLeft("s", ROOM, "left") in effects


def test_a_press_without_end_is_ended_by_the_next_press() -> None:
    c = room(("s", FORWARD), ("r", IGNORE))
    c.press_started("s", "1", "rfc4733", 0.0)
    effects = c.press_started("s", "2", "rfc4733", 0.5)
    assert effects[:2] == [ForwardPressEnded("r", "1", "s"), ForwardPress("r", "2", "s")]


def test_muted_and_held_senders_still_forward() -> None:
    c = room(("s", FORWARD), ("r", IGNORE))
    c.mute("s")
    assert of(tap(c, "s", "1", "rfc4733", 0.0), ForwardPress) == [ForwardPress("r", "1", "s")]
    c.hold("s")
    assert of(tap(c, "s", "2", "rfc4733", 1.0), ForwardPress) == [ForwardPress("r", "2", "s")]


# --- detect mode ---------------------------------------------------------------------------------------------


def test_first_detect_press_takes_the_participant_out_of_the_mix_silently() -> None:
    c = room(("d", detect(3)), ("r", IGNORE))
    effects = c.press_started("d", "4", "rfc4733", 1.0)
    assert effects == [
        LeftMix("d", ROOM),
        MixState("d", ROOM, contributes=False, hears_room=False, moh=None),
        PressHandled("d", "4", PressSource.RFC4733, DtmfMode.DETECT, PressOutcome.COLLECTED, ROOM),
    ]
    assert not of(effects, ParticipantLeft) and not of(effects, ParticipantJoined)
    assert not c.hears_room("d") and not c.contributes("d")
    assert c.participant("d").state is ParticipantState.COLLECTING
    assert c.participant("d").collected == "4"


def test_detect_collects_until_timeout_then_returns_after_pie() -> None:
    c = room(("d", detect(4, 2500)), ("r", IGNORE))
    tap(c, "d", "1", "rfc4733", 1.0)
    tap(c, "d", "2", "inband", 1.5)  # ends at 1.6
    assert c.next_timer() == pytest.approx(4.1)
    assert c.handle_timer(4.0) == []
    effects = c.handle_timer(4.1)
    assert effects == [
        CollectionDone("d", ROOM, "12", seq=0, reason=CollectionEndReason.TIMEOUT, ended_at=4.1)
    ]
    assert c.participant("d").state is ParticipantState.AWAITING_PIE
    assert c.next_timer() is None
    assert c.pie_completed("d", 4.3) == [ReturnedToMix("d", ROOM), MixState("d", ROOM, True, True, None)]
    assert c.participant("d").state is ParticipantState.IN_MIX


def test_detect_hash_ends_collection_when_max_digits_above_one() -> None:
    c = room(("d", detect(4)), ("r", IGNORE))
    tap(c, "d", "9", "info", 0.0)
    effects = c.press_started("d", "#", "info", 0.5)
    handled = of(effects, PressHandled)[0]
    assert handled.outcome is PressOutcome.ENDED_COLLECTION
    done = of(effects, CollectionDone)
    assert [d.digits for d in done] == ["9"] and done[0].reason is CollectionEndReason.HASH


def test_detect_hash_is_a_digit_with_max_digits_one() -> None:
    c = room(("d", detect(1)), ("r", IGNORE))
    effects = c.press_started("d", "#", "rfc4733", 0.0)
    assert [d.digits for d in of(effects, CollectionDone)] == ["#"]


def test_detect_max_digits_ends_collection_at_the_press() -> None:
    c = room(("d", detect(2)), ("r", IGNORE))
    tap(c, "d", "4", "rfc4733", 0.0)
    effects = c.press_started("d", "2", "rfc4733", 0.5)
    done = of(effects, CollectionDone)
    assert done == [CollectionDone("d", ROOM, "42", 0, CollectionEndReason.MAX_DIGITS, 0.5)]


def test_return_to_mix_waits_for_the_last_key_to_be_released() -> None:
    # So that the tail of an in-band tone cannot leak into the mix (§3 detect 6).
    c = room(("d", detect(1)), ("r", IGNORE))
    c.press_started("d", "5", "inband", 0.0)
    assert c.pie_completed("d", 0.05) == []
    assert c.participant("d").state is ParticipantState.AWAITING_PIE
    assert c.press_ended("d", 0.2) == [ReturnedToMix("d", ROOM), MixState("d", ROOM, True, True, None)]


def test_presses_before_the_pie_completed_start_the_next_collection() -> None:
    c = room(("d", detect(2, 1000)), ("r", FORWARD))
    tap(c, "d", "1", "rfc4733", 0.0)
    first = c.press_started("d", "2", "rfc4733", 0.2)
    assert [d.digits for d in of(first, CollectionDone)] == ["12"]
    c.press_ended("d", 0.3)
    # PIE for "12" still in flight: the next key is not lost and not heard.
    effects = tap(c, "d", "3", "inband", 0.5)
    assert not of(effects, ReturnedToMix) and not of(effects, MixState)
    assert of(effects, PressHandled)[0].outcome is PressOutcome.COLLECTED
    assert c.participant("d").state is ParticipantState.COLLECTING
    # The first PIE completes while the second collection runs: stay out.
    assert c.pie_completed("d", 0.7) == []
    assert not c.hears_room("d")
    second = c.handle_timer(1.6)
    assert second == [CollectionDone("d", ROOM, "3", seq=1, reason=CollectionEndReason.TIMEOUT, ended_at=1.6)]
    assert of(c.pie_completed("d", 1.8), ReturnedToMix) == [ReturnedToMix("d", ROOM)]


def test_several_pending_pies_return_after_the_last() -> None:
    c = room(("d", detect(1)), ("r", IGNORE))
    seqs = []
    for i, digit in enumerate("789"):
        seqs += [d.seq for d in of(tap(c, "d", digit, "rfc4733", i * 0.3), CollectionDone)]
    assert seqs == [0, 1, 2]
    assert c.participant("d").pending_pies == (0, 1, 2)
    assert c.pie_completed("d", 2.0) == []  # the oldest
    assert c.pie_completed("d", 2.1, seq=0) == []  # a repeat: no change
    assert c.participant("d").pending_pies == (1, 2)
    assert of(c.pie_completed("d", 2.2, seq=2), ReturnedToMix)  # in order: 2 implies 1
    assert c.pie_completed("d", 2.3) == []


def test_others_do_not_hear_or_receive_from_a_collecting_participant() -> None:
    c = room(("d", detect(2)), ("f", FORWARD))
    c.press_started("d", "1", "rfc4733", 0.0)
    assert not c.contributes("d")
    effects = tap(c, "f", "5", "rfc4733", 0.1)
    assert not of(effects, ForwardPress)


def test_detect_press_while_muted_still_collects() -> None:
    c = room(("d", detect(1)), ("r", IGNORE))
    c.mute("d")
    effects = c.press_started("d", "3", "rfc4733", 0.0)
    assert [d.digits for d in of(effects, CollectionDone)] == ["3"]
    assert of(effects, LeftMix) == [LeftMix("d", ROOM)]
    c.press_ended("d", 0.1)
    c.pie_completed("d", 0.2)
    assert c.mix_state("d") == MixState("d", ROOM, contributes=False, hears_room=True, moh=None)


def test_detect_press_while_held_collects_and_keeps_hearing_moh() -> None:
    c = room(("d", detect(1)), ("r", IGNORE))
    c.hold("d", "music2")
    effects = tap(c, "d", "3", "rfc4733", 0.0)
    assert [d.digits for d in of(effects, CollectionDone)] == ["3"]
    assert c.moh_for("d") == "music2"
    assert not of(effects, MixState)  # held already: nothing changes for the mixer


def test_alone_detect_participant_loses_moh_while_collecting() -> None:
    c = Conferences()
    c.join(ROOM, "d", options=detect(2), moh_class="music1")
    effects = c.press_started("d", "1", "rfc4733", 0.0)
    assert MixState("d", ROOM, False, False, None) in effects


# --- options changed during the call -------------------------------------------------------------------------


def test_new_options_apply_from_the_next_press() -> None:
    c = room(("a", IGNORE), ("r", IGNORE))
    assert c.set_options("a", detect(1)) == [OptionsChanged("a", ROOM, detect(1))]
    effects = c.press_started("a", "6", "rfc4733", 0.0)
    assert [d.digits for d in of(effects, CollectionDone)] == ["6"]


def test_a_collection_under_way_keeps_its_options() -> None:
    c = room(("d", detect(3, 1000)), ("r", IGNORE))
    tap(c, "d", "1", "rfc4733", 0.0)
    c.set_options("d", FORWARD)
    effects = tap(c, "d", "2", "rfc4733", 0.5)
    assert not of(effects, ForwardPress)
    assert of(effects, PressHandled)[0].mode is DtmfMode.DETECT
    done = c.handle_timer(1.6)
    assert [d.digits for d in of(done, CollectionDone)] == ["12"]
    c.pie_completed("d", 1.7)
    # Back in the mix, the new mode decides.
    assert of(tap(c, "d", "3", "rfc4733", 2.0), ForwardPress) == [ForwardPress("r", "3", "d")]


def test_changed_max_digits_applies_to_the_next_collection() -> None:
    c = room(("d", detect(1)), ("r", IGNORE))
    tap(c, "d", "1", "rfc4733", 0.0)
    c.pie_completed("d", 0.2)
    c.set_options("d", detect(2))
    tap(c, "d", "1", "rfc4733", 1.0)
    done = of(tap(c, "d", "2", "rfc4733", 1.2), CollectionDone)
    assert [d.digits for d in done] == ["12"]


# --- leaving while collecting --------------------------------------------------------------------------------


@pytest.mark.parametrize("how", ["kick", "leave"])
def test_leaving_while_collecting_sends_digits_so_far_first(how: str) -> None:
    c = room(("d", detect(4)), ("r", IGNORE))
    tap(c, "d", "1", "rfc4733", 0.0)
    tap(c, "d", "2", "rfc4733", 0.3)
    effects = getattr(c, how)("d", 0.5)
    assert effects[0] == CollectionDone("d", ROOM, "12", seq=0, reason=CollectionEndReason.LEFT, ended_at=0.5)
    reason = "kicked" if how == "kick" else "left"
    assert effects[1] == ParticipantLeft("d", ROOM, reason)
    assert c.next_timer() is None
    assert c.conference_of("d") is None


def test_leaving_with_nothing_collected_sends_no_pie() -> None:
    c = room(("d", detect(3)), ("r", IGNORE))
    c.press_started("d", "#", "rfc4733", 0.0)  # "#" first: an empty collection already ended
    c.press_ended("d", 0.1)
    effects = c.kick("d", 0.5)
    assert not of(effects, CollectionDone)


def test_kick_checks_the_conference_named() -> None:
    c = room(("a", IGNORE))
    with pytest.raises(NotInConference):
        c.kick("a", 0.0, conference_id="other")
    assert of(c.kick("a", 0.0, conference_id=ROOM), ParticipantLeft)


def test_kick_all_kicks_everyone_and_ends_the_conference() -> None:
    c = room(("a", detect(4)), ("b", IGNORE), ("c", FORWARD))
    tap(c, "a", "8", "rfc4733", 0.0)
    effects = c.kick_all(ROOM, 1.0)
    assert effects[0] == CollectionDone("a", ROOM, "8", 0, CollectionEndReason.LEFT, 1.0)
    assert [e.call_id for e in of(effects, ParticipantLeft)] == ["a", "b", "c"]
    assert all(e.reason == "kicked" for e in of(effects, ParticipantLeft))
    assert effects[-1] == ConferenceEnded(ROOM)
    assert ROOM not in c
    with pytest.raises(UnknownConference):
        c.kick_all(ROOM, 2.0)


def test_last_one_left_hears_its_moh_again() -> None:
    c = Conferences()
    c.join(ROOM, "a", moh_class="music2", now=0.0)
    c.join(ROOM, "b", now=1.0)
    effects = c.kick("b", 2.0)
    assert effects == [ParticipantLeft("b", ROOM, "kicked"), MixState("a", ROOM, True, True, "music2")]


def test_pie_completed_after_leaving_is_ignored() -> None:
    c = room(("d", detect(1)), ("r", IGNORE))
    tap(c, "d", "1", "rfc4733", 0.0)
    c.leave("d", 0.1)
    assert c.pie_completed("d", 0.2) == []


# --- timers --------------------------------------------------------------------------------------------------


def test_timers_across_participants_fire_in_deadline_order() -> None:
    c = room(("a", detect(4, 1000)), ("b", detect(4, 500)), ("r", IGNORE))
    tap(c, "a", "1", "rfc4733", 0.0)  # deadline 1.1
    tap(c, "b", "2", "rfc4733", 0.0)  # deadline 0.6
    assert c.next_timer() == pytest.approx(0.6)
    effects = c.handle_timer(5.0)
    assert [d.call_id for d in of(effects, CollectionDone)] == ["b", "a"]
    assert c.next_timer() is None


def test_no_timer_without_collections() -> None:
    assert room(("a", IGNORE)).next_timer() is None
    assert room(("a", IGNORE)).handle_timer(100.0) == []


# --- validation ----------------------------------------------------------------------------------------------


def test_bad_source_and_digit_are_refused() -> None:
    c = room(("a", IGNORE))
    with pytest.raises(ValueError):
        c.press_started("a", "1", "sms", 0.0)
    with pytest.raises(ValueError):
        c.press_started("a", "G", "rfc4733", 0.0)


# --- properties ----------------------------------------------------------------------------------------------

_ops = st.lists(
    st.tuples(
        st.sampled_from(["press", "wait", "pie", "hold", "resume", "mute", "unmute"]),
        st.sampled_from(["d", "f", "i"]),
        st.sampled_from("0123456789*ABCD"),
        st.floats(0.0, 3.0),
    ),
    max_size=60,
)


@settings(max_examples=150, deadline=None)
@given(_ops, st.integers(1, 5))
def test_no_detect_press_is_lost_and_forwards_balance(ops: list, max_digits: int) -> None:
    c = room(("d", detect(max_digits, 1000)), ("f", FORWARD), ("i", IGNORE))
    now = 0.0
    effects: list[Effect] = []
    pressed_by_d = []
    for op, who, digit, dt in ops:
        now += dt
        effects += c.handle_timer(now)
        if op == "press":
            if who == "d":
                pressed_by_d.append(digit)
            effects += c.press_started(who, digit, "rfc4733", now)
            now += 0.05
            effects += c.handle_timer(now)
            effects += c.press_ended(who, now)
        elif op == "pie":
            effects += c.pie_completed("d", now)
        elif op in ("hold", "mute"):
            effects += getattr(c, op)(who)
        elif op in ("resume", "unmute"):
            effects += getattr(c, op)(who)
        # Invariants at every step.
        for call_id in "dfi":
            state = c.mix_state(call_id)
            assert not state.contributes or state.hears_room
            if c.participant(call_id).state is not ParticipantState.IN_MIX:
                assert not state.contributes and not state.hears_room
    effects += c.kick_all(ROOM, now + 10)
    collected = "".join(d.digits for d in of(effects, CollectionDone) if d.call_id == "d")
    assert collected == "".join(pressed_by_d)
    seqs = [d.seq for d in of(effects, CollectionDone)]
    assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs)
    starts = [(e.to_call_id, e.from_call_id) for e in of(effects, ForwardPress)]
    ends = [(e.to_call_id, e.from_call_id) for e in of(effects, ForwardPressEnded)]
    assert sorted(starts) == sorted(ends)
    assert not any(e.to_call_id == e.from_call_id for e in of(effects, ForwardPress))
