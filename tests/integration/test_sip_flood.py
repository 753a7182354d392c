"""An INVITE flood from one source is throttled at the SIP edge (sip/admission.py): most of it refused at
once with 503, while another source's caller is answered and an established call's audio keeps flowing."""

from __future__ import annotations

import json
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from audio import dominant_frequency, level_dbm0, read_wav
from harness import HOST, phone
from sinch_app import NUMBER, app_config
from sipp import run_uac

pytestmark = pytest.mark.integration

FLOOD_RATE = 200  # INVITEs per second from 127.0.0.1
FLOOD_CALLS = 800  # four seconds of it
LIMITS = "[limits]\ninvites_per_second_per_source = 5\ninvite_burst_per_source = 10\n"  # far below any rate SIPp reaches
OTHER_SOURCE = "127.0.0.2"  # loopback answers on all of 127/8


def metrics(server) -> dict:  # type: ignore[no-untyped-def]
    with urllib.request.urlopen(
        f"http://{HOST}:{server.http_port}/tonebridge/v1/metrics", timeout=5
    ) as reply:
        return json.loads(reply.read())


def wait_metrics(server, predicate, timeout: float):  # type: ignore[no-untyped-def]
    """Poll the metrics until `predicate` holds; fail at the deadline with what they last said."""
    deadline = time.monotonic() + timeout
    while True:
        current = metrics(server)
        if predicate(current):
            return current
        if time.monotonic() > deadline:
            raise AssertionError(f"metrics not as expected within {timeout}s: {current}")
        time.sleep(0.05)


def test_invite_flood_is_throttled_per_source(start_server, backend, tmp_path: Path) -> None:
    backend.answers["ice"] = lambda event: {
        "action": {
            "name": "ConnectConf",
            "conferenceId": "steady" if event.get("cli") in ("talker", "listener") else "flood",
        }
    }
    server = start_server(app_config(backend) + LIMITS)
    target = f"sip:{NUMBER}@{server.sip_uri_host}"
    recording = tmp_path / "listener.wav"
    listener = phone("dial", target, "--from-user", "listener", "--record", str(recording), stdin=True)
    listener.wait_for(r"event=answered", timeout=15)
    talker = phone("dial", target, "--from-user", "talker", "--tone", "700", "--level", "-15", stdin=True)
    talker.wait_for(r"event=answered", timeout=15)
    listener.wait_for(r"event=heard .*seconds=1\b", timeout=10)

    with ThreadPoolExecutor(max_workers=1) as pool:
        started = time.monotonic()
        flood = pool.submit(
            run_uac,
            tmp_path,
            server.sip_uri_host,
            calls=FLOOD_CALLS,
            rate=FLOOD_RATE,
            service=NUMBER,
            timeout=40,
        )
        wait_metrics(server, lambda m: m["sip"].get("throttled_invites", 0) > 0, timeout=15)
        heard_from = int(listener.matches(r"event=heard .*seconds=(\d+)")[-1].group(1))
        # A caller from another address, in the middle of the flood, is answered.
        other = run_uac(
            tmp_path,
            server.sip_uri_host,
            calls=1,
            service=NUMBER,
            timeout=10,
            extra=["-i", OTHER_SOURCE, "-mi", OTHER_SOURCE],
        )
        throttled_during = metrics(server)["sip"]["throttled_invites"]
        stats = flood.result(timeout=60)
        elapsed = time.monotonic() - started
    heard_to = int(listener.matches(r"event=heard .*seconds=(\d+)")[-1].group(1))

    assert other.exit_code == 0 and other.successful == 1, other.output[-3000:]
    assert throttled_during > 0  # the other caller's call was placed while the flood was being refused
    assert server.process.matches(rf"event=call_incoming .*@{OTHER_SOURCE}:"), f"no call from {OTHER_SOURCE}"
    current = metrics(server)
    refused = current["sip"]["throttled_invites"]
    # 20 at once and 20/s after: of four seconds at 200/s, about 100 pass; every refusal is a failed call.
    assert stats.successful + stats.failed == FLOOD_CALLS, stats.output[-3000:]
    # Each failed call failed on the 503 (an unexpected message to SIPp's scenario), none on a timeout; the
    # counter also counts a refused INVITE's retransmissions, sent before its 503 arrived.
    assert stats.failed >= FLOOD_CALLS // 2
    assert stats.unexpected == stats.failed
    assert refused >= stats.failed
    assert stats.successful >= 20
    print(
        f"flood: sent={FLOOD_CALLS} refused={refused} answered={stats.successful} "
        f"retransmissions={stats.retransmissions} sipp_seconds={elapsed:.1f} other_source_answered={other.successful}"
    )

    # After the flood no call is left up but the two in the steady room.
    settling = time.monotonic()
    # Well before the 32 s a 2xx waits for its ACK: no call was made that its caller does not know of.
    wait_metrics(server, lambda m: m["calls"]["active"] == 2, timeout=20)
    print(f"flood: calls back to the steady two {time.monotonic() - settling:.1f}s after SIPp ended")

    # The established call's audio kept flowing through the flood: every second of it carried the tone.
    listener.send("hangup")
    listener.wait_for(r"event=recorded", timeout=10)
    talker.send("hangup")
    talker.wait_for(r"event=ended", timeout=10)
    heard, rate = read_wav(recording)
    for second in range(heard_from, max(heard_to, heard_from + 1)):
        chunk = heard[second * rate : (second + 1) * rate]
        assert level_dbm0(chunk) > -25.0, f"second {second} of the listener's call: level {level_dbm0(chunk)}"
        assert abs(dominant_frequency(chunk) - 700.0) < 5.0
    ended = listener.matches(r"event=ended .*rtp_in=(\d+)")
    assert ended and int(ended[-1].group(1)) >= 50 * (heard_to - 1)
