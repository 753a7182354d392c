"""The event stream route: `/tonebridge/v1/events`, conference events as server-sent events."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING

from starlette.requests import Request
from starlette.responses import StreamingResponse
from starlette.routing import Route

if TYPE_CHECKING:
    from tonebridge.server import Server


def routes(server: Server) -> list[Route]:
    async def events(request: Request) -> StreamingResponse:
        """Server-sent events: one `data: {json}` per press, collection, join, leave... (conference-dtmf §5)."""
        bus = server.conferences.events
        queue = bus.subscribe()

        async def stream() -> AsyncIterator[bytes]:
            try:
                yield b": tonebridge event stream\n\n"
                while True:
                    try:
                        event = await asyncio.wait_for(queue.get(), 15.0)
                    except TimeoutError:
                        yield b": keep-alive\n\n"
                        continue
                    yield b"data: " + json.dumps(event, separators=(",", ":")).encode() + b"\n\n"
            finally:
                bus.unsubscribe(queue)

        return StreamingResponse(
            stream(), media_type="text/event-stream", headers={"Cache-Control": "no-store"}
        )

    return [Route("/tonebridge/v1/events", events)]
