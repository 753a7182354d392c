"""SIP's awkward cases, played by SIPp against the server with an application answering: retransmitted
INVITEs, lost and missing ACKs, CANCEL racing the answer, BYE during a re-INVITE, requests for dialogs that
do not exist (481) and calls cancelled while ringing (487), on both sides of the server. Each must end in
the right state and leave nothing behind: the metrics must come back to what they said before the call
(calls, rooms, participants, legs, RTP ports, asyncio tasks and, once their timers have run, transactions).

T1 is 100 ms here (`[sip] timer_t1_ms`), so that a missing ACK is given up after 6.4 s instead of 32 s."""

from __future__ import annotations

import json
import socket
import threading
import time
import urllib.request
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from harness import HOST
from sinch_app import NUMBER, app_config, conference_callout, signed
from sipp import run_uac, start_uas, uas_stats

pytestmark = pytest.mark.integration

T1 = 0.1
TIMERS = f"\n[sip]\ntimer_t1_ms = {int(T1 * 1000)}\n"
CONFERENCE = "races"


def metrics(server) -> dict[str, Any]:  # type: ignore[no-untyped-def]
    with urllib.request.urlopen(f"http://{HOST}:{server.http_port}/tonebridge/v1/metrics", timeout=5) as r:
        return json.loads(r.read())


def footprint(current: dict[str, Any]) -> dict[str, int]:
    """What a call holds while it lasts: none of it may outlive the call."""
    return {
        "calls": current["calls"]["active"],
        "rooms": current["conferences"]["rooms"],
        "participants": current["conferences"]["participants"],
        "legs": current["media"]["legs"],
        "ports": current["media"]["portsInUse"],
        "tasks": current["tasks"],
        "transactions": current["sip"]["transactions"],
    }


def assert_back_to(server, baseline: dict[str, int], timeout: float = 64 * T1 + 5) -> dict[str, int]:  # type: ignore[no-untyped-def]
    """Wait until the footprint is the baseline again (transactions linger for 64*T1 after their final
    response); fail at the deadline with what is left."""
    deadline = time.monotonic() + timeout
    while True:
        current = footprint(metrics(server))
        if current == baseline:
            return current
        if time.monotonic() > deadline:
            raise AssertionError(f"left behind after the call: {current}, before it: {baseline}")
        time.sleep(0.1)


@pytest.fixture
def server(start_server, backend):  # type: ignore[no-untyped-def]
    backend.answers["ice"] = lambda event: {"action": {"name": "ConnectConf", "conferenceId": CONFERENCE}}
    handle = start_server(app_config(backend) + TIMERS)
    handle.backend = backend
    # Idle, the footprint is the server's own: its tasks and nothing else.
    handle.baseline = assert_back_to(handle, footprint(metrics(handle)) | {"calls": 0}, timeout=5)
    return handle


def play(server, tmp_path: Path, scenario: str, timeout: float = 30.0) -> str:  # type: ignore[no-untyped-def]
    """Run one call of `scenario`; what SIPp received, as its message trace."""
    trace = tmp_path / f"{scenario}.messages"
    stats = run_uac(
        tmp_path,
        server.sip_uri_host,
        scenario=scenario,
        service=NUMBER,
        timeout=timeout,
        extra=["-trace_msg", "-message_file", str(trace)],
    )
    assert (stats.exit_code, stats.successful, stats.failed) == (0, 1, 0), stats.output[-4000:]
    return trace.read_text(errors="replace")


def received(trace: str, status: int, cseq: str) -> int:
    """How many `status` responses with CSeq `cseq` (like "1 INVITE") SIPp received."""
    return sum(
        1
        for message in trace.split("message received")[1:]
        if f"SIP/2.0 {status} " in message and f"CSeq: {cseq}" in message
    )


def dice_of_one_call(backend) -> dict[str, Any]:  # type: ignore[no-untyped-def]
    backend.wait(lambda: len(backend.events("dice")) >= 1)
    ice, dice = backend.events("ice"), backend.events("dice")
    assert len(ice) == 1 and len(dice) == 1, (ice, dice)
    assert dice[0]["callid"] == ice[0]["callid"]
    return dice[0]


def test_retransmitted_invite_makes_one_call(server, tmp_path: Path) -> None:
    play(server, tmp_path, "uac_invite_retransmitted.xml")
    dice = dice_of_one_call(server.backend)
    assert (dice["result"], dice["reason"]) == ("ANSWERED", "CALLERHANGUP")
    assert metrics(server)["sip"].get("merged_requests", 0) == 0
    assert_back_to(server, server.baseline)


def test_late_ack_keeps_the_call_and_the_bye_ends_it(server, tmp_path: Path) -> None:
    trace = play(server, tmp_path, "uac_ack_late.xml")
    # The 200 and its re-sends at T1 and 3*T1, before the ACK came.
    assert received(trace, 200, "1 INVITE") >= 3, trace[-4000:]
    dice = dice_of_one_call(server.backend)
    assert (dice["result"], dice["reason"]) == ("ANSWERED", "CALLERHANGUP")
    assert_back_to(server, server.baseline)


def test_missing_ack_ends_the_call_with_a_bye_after_64_t1(server, tmp_path: Path) -> None:
    started = time.monotonic()
    play(server, tmp_path, "uac_ack_never.xml")
    waited = time.monotonic() - started
    assert 64 * T1 - 1 <= waited <= 64 * T1 + 5, waited
    dice = dice_of_one_call(server.backend)
    # The caller never confirmed the session: to the application it is a call that failed.
    assert dice["result"] in ("FAILED", "ANSWERED") and dice["reason"] == "GENERALERROR", dice
    assert_back_to(server, server.baseline)


def test_cancel_while_the_application_decides_leaves_nothing(start_server, backend, tmp_path: Path) -> None:
    decided = threading.Event()

    def slow_ice(event: dict[str, Any]) -> dict[str, Any]:
        # The application answers only once the caller has cancelled: its answer comes too late.
        decided.wait(30)
        return {"action": {"name": "ConnectConf", "conferenceId": CONFERENCE}}

    backend.answers["ice"] = slow_ice
    server = start_server(app_config(backend) + TIMERS)
    baseline = assert_back_to(server, footprint(metrics(server)) | {"calls": 0}, timeout=5)
    play(server, tmp_path, "uac_cancel_during_setup.xml")
    decided.set()
    dice = dice_of_one_call(backend)
    assert (dice["result"], dice["reason"]) == ("NOANSWER", "CANCEL"), dice
    assert_back_to(server, baseline)
    assert not server.process.matches(r"event=participant_joined")


def test_cancel_crossing_the_answer_changes_nothing(server, tmp_path: Path) -> None:
    play(server, tmp_path, "uac_cancel_after_answer.xml")
    dice = dice_of_one_call(server.backend)
    assert (dice["result"], dice["reason"]) == ("ANSWERED", "CALLERHANGUP")
    assert_back_to(server, server.baseline)


def test_bye_during_reinvite_ends_the_call(server, tmp_path: Path) -> None:
    play(server, tmp_path, "uac_bye_during_reinvite.xml")
    dice = dice_of_one_call(server.backend)
    assert (dice["result"], dice["reason"]) == ("ANSWERED", "CALLERHANGUP")
    assert_back_to(server, server.baseline)


def bye_for_unknown_call(server) -> bytes:  # type: ignore[no-untyped-def]
    """A BYE whose Call-ID no call has, from a socket of our own; the first line of its answer."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind((HOST, 0))
        sock.settimeout(5)
        port = sock.getsockname()[1]
        sock.sendto(
            (
                f"BYE sip:{NUMBER}@{server.sip_uri_host} SIP/2.0\r\n"
                f"Via: SIP/2.0/UDP {HOST}:{port};branch=z9hG4bK-unknown-{port}\r\n"
                f"From: <sip:stranger@{HOST}:{port}>;tag=a{port}\r\n"
                f"To: <sip:{NUMBER}@{server.sip_uri_host}>;tag=b{port}\r\n"
                f"Call-ID: no-such-call-{port}@{HOST}\r\nCSeq: 1 BYE\r\nMax-Forwards: 70\r\n"
                "Content-Length: 0\r\n\r\n"
            ).encode(),
            (HOST, server.sip_port),
        )
        return sock.recv(65535).split(b"\r\n", 1)[0]


def test_requests_outside_any_dialog_get_481_and_leave_the_call_alone(server, tmp_path: Path) -> None:
    assert bye_for_unknown_call(server) == b"SIP/2.0 481 Call/Transaction Does Not Exist"
    play(server, tmp_path, "uac_no_such_dialog.xml")
    dice = dice_of_one_call(server.backend)
    assert (dice["result"], dice["reason"]) == ("ANSWERED", "CALLERHANGUP")
    assert_back_to(server, server.baseline)


# The server as caller: callouts the application places, ended while ringing or answered across a CANCEL.


def callout(server, number: str = "+15550002222") -> str:  # type: ignore[no-untyped-def]
    return conference_callout(
        SimpleNamespace(server=server),
        {"type": "number", "endpoint": number},
        CONFERENCE,
        enableDice=True,
    )


def hang_up(server, call_id: str) -> None:  # type: ignore[no-untyped-def]
    status, body = signed(
        SimpleNamespace(server=server),
        "PATCH",
        f"/calling/v1/calls/id/{call_id}",
        {"instructions": [], "action": {"name": "hangup"}},
    )
    assert status == 200, body


@pytest.fixture
def trunk_server(start_server, backend, tmp_path: Path):  # type: ignore[no-untyped-def]
    def start(scenario: str):  # type: ignore[no-untyped-def]
        uas, port, stat_file = start_uas(tmp_path, scenario=scenario, echo=False, calls=1)
        server = start_server(app_config(backend, trunk_port=port) + TIMERS)
        baseline = assert_back_to(server, footprint(metrics(server)) | {"calls": 0}, timeout=5)
        return server, uas, stat_file, baseline

    return start


@pytest.mark.parametrize(
    "scenario",
    [
        # The callee answers 487 to the INVITE and 200 to the CANCEL: the callout never connected.
        "uas_ring_until_cancel.xml",
        # The callee's 200 crosses the CANCEL: the server ACKs it and at once ends the call with a BYE.
        "uas_answer_across_cancel.xml",
    ],
)
def test_callout_ended_while_ringing(trunk_server, backend, scenario: str) -> None:
    server, uas, stat_file, baseline = trunk_server(scenario)
    call_id = callout(server)
    server.process.wait_for(rf"event=call_ringing .*call_id={call_id}\b", timeout=10)
    hang_up(server, call_id)
    stats = uas_stats(uas, stat_file)
    assert (stats.successful, stats.failed, stats.unexpected) == (1, 0, 0), stats.output[-3000:]
    backend.wait(lambda: len(backend.events("dice", call_id)) == 1)
    dice = backend.events("dice", call_id)[0]
    # Either way the application hears the same: its callout was not answered.
    assert (dice["result"], dice["reason"]) == ("NOANSWER", "CANCEL"), dice
    assert not backend.events("ace", call_id)
    assert_back_to(server, baseline, timeout=40)  # Timer D keeps the 487's INVITE transaction for 32 s


def test_callee_answering_481_to_our_bye_still_ends_the_callout(trunk_server, backend) -> None:
    server, uas, stat_file, baseline = trunk_server("uas_answer_bye_481.xml")
    call_id = callout(server)
    server.process.wait_for(rf"event=call_answered .*call_id={call_id}\b", timeout=10)
    hang_up(server, call_id)
    stats = uas_stats(uas, stat_file)
    assert (stats.successful, stats.failed, stats.unexpected) == (1, 0, 0), stats.output[-9000:]
    backend.wait(lambda: len(backend.events("dice", call_id)) == 1)
    assert backend.events("dice", call_id)[0]["result"] == "ANSWERED"
    assert_back_to(server, baseline)
