"""A real HTTP backend for callback tests: receives Tonebridge's callbacks on 127.0.0.1, verifies each
signature independently (the Sinch formula written out here, not the server's code), answers with SVAML the
test chose per event, and can be taken down and brought back."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import urlsplit


def expected_signature(
    secret_b64: str, method: str, body: bytes, content_type: str, timestamp: str, path: str
) -> str:
    md5 = base64.b64encode(hashlib.md5(body).digest()).decode() if body else ""
    text = f"{method}\n{md5}\n{content_type}\nx-timestamp:{timestamp}\n{path}"
    digest = hmac.new(base64.b64decode(secret_b64), text.encode(), hashlib.sha256).digest()
    return base64.b64encode(digest).decode()


class Backend:
    def __init__(self, app_key: str, secret_b64: str, port: int) -> None:
        self.app_key = app_key
        self.secret = secret_b64
        self.port = port
        self.received: list[dict[str, Any]] = []
        self.headers: list[dict[str, str]] = []
        self.bad_signatures = 0
        self.answers: dict[str, Callable[[dict[str, Any]], dict[str, Any] | None]] = {}
        self.files: dict[str, bytes] = {}  # served on GET, e.g. WAV prompts for #href[...]
        self.changed = threading.Condition()
        self._server: ThreadingHTTPServer | None = None
        self.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/callbacks"

    def start(self) -> None:
        backend = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                pass

            def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
                data = backend.files.get(urlsplit(self.path).path)
                self.send_response(200 if data is not None else 404)
                self.send_header("Content-Length", str(len(data or b"")))
                self.end_headers()
                self.wfile.write(data or b"")

            def do_POST(self) -> None:  # noqa: N802 (http.server's naming)
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length)
                auth = self.headers.get("Authorization") or ""
                scheme, _, credentials = auth.partition(" ")
                key, _, sig = credentials.partition(":")
                expected = expected_signature(
                    backend.secret,
                    "POST",
                    body,
                    self.headers.get("Content-Type") or "",
                    self.headers.get("x-timestamp") or "",
                    urlsplit(self.path).path,
                )
                ok = (
                    scheme == "application"
                    and key == backend.app_key
                    and hmac.compare_digest(sig, expected)
                    and self.headers.get("Content-Type") == "application/json"
                )
                event = json.loads(body) if ok else {}
                with backend.changed:
                    if not ok:
                        backend.bad_signatures += 1
                    else:
                        backend.received.append(event)
                        backend.headers.append(dict(self.headers.items()))
                    backend.changed.notify_all()
                if not ok:
                    self.send_response(401)
                    self.end_headers()
                    return
                answer_for = backend.answers.get(event.get("event", ""))
                answer = answer_for(event) if answer_for else None
                data = json.dumps(answer).encode() if answer is not None else b""
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self._server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def events(self, kind: str, call_id: str | None = None) -> list[dict[str, Any]]:
        with self.changed:
            return [
                e
                for e in self.received
                if e.get("event") == kind and (call_id is None or e.get("callid") == call_id)
            ]

    def wait(self, predicate: Callable[[], bool], timeout: float = 15.0) -> None:
        with self.changed:
            if not self.changed.wait_for(predicate, timeout):
                raise AssertionError(f"backend: condition not met in {timeout}s; received={self.received}")
