"""The Starlette application: Tonebridge's own routes under `/tonebridge/v1`.

`health` answers whether the server is up and how many calls it carries; `metrics` gives the SIP transport
counters (received, rejected, dropped garbage), call, media and conference counts (presses by source and
mode, collections, PIE latency and failures); `events` streams conference events as server-sent events.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from typing import TYPE_CHECKING

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from tonebridge.api.console import routes as console_routes
from tonebridge.api.errors import exception_handlers
from tonebridge.api.events import routes as event_routes
from tonebridge.api.limits import BodyLimit
from tonebridge.api.openapi import document as openapi_document
from tonebridge.api.prometheus import routes as prometheus_routes
from tonebridge.api.records import routes as record_routes

if TYPE_CHECKING:
    from tonebridge.server import Server


def _quantile(values: Iterable[float], q: float) -> float | None:
    ordered = sorted(values)
    if not ordered:
        return None
    return round(ordered[min(len(ordered) - 1, int(q * len(ordered)))], 2)


_OUTCOMES = {"delivered": "delivered", "failed_attempt": "failedAttempts", "given_up": "givenUp"}


def _callback_counters(server: Server) -> dict[str, dict[str, int]]:
    """Callbacks by event and outcome: delivered, failed attempts (each retried or not), given up."""
    if server.outbox is None:
        return {}
    out: dict[str, dict[str, int]] = {}
    for (event, outcome), count in sorted(server.outbox.counters.items()):
        out.setdefault(event, dict.fromkeys(_OUTCOMES.values(), 0))[_OUTCOMES[outcome]] = count
    return out


def create_app(server: Server) -> Starlette:
    async def health(request: Request) -> JSONResponse:
        directory = server.directory
        if directory is not None and not directory.available:
            # A node that cannot reach the cluster's directory takes no new calls: the HTTP front's health
            # check moves requests to the other nodes.
            return JSONResponse(
                {
                    "status": "unavailable",
                    "reason": "cluster directory (Redis) unreachable",
                    "activeCalls": server.engine.active_calls,
                },
                status_code=503,
            )
        return JSONResponse({"status": "ok", "activeCalls": server.engine.active_calls})

    async def metrics(request: Request) -> JSONResponse:
        return JSONResponse(
            {
                # `transactions`: live now; each lingers up to 64*T1 after its final response (Timers J, L).
                "sip": {**server.stack.transport.stats.counters, "transactions": len(server.stack.table)},
                "calls": {"active": server.engine.active_calls, "total": len(server.engine.sessions)},
                "tasks": len(asyncio.all_tasks()),
                "outbox": {
                    "pending": len(server.outbox.pending()) if server.outbox is not None else 0,
                    "pruned": server.outbox.pruned if server.outbox is not None else 0,
                },
                "conferences": {
                    "rooms": len(server.conferences.rooms),
                    "participants": len(server.conferences.members),
                    "counters": dict(server.conferences.events.counters),
                    # From the end of a collection to the application's answer to its PIE (and, "Request", to
                    # the PIE leaving); over the latest 1,000 collections.
                    "pieLatencyMsP50": _quantile(server.conferences.pie_answered_ms, 0.5),
                    "pieLatencyMsP99": _quantile(server.conferences.pie_answered_ms, 0.99),
                    "pieRequestLatencyMsP50": _quantile(server.conferences.pie_sent_ms, 0.5),
                    "pieRequestLatencyMsP99": _quantile(server.conferences.pie_sent_ms, 0.99),
                    "eventSubscribers": server.conferences.events.subscribers,
                },
                "callbacks": _callback_counters(server),
                # A leg in a room is ticked by its room, not by the clock: both carry audio.
                "media": {
                    **server.clock.metrics(),
                    "portsInUse": server.engine.ports.in_use,
                    "legs": len(server.clock.legs) + len(server.conferences.members),
                },
                **({"cluster": server.directory.metrics()} if server.directory is not None else {}),
            }
        )

    async def openapi(request: Request) -> JSONResponse:
        return JSONResponse(openapi_document())

    routes = [
        Route("/tonebridge/v1/health", health),
        Route("/tonebridge/v1/metrics", metrics),
        Route("/tonebridge/v1/openapi.json", openapi),
        *event_routes(server),
        *prometheus_routes(server),
        *record_routes(server),
        *console_routes(server),
    ]
    calling = server.sinch_api
    if calling is not None:
        from tonebridge.api.calling import routes as calling_routes

        routes += calling_routes(calling, server.forwarder)
    return Starlette(
        routes=routes, middleware=[Middleware(BodyLimit)], exception_handlers=exception_handlers()
    )
