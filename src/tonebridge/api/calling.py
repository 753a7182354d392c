"""The Sinch Voice REST API (`calling/v1`) and its configuration endpoints, per shared/spec/sinch-voice-v1.md.

Each route authenticates the request (application-signed or Basic, or a console session with its CSRF
token: api/access.py), validates the body into typed values (api/callouts.py: every fault is a 400 naming
the field), and calls the application through `CallingApplication`, whose domain errors api/errors.py turns
into Sinch error bodies. An application sees only its own calls and conferences: another's id is a 404.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, Protocol
from urllib.parse import unquote

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Match, Route
from starlette.types import Scope

from tonebridge.api.access import COOKIE, Refused, access_for_calling_api, acting_viewer
from tonebridge.api.callouts import (
    parse_call_leg,
    parse_call_update,
    parse_callback_urls,
    parse_callout_request,
    parse_number,
    parse_numbers,
    parse_participant_update,
    requested_application,
)
from tonebridge.api.errors import INVALID_REQUEST, NOT_FOUND, ApiError, invalid
from tonebridge.api.limits import MAX_BODY
from tonebridge.callbacks.signing import AuthError, verify_request
from tonebridge.calls.errors import ApplicationNotFound
from tonebridge.calls.requests import CallbackUrls, CallLeg, Callout, ParticipantUpdate
from tonebridge.svaml.models import Svaml

if TYPE_CHECKING:
    from tonebridge.api.access import ConsoleAccess, Viewer
    from tonebridge.cluster.forward import ApiForwarder, Routed

__all__ = ["MAX_BODY", "MAX_DEPTH", "CallingApplication", "RawPathRoute", "read_json", "routes"]


class CallingApplication(Protocol):
    """What the routes ask of the application (calls/sinch_api.py's SinchOperations). `key` is always the
    authenticated application's; an id it does not own raises a domain error (calls/errors.py)."""

    def secret_for(self, key: str) -> str | None: ...

    async def callout(self, key: str, callout: Callout) -> str: ...

    def call_info(self, key: str, call_id: str) -> dict[str, Any]: ...

    async def update_call(self, key: str, call_id: str, svaml: Svaml, leg: CallLeg | None) -> None: ...

    def conference_participants(self, key: str, conference_id: str) -> list[dict[str, Any]]: ...

    def kick_all(self, key: str, conference_id: str) -> None: ...

    def kick_participant(self, key: str, conference_id: str, call_id: str) -> None: ...

    def manage_participant(
        self, key: str, conference_id: str, call_id: str, update: ParticipantUpdate
    ) -> None: ...

    def list_numbers(self, key: str) -> list[dict[str, str]]: ...

    def assign_numbers(self, key: str, numbers: list[str]) -> None: ...

    def unassign_number(self, key: str, number: str) -> None: ...

    def callback_urls(self, key: str) -> dict[str, str]: ...

    def set_callback_urls(self, key: str, urls: CallbackUrls) -> None: ...

    def query_number(self, number: str) -> dict[str, Any]: ...


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
        raise invalid(
            field,
            f"{what} is not valid Unicode text (lone surrogate U+{ord(text[exc.start]):04X} at {exc.start})",
        ) from None


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
            path = path[len(root_path) :]
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


def _console_viewer(request: Request, app: CallingApplication) -> tuple[ConsoleAccess, Viewer]:
    """The console session's access and viewer, when the session may act (else the refusal)."""
    access = access_for_calling_api(app)
    if access is None:
        raise ApiError(40100, "console sessions are not accepted here")
    try:
        return access, acting_viewer(request, access)
    except Refused as exc:
        raise ApiError(exc.status * 100, exc.message) from None


def _console_key(request: Request, app: CallingApplication) -> str:
    """The application a console session acts as: its own for an application's login; for an operator's,
    the application that owns the conference (else the call) the route names, so that the operation runs
    with exactly the checks an application's request gets."""
    access, viewer = _console_viewer(request, app)
    if viewer.app_key is not None:
        return viewer.app_key
    conference_id = request.path_params.get("conference_id")
    call_id = request.path_params.get("call_id")
    if conference_id is None and call_id is None:
        raise ApiError(40300, "an operator acts only on existing calls and conferences")
    owner = access.owner_of(conference_id, call_id)
    if owner is None:
        field, value = ("conferenceId", conference_id) if conference_id is not None else ("callId", call_id)
        raise ApiError(NOT_FOUND, f"{field}: {value} not found")
    return owner


Endpoint = Callable[[Request], Awaitable[Response]]


def routes(app: CallingApplication, forwarder: ApiForwarder | None = None) -> list[Route]:
    """The routes over `app`; with `forwarder` (cluster mode), those naming a conference or a call, and
    conference callouts, are answered by the node that carries it (cluster/forward.py)."""

    def homed(kind: Routed, handler: Endpoint) -> Endpoint:
        if forwarder is None:
            return handler
        forward = forwarder.forward

        async def endpoint(request: Request) -> Response:
            relayed = await forward(kind, request, credentials)
            return relayed if relayed is not None else await handler(request)

        return endpoint

    async def credentials(request: Request) -> None:
        """Refuse a request whose credentials do not hold; an operator's session is checked, but not yet
        resolved to the owner of what it names (the node that carries it does that)."""
        if "authorization" not in request.headers and COOKIE in request.cookies:
            _console_viewer(request, app)
        else:
            await authenticate(request)

    async def authenticate(request: Request) -> str:
        if "authorization" not in request.headers and COOKIE in request.cookies:
            return _console_key(request, app)
        body = await request.body()
        raw_path = request.scope.get("raw_path", b"").decode("latin-1").split("?")[0] or request.url.path
        try:
            return verify_request(
                request.method, raw_path, request.headers, body, app.secret_for, datetime.now(UTC), SKEW
            )
        except AuthError as exc:
            raise ApiError(exc.error_code, exc.message) from None

    async def callouts(request: Request) -> JSONResponse:
        key = await authenticate(request)
        callout = parse_callout_request(await read_json(request))
        call_id = await app.callout(key, callout)
        return JSONResponse({"callId": call_id})

    async def get_call(request: Request) -> JSONResponse:
        key = await authenticate(request)
        return JSONResponse(app.call_info(key, request.path_params["call_id"]))

    async def update_call(request: Request) -> Response:
        key = await authenticate(request)
        svaml = parse_call_update(await read_json(request))
        await app.update_call(key, request.path_params["call_id"], svaml, leg=None)
        return empty()

    async def update_call_leg(request: Request) -> Response:
        key = await authenticate(request)
        leg = parse_call_leg(request.path_params["leg"])
        svaml = parse_call_update(await read_json(request))
        await app.update_call(key, request.path_params["call_id"], svaml, leg=leg)
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
        update = parse_participant_update(await read_json(request))
        app.manage_participant(
            key, request.path_params["conference_id"], request.path_params["call_id"], update
        )
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
            numbers = parse_numbers(body)
            target = requested_application(body, key)
            if target != key:
                raise ApplicationNotFound(target)
            app.assign_numbers(key, numbers)
        else:
            app.unassign_number(key, parse_number(body))
        return empty()

    async def callback_urls(request: Request) -> Response:
        key = await authenticate(request)
        target = request.path_params["application_key"]
        if target != key:
            raise ApplicationNotFound(target)
        if request.method == "GET":
            return JSONResponse({"url": app.callback_urls(key)})
        app.set_callback_urls(key, parse_callback_urls(await read_json(request)))
        return empty()

    async def query_number(request: Request) -> JSONResponse:
        await authenticate(request)
        return JSONResponse({"number": app.query_number(request.path_params["number"])})

    return [
        Route("/calling/v1/callouts", homed("callout", callouts), methods=["POST"]),
        RawPathRoute("/calling/v1/calls/id/{call_id}", homed("call", get_call), methods=["GET"]),
        RawPathRoute("/calling/v1/calls/id/{call_id}", homed("call", update_call), methods=["PATCH"]),
        RawPathRoute(
            "/calling/v1/calls/id/{call_id}/leg/{leg}", homed("call", update_call_leg), methods=["PATCH"]
        ),
        RawPathRoute(
            "/calling/v1/conferences/id/{conference_id}", homed("conference", get_conference), methods=["GET"]
        ),
        RawPathRoute(
            "/calling/v1/conferences/id/{conference_id}", homed("conference", kick_all), methods=["DELETE"]
        ),
        RawPathRoute(
            "/calling/v1/conferences/id/{conference_id}/{call_id}",
            homed("conference", manage_participant),
            methods=["PATCH"],
        ),
        RawPathRoute(
            "/calling/v1/conferences/id/{conference_id}/{call_id}",
            homed("conference", kick_participant),
            methods=["DELETE"],
        ),
        Route("/v1/configuration/numbers", numbers, methods=["GET", "POST", "DELETE"]),
        RawPathRoute(
            "/v1/configuration/callbacks/applications/{application_key}",
            callback_urls,
            methods=["GET", "POST"],
        ),
        RawPathRoute("/v1/calling/query/number/{number}", query_number, methods=["GET"]),
    ]
