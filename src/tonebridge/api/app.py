"""The Starlette application: Tonebridge's own routes under `/tonebridge/v1`.

`health` answers whether the server is up and how many calls it carries; `metrics` gives the SIP transport
counters (received, rejected, dropped garbage) and call counts, for operators and tests.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

if TYPE_CHECKING:
    from tonebridge.server import Server


def create_app(server: Server) -> Starlette:
    async def health(request: Request) -> JSONResponse:
        return JSONResponse({"status": "ok", "activeCalls": server.engine.active_calls})

    async def metrics(request: Request) -> JSONResponse:
        return JSONResponse({
            "sip": dict(server.stack.transport.stats.counters),
            "calls": {"active": server.engine.active_calls, "total": len(server.engine.sessions)},
            "tasks": len(asyncio.all_tasks()),
            "media": {"lateTicks": server.clock.late_ticks, "portsInUse": server.engine.ports.in_use,
                      "legs": len(server.clock.legs)},
        })

    return Starlette(routes=[
        Route("/tonebridge/v1/health", health),
        Route("/tonebridge/v1/metrics", metrics),
    ])
