"""`/metrics` over Starlette's TestClient, on a real server that is built but not started: the exposition
parses as Prometheus text, every family has its type and base unit, histograms kept in milliseconds come
out in seconds and cumulative, and only the app's own registry is exposed."""

from __future__ import annotations

import warnings
from collections import Counter
from types import SimpleNamespace

import pytest
from prometheus_client.parser import text_string_to_metric_families
from starlette.exceptions import StarletteDeprecationWarning

with warnings.catch_warnings():
    warnings.simplefilter("ignore", StarletteDeprecationWarning)
    from starlette.testclient import TestClient

from tonebridge.api.app import create_app
from tonebridge.calls.call import Call, CallResult, Direction, EndReason
from tonebridge.conference.collector import CollectionDone
from tonebridge.config import Config
from tonebridge.server import Server

COUNTERS = {
    "calls_started",
    "calls_ended",
    "rtp_packets_lost",
    "event_stream_dropped",
    "key_presses",
    "collections",
    "pie_failures",
    "callbacks",
    "outbox_pruned",
    "media_ticks",
    "media_skipped_ticks",
    "rtp_packets_received",
    "rtp_packets_sent",
    "rtp_packets_dropped",
    "rtp_send_errors",
    "sip_transport_events",
}
GAUGES = {
    "calls_active",
    "conference_rooms",
    "conference_participants",
    "event_stream_subscribers",
    "outbox_pending",
    "media_legs",
    "media_open_legs",
    "rtp_ports_in_use",
}
HISTOGRAMS = {
    "rtp_jitter_seconds",
    "pie_sent_latency_seconds",
    "pie_answered_latency_seconds",
    "media_tick_duration_seconds",
    "media_tick_lateness_seconds",
    "gc_pause_seconds",
}


def scrape(server: Server) -> dict[str, object]:
    response = TestClient(create_app(server)).get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain; version=")
    return {family.name: family for family in text_string_to_metric_families(response.text)}


def samples(family: object) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {(s.name, tuple(sorted(s.labels.items()))): s.value for s in family.samples}  # type: ignore[attr-defined]


def buckets(family: object) -> list[tuple[str, float]]:
    return [(s.labels["le"], s.value) for s in family.samples if s.name.endswith("_bucket")]  # type: ignore[attr-defined]


@pytest.fixture
def server() -> Server:
    return Server(Config())


def test_every_family_has_its_type_and_only_ours_are_exposed(server: Server) -> None:
    families = scrape(server)
    expected = (
        {f"tonebridge_{n}": "counter" for n in COUNTERS}
        | {f"tonebridge_{n}": "gauge" for n in GAUGES}
        | {f"tonebridge_{n}": "histogram" for n in HISTOGRAMS}
    )
    assert {name: family.type for name, family in families.items()} == expected  # type: ignore[attr-defined]


def test_two_servers_in_one_process_each_expose_their_own(server: Server) -> None:
    other = Server(Config())
    other.clock.ticks = 7
    assert samples(scrape(other)["tonebridge_media_ticks"]) == {("tonebridge_media_ticks_total", ()): 7}
    assert samples(scrape(server)["tonebridge_media_ticks"]) == {("tonebridge_media_ticks_total", ()): 0}


def test_calls_started_are_the_active_and_the_ended(server: Server) -> None:
    engine = server.engine
    for direction in (Direction.INBOUND, Direction.OUTBOUND, Direction.OUTBOUND):
        call = Call(direction, "sip:a@x", "sip:b@y", started_at=0.0)
        engine.sessions[call.call_id] = SimpleNamespace(call=call)  # type: ignore[assignment]
    engine.ended_calls[(Direction.INBOUND, CallResult.ANSWERED, EndReason.CALLER_HANGUP)] = 4
    engine.ended_calls[(Direction.OUTBOUND, CallResult.FAILED, EndReason.USER_NOT_FOUND)] = 1
    engine.packets_lost = 12
    families = scrape(server)
    assert samples(families["tonebridge_calls_active"]) == {
        ("tonebridge_calls_active", (("direction", "inbound"),)): 1,
        ("tonebridge_calls_active", (("direction", "outbound"),)): 2,
    }
    assert samples(families["tonebridge_calls_started"]) == {
        ("tonebridge_calls_started_total", (("direction", "inbound"),)): 5,
        ("tonebridge_calls_started_total", (("direction", "outbound"),)): 3,
    }
    ended = (("direction", "inbound"), ("reason", "CALLERHANGUP"), ("result", "ANSWERED"))
    failed = (("direction", "outbound"), ("reason", "USERNOTFOUND"), ("result", "FAILED"))
    assert samples(families["tonebridge_calls_ended"]) == {
        ("tonebridge_calls_ended_total", ended): 4,
        ("tonebridge_calls_ended_total", failed): 1,
    }
    assert samples(families["tonebridge_rtp_packets_lost"]) == {("tonebridge_rtp_packets_lost_total", ()): 12}


def test_milliseconds_become_seconds_and_buckets_are_cumulative(server: Server) -> None:
    for value in (0.05, 0.4, 0.4, 3.5, 18.0, 5000.0):
        server.clock.duration_ms.observe(value)
    family = scrape(server)["tonebridge_media_tick_duration_seconds"]
    series = buckets(family)
    assert series[0] == ("0.0001", 1)
    assert dict(series)["0.0005"] == 3
    assert dict(series)["0.02"] == 5
    assert dict(series)["1.0"] == 5  # the last finite bound: 1,000 ms
    assert series[-1] == ("+Inf", 6)
    counts = [count for _, count in series]
    assert counts == sorted(counts)
    bounds = [float(le) for le, _ in series]
    assert bounds == sorted(bounds)
    by_name = {s.name: s.value for s in family.samples}  # type: ignore[attr-defined]
    assert by_name["tonebridge_media_tick_duration_seconds_count"] == 6
    assert by_name["tonebridge_media_tick_duration_seconds_sum"] == pytest.approx(5.02235)


def test_every_histogram_ends_with_inf_equal_to_its_count(server: Server) -> None:
    server.clock.lateness_ms.observe(2.0)
    server.clock.gc_pause_ms.observe(30.0)
    server.engine.jitter_ms.observe(7.5)
    for name, family in scrape(server).items():
        if family.type != "histogram":  # type: ignore[attr-defined]
            continue
        series = buckets(family)
        assert series[-1][0] == "+Inf", name
        assert [c for _, c in series] == sorted(c for _, c in series), name
        count = samples(family)[(f"{name}_count", ())]
        assert series[-1][1] == count, name
    jitter = dict(buckets(scrape(server)["tonebridge_rtp_jitter_seconds"]))
    assert (jitter["0.005"], jitter["0.01"]) == (0, 1)


def test_pie_latency_is_kept_beside_the_latest_samples(server: Server) -> None:
    conferences = server.conferences
    server.engine.now = lambda: 10.0  # type: ignore[method-assign]
    done = CollectionDone("call", "room", "12", ended_at=10.0 - 0.0035)
    conferences.pie_sent(done)
    conferences.pie_answered(done)
    conferences.pie_answered(CollectionDone("call", "room", "34", seq=1, ended_at=10.0 - 0.150))
    assert list(conferences.pie_answered_ms) == pytest.approx([3.5, 150.0])
    families = scrape(server)
    sent = dict(buckets(families["tonebridge_pie_sent_latency_seconds"]))
    assert (sent["0.002"], sent["0.005"], sent["+Inf"]) == (0, 1, 1)
    answered = dict(buckets(families["tonebridge_pie_answered_latency_seconds"]))
    assert (answered["0.005"], answered["0.1"], answered["0.2"], answered["+Inf"]) == (1, 1, 2, 2)


def test_presses_collections_callbacks_and_sip_counters(server: Server) -> None:
    counters = server.conferences.events.counters
    counters["presses.rfc4733.detect"] += 3
    counters["presses.inband.forward"] += 1
    counters["collections"] += 2
    counters["pie_failures"] += 1
    server.outbox = SimpleNamespace(  # type: ignore[assignment]
        counters=Counter({("dice", "delivered"): 2, ("pie", "failed_attempt"): 3, ("pie", "given_up"): 1}),
        pending=lambda: ["one", "two"],
        pruned=5,
    )
    for name in ("received", "received", "sent", "dropped_garbage"):
        server.stack.transport.stats.count(name)
    families = scrape(server)
    presses = samples(families["tonebridge_key_presses"])
    assert len(presses) == 9  # every source by every mode, zero or not
    assert presses[("tonebridge_key_presses_total", (("mode", "detect"), ("source", "rfc4733")))] == 3
    assert presses[("tonebridge_key_presses_total", (("mode", "forward"), ("source", "inband")))] == 1
    assert presses[("tonebridge_key_presses_total", (("mode", "detect"), ("source", "info")))] == 0
    assert samples(families["tonebridge_collections"]) == {("tonebridge_collections_total", ()): 2}
    assert samples(families["tonebridge_pie_failures"]) == {("tonebridge_pie_failures_total", ()): 1}
    assert samples(families["tonebridge_callbacks"]) == {
        ("tonebridge_callbacks_total", (("event", "dice"), ("outcome", "delivered"))): 2,
        ("tonebridge_callbacks_total", (("event", "pie"), ("outcome", "failed_attempt"))): 3,
        ("tonebridge_callbacks_total", (("event", "pie"), ("outcome", "given_up"))): 1,
    }
    assert samples(families["tonebridge_outbox_pending"]) == {("tonebridge_outbox_pending", ()): 2}
    assert samples(families["tonebridge_outbox_pruned"]) == {("tonebridge_outbox_pruned_total", ()): 5}
    assert samples(families["tonebridge_sip_transport_events"]) == {
        ("tonebridge_sip_transport_events_total", (("counter", "dropped_garbage"),)): 1,
        ("tonebridge_sip_transport_events_total", (("counter", "received"),)): 2,
        ("tonebridge_sip_transport_events_total", (("counter", "sent"),)): 1,
    }


def test_the_json_metrics_stay_where_they_were(server: Server) -> None:
    body = TestClient(create_app(server)).get("/tonebridge/v1/metrics").json()
    assert set(body) == {"sip", "calls", "tasks", "outbox", "conferences", "callbacks", "media"}
    assert body["media"]["tickDurationMs"]["buckets"][-1] == ["+Inf", 0]
