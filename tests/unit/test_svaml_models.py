"""Tests for SVAML parsing (sinch-voice-v1.md §4; reference notes §3): names in any case, camelCase and
the SDK 1.1.4's snake_case, tolerant reading, limits, and errors that name the field path."""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tonebridge.conference.options import DtmfMode, DtmfOptions
from tonebridge.svaml.models import (
    AnswerInstruction,
    ConnectConfAction,
    ConnectMxpAction,
    ConnectPstnAction,
    ConnectSipAction,
    ContinueAction,
    HangupAction,
    OptionAction,
    ParkAction,
    PlayFilesInstruction,
    Prompt,
    RunMenuAction,
    SayInstruction,
    SendDtmfInstruction,
    SetCookieInstruction,
    StartRecordingInstruction,
    StopRecordingInstruction,
    SvamlError,
    UnknownName,
    format_prompts,
    parse_prompts,
    parse_svaml,
)


def action(**fields: object) -> object:
    return parse_svaml({"action": fields}).action


def error_of(document: object) -> SvamlError:
    with pytest.raises(SvamlError) as info:
        parse_svaml(document)
    return info.value


# -- envelope ---------------------------------------------------------------------------------------


def test_empty_document_has_no_instructions_and_no_action() -> None:
    svaml = parse_svaml({})
    assert svaml.instructions == [] and svaml.action is None
    assert parse_svaml({"instructions": None, "action": None}).action is None


def test_json_text_and_bytes_are_decoded() -> None:
    text = '{"instructions":[{"name":"say","text":"Hi"}],"action":{"name":"hangup"}}'
    for document in (text, text.encode()):
        svaml = parse_svaml(document)
        assert isinstance(svaml.instructions[0], SayInstruction)
        assert isinstance(svaml.action, HangupAction)


def test_invalid_json_and_non_objects_are_errors() -> None:
    assert "not valid JSON" in error_of("{nope").message
    assert error_of([1, 2]).path == ""
    assert error_of({"instructions": {"name": "say"}}).path == "instructions"
    assert error_of({"instructions": [5]}).path == "instructions[0]"
    assert error_of({"action": {"text": "x"}}).path == "action.name"
    assert error_of({"action": {"name": 3}}).path == "action.name"


@pytest.mark.parametrize(
    ("name", "cls"),
    [
        ("hangup", HangupAction),
        ("Hangup", HangupAction),
        ("continue", ContinueAction),
        ("ConnectConf", ConnectConfAction),
        ("connectconf", ConnectConfAction),
        ("connectPSTN", ConnectPstnAction),
        ("connectSIP", ConnectSipAction),
        ("connectMXP", ConnectMxpAction),
        ("RunMenu", RunMenuAction),
        ("runmenu", RunMenuAction),
        ("PARK", ParkAction),
    ],
)
def test_action_names_ignore_case(name: str, cls: type) -> None:
    fields: dict[str, object] = {
        ConnectConfAction: {"conferenceId": "c"},
        ConnectSipAction: {"destination": "a@b"},
        ConnectMxpAction: {"destination": "bob"},
        RunMenuAction: {"menus": [{"id": "main"}]},
    }.get(cls, {})
    assert type(action(name=name, **fields)) is cls


@pytest.mark.parametrize(
    ("item", "cls"),
    [
        ({"name": "Say", "text": "hi"}, SayInstruction),
        ({"name": "playfiles", "ids": ["a"]}, PlayFilesInstruction),
        ({"name": "SENDDTMF", "value": "1"}, SendDtmfInstruction),
        ({"name": "SetCookie", "key": "k", "value": "v"}, SetCookieInstruction),
        ({"name": "setcookie", "key": "k"}, SetCookieInstruction),
        ({"name": "Answer"}, AnswerInstruction),
        ({"name": "StartRecording"}, StartRecordingInstruction),
        ({"name": "stoprecording"}, StopRecordingInstruction),
    ],
)
def test_instruction_names_ignore_case(item: dict[str, object], cls: type) -> None:
    assert type(parse_svaml({"instructions": [item]}).instructions[0]) is cls


def test_unknown_names_raise_unknown_name_with_path() -> None:
    err = error_of({"instructions": [{"name": "say", "text": "a"}, {"name": "dance"}]})
    assert isinstance(err, UnknownName) and err.path == "instructions[1].name" and err.name == "dance"
    err = error_of({"action": {"name": "teleport"}})
    assert isinstance(err, UnknownName) and err.path == "action.name"
    # Known to Sinch but not run here: the same error kind, so the engine applies its default.
    err = error_of({"action": {"name": "connectStream", "destination": {"endpoint": "wss://x"}}})
    assert isinstance(err, UnknownName) and "not supported" in err.message


def test_unknown_fields_and_nulls_are_ignored() -> None:
    conf = action(
        name="connectConf",
        conferenceId="c",
        cli="123",
        suppressCallbacks=True,
        record=None,
        moh=None,
        conferenceDtmfOptions=None,
    )
    assert conf == ConnectConfAction(conference_id="c")


def test_to_json_round_trips_in_camel_case() -> None:
    document = {
        "instructions": [
            {"name": "say", "text": "Hello", "locale": "en-GB"},
            {"name": "playFiles", "ids": ["#tts[Hi]", "welcome"]},
            {"name": "setCookie", "key": "k", "value": "v"},
        ],
        "action": {
            "name": "runMenu",
            "barge": False,
            "menus": [
                {
                    "id": "main",
                    "mainPrompt": "#tts[Press 1]",
                    "options": [{"dtmf": "1", "action": "return(one)"}],
                }
            ],
        },
    }
    svaml = parse_svaml(document)
    dumped = svaml.to_json()
    assert dumped["action"]["menus"][0]["mainPrompt"] == "#tts[Press 1]"
    assert dumped["action"]["menus"][0]["options"][0] == {"dtmf": "1", "action": "return(one)"}
    assert "mainPrompt" in json.dumps(dumped) and "main_prompt" not in json.dumps(dumped)
    assert parse_svaml(dumped) == svaml


# -- connectConf ------------------------------------------------------------------------------------


def test_connect_conf_camel_case() -> None:
    conf = action(
        name="connectConf",
        conferenceId="myconf#1",
        conferenceDtmfOptions={"mode": "detect", "maxDigits": 4, "timeoutMills": 2500},
        moh="music2",
    )
    assert conf == ConnectConfAction(
        conference_id="myconf#1", conference_dtmf_options=DtmfOptions(DtmfMode.DETECT, 4, 2500), moh="music2"
    )


def test_connect_conf_sdk_snake_case() -> None:
    # What ConnectConfAction of the Python SDK 1.1.4 sends, unconverted.
    conf = action(
        name="connectConf",
        conference_id="room",
        conference_dtmf_options={"mode": "forward", "max_digits": 2, "timeout_mills": 4000},
    )
    assert isinstance(conf, ConnectConfAction)
    assert conf.conference_id == "room"
    assert conf.conference_dtmf_options == DtmfOptions(DtmfMode.FORWARD, 2, 4000)


def test_connect_conf_seed_spelling_and_legacy_dtmf_mode() -> None:
    conf = action(
        name="ConnectConf", conferenceId="c", conferenceDtmfOptions={"mode": "detect", "timoutMills": 2500}
    )
    assert isinstance(conf, ConnectConfAction) and conf.conference_dtmf_options.timeout_ms == 2500
    legacy = action(name="connectConf", conferenceId="c", dtmfMode="Forward")
    assert isinstance(legacy, ConnectConfAction) and legacy.conference_dtmf_options.mode is DtmfMode.FORWARD


def test_camel_case_wins_over_snake_case() -> None:
    conf = action(name="connectConf", conferenceId="camel", conference_id="snake")
    assert isinstance(conf, ConnectConfAction) and conf.conference_id == "camel"


@pytest.mark.parametrize(
    ("fields", "path"),
    [
        ({}, "action.conferenceId"),
        ({"conferenceId": ""}, "action.conferenceId"),
        ({"conferenceId": "x" * 65}, "action.conferenceId"),
        ({"conferenceId": 7}, "action.conferenceId"),
        (
            {"conferenceId": "c", "conferenceDtmfOptions": {"maxDigits": 0}},
            "action.conferenceDtmfOptions.maxDigits",
        ),
        (
            {"conferenceId": "c", "conferenceDtmfOptions": {"mode": "shout"}},
            "action.conferenceDtmfOptions.mode",
        ),
        (
            {"conferenceId": "c", "conferenceDtmfOptions": {"timoutMills": 5}},
            "action.conferenceDtmfOptions.timoutMills",
        ),
        (
            {"conference_id": "c", "conference_dtmf_options": {"max_digits": 99}},
            "action.conference_dtmf_options.max_digits",
        ),
        ({"conferenceId": "c", "conferenceDtmfOptions": [1]}, "action.conferenceDtmfOptions"),
        ({"conferenceId": "c", "moh": "jazz"}, "action.moh"),
    ],
)
def test_connect_conf_errors_name_the_path(fields: dict[str, object], path: str) -> None:
    err = error_of({"action": {"name": "connectConf", **fields}})
    assert err.path == path
    assert not isinstance(err, UnknownName)
    assert str(err).startswith(path + ": ")


# -- connectPstn, connectSip, connectMxp, park -----------------------------------------------------


def test_connect_pstn_all_fields_in_both_spellings() -> None:
    camel = action(
        name="connectPstn",
        number="+46700000000",
        cli="private",
        maxDuration=3600,
        dialTimeout=30,
        dtmf="1w2#",
        indications="SE",
        locale="sv-SE",
        suppressCallbacks=True,
        amd={"enabled": True, "async": True},
    )
    snake = action(
        name="connectpstn",
        number="+46700000000",
        cli="private",
        max_duration=3600,
        dial_timeout=30,
        dtmf="1W2#",
        indications="se",
        locale="sv-SE",
        suppress_callbacks=True,
        amd={"enabled": True, "async": True},
    )
    assert camel == snake
    assert isinstance(camel, ConnectPstnAction)
    assert camel.indications == "se" and camel.dtmf == "1w2#" and camel.amd is not None and camel.amd.async_


def test_connect_pstn_defaults_and_errors() -> None:
    pstn = action(name="connectPstn", indications=False)
    assert pstn == ConnectPstnAction()
    assert error_of({"action": {"name": "connectPstn", "maxDuration": 14401}}).path == "action.maxDuration"
    assert error_of({"action": {"name": "connectPstn", "max_duration": "60"}}).path == "action.max_duration"
    assert error_of({"action": {"name": "connectPstn", "number": "call me"}}).path == "action.number"
    assert error_of({"action": {"name": "connectPstn", "dtmf": "12x"}}).path == "action.dtmf"
    assert (
        error_of({"action": {"name": "connectPstn", "suppressCallbacks": "yes"}}).path
        == "action.suppressCallbacks"
    )
    # A CR/LF in anything that reaches a SIP header would inject header lines (RFC 3261 §7.3.1).
    assert error_of({"action": {"name": "connectPstn", "cli": "1\r\nX-Evil: 1"}}).path == "action.cli"


def test_connect_sip() -> None:
    sip = action(
        name="connectSip",
        destination={"type": "sip", "endpoint": "alice@example.org"},
        cli="+1555",
        transport="TLS",
        callHeaders=[{"key": "X-Ref", "value": "42"}],
        moh="ring",
    )
    assert isinstance(sip, ConnectSipAction)
    assert sip.destination.endpoint == "alice@example.org" and sip.transport == "tls"
    assert sip.call_headers[0].key == "X-Ref" and sip.call_headers[0].value == "42"
    bare = action(
        name="connectSip", destination="bob@example.org", call_headers=[{"key": "X-A", "value": "1"}]
    )
    assert isinstance(bare, ConnectSipAction) and bare.destination.endpoint == "bob@example.org"
    assert bare.transport == "udp" and bare.call_headers[0].key == "X-A"


@pytest.mark.parametrize(
    ("fields", "path"),
    [
        ({}, "action.destination"),
        ({"destination": {"type": "sip"}}, "action.destination.endpoint"),
        ({"destination": ""}, "action.destination.endpoint"),
        ({"destination": "a@b", "transport": "sctp"}, "action.transport"),
        (
            {"destination": "a@b", "callHeaders": [{"key": "X-A"}, {"key": "bad key"}]},
            "action.callHeaders[1].key",
        ),
        (
            {"destination": "a@b", "callHeaders": [{"key": "X-A", "value": "a\nb"}]},
            "action.callHeaders[0].value",
        ),
        (
            {"destination": "a@b", "callHeaders": [{"key": "X-A", "value": "v" * 1022}]},
            "action.callHeaders[0].value",
        ),
        ({"destination": "a@b", "moh": "silence"}, "action.moh"),
    ],
)
def test_connect_sip_errors(fields: dict[str, object], path: str) -> None:
    assert error_of({"action": {"name": "connectSip", **fields}}).path == path


def test_call_header_limit_is_1024_bytes_of_key_and_value() -> None:
    ok = action(name="connectSip", destination="a@b", callHeaders=[{"key": "X-A", "value": "v" * 1021}])
    assert isinstance(ok, ConnectSipAction)
    # Bytes, not characters: "é" is two bytes in UTF-8.
    err = error_of(
        {
            "action": {
                "name": "connectSip",
                "destination": "a@b",
                "callHeaders": [{"key": "X-A", "value": "é" * 511}],
            }
        }
    )
    assert err.path == "action.callHeaders[0].value" and "1025 bytes" in err.message


def test_connect_mxp_accepts_the_java_sdk_lower_case_callheaders() -> None:
    for key in ("callHeaders", "callheaders", "call_headers"):
        mxp = action(
            name="connectMxp",
            destination={"type": "username", "endpoint": "bob"},
            **{key: [{"key": "X-A", "value": "1"}]},
        )
        assert isinstance(mxp, ConnectMxpAction) and mxp.call_headers[0].value == "1"


def test_park() -> None:
    park = action(name="park", introPrompt="#tts[Please hold]", holdPrompt="music", locale="en-GB")
    assert isinstance(park, ParkAction)
    assert park.intro_prompt == (Prompt("tts", "Please hold"),)
    assert park.hold_prompt == (Prompt("file", "music"),)
    assert park.max_duration == 600
    assert action(name="park", max_duration=30) == ParkAction(max_duration=30)
    assert error_of({"action": {"name": "park", "maxDuration": 601}}).path == "action.maxDuration"
    assert error_of({"action": {"name": "park", "introPrompt": "#tts[open"}}).path == "action.introPrompt"


# -- runMenu ----------------------------------------------------------------------------------------


def menu_doc(**fields: object) -> dict[str, object]:
    base: dict[str, object] = {
        "name": "runMenu",
        "menus": [
            {
                "id": "main",
                "mainPrompt": "#tts[Press 1 for sales, 2 for the PIN menu]",
                "repeatPrompt": "#tts[Sorry]",
                "repeats": 2,
                "options": [{"dtmf": "1", "action": "return(sales)"}, {"dtmf": "2", "action": "menu(pin)"}],
            },
            {"id": "pin", "mainPrompt": "#tts[Enter your PIN]", "maxDigits": 4, "timeoutMills": 3000},
        ],
    }
    base.update(fields)
    return {"action": base}


def test_run_menu_parses_everything() -> None:
    run = parse_svaml(menu_doc(locale="sv-SE")).action
    assert isinstance(run, RunMenuAction)
    assert run.barge is True and run.enable_voice is False and run.start_menu_id == "main"
    main, pin = run.menus
    assert main.main_prompt == (Prompt("tts", "Press 1 for sales, 2 for the PIN menu"),)
    assert main.repeats == 2 and main.timeout_mills == 5000 and main.max_timeout_mills == 20000
    assert main.options[0].action == OptionAction("return", "sales")
    assert main.options[1].action == OptionAction("menu", "pin")
    assert pin.max_digits == 4 and pin.collects and not main.collects
    assert run.menu("pin") is pin


def test_run_menu_snake_case_and_aliases() -> None:
    doc = {
        "action": {
            "name": "runmenu",
            "badge": False,  # the .NET SDK's spelling of barge
            "main_menu": "start",
            "enable_voice": True,
            "menus": [
                {
                    "id": "start",
                    "main_prompt": "hello",
                    "repeat_prompt": "again",
                    "max_digits": 3,
                    "timeout_mills": 1000,
                    "max_timeout_mills": 9000,
                    "options": [{"dtmf": 7, "action": "Return ( seven )"}],
                },
            ],
        }
    }
    run = parse_svaml(doc).action
    assert isinstance(run, RunMenuAction)
    assert run.barge is False and run.enable_voice and run.start_menu_id == "start"
    menu = run.menus[0]
    assert (menu.max_digits, menu.timeout_mills, menu.max_timeout_mills) == (3, 1000, 9000)
    assert menu.options[0].dtmf == "7" and menu.options[0].action == OptionAction("return", "seven")


@pytest.mark.parametrize(
    ("change", "path"),
    [
        ({"mainMenu": "nowhere"}, "action.mainMenu"),
        ({"menus": []}, "action.menus"),
        ({"menus": [{"id": "other"}]}, "action.mainMenu"),
        ({"menus": [{"id": "main"}, {"id": "main"}]}, "action.menus[1].id"),
        (
            {"menus": [{"id": "main", "options": [{"dtmf": "1", "action": "menu(gone)"}]}]},
            "action.menus[0].options[0].action",
        ),
        (
            {"menus": [{"id": "main", "options": [{"dtmf": "1", "action": "jump(x)"}]}]},
            "action.menus[0].options[0].action",
        ),
        (
            {"menus": [{"id": "main", "options": [{"dtmf": "x", "action": "return(a)"}]}]},
            "action.menus[0].options[0].dtmf",
        ),
        (
            {
                "menus": [
                    {
                        "id": "main",
                        "options": [
                            {"dtmf": "1", "action": "return(a)"},
                            {"dtmf": "1", "action": "return(b)"},
                        ],
                    }
                ]
            },
            "action.menus[0].options[1].dtmf",
        ),
        (
            {"menus": [{"id": "main", "options": [{"dtmf": "12", "action": "return(a)"}]}]},
            "action.menus[0].options[0].dtmf",
        ),
        ({"menus": [{"id": "main", "maxDigits": 0}]}, "action.menus[0].maxDigits"),
        ({"menus": [{"id": "main", "timeoutMills": 10}]}, "action.menus[0].timeoutMills"),
        ({"menus": [{"id": "main", "mainPrompt": "#bogus[x]"}]}, "action.menus[0].mainPrompt"),
        ({"menus": [{"id": "main", "repeats": -1}]}, "action.menus[0].repeats"),
        ({"menus": [{"id": ""}]}, "action.menus[0].id"),
        ({"barge": "no"}, "action.barge"),
    ],
)
def test_run_menu_errors(change: dict[str, object], path: str) -> None:
    doc = menu_doc()
    doc["action"].update(change)  # type: ignore[attr-defined]
    assert error_of(doc).path == path


def test_multi_key_options_are_allowed_in_collecting_menus() -> None:
    doc = {
        "action": {
            "name": "runMenu",
            "menus": [
                {"id": "main", "maxDigits": 4, "options": [{"dtmf": "1234", "action": "return(secret)"}]}
            ],
        }
    }
    run = parse_svaml(doc).action
    assert isinstance(run, RunMenuAction) and run.menus[0].options[0].dtmf == "1234"


# -- instructions and limits -----------------------------------------------------------------------


def test_instructions_parse() -> None:
    svaml = parse_svaml(
        {
            "instructions": [
                {
                    "name": "playFiles",
                    "ids": ["#tts[Hello]", "welcome;#href[https://x.example/a.wav]"],
                    "locale": "en-GB",
                },
                {"name": "say", "text": "Goodbye", "locale": "de-DE"},
                {"name": "sendDtmf", "value": "12w#*ab"},
                {"name": "setCookie", "key": "step", "value": "2"},
                {"name": "answer"},
                {"name": "startRecording", "options": {"destinationUrl": "s3://bucket/"}},
                {"name": "stopRecording"},
            ]
        }
    )
    play, say, dtmf, cookie, _answer, start, _stop = svaml.instructions
    assert isinstance(play, PlayFilesInstruction)
    assert play.prompts == (
        Prompt("tts", "Hello"),
        Prompt("file", "welcome"),
        Prompt("href", "https://x.example/a.wav"),
    )
    assert isinstance(say, SayInstruction) and (say.text, say.locale) == ("Goodbye", "de-DE")
    assert isinstance(dtmf, SendDtmfInstruction) and dtmf.value == "12w#*AB"
    assert isinstance(cookie, SetCookieInstruction) and (cookie.key, cookie.value) == ("step", "2")
    assert isinstance(start, StartRecordingInstruction) and start.options == {
        "destinationUrl": "s3://bucket/"
    }


def test_legacy_recording_action_becomes_instruction_then_continue() -> None:
    svaml = parse_svaml({"action": {"name": "startRecording", "recordingOptions": {"format": "wav"}}})
    assert isinstance(svaml.instructions[-1], StartRecordingInstruction)
    assert svaml.instructions[-1].options == {"format": "wav"}
    assert isinstance(svaml.action, ContinueAction)


def test_text_limit_is_600_characters() -> None:
    assert parse_svaml({"instructions": [{"name": "say", "text": "é" * 600}]}).instructions
    err = error_of({"instructions": [{"name": "say", "text": "a" * 601}]})
    assert err.path == "instructions[0].text" and "600" in err.message
    err = error_of(
        {
            "instructions": [
                {"name": "playFiles", "ids": ["#tts[" + "a" * 400 + "]", "#tts[" + "b" * 201 + "]"]}
            ]
        }
    )
    assert err.path == "instructions[0].ids"
    err = error_of(menu_doc(menus=[{"id": "main", "mainPrompt": "#tts[" + "a" * 601 + "]"}]))
    assert err.path == "action.menus[0].mainPrompt"


def test_cookie_limit_is_1024_bytes() -> None:
    assert parse_svaml(
        {"instructions": [{"name": "setCookie", "key": "k", "value": "v" * 1023}]}
    ).instructions
    err = error_of({"instructions": [{"name": "setCookie", "key": "k", "value": "v" * 1024}]})
    assert err.path == "instructions[0].value"
    # All cookies of one document together.
    err = error_of(
        {
            "instructions": [
                {"name": "setCookie", "key": "a", "value": "v" * 600},
                {"name": "setCookie", "key": "b", "value": "v" * 600},
            ]
        }
    )
    assert err.path == "instructions"
    assert error_of({"instructions": [{"name": "setCookie", "key": ""}]}).path == "instructions[0].key"


@pytest.mark.parametrize(
    ("item", "path"),
    [
        ({"name": "say"}, "instructions[0].text"),
        ({"name": "say", "text": 5}, "instructions[0].text"),
        ({"name": "say", "text": "x", "locale": "english please"}, "instructions[0].locale"),
        ({"name": "playFiles"}, "instructions[0].ids"),
        ({"name": "playFiles", "ids": "welcome"}, "instructions[0].ids"),
        ({"name": "playFiles", "ids": ["ok", "#ssml[<speak>x</speak>"]}, "instructions[0].ids[1]"),
        ({"name": "sendDtmf", "value": ""}, "instructions[0].value"),
        ({"name": "sendDtmf", "value": "12e"}, "instructions[0].value"),
        ({"name": "setCookie", "value": "v"}, "instructions[0].key"),
    ],
)
def test_instruction_errors(item: dict[str, object], path: str) -> None:
    assert error_of({"instructions": [item]}).path == path


# -- prompts ----------------------------------------------------------------------------------------


def test_prompt_forms() -> None:
    assert parse_prompts("#tts[Hello];welcome; #href[https://h/a.mp3];https://h/b.wav") == [
        Prompt("tts", "Hello"),
        Prompt("file", "welcome"),
        Prompt("href", "https://h/a.mp3"),
        Prompt("href", "https://h/b.wav"),
    ]


def test_prompt_kinds_ignore_case_and_brackets_and_semicolons_inside_text() -> None:
    assert parse_prompts("#TTS[Press [1]; or wait];#Tts[then]") == [
        Prompt("tts", "Press [1]; or wait"),
        Prompt("tts", "then"),
    ]


def test_ssml_is_read_as_text() -> None:
    prompts = parse_prompts(
        '#ssml[<speak>Hello <break time="1s"/><emphasis>there</emphasis> &amp; bye</speak>]'
    )
    assert prompts == [Prompt("ssml", "Hello there & bye")]
    assert prompts[0].is_speech


def test_empty_parts_are_skipped() -> None:
    assert parse_prompts("") == []
    assert parse_prompts(" ; ;#tts[]; a ;") == [Prompt("file", "a")]


@pytest.mark.parametrize("text", ["#tts[never closed", "#beep[x]", "#href[ ]", "#tts[a] b"])
def test_bad_prompts(text: str) -> None:
    with pytest.raises(SvamlError) as info:
        parse_prompts(text, path="action.introPrompt")
    assert info.value.path == "action.introPrompt"


speech = st.text(
    alphabet=st.characters(blacklist_characters="[]", blacklist_categories=("Cs", "Cc")),
    min_size=1,
    max_size=40,
).filter(lambda s: s.strip() == s and s)
file_id = st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789_-./", min_size=1, max_size=20)


@given(
    st.lists(
        st.one_of(
            st.builds(Prompt, st.just("tts"), speech),
            st.builds(Prompt, st.just("file"), file_id),
            st.builds(Prompt, st.just("href"), file_id.map(lambda s: "https://h/" + s)),
        ),
        max_size=6,
    )
)
def test_format_then_parse_is_identity(prompts: list[Prompt]) -> None:
    assert parse_prompts(format_prompts(prompts)) == prompts
