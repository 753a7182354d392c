"""The Sinch-style application the API tests drive: its keys and number, its config, an SDK client and
signed raw HTTP requests as an application sends them (the Sinch signing formula written out here, not
the server's code)."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import urllib.error
import urllib.request
from datetime import UTC, datetime

from backend import Backend
from harness import HOST

KEY = "5f1c3c2a-0000-4000-8000-000000000001"
SECRET = base64.b64encode(b"my-secret-in-base64").decode()
OTHER_KEY = "5f1c3c2a-0000-4000-8000-000000000002"
OTHER_SECRET = base64.b64encode(b"another-secret").decode()
NUMBER = "+15550001111"


def app_config(backend: Backend, trunk_port: int | None = None, *, allow_loopback: bool = True) -> str:
    text = (
        f'[[applications]]\nkey = "{KEY}"\nsecret = "{SECRET}"\ncallback_url = "{backend.url}"\n'
        f'numbers = ["{NUMBER}"]\n\n'
        f'[[applications]]\nkey = "{OTHER_KEY}"\nsecret = "{OTHER_SECRET}"\n'
    )
    if allow_loopback:
        # The test backends and prompt servers listen on 127.0.0.1 (docs/operations.md, "Security").
        text += '\n[security]\nfetch_allow = ["127.0.0.0/8"]\n'
    if trunk_port:
        text += f'\n[[trunks]]\nname = "sipp"\nuri = "sip:{HOST}:{trunk_port}"\n'
    return text


def sdk(server):  # type: ignore[no-untyped-def]
    from sinch import SinchClient

    client = SinchClient(application_key=KEY, application_secret=SECRET)
    client.configuration.voice_origin = f"{HOST}:{server.server.http_port}"
    client.configuration.disable_https = True
    return client


def signature_headers(
    method: str,
    path: str,
    data: bytes = b"",
    content_type: str = "",
    *,
    key: str = KEY,
    secret: str = SECRET,
    timestamp: str | None = None,
) -> dict[str, str]:
    """`Authorization` and `x-timestamp` of a request an application signs (written from the Sinch scheme
    here, not taken from the server's code, so the tests check the server against the scheme)."""
    timestamp = timestamp or datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    md5 = base64.b64encode(hashlib.md5(data).digest()).decode() if data else ""
    text = f"{method}\n{md5}\n{content_type}\nx-timestamp:{timestamp}\n{path}"
    digest = hmac.new(base64.b64decode(secret), text.encode(), hashlib.sha256).digest()
    return {
        "Authorization": f"Application {key}:{base64.b64encode(digest).decode()}",
        "x-timestamp": timestamp,
    }


def signed(
    server,
    method: str,
    path: str,
    body: dict | None = None,
    *,
    key: str = KEY,  # type: ignore[no-untyped-def]
    secret: str = SECRET,
    timestamp: str | None = None,
    signature: str | None = None,
):
    data = json.dumps(body).encode() if body is not None else b""
    content_type = "application/json" if body is not None else ""
    request = urllib.request.Request(
        f"http://{HOST}:{server.server.http_port}{path}", data=data or None, method=method
    )
    headers = signature_headers(method, path, data, content_type, key=key, secret=secret, timestamp=timestamp)
    if signature is not None:
        headers["Authorization"] = f"Application {key}:{signature}"
    for name, value in headers.items():
        request.add_header(name, value)
    if content_type:
        request.add_header("Content-Type", content_type)
    try:
        with urllib.request.urlopen(request, timeout=10) as reply:
            raw = reply.read()
            return reply.status, json.loads(raw) if raw else None
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"null")


def conference_callout(  # type: ignore[no-untyped-def]
    server, destination: dict, conference_id: str, key: str = KEY, secret: str = SECRET, **params: object
) -> str:
    """A signed `conferenceCallout` as an application sends it; its callId."""
    body = {"destination": destination, "conferenceId": conference_id, **params}
    status, answer = signed(
        server,
        "POST",
        "/calling/v1/callouts",
        {"method": "conferenceCallout", "conferenceCallout": body},
        key=key,
        secret=secret,
    )
    assert status == 200, answer
    return answer["callId"]
