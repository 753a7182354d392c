"""Limits on the HTTP port's connections that uvicorn leaves to its caller: a deadline for the request
headers (slow-loris), on top of what uvicorn already enforces when asked (header size, idle keep-alive,
concurrent connections: `tonebridge.server` sets those from `[http]`).

uvicorn times only the idle gap between two requests on a kept-alive connection; a client that opens a
connection and then sends its headers a byte at a time (or nothing at all) holds a socket and a protocol
object for as long as it likes. `HeaderTimeoutProtocol` is uvicorn's h11 protocol with one timer more:
armed whenever the connection waits for a request (on connect, and when bytes of a further request start
arriving), cancelled as soon as h11 has parsed the request line and headers. When it fires the connection
is closed without an answer. The body is not timed here: the application reads it, within the body limit
of `tonebridge.api.limits`.

It also counts the bytes of the request line and headers itself: h11's `max_incomplete_event_size` only
applies while the header block is incomplete, so 64 KiB of headers arriving in one read would pass, and
what h11 refuses uvicorn answers with a plain-text 400. Over `h11_max_incomplete_event_size` this class
answers 431 in the Sinch error format and closes the connection, before h11 sees the bytes.
"""

from __future__ import annotations

import asyncio
import json
import logging
import secrets
from typing import Any

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol

log = logging.getLogger("tonebridge.http")

HEADERS_TOO_LARGE = 43100  # Sinch-style: the status is the code's first three digits
_END_OF_HEADERS = b"\r\n\r\n"


class HeaderTimeoutProtocol(H11Protocol):
    # Set by `protocol_class`; the class attribute is only the fallback.
    header_timeout: float = 10.0

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._header_timer: asyncio.TimerHandle | None = None
        self._header_bytes = 0  # of the request being received, while h11 waits for its headers
        self._header_tail = b""  # the last bytes seen, for an end of headers split across two reads
        self.max_header_bytes: int = self.config.h11_max_incomplete_event_size or 16 * 1024

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm_header_timer()

    def data_received(self, data: bytes) -> None:
        # IDLE: h11 is still waiting for (the rest of) a request line and headers. uvicorn cancels its
        # keep-alive timer on any byte, so the first byte of a further request arms this one.
        if self.conn.their_state is h11.IDLE:
            self._arm_header_timer()
            window = self._header_tail + data
            end = window.find(_END_OF_HEADERS)
            self._header_bytes += len(data) if end < 0 else max(0, end + 4 - len(self._header_tail))
            self._header_tail = window[-3:]
            if self._header_bytes > self.max_header_bytes:
                self._refuse_headers()
                return
        super().data_received(data)
        if self.conn.their_state is not h11.IDLE:
            self._cancel_header_timer()  # headers complete (or refused: h11 is in ERROR, uvicorn closes)

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_header_timer()
        super().connection_lost(exc)

    def _arm_header_timer(self) -> None:
        if self._header_timer is None:
            self._header_timer = self.loop.call_later(self.header_timeout, self._header_timeout_expired)

    def _cancel_header_timer(self) -> None:
        self._header_bytes, self._header_tail = 0, b""
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None

    def _refuse_headers(self) -> None:
        """431 and close, written directly: h11 has not seen the request, and never will."""
        self._cancel_header_timer()
        if self.transport.is_closing():
            return
        message = f"request line and headers: over the limit of {self.max_header_bytes} bytes"
        body = json.dumps(
            {"errorCode": HEADERS_TOO_LARGE, "message": message, "reference": secrets.token_hex(8)}
        ).encode()
        log.info(
            "event=http_headers_too_large client=%s limit=%d", self._client_text(), self.max_header_bytes
        )
        self.transport.write(
            b"HTTP/1.1 431 Request Header Fields Too Large\r\ncontent-type: application/json\r\n"
            b"content-length: %d\r\nconnection: close\r\n\r\n%s" % (len(body), body)
        )
        self.transport.close()

    def _client_text(self) -> str:
        return f"{self.client[0]}:{self.client[1]}" if self.client else "-"

    def _header_timeout_expired(self) -> None:
        self._header_timer = None
        if self.transport.is_closing() or self.conn.their_state is not h11.IDLE:
            return
        log.info(
            "event=http_header_timeout client=%s seconds=%g",
            self._client_text(),
            self.header_timeout,
        )
        self.transport.close()


def protocol_class(header_timeout: float) -> type[HeaderTimeoutProtocol]:
    """The protocol class for `uvicorn.Config(http=...)`, with this server's header deadline."""
    return type("HeaderTimeoutProtocol", (HeaderTimeoutProtocol,), {"header_timeout": header_timeout})
