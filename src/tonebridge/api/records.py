"""Call records over HTTP: `GET /tonebridge/v1/calls?from=&to=&conferenceId=&limit=`, the call history
newest first, each call with its conferences and callback attempts. A request signed as the calling API's
(or with Basic credentials) sees its own application's calls; any other gets a 401 in the Sinch shape."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import BaseRoute, Route

from tonebridge.api.errors import ApiError, invalid
from tonebridge.callbacks.signing import DEFAULT_SKEW, AuthError, verify_request
from tonebridge.calls.history_format import as_json, parse_time

if TYPE_CHECKING:
    from tonebridge.server import Server

__all__ = ["DEFAULT_LIMIT", "MAX_LIMIT", "routes"]

DEFAULT_LIMIT = 1000
MAX_LIMIT = 10_000


async def _viewer(request: Request, server: Server) -> str:
    """Whose calls the request may see: the application key it is signed with. The one access check of
    this route (a console login is to be added here)."""
    secret_for = server.sinch_api.secret_for if server.sinch_api is not None else lambda key: None
    body = await request.body()
    raw_path = request.scope.get("raw_path", b"").decode("latin-1").split("?")[0] or request.url.path
    try:
        return verify_request(
            request.method, raw_path, request.headers, body, secret_for, datetime.now(UTC), DEFAULT_SKEW
        )
    except AuthError as exc:
        raise ApiError(exc.error_code, exc.message) from None


def _time_param(request: Request, name: str) -> float | None:
    text = request.query_params.get(name)
    if text is None:
        return None
    try:
        return parse_time(text)
    except ValueError as exc:
        raise invalid(name, str(exc)) from None


def _limit_param(request: Request) -> int:
    text = request.query_params.get("limit")
    if text is None:
        return DEFAULT_LIMIT
    if not text.isdigit() or not 1 <= int(text) <= MAX_LIMIT:
        raise invalid("limit", f"{text!r} is not a whole number from 1 to {MAX_LIMIT}")
    return int(text)


def routes(server: Server) -> list[BaseRoute]:
    async def calls(request: Request) -> JSONResponse:
        app_key = await _viewer(request, server)
        since, until = _time_param(request, "from"), _time_param(request, "to")
        if since is not None and until is not None and until < since:
            raise invalid("to", "is before from")
        conference_id = request.query_params.get("conferenceId") or None
        limit = _limit_param(request)
        # A read of the history may be long; it runs off the loop, on the store's own read connection.
        history = await asyncio.to_thread(
            server.store.call_history,
            since=since,
            until=until,
            conference_id=conference_id,
            app_key=app_key,
            limit=limit,
        )
        return JSONResponse([as_json(entry) for entry in history])

    return [Route("/tonebridge/v1/calls", calls, methods=["GET"])]
