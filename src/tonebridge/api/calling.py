"""The Sinch Voice REST API (`calling/v1`) and its configuration endpoints, per shared/spec/sinch-voice-v1.md.

Each route authenticates the request (application-signed or Basic), validates the body into plain values
(every fault is a 400 naming the field), and calls the Sinch application (`calls/sinch.py`), which owns
the calls. An application sees only its own calls and conferences: another's id is a 404.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Match, Route
from starlette.types import Scope

from tonebridge.api.errors import INVALID_REQUEST, ApiError, invalid, missing
from tonebridge.api.limits import MAX_BODY
from tonebridge.callbacks.signing import AuthError, verify_request

if TYPE_CHECKING:
    from tonebridge.calls.sinch import SinchApplication

__all__ = ["MAX_BODY", "MAX_DEPTH", "RawPathRoute", "read_json", "routes"]

MAX_DEPTH = 64
SKEW = timedelta(minutes=15)


def empty() -> Response:
    return Response(status_code=200)


async def read_json(request: Request, *, required: bool = True) -> dict[str, Any]:
    """The body as a JSON object whose every string can be encoded as UTF-8 (the store, the callbacks and
    the logs all encode them), nested no deeper than MAX_DEPTH (so that nothing downstream recurses past
    Python's limit). The size limit is BodyLimit's, applied before the body was read."""
    body = await request.body()
    if not body.strip():
        if required:
            raise ApiError(INVALID_REQUEST, "request body: a JSON object is required")
        return {}
    try:
        value = json.loads(body)
    except RecursionError:
        raise ApiError(INVALID_REQUEST, f"request body: nested deeper than {MAX_DEPTH} levels") from None
    except (ValueError, UnicodeDecodeError) as exc:
        raise ApiError(INVALID_REQUEST, f"request body: not valid JSON ({exc})") from None
    if not isinstance(value, dict):
        raise ApiError(INVALID_REQUEST, "request body: must be a JSON object")
    _check_text(value)
    return value


def _check_text(document: dict[str, Any]) -> None:
    # Iterative, so that the walk itself cannot exhaust the stack.
    pending: list[tuple[str, int, Any]] = [("", 1, document)]
    while pending:
        path, depth, value = pending.pop()
        if depth > MAX_DEPTH:
            raise ApiError(INVALID_REQUEST, f"request body: nested deeper than {MAX_DEPTH} levels")
        if isinstance(value, dict):
            for key, item in value.items():
                field = f"{path}.{_printable(key)}" if path else _printable(key)
                _check_utf8(field, key, "name")
                pending.append((field, depth + 1, item))
        elif isinstance(value, list):
            pending.extend((f"{path}[{index}]", depth + 1, item) for index, item in enumerate(value))
        elif isinstance(value, str):
            _check_utf8(path, value, "value")


def _check_utf8(field: str, text: str, what: str) -> None:
    if text.isascii():
        return
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise invalid(field, f"{what} is not valid Unicode text (lone surrogate U+{ord(text[exc.start]):04X} "
                             f"at {exc.start})") from None


def _printable(key: str) -> str:
    # A field name goes into the error message, which must itself encode as UTF-8.
    return key.encode("utf-8", "backslashreplace").decode("utf-8")


class RawPathRoute(Route):
    """A route matched on the path as sent when it holds an encoded slash.

    Starlette matches the decoded path, where `c7%2F1` has already become two segments; the path as sent
    keeps it in one. Each parameter is then percent-decoded exactly once, as Starlette decodes it."""

    def matches(self, scope: Scope) -> tuple[Match, Scope]:
        raw = scope.get("raw_path")
        if scope["type"] != "http" or raw is None or b"%2f" not in raw.lower():
            return super().matches(scope)
        path = raw.decode("latin-1").partition("?")[0]
        root_path = scope.get("root_path", "")
        if root_path and path.startswith(root_path):
            path = path[len(root_path):]
        match = self.path_regex.match(path)
        if match is None:
            return Match.NONE, {}
        params = dict(scope.get("path_params", {}))
        for name, value in match.groupdict().items():
            params[name] = self.param_convertors[name].convert(unquote(value))
        child_scope = {"endpoint": self.endpoint, "path_params": params}
        if self.methods and scope["method"] not in self.methods:
            return Match.PARTIAL, child_scope
        return Match.FULL, child_scope


def routes(app: SinchApplication) -> list[Route]:
    async def authenticate(request: Request) -> str:
        body = await request.body()
        raw_path = request.scope.get("raw_path", b"").decode("latin-1").split("?")[0] or request.url.path
        try:
            return verify_request(request.method, raw_path, request.headers, body, app.secret_for,
                                  datetime.now(UTC), SKEW)
        except AuthError as exc:
            raise ApiError(exc.error_code, exc.message) from None

    async def callouts(request: Request) -> JSONResponse:
        key = await authenticate(request)
        body = await read_json(request)
        call_id = await app.callout(key, body)
        return JSONResponse({"callId": call_id})

    async def get_call(request: Request) -> JSONResponse:
        key = await authenticate(request)
        return JSONResponse(app.call_info(key, request.path_params["call_id"]))

    async def update_call(request: Request) -> Response:
        key = await authenticate(request)
        body = await read_json(request)
        await app.update_call(key, request.path_params["call_id"], body, leg=None)
        return empty()

    async def update_call_leg(request: Request) -> Response:
        key = await authenticate(request)
        leg = request.path_params["leg"]
        if leg not in ("caller", "callee", "both"):
            raise invalid("callLeg", "must be caller, callee or both")
        body = await read_json(request)
        await app.update_call(key, request.path_params["call_id"], body, leg=leg)
        return empty()

    async def get_conference(request: Request) -> JSONResponse:
        key = await authenticate(request)
        conference_id = request.path_params["conference_id"]
        return JSONResponse({"participants": app.conference_participants(key, conference_id)})

    async def kick_all(request: Request) -> Response:
        key = await authenticate(request)
        app.kick_all(key, request.path_params["conference_id"])
        return empty()

    async def manage_participant(request: Request) -> Response:
        key = await authenticate(request)
        body = await read_json(request)
        app.manage_participant(key, request.path_params["conference_id"], request.path_params["call_id"],
                               body)
        return empty()

    async def kick_participant(request: Request) -> Response:
        key = await authenticate(request)
        app.kick_participant(key, request.path_params["conference_id"], request.path_params["call_id"])
        return empty()

    async def numbers(request: Request) -> Response:
        key = await authenticate(request)
        if request.method == "GET":
            return JSONResponse({"numbers": app.list_numbers(key)})
        body = await read_json(request)
        if request.method == "POST":
            app.assign_numbers(key, body)
        else:
            app.unassign_number(key, body)
        return empty()

    async def callback_urls(request: Request) -> Response:
        key = await authenticate(request)
        target = request.path_params["application_key"]
        if target != key:
            raise ApiError(40400, f"applicationkey: no application {target!r} for these credentials")
        if request.method == "GET":
            return JSONResponse({"url": app.callback_urls(key)})
        body = await read_json(request)
        url = body.get("url")
        if not isinstance(url, dict):
            raise missing("url") if url is None else invalid("url", "must be an object with primary and fallback")
        app.set_callback_urls(key, url)
        return empty()

    async def query_number(request: Request) -> JSONResponse:
        await authenticate(request)
        return JSONResponse({"number": app.query_number(request.path_params["number"])})

    return [
        Route("/calling/v1/callouts", callouts, methods=["POST"]),
        RawPathRoute("/calling/v1/calls/id/{call_id}", get_call, methods=["GET"]),
        RawPathRoute("/calling/v1/calls/id/{call_id}", update_call, methods=["PATCH"]),
        RawPathRoute("/calling/v1/calls/id/{call_id}/leg/{leg}", update_call_leg, methods=["PATCH"]),
        RawPathRoute("/calling/v1/conferences/id/{conference_id}", get_conference, methods=["GET"]),
        RawPathRoute("/calling/v1/conferences/id/{conference_id}", kick_all, methods=["DELETE"]),
        RawPathRoute("/calling/v1/conferences/id/{conference_id}/{call_id}", manage_participant,
                     methods=["PATCH"]),
        RawPathRoute("/calling/v1/conferences/id/{conference_id}/{call_id}", kick_participant,
                     methods=["DELETE"]),
        Route("/v1/configuration/numbers", numbers, methods=["GET", "POST", "DELETE"]),
        RawPathRoute("/v1/configuration/callbacks/applications/{application_key}", callback_urls,
                     methods=["GET", "POST"]),
        RawPathRoute("/v1/calling/query/number/{number}", query_number, methods=["GET"]),
    ]
