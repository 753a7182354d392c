"""The calling API in a cluster: a request for a conference or a call that another node carries is answered
by that node (docs/cluster.md, "API in a cluster").

The HTTP front spreads `calling/v1` over the nodes, but a conference is mixed, and a call carried, by one
node. Before a routed request is handled here, `ApiForwarder.forward` authenticates it on this node (an
unauthenticated request is refused by the node that got it, as a single node refuses it), then asks the
directory where what it names lives:

- a conference (`/conferences/id/{conference_id}[/{call_id}]`): its home, `tonebridge:home:{id}`;
- a call (`/calls/id/{call_id}[/leg/{leg}]`): the node of its entry, `tonebridge:call:{id}`;
- a `conferenceCallout`: the home of its conference, which places the call (a conference with no home, or
  whose home is dead, is placed here: the join claims it).

When that is another live node (its heartbeat hash exists), the request goes there unchanged (method, path
as sent with its query, body, and the headers its authentication needs) with `X-Tonebridge-Forwarded-By`,
and the answer comes back verbatim. The home authenticates it again: the signed path, body and timestamp
are the ones the application signed. A request that carries the header is never forwarded again. A home
that cannot be reached gives 503 in the Sinch error shape; a directory that cannot be read leaves the
request to this node. Everything else (numbers, callback URLs, number queries) is configuration, the same
on every node, and stays here.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Literal

import httpx
from redis.exceptions import RedisError
from starlette.requests import Request
from starlette.responses import Response

from tonebridge.api.access import COOKIE, CSRF_HEADER
from tonebridge.api.errors import error_response
from tonebridge.cluster.directory import CALL, NODE, ClusterDirectory

__all__ = ["FORWARDED_BY", "TIMEOUT", "UNAVAILABLE", "ApiForwarder", "Home", "Routed"]

log = logging.getLogger("tonebridge.cluster")

FORWARDED_BY = "X-Tonebridge-Forwarded-By"
# How long the home has to answer (connect, send, read), after which the request is answered 503.
TIMEOUT = 5.0
UNAVAILABLE = 50300
# What a routed request names: a conference, a call, or (a callout) the conference it joins.
Routed = Literal["conference", "call", "callout"]
# The headers the home needs to authenticate the request and read its body.
_HEADERS = ("authorization", "x-timestamp", "content-type", CSRF_HEADER.lower())


@dataclass(frozen=True, slots=True)
class Home:
    """The live node that carries what a request names."""

    node_id: str
    http: str
    what: str  # for messages: "conference left", "call 3f2a..."


class ApiForwarder:
    def __init__(self, directory: ClusterDirectory, *, timeout: float = TIMEOUT) -> None:
        self.directory = directory
        self.node_id = directory.node_id
        self.timeout = timeout
        self._client: httpx.AsyncClient | None = None

    async def close(self) -> None:
        if self._client is not None:
            await self._client.aclose()
            self._client = None

    async def forward(
        self, kind: Routed, request: Request, authenticate: Callable[[Request], Awaitable[object]]
    ) -> Response | None:
        """The home's answer to `request` when another live node carries what it names; None to handle it
        here. `authenticate` raises the refusal of a request whose credentials do not hold."""
        counters = self.directory.counters
        if FORWARDED_BY in request.headers:
            counters["api_forwarded_in"] += 1
            return None
        await authenticate(request)
        if not self.directory.available:
            # Cut off from the directory: answered here (health says 503, so the front sends few).
            return None
        home = await self.home(kind, request)
        if home is None:
            return None
        return await self.relay(request, home)

    async def home(self, kind: Routed, request: Request) -> Home | None:
        """The other live node that carries what `request` names, or None (here, nowhere, or unknown)."""
        redis = self.directory.redis
        try:
            if kind == "conference":
                what = f"conference {request.path_params['conference_id']}"
                node = await self.directory.home_of(request.path_params["conference_id"])
            elif kind == "call":
                what = f"call {request.path_params['call_id']}"
                node = _text(await redis.hget(CALL + request.path_params["call_id"], "node"))
            else:
                conference_id = _callout_conference(await request.body())
                if conference_id is None:
                    return None
                what = f"conference {conference_id}"
                node = await self.directory.home_of(conference_id)
            if not node or node == self.node_id:
                return None
            # A node whose heartbeat has lapsed has no hash: it is dead, and what it held is handled here.
            http = _text(await redis.hget(NODE + node, "http"))
        except (RedisError, OSError) as exc:
            self.directory.counters["api_route_failed"] += 1
            log.warning("event=api_route_failed path=%s error=%r", request.url.path, exc)
            return None
        return Home(node, http, what) if http else None

    async def relay(self, request: Request, home: Home) -> Response:
        """`request` sent to `home` as it came; its answer as the home gave it (503 if it gives none)."""
        raw_path = request.scope.get("raw_path") or request.url.path.encode()
        query = request.scope.get("query_string", b"")
        target = raw_path + (b"?" + query if query else b"")
        headers = {name: request.headers[name] for name in _HEADERS if name in request.headers}
        if COOKIE in request.cookies:
            headers["cookie"] = f"{COOKIE}={request.cookies[COOKIE]}"
        headers[FORWARDED_BY] = self.node_id
        body = await request.body()
        counters = self.directory.counters
        try:
            url = httpx.URL(f"http://{home.http}").copy_with(raw_path=target)
            answer = await self._http().request(request.method, url, headers=headers, content=body or None)
        except (httpx.HTTPError, httpx.InvalidURL, ValueError) as exc:
            counters["api_forward_failed"] += 1
            log.warning(
                "event=api_forward_failed method=%s path=%s home=%s http=%s error=%r",
                request.method,
                request.url.path,
                home.node_id,
                home.http,
                exc,
            )
            return error_response(
                503, UNAVAILABLE, f"{home.what} is on node {home.node_id}, which cannot be reached"
            )
        counters["api_forwarded"] += 1
        log.debug(
            "event=api_forwarded method=%s path=%s home=%s status=%d",
            request.method,
            request.url.path,
            home.node_id,
            answer.status_code,
        )
        relayed = {"content-type": answer.headers["content-type"]} if "content-type" in answer.headers else {}
        return Response(content=answer.content, status_code=answer.status_code, headers=relayed)

    def _http(self) -> httpx.AsyncClient:
        if self._client is None:
            # No proxy from the environment: the nodes talk to each other directly.
            self._client = httpx.AsyncClient(timeout=self.timeout, trust_env=False, follow_redirects=False)
        return self._client


def _text(value: bytes | str | None) -> str | None:
    # The directory's client decodes responses; the type of redis-py's hget does not say so.
    return value.decode() if isinstance(value, bytes) else value


def _callout_conference(body: bytes) -> str | None:
    """The conference a `conferenceCallout` joins; None for any other body (including one that does not
    parse: this node gives the error, as a single node would)."""
    try:
        document = json.loads(body)
    except (ValueError, RecursionError):
        return None
    if not isinstance(document, dict) or document.get("method") != "conferenceCallout":
        return None
    callout = document.get("conferenceCallout")
    conference_id = callout.get("conferenceId") if isinstance(callout, dict) else None
    return conference_id if isinstance(conference_id, str) and conference_id else None
