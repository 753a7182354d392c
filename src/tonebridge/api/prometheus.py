"""Metrics in the Prometheus text format at `/metrics`: the server's live counters, gauges and histograms,
read at scrape time and named in base units (docs/operations.md, "Prometheus metrics").

The figures are those of `/tonebridge/v1/metrics`, read from the same places; nothing is counted twice.
Labels come only from small fixed vocabularies (directions, results, reasons, key sources and modes,
callback events and outcomes, SIP transport counter names), never from calls or rooms, so a busy server
exposes as many series as an idle one.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING, Any, cast

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from tonebridge.calls.call import Direction
from tonebridge.conference.options import DtmfMode
from tonebridge.histogram import Histogram
from tonebridge.keys import PressSource

if TYPE_CHECKING:
    from tonebridge.server import Server

PREFIX = "tonebridge_"
_PRESS_PREFIX = "presses."


def seconds_histogram(name: str, documentation: str, histogram: Histogram) -> HistogramMetricFamily:
    """A histogram kept in milliseconds, as a family in seconds."""
    snapshot = histogram.snapshot()
    buckets: list[tuple[str, float]] = []
    cumulative = 0
    for bound, count in cast(list[list[Any]], snapshot["buckets"]):
        # The media thread and the collector's callback observe while we read, without a lock: a bucket
        # read just after an observation can be ahead of the count read before it. Holding each bucket to
        # at least the previous one keeps the series cumulative, as Prometheus requires.
        cumulative = max(cumulative, int(count))
        upper = "+Inf" if bound == "+Inf" else floatToGoString(round(float(bound) / 1000, 9))
        buckets.append((upper, cumulative))
    return HistogramMetricFamily(
        PREFIX + name, documentation, buckets=buckets, sum_value=float(cast(float, snapshot["sum"])) / 1000
    )


class ServerCollector(Collector):
    """Reads a server's live state on every scrape; keeps nothing of its own."""

    def __init__(self, server: Server) -> None:
        self.server = server

    def collect(self) -> Iterator[Metric]:
        yield from self._calls()
        yield from self._conferences()
        yield from self._callbacks()
        yield from self._media()
        yield from self._sip()

    def _calls(self) -> Iterator[Metric]:
        engine = self.server.engine
        active = dict.fromkeys(Direction, 0)
        for session in engine.sessions.values():
            if session.call.active:
                active[session.call.direction] += 1
        ended = dict.fromkeys(Direction, 0)
        ended_family = CounterMetricFamily(
            PREFIX + "calls_ended",
            "Calls ended, by direction, DiCE result and DiCE reason.",
            labels=["direction", "result", "reason"],
        )
        for (direction, result, reason), count in sorted(
            engine.ended_calls.items(), key=lambda item: tuple(e.value for e in item[0])
        ):
            ended[direction] += count
            ended_family.add_metric([direction.value, result.value, reason.value], count)
        active_family = GaugeMetricFamily(
            PREFIX + "calls_active", "Calls not yet ended, by direction.", labels=["direction"]
        )
        # Every call is active until it ends, and counted as ended once it has: the two make the starts.
        started_family = CounterMetricFamily(
            PREFIX + "calls_started", "Calls started, by direction.", labels=["direction"]
        )
        for direction in Direction:
            active_family.add_metric([direction.value], active[direction])
            started_family.add_metric([direction.value], active[direction] + ended[direction])
        yield active_family
        yield started_family
        yield ended_family
        yield CounterMetricFamily(
            PREFIX + "rtp_packets_lost",
            "RTP packets lost (RFC 3550 cumulative loss) over the calls that have ended.",
            value=engine.packets_lost,
        )
        yield seconds_histogram(
            "rtp_jitter_seconds",
            "Interarrival jitter of each ended call that received RTP, at its end.",
            engine.jitter_ms,
        )

    def _conferences(self) -> Iterator[Metric]:
        conferences = self.server.conferences
        events = conferences.events
        yield GaugeMetricFamily(
            PREFIX + "conference_rooms", "Conference rooms open.", value=len(conferences.rooms)
        )
        yield GaugeMetricFamily(
            PREFIX + "conference_participants",
            "Participants in conference rooms.",
            value=len(conferences.members),
        )
        yield GaugeMetricFamily(
            PREFIX + "event_stream_subscribers", "Clients of the event stream.", value=events.subscribers
        )
        yield CounterMetricFamily(
            PREFIX + "event_stream_dropped",
            "Events a slow event stream client lost (its queue was full).",
            value=events.dropped,
        )
        presses = {(source.value, mode.value): 0 for source in PressSource for mode in DtmfMode}
        for key, count in events.counters.items():
            if key.startswith(_PRESS_PREFIX):
                source, _, mode = key.removeprefix(_PRESS_PREFIX).partition(".")
                presses[(source, mode)] = count
        press_family = CounterMetricFamily(
            PREFIX + "key_presses",
            "Key presses of conference participants, by where they were found and the participant's mode.",
            labels=["source", "mode"],
        )
        for (source, mode), count in sorted(presses.items()):
            press_family.add_metric([source, mode], count)
        yield press_family
        yield CounterMetricFamily(
            PREFIX + "collections", "Digit collections completed.", value=events.counters["collections"]
        )
        yield CounterMetricFamily(
            PREFIX + "pie_failures",
            "Collections whose PIE the application did not accept.",
            value=events.counters["pie_failures"],
        )
        yield seconds_histogram(
            "pie_sent_latency_seconds",
            "From the end of a collection to its PIE request leaving.",
            conferences.pie_sent_latency_ms,
        )
        yield seconds_histogram(
            "pie_answered_latency_seconds",
            "From the end of a collection to the application's answer to its PIE.",
            conferences.pie_answered_latency_ms,
        )

    def _callbacks(self) -> Iterator[Metric]:
        outbox = self.server.outbox
        family = CounterMetricFamily(
            PREFIX + "callbacks",
            "Callbacks by event and outcome: delivered, failed_attempt (each failed attempt), given_up.",
            labels=["event", "outcome"],
        )
        if outbox is not None:
            for (event, outcome), count in sorted(outbox.counters.items()):
                family.add_metric([event, outcome], count)
        yield family
        yield GaugeMetricFamily(
            PREFIX + "outbox_pending",
            "Stored callbacks not yet delivered or given up.",
            value=len(outbox.pending()) if outbox is not None else 0,
        )
        yield CounterMetricFamily(
            PREFIX + "outbox_pruned",
            "Finished callbacks pruned from the delivery log after their retention.",
            value=outbox.pruned if outbox is not None else 0,
        )

    def _media(self) -> Iterator[Metric]:
        clock = self.server.clock
        yield CounterMetricFamily(PREFIX + "media_ticks", "Media ticks run.", value=clock.ticks)
        yield CounterMetricFamily(
            PREFIX + "media_skipped_ticks",
            "Media ticks skipped because the clock fell more than 200 ms behind.",
            value=clock.late_ticks,
        )
        yield seconds_histogram(
            "media_tick_duration_seconds", "How long each media tick ran.", clock.duration_ms
        )
        yield seconds_histogram(
            "media_tick_lateness_seconds",
            "How late each media tick began after its deadline.",
            clock.lateness_ms,
        )
        yield seconds_histogram(
            "gc_pause_seconds",
            "Pauses of the cyclic garbage collector (every thread stops).",
            clock.gc_pause_ms,
        )
        totals = clock.plane.totals()
        for name, key, documentation in (
            ("rtp_packets_received", "packets_in", "RTP packets received."),
            ("rtp_packets_sent", "packets_out", "RTP packets sent."),
            ("rtp_packets_dropped", "packets_dropped", "RTP packets received that could not be used."),
            ("rtp_send_errors", "send_errors", "RTP sends the kernel refused."),
        ):
            yield CounterMetricFamily(PREFIX + name, documentation, value=totals[key])
        # A leg in a room is ticked by its room, not by the clock: both carry audio.
        yield GaugeMetricFamily(
            PREFIX + "media_legs",
            "Legs carrying audio.",
            value=len(clock.legs) + len(self.server.conferences.members),
        )
        yield GaugeMetricFamily(
            PREFIX + "media_open_legs", "Legs with RTP ports open.", value=clock.open_legs
        )
        yield GaugeMetricFamily(
            PREFIX + "rtp_ports_in_use",
            "RTP ports taken from the range.",
            value=self.server.engine.ports.in_use,
        )

    def _sip(self) -> Iterator[Metric]:
        family = CounterMetricFamily(
            PREFIX + "sip_transport_events",
            "SIP transport events: messages received and sent, rejected and dropped, transport errors.",
            labels=["counter"],
        )
        for name, count in sorted(self.server.stack.transport.stats.counters.items()):
            family.add_metric([name], count)
        yield family


def routes(server: Server) -> list[BaseRoute]:
    # The app's own registry: the global one would mix in whatever else the process registered, and a
    # second server in one process (the tests) would collide with the first.
    registry = CollectorRegistry()
    registry.register(ServerCollector(server))

    async def metrics(request: Request) -> Response:
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)

    return [Route("/metrics", metrics)]
