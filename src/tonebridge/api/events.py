"""The event stream route: `/tonebridge/v1/events`, conference events as server-sent events, replayed from
the id a reconnecting client last saw, filtered by conference and call, scoped to the reader's
application (docs/conference.md, "The event stream")."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote_plus

from starlette.requests import Request
from starlette.responses import StreamingResponse
from starlette.routing import Route

from tonebridge.api.access import session_viewer
from tonebridge.api.calling import SKEW
from tonebridge.api.errors import ApiError
from tonebridge.callbacks.signing import AuthError, verify_request
from tonebridge.events import EventFilter

if TYPE_CHECKING:
    from tonebridge.server import Server

__all__ = ["KEEP_ALIVE_SECONDS", "RETRY_MS", "reader", "routes"]

KEEP_ALIVE_SECONDS = 15.0
RETRY_MS = 3000  # EventSource's reconnection delay; the default differs between browsers


def reader(server: Server, request: Request) -> str | None:
    """Whose events the request may read: the key of the one application it may see, or None for all of
    them. In demo mode (no applications) the stream is open to all. With applications, a console session
    reads as its viewer (an operator all, an application its own); a request signed as calling/v1 requests
    are (or with Basic credentials) reads its application's events; any other is a 401 in the Sinch error
    format. The one place that decides it, for other kinds of reader to join."""
    api = server.sinch_api
    if not server.config.applications or api is None:
        return None
    if "authorization" not in request.headers and (viewer := session_viewer(request, server)) is not None:
        return viewer.app_key
    # The whole path as sent: verify_request tries it without the query first, as the calling API signs.
    raw = request.scope.get("raw_path", b"").decode("latin-1") or request.url.path
    if request.url.query and "?" not in raw:
        raw += "?" + request.url.query
    try:
        return verify_request(
            request.method, raw, request.headers, b"", api.secret_for, datetime.now(UTC), SKEW
        )
    except AuthError as exc:
        raise ApiError(exc.error_code, exc.message) from None


def _query(request: Request) -> dict[str, list[str]]:
    # Split on commas before percent-decoding, so that an id holding a comma can still be named (`%2C`).
    out: dict[str, list[str]] = {}
    for pair in request.scope.get("query_string", b"").decode("latin-1").split("&"):
        name, _, value = pair.partition("=")
        if name:
            out.setdefault(unquote_plus(name), []).extend(
                unquote_plus(part) for part in value.split(",") if part
            )
    return out


def _frame(event: dict[str, Any]) -> bytes:
    data = b"data: " + json.dumps(event, separators=(",", ":")).encode() + b"\n\n"
    event_id = event.get("id")
    return data if event_id is None else f"id: {event_id}\n".encode() + data


def routes(server: Server) -> list[Route]:
    async def events(request: Request) -> StreamingResponse:
        """Server-sent events: one `data: {json}` per press, collection, join, leave... (conference-dtmf §5)."""
        query = _query(request)
        # EventSource sends the header on reconnect, with the URL it first had: the header is the newer.
        after = request.headers.get("last-event-id") or next(iter(query.get("lastEventId", [])), None)
        scope = EventFilter(
            conference_ids=frozenset(query.get("conferenceId", [])),
            call_ids=frozenset(query.get("callId", [])),
            application=reader(server, request),
        )
        bus = server.conferences.events

        async def stream() -> AsyncIterator[bytes]:
            # Subscribed when the body starts, not before: a response never sent leaves no reader behind.
            subscription = bus.subscribe(after or None, scope)
            try:
                yield f": tonebridge event stream\nretry: {RETRY_MS}\n\n".encode()
                for event in subscription.backlog:
                    yield _frame(event)
                subscription.backlog = []
                reported = 0
                while True:
                    try:
                        event = await asyncio.wait_for(subscription.queue.get(), KEEP_ALIVE_SECONDS)
                    except TimeoutError:
                        yield b": keep-alive\n\n"
                        continue
                    if subscription.dropped != reported:
                        # No id: the reader's last id stays the one before the loss, so reconnecting with
                        # it gets the lost events back from the ring while they are retained.
                        lost = subscription.dropped - reported
                        reported = subscription.dropped
                        yield _frame({"type": "gap", "reason": "overflow", "dropped": lost})
                    yield _frame(event)
            finally:
                bus.unsubscribe(subscription)

        return StreamingResponse(
            stream(), media_type="text/event-stream", headers={"Cache-Control": "no-store"}
        )

    return [Route("/tonebridge/v1/events", events)]
