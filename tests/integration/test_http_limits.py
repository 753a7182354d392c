"""The HTTP port's connection limits against a real server over raw sockets: oversized headers refused,
a slow-loris client cut off at the header deadline while other clients are served (docs/operations.md,
"HTTP limits")."""

from __future__ import annotations

import json
import socket
import threading
import time

import pytest
from harness import HOST

pytestmark = pytest.mark.integration

HEADER_TIMEOUT = 2.0
KEEP_ALIVE = 1.0
LIMITS = (
    f"\n[http]\nheader_timeout_seconds = {HEADER_TIMEOUT}\nmax_header_bytes = 16384\n"
    f"keep_alive_seconds = {KEEP_ALIVE}\n"
)
HEALTH = b"GET /tonebridge/v1/health HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n"


def _read_until_closed(sock: socket.socket, deadline: float) -> bytes:
    """Everything the server sends until it closes the connection; fails if it is still open at `deadline`."""
    received = b""
    while True:
        remaining = deadline - time.monotonic()
        assert remaining > 0, f"connection still open; received {received[:200]!r}"
        sock.settimeout(remaining)
        try:
            chunk = sock.recv(65536)
        except ConnectionResetError:
            return received
        if not chunk:
            return received
        received += chunk


def _request(port: int, data: bytes, timeout: float = 5.0) -> bytes:
    with socket.create_connection((HOST, port), timeout=timeout) as sock:
        try:
            sock.sendall(data)
        except (BrokenPipeError, ConnectionResetError):
            pass  # refused before everything was sent: what it answered is still to be read
        return _read_until_closed(sock, time.monotonic() + timeout)


def test_oversized_headers_are_refused_and_the_connection_closed(in_process_server) -> None:
    server = in_process_server(LIMITS)
    port = server.server.http_port
    padding = b"".join(b"X-Pad-%d: %s\r\n" % (i, b"a" * 1000) for i in range(64))  # 64 KiB of headers
    started = time.monotonic()
    reply = _request(port, b"GET /tonebridge/v1/health HTTP/1.1\r\nHost: t\r\n" + padding + b"\r\n")
    # Refused by tonebridge.api.connection_limits, in the Sinch error format, and the connection closed.
    assert reply.startswith(b"HTTP/1.1 431 "), reply[:200]
    body = json.loads(reply.split(b"\r\n\r\n", 1)[1])
    assert body["errorCode"] == 43100 and "16384" in body["message"] and body["reference"]
    assert time.monotonic() - started < 2.0
    assert _request(port, HEALTH).startswith(b"HTTP/1.1 200 ")  # a normal request still served


def test_slow_loris_is_cut_off_at_the_header_deadline_while_others_are_served(in_process_server) -> None:
    server = in_process_server(LIMITS)
    port = server.server.http_port
    request = b"GET /tonebridge/v1/health HTTP/1.1\r\nHost: t\r\nX-Slow: " + b"a" * 60 + b"\r\n\r\n"
    slow = socket.create_connection((HOST, port), timeout=5)
    closed = threading.Event()
    sent: list[int] = []

    def drip() -> None:
        # One byte a second, the attacker's own pacing, until the server closes the connection.
        for byte in request:
            if closed.is_set():
                return
            try:
                slow.send(bytes([byte]))
            except OSError:
                return
            sent.append(byte)
            closed.wait(1.0)

    started = time.monotonic()
    sender = threading.Thread(target=drip, daemon=True)
    sender.start()
    try:
        assert _request(port, HEALTH).startswith(b"HTTP/1.1 200 ")  # served meanwhile
        reply = _read_until_closed(slow, started + HEADER_TIMEOUT + 2.0)
        elapsed = time.monotonic() - started
    finally:
        closed.set()
        sender.join(5)
        slow.close()
    assert reply == b""  # closed without an answer
    assert HEADER_TIMEOUT - 0.5 <= elapsed <= HEADER_TIMEOUT + 2.0
    assert len(sent) < len(request)
    assert _request(port, HEALTH).startswith(b"HTTP/1.1 200 ")


def test_a_connection_that_sends_nothing_is_closed_at_the_header_deadline(in_process_server) -> None:
    server = in_process_server(LIMITS)
    with socket.create_connection((HOST, server.server.http_port), timeout=5) as idle:
        started = time.monotonic()
        assert _read_until_closed(idle, started + HEADER_TIMEOUT + 2.0) == b""
        assert time.monotonic() - started >= HEADER_TIMEOUT - 0.5


def test_a_large_body_in_the_same_read_as_its_headers_is_not_counted_as_headers(in_process_server) -> None:
    server = in_process_server(LIMITS)
    body = b'{"pad": "' + b"a" * 60000 + b'"}'
    head = b"POST /calling/v1/callouts HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n"
    reply = _request(
        server.server.http_port, head + b"Content-Length: %d\r\nConnection: close\r\n\r\n" % len(body) + body
    )
    # The whole request reached the application (which, in demo mode, has no Sinch routes), not a 431.
    assert reply.startswith(b"HTTP/1.1 404 "), reply[:200]


def test_an_idle_kept_alive_connection_is_closed(in_process_server) -> None:
    server = in_process_server(LIMITS)
    with socket.create_connection((HOST, server.server.http_port), timeout=5) as sock:
        sock.sendall(b"GET /tonebridge/v1/health HTTP/1.1\r\nHost: t\r\n\r\n")
        started = time.monotonic()
        reply = _read_until_closed(sock, started + KEEP_ALIVE + 2.0)
        assert reply.startswith(b"HTTP/1.1 200 ") and b"activeCalls" in reply  # answered, then closed
        assert time.monotonic() - started >= KEEP_ALIVE - 0.3
