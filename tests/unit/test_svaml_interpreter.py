"""Tests for the SVAML interpreter: the operations planned for each document and call context
(docs/svaml.md lists the rules; reference notes §2.8 for which actions each callback may use)."""

from __future__ import annotations

import pytest

from tonebridge.conference.options import DtmfMode, DtmfOptions
from tonebridge.svaml.interpreter import (
    Answer,
    CallContext,
    Continue,
    DialMxp,
    DialPstn,
    DialSip,
    Hangup,
    JoinConference,
    Park,
    Play,
    RunMenu,
    SendDigits,
    SetCookie,
    StartRecording,
    StopRecording,
    plan,
)
from tonebridge.svaml.models import Prompt, RunMenuAction, SvamlError, parse_svaml

ICE = CallContext("ice", answered=False)
ACE = CallContext("ace", answered=True)
PIE = CallContext("pie", answered=True)
PATCH = CallContext("patch", answered=True)

CONF = {"name": "connectConf", "conferenceId": "room"}
MENU = {"name": "runMenu", "menus": [{"id": "main", "mainPrompt": "#tts[Hi]"}]}


def ops(document: dict[str, object], context: CallContext) -> list[object]:
    return plan(parse_svaml(document), context)


def test_ice_say_then_join_answers_before_the_prompt() -> None:
    document = {
        "instructions": [{"name": "say", "text": "Welcome", "locale": "en-GB"}],
        "action": {**CONF, "conferenceDtmfOptions": {"mode": "detect", "maxDigits": 3}, "moh": "music1"},
    }
    assert ops(document, ICE) == [
        Answer(),
        Play((Prompt("tts", "Welcome"),), "en-GB"),
        JoinConference("room", DtmfOptions(DtmfMode.DETECT, 3, 3000), "music1"),
    ]


def test_ice_join_alone_is_answered_first() -> None:
    assert ops({"action": CONF}, ICE) == [Answer(), JoinConference("room", DtmfOptions(), None)]


def test_answered_call_gets_no_answer() -> None:
    assert ops({"instructions": [{"name": "say", "text": "x"}], "action": CONF}, ACE) == [
        Play((Prompt("tts", "x"),)),
        JoinConference("room"),
    ]


def test_cookies_do_not_answer_the_call_but_the_next_prompt_does() -> None:
    document = {
        "instructions": [
            {"name": "setCookie", "key": "k", "value": "v"},
            {"name": "playFiles", "ids": ["welcome"]},
            {"name": "sendDtmf", "value": "1w2"},
        ],
        "action": {"name": "hangup"},
    }
    assert ops(document, ICE) == [
        SetCookie("k", "v"),
        Answer(),
        Play((Prompt("file", "welcome"),), None),
        SendDigits("1w2"),
        Hangup(),
    ]


def test_explicit_answer_is_kept_in_place_and_not_doubled() -> None:
    document = {
        "instructions": [{"name": "setCookie", "key": "k"}, {"name": "answer"}, {"name": "say", "text": "x"}],
        "action": CONF,
    }
    result = ops(document, ICE)
    assert result[:2] == [SetCookie("k", ""), Answer()]
    assert result.count(Answer()) == 1


def test_answer_instruction_on_an_answered_call_is_dropped() -> None:
    assert ops(
        {"instructions": [{"name": "answer"}, {"name": "answer"}], "action": {"name": "continue"}}, PATCH
    ) == [Continue()]
    unanswered = CallContext("patch", answered=False)
    assert ops({"instructions": [{"name": "answer"}, {"name": "answer"}]}, unanswered) == [
        Answer(),
        Continue(),
    ]


def test_hangup_and_bridges_do_not_answer() -> None:
    assert ops({"action": {"name": "hangup"}}, ICE) == [Hangup()]
    assert ops({"action": {"name": "connectPstn", "number": "+15551234"}}, ICE) == [
        DialPstn(number="+15551234")
    ]
    sip = {
        "name": "connectSip",
        "destination": "a@b",
        "transport": "tcp",
        "callHeaders": [{"key": "X-A", "value": "1"}],
        "maxDuration": 60,
    }
    result = ops({"action": sip}, ICE)
    assert len(result) == 1 and isinstance(result[0], DialSip)
    assert (result[0].destination, result[0].transport, result[0].max_duration) == ("a@b", "tcp", 60)
    assert result[0].call_headers[0].key == "X-A"
    mxp = ops({"action": {"name": "connectMxp", "destination": {"type": "username", "endpoint": "bob"}}}, ICE)
    assert mxp == [DialMxp("bob")]


def test_dial_pstn_carries_every_field() -> None:
    document = {
        "action": {
            "name": "connectPstn",
            "number": "+4670",
            "cli": "private",
            "maxDuration": 600,
            "dialTimeout": 20,
            "dtmf": "1#",
            "indications": "se",
            "locale": "sv-SE",
            "suppressCallbacks": True,
            "amd": {"enabled": True},
        }
    }
    (dial,) = ops(document, ICE)
    assert isinstance(dial, DialPstn)
    assert (
        dial.number,
        dial.cli,
        dial.max_duration,
        dial.dial_timeout,
        dial.dtmf,
        dial.indications,
        dial.locale,
        dial.suppress_callbacks,
    ) == ("+4670", "private", 600, 20, "1#", "se", "sv-SE", True)
    assert dial.amd is not None and dial.amd.enabled and not dial.amd.async_


def test_menu_and_park_answer_first() -> None:
    result = ops({"action": MENU}, ICE)
    assert result[0] == Answer() and isinstance(result[1], RunMenu)
    assert isinstance(result[1].menu_spec, RunMenuAction) and result[1].menu_spec.menus[0].id == "main"
    park = ops(
        {
            "action": {
                "name": "park",
                "introPrompt": "#tts[Hold on]",
                "holdPrompt": "music",
                "maxDuration": 120,
                "locale": "fr-FR",
            }
        },
        ICE,
    )
    assert park == [Answer(), Park((Prompt("tts", "Hold on"),), (Prompt("file", "music"),), "fr-FR", 120)]


def test_recording_answers_first_but_stopping_does_not() -> None:
    assert ops(
        {
            "instructions": [{"name": "startRecording", "options": {"format": "wav"}}],
            "action": {"name": "hangup"},
        },
        ICE,
    ) == [Answer(), StartRecording({"format": "wav"}), Hangup()]
    assert ops({"instructions": [{"name": "stopRecording"}], "action": {"name": "hangup"}}, ICE) == [
        StopRecording(),
        Hangup(),
    ]


def test_terminal_operation_is_always_last_and_single() -> None:
    document = {"instructions": [{"name": "say", "text": "a"}, {"name": "say", "text": "b"}], "action": MENU}
    for context in (ICE, ACE, PIE):
        result = ops(document, context)
        terminals = [op for op in result if isinstance(op, (RunMenu, Hangup, Continue, JoinConference))]
        assert terminals == [result[-1]]


def test_missing_action_defaults() -> None:
    say = {"instructions": [{"name": "say", "text": "bye"}]}
    assert ops(say, ICE)[-1] == Hangup()
    for context in (ACE, PIE, PATCH):
        assert ops(say, context)[-1] == Continue()


def test_continue_is_refused_on_ice() -> None:
    with pytest.raises(SvamlError) as info:
        ops({"action": {"name": "continue"}}, ICE)
    assert info.value.path == "action.name"


@pytest.mark.parametrize(
    "action",
    [
        CONF,
        MENU,
        {"name": "connectPstn"},
        {"name": "connectSip", "destination": "a@b"},
        {"name": "connectMxp", "destination": "bob"},
    ],
)
def test_patch_of_a_live_call_allows_only_hangup_continue_park(action: dict[str, object]) -> None:
    with pytest.raises(SvamlError) as info:
        ops({"action": action}, PATCH)
    assert info.value.path == "action.name"
    assert "hangup, continue or park" in info.value.message


def test_patch_allowed_actions() -> None:
    document = {"instructions": [{"name": "say", "text": "Cancelled"}], "action": {"name": "hangup"}}
    assert ops(document, PATCH) == [Play((Prompt("tts", "Cancelled"),)), Hangup()]
    assert ops({"action": {"name": "continue"}}, PATCH) == [Continue()]
    assert isinstance(ops({"action": {"name": "park"}}, PATCH)[-1], Park)


def test_patch_of_a_parked_call_takes_the_ice_answer() -> None:
    parked = CallContext("patch", answered=True, parked=True)
    assert ops({"action": CONF}, parked) == [JoinConference("room")]
    assert ops({"action": {"name": "continue"}}, parked) == [Continue()]


@pytest.mark.parametrize("context", [ACE, PIE])
def test_ace_and_pie_accept_every_action(context: CallContext) -> None:
    for action in (
        CONF,
        MENU,
        {"name": "hangup"},
        {"name": "continue"},
        {"name": "connectPstn"},
        {"name": "park"},
    ):
        assert ops({"action": action}, context)


def test_play_files_locale_and_prompt_order() -> None:
    document = {
        "instructions": [
            {"name": "playFiles", "ids": ["#tts[one];two", "#ssml[<speak>three</speak>]"], "locale": "sv-SE"}
        ],
        "action": {"name": "hangup"},
    }
    assert ops(document, ACE)[0] == Play(
        (Prompt("tts", "one"), Prompt("file", "two"), Prompt("ssml", "three")), "sv-SE"
    )


def test_context_rejects_unknown_events() -> None:
    with pytest.raises(ValueError):
        CallContext("dice", answered=True)  # type: ignore[arg-type]


def test_locale_is_none_when_the_document_gives_none() -> None:
    # The engine then falls back on the call's own locale (a callout's), else en-US.
    (play, _) = ops({"instructions": [{"name": "say", "text": "x"}], "action": {"name": "continue"}}, ACE)
    assert isinstance(play, Play) and play.locale is None
    (park,) = ops({"action": {"name": "park"}}, PATCH)
    assert isinstance(park, Park) and park.locale is None
    (dial,) = ops({"action": {"name": "connectPstn"}}, ICE)
    assert isinstance(dial, DialPstn) and dial.locale is None
