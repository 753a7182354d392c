"""`/metrics` on a real server while real peers call it: two `tonebridge phone` callers press digits in the
demo conference (RFC 4733 and SIP INFO), SIPp places plain calls, and the Prometheus exposition, parsed
with prometheus-client's own parser, moves as the calls, presses, collections, ticks and packets did."""

from __future__ import annotations

import time
import urllib.request
from collections.abc import Callable
from pathlib import Path

import pytest
from harness import HOST, phone
from prometheus_client.parser import text_string_to_metric_families
from sipp import run_uac

pytestmark = pytest.mark.integration

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def scrape(server) -> Samples:  # type: ignore[no-untyped-def]
    with urllib.request.urlopen(f"http://{HOST}:{server.http_port}/metrics", timeout=5) as reply:
        assert reply.headers["Content-Type"].startswith("text/plain; version=")
        text = reply.read().decode()
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


def total(samples: Samples, name: str) -> float:
    return sum(v for (n, _), v in samples.items() if n == name)


def scrape_until(server, condition: Callable[[Samples], bool], timeout: float = 10.0) -> Samples:  # type: ignore[no-untyped-def]
    """Scrape until `condition` holds of the exposition; the last scrape fails the test after `timeout`."""
    deadline = time.monotonic() + timeout
    while True:
        samples = scrape(server)
        if condition(samples) or time.monotonic() > deadline:
            return samples
        time.sleep(0.1)  # the pace of the polling, not a synchronisation: the condition decides


def test_counters_and_histograms_follow_calls_presses_and_media(start_server, tmp_path: Path) -> None:
    server = start_server()
    before = scrape(server)
    assert value(before, "tonebridge_calls_active", direction="inbound") == 0

    callers = [
        phone(
            "dial",
            f"sip:demo@{server.sip_uri_host}",
            "--dtmf",
            digits,
            "--dtmf-mode",
            mode,
            "--dtmf-delay",
            "0.5",
            stdin=True,
        )
        for digits, mode in (("12", "rfc4733"), ("34", "info"))
    ]
    for caller in callers:
        caller.wait_for(r"event=answered", timeout=15)
    # The demo puts both in `demo` in detect mode with maxDigits 2: each caller's two presses are a collection.
    server.process.wait_for_count(r"^demo: PIE call=", 2, timeout=20)
    during = scrape(server)
    assert value(during, "tonebridge_calls_active", direction="inbound") == 2
    assert value(during, "tonebridge_conference_rooms") == 1
    assert value(during, "tonebridge_conference_participants") == 2
    assert value(during, "tonebridge_media_legs") == 2
    assert value(during, "tonebridge_rtp_ports_in_use") >= 2

    for caller in callers:
        caller.send("hangup")
        caller.wait_for(r"event=ended .*reason=CALLERHANGUP", timeout=15)
        assert caller.wait_exit() == 0
    stats = run_uac(tmp_path, server.sip_uri_host, builtin="uac", calls=2, rate=10, timeout=30)
    assert (stats.exit_code, stats.successful, stats.failed) == (0, 2, 0), stats.output[-2000:]
    server.process.wait_for_count(r"event=call_ended .*reason=CALLERHANGUP", 4, timeout=15)

    after = scrape_until(server, lambda s: total(s, "tonebridge_calls_ended_total") == 4)

    def moved(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    # Calls: four inbound calls answered and hung up by their callers, none left.
    assert moved("tonebridge_calls_started_total", direction="inbound") == 4
    assert moved("tonebridge_calls_started_total", direction="outbound") == 0
    assert value(after, "tonebridge_calls_active", direction="inbound") == 0
    assert total(after, "tonebridge_calls_ended_total") == 4
    ended = value(
        after, "tonebridge_calls_ended_total", direction="inbound", result="ANSWERED", reason="CALLERHANGUP"
    )
    assert ended == 4
    assert value(after, "tonebridge_conference_participants") == 0
    assert value(after, "tonebridge_rtp_ports_in_use") == 0

    # Presses by where they were found, and the collections they made, each PIE answered on the spot.
    assert moved("tonebridge_key_presses_total", source="rfc4733", mode="detect") == 2
    assert moved("tonebridge_key_presses_total", source="info", mode="detect") == 2
    assert moved("tonebridge_key_presses_total", source="inband", mode="detect") == 0
    assert moved("tonebridge_collections_total") == 2
    assert moved("tonebridge_pie_failures_total") == 0
    assert moved("tonebridge_pie_sent_latency_seconds_count") == 2
    assert moved("tonebridge_pie_answered_latency_seconds_count") == 2
    assert value(after, "tonebridge_pie_answered_latency_seconds_bucket", le="+Inf") == 2

    # The media tick ran all along, each tick in both histograms; the phones' RTP went both ways.
    ticks = moved("tonebridge_media_ticks_total")
    assert ticks > 50  # over a second of calls at 50 ticks a second
    assert moved("tonebridge_media_tick_duration_seconds_count") >= ticks - 1
    assert moved("tonebridge_media_tick_lateness_seconds_count") >= ticks - 1
    assert value(after, "tonebridge_media_tick_duration_seconds_bucket", le="+Inf") == value(
        after, "tonebridge_media_tick_duration_seconds_count"
    )
    assert moved("tonebridge_rtp_packets_received_total") > 50
    assert moved("tonebridge_rtp_packets_sent_total") > 50
    assert value(after, "tonebridge_rtp_send_errors_total") == 0
    # Jitter is observed once per ended call that received RTP: the phones' calls, not SIPp's silent ones.
    assert moved("tonebridge_rtp_jitter_seconds_count") == 2
    assert value(after, "tonebridge_rtp_packets_lost_total") >= 0

    # SIP: the INVITE, ACK and BYE of four calls and the two INFO presses in, their answers out.
    assert moved("tonebridge_sip_transport_events_total", counter="received") >= 4 * 3 + 2
    assert moved("tonebridge_sip_transport_events_total", counter="sent") >= 4 * 2
    assert value(after, "tonebridge_outbox_pending") == 0
