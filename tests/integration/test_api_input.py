"""Hostile input to the calling API over real HTTP: deep JSON, lone surrogates, encoded slashes and percent
signs in ids, and bodies over the size limit. Each gets a Sinch-style 4xx, never a 500."""

from __future__ import annotations

import base64
import hashlib
import hmac
import http.client
import json
import socket
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote

import pytest
from harness import HOST, phone
from sinch_app import KEY, SECRET, app_config, conference_callout, signed

pytestmark = pytest.mark.integration

MAX_BODY = 64 * 1024


def auth_headers(
    method: str, path: str, data: bytes, content_type: str = "application/json"
) -> dict[str, str]:
    timestamp = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    md5 = base64.b64encode(hashlib.md5(data).digest()).decode() if data else ""
    text = f"{method}\n{md5}\n{content_type}\nx-timestamp:{timestamp}\n{path}"
    sig = base64.b64encode(
        hmac.new(base64.b64decode(SECRET), text.encode(), hashlib.sha256).digest()
    ).decode()
    return {
        "Authorization": f"Application {KEY}:{sig}",
        "x-timestamp": timestamp,
        "Content-Type": content_type,
    }


def send_raw_body(server, method: str, path: str, data: bytes) -> tuple[int, Any]:  # type: ignore[no-untyped-def]
    connection = http.client.HTTPConnection(HOST, server.server.http_port, timeout=10)
    try:
        connection.request(method, path, body=data, headers=auth_headers(method, path, data))
        reply = connection.getresponse()
        return reply.status, json.loads(reply.read() or b"null")
    finally:
        connection.close()


def read_reply(sock: socket.socket, timeout: float = 10.0) -> tuple[int, dict[str, str], bytes]:
    """Everything the server sends until it closes; the socket timeout is the deadline."""
    sock.settimeout(timeout)
    received = b""
    while True:
        try:
            chunk = sock.recv(65536)
        except ConnectionResetError:
            break  # the server closed with part of our body unread: that is the point
        except TimeoutError:
            raise AssertionError(
                f"the server neither answered nor closed within {timeout}s; received {received[:200]!r}"
            ) from None
        if not chunk:
            break
        received += chunk
    head, _, body = received.partition(b"\r\n\r\n")
    status_line, *header_lines = head.decode("latin-1").split("\r\n")
    headers = {
        name.lower(): value.strip() for name, _, value in (line.partition(":") for line in header_lines)
    }
    return int(status_line.split()[1]), headers, body


def send_ignoring_close(sock: socket.socket, data: bytes) -> None:
    try:
        sock.sendall(data)
    except (BrokenPipeError, ConnectionResetError):
        pass  # already refused and closed


class Events:
    """The server's event stream (/tonebridge/v1/events), read with a deadline."""

    def __init__(self, server) -> None:  # type: ignore[no-untyped-def]
        self.connection = http.client.HTTPConnection(HOST, server.server.http_port, timeout=15)
        # With applications configured the stream is read as one of them: signed as calling/v1 requests are.
        path = "/tonebridge/v1/events"
        self.connection.request("GET", path, headers=auth_headers("GET", path, b"", ""))
        self.reply = self.connection.getresponse()
        # The first line comes after the subscription is in place: nothing published later is missed.
        assert self.reply.readline().startswith(b": tonebridge event stream")
        self.seen: list[dict[str, Any]] = []

    def wait(self, predicate: Callable[[dict[str, Any]], bool], timeout: float = 15.0) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            for event in self.seen:
                if predicate(event):
                    return event
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(f"no matching event within {timeout}s; seen: {self.seen}")
            assert self.connection.sock is not None
            self.connection.sock.settimeout(remaining)
            try:
                line = self.reply.readline()
            except TimeoutError:
                continue
            if line.startswith(b"data: "):
                self.seen.append(json.loads(line[6:]))

    def close(self) -> None:
        self.connection.close()


def test_deeply_nested_json_is_a_400_not_a_recursion_error(in_process_server, backend) -> None:
    server = in_process_server(app_config(backend))
    for data in (b"[" * 60_000, b"[" * 30_000 + b"]" * 30_000, b'{"a":' * 10_000 + b"1" + b"}" * 10_000):
        assert len(data) <= MAX_BODY
        status, body = send_raw_body(server, "POST", "/calling/v1/callouts", data)
        assert status == 400, body
        assert body["errorCode"] == 40003 and "nested" in body["message"] and body["reference"]
    # Parseable but deeper than the API accepts, on more than one route.
    deep: Any = 1
    for _ in range(100):
        deep = [deep]
    for method, path, document in (
        (
            "POST",
            "/calling/v1/callouts",
            {"method": "conferenceCallout", "conferenceCallout": {"custom": deep}},
        ),
        ("PATCH", "/calling/v1/calls/id/nope", {"instructions": deep}),
    ):
        status, body = send_raw_body(server, method, path, json.dumps(document).encode())
        assert status == 400 and body["errorCode"] == 40003 and "nested" in body["message"], body
    assert server.engine.sessions == {}


def test_lone_surrogates_anywhere_get_a_400_naming_the_field(in_process_server, backend) -> None:
    server = in_process_server(app_config(backend))

    def conference(**extra: Any) -> dict[str, Any]:
        return {
            "method": "conferenceCallout",
            "conferenceCallout": {
                "destination": {"type": "number", "endpoint": "+15550000001"},
                "conferenceId": "x",
                **extra,
            },
        }

    cases: list[tuple[str, str, dict[str, Any], str]] = [
        ("POST", "/calling/v1/callouts", conference(cli="\ud800"), "conferenceCallout.cli"),
        ("POST", "/calling/v1/callouts", conference(custom="ticket \ud800"), "conferenceCallout.custom"),
        ("POST", "/calling/v1/callouts", conference(locale="en-\udfff"), "conferenceCallout.locale"),
        ("POST", "/calling/v1/callouts", conference(greeting="Hello \ud83d"), "conferenceCallout.greeting"),
        (
            "POST",
            "/calling/v1/callouts",
            conference(conferenceId="room\ud800"),
            "conferenceCallout.conferenceId",
        ),
        (
            "POST",
            "/calling/v1/callouts",
            {
                "method": "ttsCallout",
                "ttsCallout": {
                    "destination": {"type": "number", "endpoint": "+15550000001"},
                    "text": "hi",
                    "dtmf": "1\ud800",
                },
            },
            "ttsCallout.dtmf",
        ),
        (
            "POST",
            "/calling/v1/callouts",
            {
                "method": "conferenceCallout",
                "conferenceCallout": {
                    "destination": {"type": "sip", "endpoint": "sip:\udc80@127.0.0.1"},
                    "conferenceId": "x",
                },
            },
            "conferenceCallout.destination.endpoint",
        ),
        ("POST", "/calling/v1/callouts", conference(**{"\udc80name": 1}), "conferenceCallout.\\udc80name"),
        (
            "PATCH",
            "/calling/v1/calls/id/nope",
            {"instructions": [{"name": "say", "text": "\ud800"}], "action": {"name": "hangup"}},
            "instructions[0].text",
        ),
        ("PATCH", "/calling/v1/conferences/id/room/nope", {"command": "\ud800"}, "command"),
        ("POST", "/v1/configuration/numbers", {"numbers": ["+15550001111", "\udfff"]}, "numbers[1]"),
        (
            "POST",
            f"/v1/configuration/callbacks/applications/{KEY}",
            {"url": {"primary": "http://\ud800"}},
            "url.primary",
        ),
    ]
    for method, path, document, field in cases:
        assert "\\u" in json.dumps(document)  # sent as the JSON escape, which parses to a lone surrogate
        status, body = signed(server, method, path, document)
        assert status == 400, (field, body)
        assert body["errorCode"] == 40001 and body["message"].startswith(f"{field}: "), (field, body)
        assert "surrogate" in body["message"]
    assert server.engine.sessions == {}
    # A proper pair (the same code points, valid JSON text) is still accepted.
    status, body = signed(
        server, "POST", "/calling/v1/callouts", conference(custom="\U0001f600", enableDice=True)
    )
    assert status == 200, body
    backend.wait(lambda: len(backend.events("dice", body["callId"])) == 1)
    assert backend.events("dice", body["callId"])[0]["custom"] == "\U0001f600"


def test_conference_ids_with_slash_and_percent_are_decoded_once(in_process_server, backend) -> None:
    server = in_process_server(app_config(backend))
    events = Events(server)
    answerers = []
    try:
        call_ids = {}
        for conference_id in ("c7/1", "c7%41"):
            answerer = phone("answer", "--calls", "1")
            answerers.append(answerer)
            port = int(answerer.wait_for(r"event=listening sip=127.0.0.1:(\d+)").group(1))
            call_id = conference_callout(
                server,
                {"type": "sip", "endpoint": f"sip:bob@127.0.0.1:{port}"},
                conference_id,
                enableDice=True,
            )
            call_ids[conference_id] = call_id
            events.wait(
                lambda e, c=call_id, conf=conference_id: (
                    e["type"] == "joined" and e["callId"] == c and e["conferenceId"] == conf
                )
            )
        slashed, percent = call_ids["c7/1"], call_ids["c7%41"]

        status, info = signed(server, "GET", "/calling/v1/conferences/id/c7%2F1")
        assert status == 200 and [p["id"] for p in info["participants"]] == [slashed], info
        status, info = signed(server, "GET", "/calling/v1/conferences/id/c7%2f1")
        assert status == 200 and [p["id"] for p in info["participants"]] == [slashed], info
        status, info = signed(server, "GET", "/calling/v1/conferences/id/c7%2541")
        assert status == 200 and [p["id"] for p in info["participants"]] == [percent], info
        for other in ("c7A", "c7", "c7%252F1", "c7%41"):  # decoded twice, split, or never
            status, body = signed(server, "GET", f"/calling/v1/conferences/id/{other}")
            assert status == 404 and body["errorCode"] == 40400, (other, body)

        # Participant routes: the conference id keeps its slash, the call id is decoded once too.
        encoded_call = "".join(f"%{byte:02X}" for byte in slashed.encode())
        status, _ = signed(
            server, "PATCH", f"/calling/v1/conferences/id/c7%2F1/{encoded_call}", {"command": "mute"}
        )
        assert status == 200
        status, info = signed(server, "GET", "/calling/v1/conferences/id/c7%2F1")
        assert info["participants"][0]["muted"] is True
        status, body = signed(
            server, "PATCH", f"/calling/v1/conferences/id/c7%2F1/{quote(encoded_call)}", {"command": "unmute"}
        )
        assert status == 404, body
        status, body = signed(server, "PUT", "/calling/v1/conferences/id/c7%2F1", {"command": "mute"})
        assert status == 405 and body["errorCode"] == 40500, body
        status, _ = signed(
            server, "PATCH", f"/calling/v1/conferences/id/c7%2541/{percent}", {"command": "onhold"}
        )
        assert status == 200
        status, info = signed(server, "GET", "/calling/v1/conferences/id/c7%2541")
        assert info["participants"][0]["onhold"] is True

        status, _ = signed(server, "DELETE", f"/calling/v1/conferences/id/c7%2F1/{slashed}")
        assert status == 200
        events.wait(lambda e: e["type"] == "left" and e["callId"] == slashed and e["conferenceId"] == "c7/1")
        status, _ = signed(server, "DELETE", "/calling/v1/conferences/id/c7%2541")
        assert status == 200
        events.wait(lambda e: e["type"] == "left" and e["callId"] == percent and e["conferenceId"] == "c7%41")
        for answerer in answerers:
            answerer.wait_for(r"event=ended")
        for call_id in (slashed, percent):
            backend.wait(lambda c=call_id: len(backend.events("dice", c)) == 1)
            assert backend.events("dice", call_id)[0]["reason"] == "MANAGERHANGUP"
        assert backend.bad_signatures == 0
    finally:
        events.close()
        for answerer in answerers:
            answerer.stop()


def test_body_over_the_limit_is_refused_before_it_is_read(in_process_server, backend) -> None:
    server = in_process_server(app_config(backend))
    port = server.server.http_port
    path = "/calling/v1/callouts"
    size = 10 * 1024 * 1024
    # Signed over the whole body, so that only the size can be the reason for the refusal.
    headers = auth_headers("POST", path, b" " * size)
    head = (
        f"POST {path} HTTP/1.1\r\nHost: {HOST}:{port}\r\nContent-Length: {size}\r\n"
        + "".join(f"{name}: {value}\r\n" for name, value in headers.items())
        + "\r\n"
    ).encode()

    with socket.create_connection((HOST, port), timeout=10) as sock:
        sock.sendall(head)
        send_ignoring_close(sock, b" " * MAX_BODY)
        status, reply_headers, body = read_reply(sock)  # arrives with 10 MB - 64 KiB still unsent
    assert status == 413 and reply_headers.get("connection") == "close"
    error = json.loads(body)
    assert error["errorCode"] == 41300 and str(MAX_BODY) in error["message"] and error["reference"]

    # With Expect: 100-continue the client is told no before it sends anything.
    with socket.create_connection((HOST, port), timeout=10) as sock:
        sock.sendall(head.replace(b"\r\n\r\n", b"\r\nExpect: 100-continue\r\n\r\n"))
        status, _, body = read_reply(sock)
    assert status == 413 and json.loads(body)["errorCode"] == 41300

    # Chunked, no Content-Length: refused once the chunks received pass the limit, the last one never sent.
    chunk = b" " * 8192
    chunked_head = (
        f"POST {path} HTTP/1.1\r\nHost: {HOST}:{port}\r\nTransfer-Encoding: chunked\r\n"
        + "".join(f"{name}: {value}\r\n" for name, value in headers.items())
        + "\r\n"
    ).encode()
    with socket.create_connection((HOST, port), timeout=10) as sock:
        sock.sendall(chunked_head)
        send_ignoring_close(
            sock, b"".join(b"%x\r\n%s\r\n" % (len(chunk), chunk) for _ in range(MAX_BODY // 8192 + 2))
        )
        status, reply_headers, body = read_reply(sock)
    assert (
        status == 413
        and reply_headers.get("connection") == "close"
        and json.loads(body)["errorCode"] == 41300
    )

    # A chunked body within the limit reaches the route whole, and its signature still verifies.
    small = json.dumps({"method": "videoCallout"}).encode()
    small_headers = auth_headers("POST", path, small)
    with socket.create_connection((HOST, port), timeout=10) as sock:
        sock.sendall(
            (
                f"POST {path} HTTP/1.1\r\nHost: {HOST}:{port}\r\nTransfer-Encoding: chunked\r\n"
                "Connection: close\r\n"
                + "".join(f"{name}: {value}\r\n" for name, value in small_headers.items())
                + "\r\n"
            ).encode()
            + b"".join(b"%x\r\n%s\r\n" % (len(part), part) for part in (small[:5], small[5:]))
            + b"0\r\n\r\n"
        )
        status, _, body = read_reply(sock)
    assert (
        status == 400 and json.loads(body)["errorCode"] == 40001 and "method" in json.loads(body)["message"]
    )

    # The server is still serving, and nothing was placed.
    status, _ = signed(server, "GET", "/calling/v1/calls/id/nope")
    assert status == 404
    assert server.engine.sessions == {}
