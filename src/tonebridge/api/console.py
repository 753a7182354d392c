"""The operator console: its pages at `/console` and the read-only JSON it polls under `/tonebridge/v1/console`.

The page (src/tonebridge/console/) shows rooms, participants and their levels, a timeline from the event
stream, the callback delivery log and a chart of participants and tick lateness; its buttons call the
`calling/v1` routes with the session (api/access.py). Every page and document here needs a session
except the login page and its stylesheet; what a session sees is scoped to its viewer.
"""

from __future__ import annotations

import asyncio
import html
from importlib import resources
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs

from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse, Response
from starlette.routing import BaseRoute, Route

from tonebridge.api.access import (
    COOKIE,
    ConsoleAccess,
    Refused,
    Viewer,
    access_for,
    acting_viewer,
    request_session,
    same_origin,
    session_cookie,
)
from tonebridge.api.errors import error_response

if TYPE_CHECKING:
    from tonebridge.conference.room import Participant
    from tonebridge.server import Server

CALLBACK_LOG_ROWS = 100
# The pages load nothing from elsewhere and run no inline script; no other site may frame the buttons.
_PAGE_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "connect-src 'self'; frame-ancestors 'none'; form-action 'self'; base-uri 'none'"
    ),
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",
}


def _asset(name: str) -> str:
    return resources.files("tonebridge").joinpath("console", name).read_text(encoding="utf-8")


def routes(server: Server) -> list[BaseRoute]:
    # The access is made on the first console request, not here: every session starts with a login, which
    # is one, and an app built around a stand-in server (tests of other routes) never needs it.
    index_page, login_page = _asset("index.html"), _asset("login.html")
    stylesheet, script = _asset("console.css"), _asset("console.js")

    def access() -> ConsoleAccess:
        return access_for(server)

    def login(message: str = "", status: int = 200) -> Response:
        text = login_page.replace("{{message}}", html.escape(message))
        return Response(text, status, media_type="text/html; charset=utf-8", headers=_PAGE_HEADERS)

    async def console(request: Request) -> Response:
        session = request_session(request, access())
        if session is None:
            return login()
        text = index_page.replace("{{csrf}}", html.escape(session.csrf)).replace(
            "{{viewer}}", html.escape(_describe(session.viewer))
        )
        return Response(text, media_type="text/html; charset=utf-8", headers=_PAGE_HEADERS)

    async def log_in(request: Request) -> Response:
        # Login CSRF: a form posted from another site carries that site's Origin; SameSite=Strict keeps
        # every later request's cookie from being sent by another site at all.
        if not same_origin(request):
            return login("This form must be sent from this server's own login page.", 403)
        fields = parse_qs((await request.body()).decode("utf-8", "replace"))
        name = fields.get("name", [""])[0].strip()
        password = fields.get("password", [""])[0]
        viewer = await asyncio.to_thread(access().check_login, name, password) if password else None
        if viewer is None:
            return login("Wrong name or password.", 401)
        session = access().open(viewer)
        response = RedirectResponse("/console", status_code=303)
        response.headers["Set-Cookie"] = session_cookie(request, session.token, int(access().lifetime))
        return response

    async def log_out(request: Request) -> Response:
        try:
            acting_viewer(request, access())
        except Refused as exc:
            return error_response(exc.status, exc.status * 100, exc.message)
        access().close(request.cookies.get(COOKIE, ""))
        response = Response(status_code=204)
        response.headers["Set-Cookie"] = session_cookie(request, "", 0)
        return response

    async def css(request: Request) -> Response:
        return Response(stylesheet, media_type="text/css; charset=utf-8", headers=_PAGE_HEADERS)

    async def js(request: Request) -> Response:
        if request_session(request, access()) is None:
            return error_response(401, 40100, "no console session: log in at /console")
        return Response(script, media_type="text/javascript; charset=utf-8", headers=_PAGE_HEADERS)

    def viewer_of(request: Request) -> Viewer | None:
        session = request_session(request, access())
        return session.viewer if session is not None else None

    async def state(request: Request) -> Response:
        viewer = viewer_of(request)
        if viewer is None:
            return error_response(401, 40100, "no console session: log in at /console")
        return JSONResponse(_state(server, viewer), headers={"Cache-Control": "no-store"})

    async def callbacks(request: Request) -> Response:
        viewer = viewer_of(request)
        if viewer is None:
            return error_response(401, 40100, "no console session: log in at /console")
        return JSONResponse(_callbacks(server, viewer), headers={"Cache-Control": "no-store"})

    return [
        Route("/console", console, methods=["GET"]),
        Route("/console/login", log_in, methods=["POST"]),
        Route("/console/logout", log_out, methods=["POST"]),
        Route("/console/console.css", css, methods=["GET"]),
        Route("/console/console.js", js, methods=["GET"]),
        Route("/tonebridge/v1/console/state", state, methods=["GET"]),
        Route("/tonebridge/v1/console/callbacks", callbacks, methods=["GET"]),
    ]


def _describe(viewer: Viewer) -> str:
    return f"operator {viewer.name}" if viewer.is_operator else f"application {viewer.app_key}"


def _state(server: Server, viewer: Viewer) -> dict[str, Any]:
    """Rooms and participants the viewer may see, with levels, and the media figures the chart plots."""
    owners = server.sinch.conference_owner if server.sinch is not None else {}
    levels = server.clock.levels
    now = server.engine.now()
    rooms = []
    for conference_id in server.conferences.rooms.conference_ids():
        owner = owners.get(conference_id)
        room = server.conferences.rooms.get(conference_id)
        if room is None or not viewer.sees(owner):
            continue
        rooms.append(
            {
                "id": conference_id,
                "owner": owner,
                "participants": [_participant(p, now, levels.get(p.call_id)) for p in room],
            }
        )
    lateness = server.clock.lateness_ms.snapshot()
    return {
        "viewer": {"name": viewer.name, "operator": viewer.is_operator},
        "rooms": rooms,
        "media": {
            "participants": sum(len(r["participants"]) for r in rooms),
            "ticks": server.clock.ticks,
            "tickLatenessMs": {k: lateness.get(k) for k in ("count", "sum", "max", "p99")},
        },
    }


def _participant(p: Participant, now: float, level: float | None) -> dict[str, Any]:
    return {
        "callId": p.call_id,
        "cli": p.cli,
        "duration": p.duration(now),
        "mode": p.options.mode.value,
        "maxDigits": p.options.max_digits,
        "timeoutMills": p.options.timeout_ms,
        "muted": p.muted,
        "onHold": p.on_hold,
        "state": p.state.value,
        "collected": p.collected,
        "level": level,
    }


def _callbacks(server: Server, viewer: Viewer) -> dict[str, Any]:
    """The latest callbacks the viewer's applications were sent, newest first."""
    if server.store is None:
        return {"callbacks": []}
    rows = [r for r in server.store.delivery_log(limit=CALLBACK_LOG_ROWS * 4) if viewer.sees(r.app_key)]
    return {
        "callbacks": [
            {
                "id": r.id,
                "event": r.event,
                "callId": r.call_id,
                "url": r.url,
                "state": r.state,
                "attempts": r.attempts,
                "status": r.status,
                "lastError": r.last_error,
                "createdAt": r.created_at,
                "doneAt": r.done_at,
                "nextRetryAt": r.next_attempt_at if r.state == "pending" else None,
            }
            for r in rows[:CALLBACK_LOG_ROWS]
        ]
    }
