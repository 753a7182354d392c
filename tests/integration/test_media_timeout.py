"""A call whose peer has vanished (no BYE, no RTP, no RTCP for `[media] rtp_timeout_seconds`) ends with a
BYE from the server and a DiCE saying GENERALERROR; a call that keeps streaming stays up, and so does one
the peer has put on hold (docs/operations.md, "Media").

The peers are SIPp: a callee that answers, sends one RFC 2833 press and then nothing; a callee echoing our
RTP back; a caller that holds with `a=sendonly` and stays silent. Waits are on events with deadlines (the
backend's callbacks, a call's own timer through `engine.wait_until`, SIPp's exit).
"""

from __future__ import annotations

import asyncio
import json
import logging
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from harness import HOST
from sinch_app import NUMBER, app_config, conference_callout
from sipp import run_uac, start_uas, uas_stats

pytestmark = pytest.mark.integration

TIMEOUT = 2.0
MEDIA = f"\n[media]\nrtp_timeout_seconds = {TIMEOUT:g}\n"


def metrics(server) -> dict[str, Any]:  # type: ignore[no-untyped-def]
    with urllib.request.urlopen(
        f"http://{HOST}:{server.server.http_port}/tonebridge/v1/metrics", timeout=10
    ) as reply:
        return json.loads(reply.read())


def answered(server, call_id: str) -> Any:  # type: ignore[no-untyped-def]
    """The session of an answered call (waits up to 10 s for the answer)."""
    session = server.engine.find(call_id)
    assert session is not None, call_id
    assert server.run(asyncio.wait_for(session.wait_answered(), 10)), f"call {call_id} was not answered"
    return session


def test_a_vanished_callee_is_hung_up_and_a_streaming_one_is_not(  # type: ignore[no-untyped-def]
    in_process_server, backend, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="tonebridge.calls")
    (tmp_path / "pcap").symlink_to("/usr/share/sip-tester")
    steady, steady_port, steady_stats = start_uas(tmp_path, echo=True, calls=1)
    vanishing, vanishing_port, vanishing_stats = start_uas(
        tmp_path, scenario="uas_answer_then_vanish.xml", echo=False, calls=1
    )
    server = in_process_server(app_config(backend) + MEDIA)
    engine = server.engine

    steady_id = conference_callout(
        server, {"type": "sip", "endpoint": f"sip:steady@{HOST}:{steady_port}"}, "steady", enableDice=True
    )
    steady_session = answered(server, steady_id)
    vanished_id = conference_callout(
        server, {"type": "sip", "endpoint": f"sip:gone@{HOST}:{vanishing_port}"}, "gone", enableDice=True
    )
    answered(server, vanished_id)

    # The vanished callee: the server's BYE (SIPp's scenario completes only on it), then the DiCE.
    backend.wait(lambda: len(backend.events("dice", vanished_id)) == 1, timeout=TIMEOUT + 10)
    dice = backend.events("dice", vanished_id)[0]
    assert (dice["result"], dice["reason"]) == ("ANSWERED", "GENERALERROR")
    stats = uas_stats(vanishing, vanishing_stats)
    assert stats.successful == 1 and stats.failed == 0, stats.output[-2000:]
    assert f"event=call_media_timeout call_id={vanished_id}" in caplog.text

    # The streaming callee outlives three timeouts (False would mean its call ended first).
    deadline = steady_session.call.answered_at + 3 * TIMEOUT
    assert server.run(engine.wait_until(steady_session, deadline), 3 * TIMEOUT + 10)
    assert steady_session.call.active and steady_session.leg.stats.packets_received > 0
    server.run(engine.hangup(steady_session))
    backend.wait(lambda: len(backend.events("dice", steady_id)) == 1)
    assert backend.events("dice", steady_id)[0]["reason"] == "MANAGERHANGUP"
    assert uas_stats(steady, steady_stats).successful == 1
    assert f"call_media_timeout call_id={steady_id}" not in caplog.text

    # Nothing of either call is left in the media plane.
    media = metrics(server)["media"]
    assert (media["legs"], media["openLegs"], media["portsInUse"]) == (0, 0, 0)
    assert server.server.clock.plane.rows == 0


def test_a_caller_on_hold_may_send_nothing(  # type: ignore[no-untyped-def]
    in_process_server, backend, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="tonebridge.calls")
    backend.answers["ice"] = lambda event: {"action": {"name": "connectConf", "conferenceId": "held"}}
    server = in_process_server(app_config(backend) + MEDIA)
    target = f"{HOST}:{server.server.stack.port}"
    # The caller holds at once and stays silent for 5 s (2.5 timeouts), then hangs up itself: a BYE from
    # the server would be an unexpected message and fail the call.
    stats = run_uac(tmp_path, target, scenario="uac_hold_silent.xml", service=NUMBER, timeout=30)
    assert stats.successful == 1 and stats.failed == 0, stats.output[-2000:]
    backend.wait(lambda: len(backend.events("dice")) == 1)
    dice = backend.events("dice")[0]
    assert (dice["result"], dice["reason"]) == ("ANSWERED", "CALLERHANGUP")
    assert "call_media_timeout" not in caplog.text
    media = metrics(server)["media"]
    assert (media["legs"], media["openLegs"], media["portsInUse"]) == (0, 0, 0)
