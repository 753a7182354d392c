"""The request body limit, enforced before any route sees the request.

Authentication hashes the whole body (Content-MD5 is part of the signed text), so the limit cannot wait
for the route: a declared Content-Length over the limit is refused before a byte of the body is read, and a
body without one (chunked) is read into memory only up to the limit. The refusal closes the connection,
since keeping it open would mean reading, and discarding, the rest of the body.
"""

from __future__ import annotations

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from tonebridge.api.errors import PAYLOAD_TOO_LARGE, error_response

MAX_BODY = 64 * 1024


class BodyLimit:
    def __init__(self, app: ASGIApp, max_body: int = MAX_BODY) -> None:
        self.app = app
        self.max_body = max_body

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared: int | None = None
        chunked = False
        for name, value in scope["headers"]:
            if name == b"content-length" and value.isdigit():
                declared = int(value)
            elif name == b"transfer-encoding":
                chunked = True
        if declared is not None and declared > self.max_body:
            await self.refuse(scope, send, f"request body: {declared} bytes declared")
            return
        if not chunked:
            # The HTTP server delivers no more than the declared length, and nothing without one.
            await self.app(scope, receive, send)
            return

        body = bytearray()
        while True:
            message = await receive()
            if message["type"] != "http.request":
                # The client went away; the route sees the same disconnect.
                await self.app(scope, _replay([message], receive), send)
                return
            body += message.get("body", b"")
            if len(body) > self.max_body:
                await self.refuse(scope, send, f"request body: at least {len(body)} bytes sent")
                return
            if not message.get("more_body", False):
                break
        await self.app(
            scope, _replay([{"type": "http.request", "body": bytes(body), "more_body": False}], receive), send
        )

    async def refuse(self, scope: Scope, send: Send, detail: str) -> None:
        response = error_response(413, PAYLOAD_TOO_LARGE, f"{detail}; the limit is {self.max_body} bytes")
        response.headers["connection"] = "close"
        await response(scope, _no_receive, send)


def _replay(messages: list[Message], receive: Receive) -> Receive:
    async def replayed() -> Message:
        if messages:
            return messages.pop(0)
        return await receive()

    return replayed


async def _no_receive() -> Message:
    raise RuntimeError("a refused request's body is not read")
