"""Issue 12 point 5: URLs an application gives are fetched from public addresses only (docs/operations.md,
"Security"), failed REGISTERs lock their source out, and no secret reaches a log line or an HTTP body."""

from __future__ import annotations

import base64
import io
import logging
import socket
import threading
import wave
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
import numpy as np
import pytest
from harness import HOST, free_port, phone
from sinch_app import KEY, NUMBER, SECRET, app_config, signed

from tonebridge.api.access import hash_password
from tonebridge.sip.auth import digest_authorization

pytestmark = pytest.mark.integration

# No [security] allowances: the configured callback_url (the backend on 127.0.0.1) is trusted, nothing else
# on a private address is.
STRICT = "\n[security]\nfetch_allow = []\nregister_max_failures = 3\n"


class Target:
    """A server on 127.0.0.1 that counts every request it gets: none may reach it."""

    def __init__(self) -> None:
        self.hits: list[str] = []
        target = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                pass

            def _answer(self) -> None:
                target.hits.append(f"{self.command} {self.path}")
                buffer = io.BytesIO()
                with wave.open(buffer, "wb") as out:
                    out.setnchannels(1)
                    out.setsampwidth(2)
                    out.setframerate(8000)
                    out.writeframes(np.zeros(800, dtype=np.int16).tobytes())
                data = buffer.getvalue()
                self.send_response(200)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            do_GET = _answer  # noqa: N815
            do_POST = _answer  # noqa: N815

        self.server = ThreadingHTTPServer((HOST, free_port()), Handler)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://{HOST}:{self.server.server_address[1]}"

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def target() -> Iterator[Target]:
    server = Target()
    yield server
    server.stop()


def test_href_prompts_to_private_addresses_are_refused_and_the_call_goes_on(
    in_process_server, backend, target, caplog
) -> None:  # type: ignore[no-untyped-def]
    refused = [f"{target.url}/hold.wav", "http://169.254.169.254/latest/meta-data", "http://10.0.0.7/a.wav"]
    backend.answers["ice"] = lambda event: {
        "action": {
            "name": "park",
            "holdPrompt": ";".join(f"#href[{url}]" for url in refused),
            "maxDuration": 60,
        }
    }
    caplog.set_level(logging.INFO)
    server = in_process_server(app_config(backend, allow_loopback=False) + STRICT)
    caller = phone("dial", f"sip:{NUMBER}@{HOST}:{server.server.stack.port}", stdin=True)
    caller.wait_for(r"event=answered")
    backend.wait(lambda: len(backend.events("ice")) == 1)
    call_id = backend.events("ice")[0]["callid"]
    # The call is parked without its prompts, and goes on: a PATCH moves it into a conference.
    status, _ = signed(
        server,
        "PATCH",
        f"/calling/v1/calls/id/{call_id}",
        {"action": {"name": "connectConf", "conferenceId": "after-refusal"}},
    )
    assert status == 200
    backend.wait(lambda: _in_conference(server, "after-refusal", call_id), timeout=10)
    caller.send("hangup")
    assert target.hits == []
    lines = [r.getMessage() for r in caplog.records if "event=href_refused" in r.getMessage()]
    for url in refused:
        assert any(url in line for line in lines), (url, lines)


def _in_conference(server, conference_id: str, call_id: str) -> bool:  # type: ignore[no-untyped-def]
    status, info = signed(server, "GET", f"/calling/v1/conferences/id/{conference_id}")
    return status == 200 and [p["id"] for p in info["participants"]] == [call_id]


def test_callback_urls_to_private_addresses_are_not_sent(in_process_server, backend, target, caplog) -> None:  # type: ignore[no-untyped-def]
    caplog.set_level(logging.INFO)
    server = in_process_server(app_config(backend, allow_loopback=False) + STRICT)
    answerer = phone("answer", "--calls", "1")
    port = int(answerer.wait_for(r"event=listening sip=127.0.0.1:(\d+)").group(1))
    status, body = signed(
        server,
        "POST",
        "/calling/v1/callouts",
        {
            "method": "customCallout",
            "customCallout": {
                "destination": {"type": "sip", "endpoint": f"sip:dan@{HOST}:{port}"},
                "ace": f"{target.url}/ace",
            },
        },
    )
    assert status == 200
    call_id = body["callId"]
    answerer.wait_for(r"event=answered")

    def refused() -> bool:
        return any("event=callback_refused" in r.getMessage() for r in caplog.records)

    backend.wait(refused, timeout=10)
    # An application moving its callbacks to a private address through the API: the next ICE is not sent.
    status, _ = signed(
        server,
        "POST",
        f"/v1/configuration/callbacks/applications/{KEY}",
        {"url": {"primary": f"{target.url}/primary"}},
    )
    assert status in (200, 204)
    caller = phone("dial", f"sip:{NUMBER}@{HOST}:{server.server.stack.port}")
    caller.wait_for(r"event=(ended|failed|refused)", timeout=15)
    signed(server, "DELETE", f"/calling/v1/calls/id/{call_id}")
    assert target.hits == []
    assert backend.events("ice") == []
    assert [
        r
        for r in caplog.records
        if "event=callback_refused" in r.getMessage() and "/primary" in r.getMessage()
    ]


# -- no secret in logs or bodies --------------------------------------------------------------------------

APP_SECRET_RAW = b"SECRET-app-9f3c1e"
APP_SECRET = base64.b64encode(APP_SECRET_RAW).decode()
USER_PASSWORD = "SECRET-user-pw-5521"
TRUNK_PASSWORD = "SECRET-trunk-pw-7734"
OPERATOR_PASSWORD = "SECRET-operator-pw-0042"


def _register(sip_port: int, password: str, source: socket.socket, cseq: int) -> str:
    """A REGISTER for alice answered with `password`; the final status line."""

    def send(authorization: str | None) -> str:
        lines = [
            f"REGISTER sip:{HOST} SIP/2.0",
            f"Via: SIP/2.0/UDP {HOST}:{source.getsockname()[1]};branch=z9hG4bK{cseq}x{authorization is None}",
            f"From: <sip:alice@{HOST}>;tag=t{cseq}",
            f"To: <sip:alice@{HOST}>",
            f"Call-ID: sec-{cseq}",
            f"CSeq: {cseq * 2 + (authorization is not None)} REGISTER",
            f"Contact: <sip:alice@{HOST}:{source.getsockname()[1]}>",
            "Max-Forwards: 70",
        ]
        if authorization:
            lines.append(f"Authorization: {authorization}")
        source.sendto(("\r\n".join(lines) + "\r\nContent-Length: 0\r\n\r\n").encode(), (HOST, sip_port))
        return source.recv(65536).decode()

    challenge = send(None)
    if not challenge.startswith("SIP/2.0 401"):
        return challenge.split("\r\n", 1)[0]
    values = [
        line.split(":", 1)[1].strip()
        for line in challenge.split("\r\n")
        if line.startswith("WWW-Authenticate")
    ]
    answer = send(digest_authorization(values, "REGISTER", f"sip:{HOST}", "alice", password))
    return answer.split("\r\n", 1)[0]


def test_secrets_never_reach_logs_or_http_bodies(in_process_server, backend, caplog) -> None:  # type: ignore[no-untyped-def]
    operator_hash = hash_password(OPERATOR_PASSWORD)
    config = (
        f'[[applications]]\nkey = "secret-app"\nsecret = "{APP_SECRET}"\ncallback_url = "{backend.url}"\n'
        f'numbers = ["+15550009999"]\n\n'
        f'[[users]]\nname = "alice"\npassword = "{USER_PASSWORD}"\n\n'
        f'[[trunks]]\nname = "t"\nuri = "sip:{HOST}:{free_port()}"\nusername = "acct"\npassword = "{TRUNK_PASSWORD}"\n\n'
        f'[[operators]]\nname = "ops"\npassword_hash = "{operator_hash}"\n' + STRICT
    )
    caplog.set_level(logging.DEBUG)
    server = in_process_server(config)
    base = f"http://{HOST}:{server.server.http_port}"
    bodies: list[str] = []
    with httpx.Client(base_url=base, timeout=10) as client:
        # A bad signature, bad Basic credentials, a bad body, an unknown route and a failed console login.
        for headers in (
            {"Authorization": "Application secret-app:AAAA", "x-timestamp": "2026-01-01T00:00:00Z"},
            {"Authorization": "Basic " + base64.b64encode(b"secret-app:wrong").decode()},
            {"Authorization": "Application secret-app:", "x-timestamp": "garbage"},
        ):
            bodies.append(client.post("/calling/v1/callouts", json={}, headers=headers).text)
        basic = {"Authorization": "Basic " + base64.b64encode(f"secret-app:{APP_SECRET}".encode()).decode()}
        for payload in (b"{not json", b'{"method": "ttsCallout"}', b'{"method": "conferenceCallout"}'):
            bodies.append(
                client.post(
                    "/calling/v1/callouts",
                    content=payload,
                    headers={**basic, "Content-Type": "application/json"},
                ).text
            )
        # A callout to a number goes to the trunk (nobody there): it fails, it is logged.
        reply = client.post(
            "/calling/v1/callouts",
            json={
                "method": "ttsCallout",
                "ttsCallout": {"destination": {"type": "number", "endpoint": "+15557770000"}, "text": "hi"},
            },
            headers=basic,
        )
        bodies.append(reply.text)
        bodies.append(client.get("/calling/v1/calls/id/nope", headers=basic).text)
        bodies.append(
            client.post(
                "/console/login", data={"name": "ops", "password": "wrong"}, headers={"Origin": base}
            ).text
        )
        bodies.append(client.get("/tonebridge/v1/metrics").text)
    # Failed REGISTERs, up to and past the lockout (3 in STRICT); the counters show both.
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
        udp.bind((HOST, 0))
        udp.settimeout(5)
        statuses = [_register(server.server.stack.port, "wrong-password", udp, n) for n in range(5)]
    assert statuses[:3] == ["SIP/2.0 403 Forbidden - wrong credentials"] * 3
    assert statuses[3:] == ["SIP/2.0 403 Forbidden - too many failed attempts"] * 2
    with httpx.Client(base_url=base, timeout=10) as client:
        metrics = client.get("/tonebridge/v1/metrics").json()
    assert metrics["sip"]["register_auth_failed"] == 3
    assert metrics["sip"]["register_locked_out"] >= 2
    text = "\n".join(r.getMessage() for r in caplog.records) + "\n".join(bodies)
    assert "event=register_refused" in text
    for secret in (
        APP_SECRET,
        APP_SECRET_RAW.decode(),
        USER_PASSWORD,
        TRUNK_PASSWORD,
        OPERATOR_PASSWORD,
        operator_hash,
        operator_hash.split("$")[-1],
    ):
        assert secret not in text, f"{secret!r} leaked"
    assert SECRET != APP_SECRET  # the shared test secret is not the one looked for
