"""Outbox delivery end to end over loopback: an application backend that is down (connection refused)
for a while, and an outbox whose process is SIGKILLed with callbacks still undelivered."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import textwrap
import threading
from collections.abc import Iterator
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from tonebridge.callbacks.outbox import IDEMPOTENCY_HEADER, Delivery, Outbox
from tonebridge.callbacks.signing import AuthError, verify_request
from tonebridge.store import Store

pytestmark = pytest.mark.integration

KEY = "669E367E-6BBA-48AB-AF15-266871C28135"
SECRET = "BeIukql3pTKJ8RGL5zo0DA=="


class Backend:
    """Records every verified callback as (idempotency key, body); bound but not listening (connections
    refused) until up()."""

    def __init__(self) -> None:
        self.received: list[tuple[str, dict[str, Any]]] = []
        self.rejected = 0
        lock = threading.Lock()
        backend = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 (http.server's naming)
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                try:
                    verify_request(
                        "POST",
                        self.path,
                        dict(self.headers.items()),
                        body,
                        {KEY: SECRET}.get,
                        datetime.now(UTC),
                    )
                except AuthError:
                    with lock:
                        backend.rejected += 1
                    self.send_response(401)
                else:
                    with lock:
                        backend.received.append((self.headers[IDEMPOTENCY_HEADER], json.loads(body)))
                    self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler, bind_and_activate=False)
        self.server.daemon_threads = True
        self.server.server_bind()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/app/callbacks"
        self._thread: threading.Thread | None = None

    def up(self) -> None:
        self.server.server_activate()
        self._thread = threading.Thread(
            target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self._thread.start()

    def stop(self) -> None:
        if self._thread is not None:
            self.server.shutdown()
        self.server.server_close()

    def check_once_in_order(self, expected: dict[str, list[str]]) -> None:
        """Every expected idempotency key arrived exactly once, and each call's arrived in order."""
        keys = [key for key, _ in self.received]
        assert self.rejected == 0
        assert sorted(keys) == sorted(k for ks in expected.values() for k in ks)
        for call_id, call_keys in expected.items():
            assert [key for key, body in self.received if body["callid"] == call_id] == call_keys


@pytest.fixture
def backend() -> Iterator[Backend]:
    b = Backend()
    yield b
    b.stop()


def body(call_id: str, seq: int) -> dict[str, Any]:
    return {"event": "notify", "callid": call_id, "seq": seq, "version": 1}


def by_call(deliveries: list[Delivery]) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for d in sorted(deliveries, key=lambda d: d.id):
        out.setdefault(d.call_id, []).append(d.idempotency_key)
    return out


def test_backend_down_then_up_every_callback_arrives_once_in_order(tmp_path: Path, backend: Backend) -> None:
    store = Store(tmp_path / "tb.db")

    async def scenario() -> dict[str, list[str]]:
        outbox = Outbox(store, {KEY: SECRET}.get, backoff=(0.05, 0.1, 0.2))
        outbox.start()
        calls = [f"call-{n}" for n in range(5)]
        deliveries = [
            outbox.enqueue(KEY, backend.url, c, "notify", body(c, seq)) for seq in range(4) for c in calls
        ]
        heads = [
            d for d in deliveries if d.id in {min(x.id for x in deliveries if x.call_id == c) for c in calls}
        ]
        assert await asyncio.gather(*(h.first_attempt for h in heads)) == [None] * len(calls)
        await asyncio.sleep(0.3)  # the backend stays down a while: the heads keep being retried
        assert all(store.outbox_get(h.id).attempts >= 2 for h in heads)  # type: ignore[union-attr]
        # The rest wait their turn behind their call's head.
        assert not any(d.first_attempt.done() for d in deliveries if d not in heads)
        backend.up()
        assert all(await asyncio.wait_for(asyncio.gather(*(d.delivered for d in deliveries)), 10))
        await outbox.close()
        return by_call(deliveries)

    expected = asyncio.run(scenario())
    backend.check_once_in_order(expected)
    assert store.outbox_pending() == []
    store.close()


CHILD = textwrap.dedent(
    """
    import asyncio, json, sys
    from tonebridge.callbacks.outbox import Outbox
    from tonebridge.store import Store

    db, url, key, secret = sys.argv[1:5]

    async def main():
        outbox = Outbox(Store(db), {key: secret}.get, backoff=(0.05,))
        outbox.start()
        sent = [outbox.enqueue(key, url, c, "notify", {"event": "notify", "callid": c, "seq": s, "version": 1})
                for s in range(3) for c in ("A", "B")]
        print(json.dumps([[d.id, d.call_id, d.idempotency_key] for d in sent]), flush=True)
        await asyncio.gather(sent[0].first_attempt, sent[1].first_attempt)
        print("attempted", flush=True)
        await asyncio.Event().wait()  # stay up, still retrying, until killed

    asyncio.run(main())
    """
)


def test_callbacks_survive_sigkill_and_a_fresh_outbox_delivers_them(tmp_path: Path, backend: Backend) -> None:
    db = tmp_path / "tb.db"
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD, str(db), backend.url, KEY, SECRET],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert child.stdout is not None
        enqueued = json.loads(child.stdout.readline() or "null")
        assert child.stdout.readline().strip() == "attempted", child.stderr.read() if child.stderr else ""
    finally:
        os.kill(child.pid, signal.SIGKILL)
        child.wait(10)
    assert child.returncode == -signal.SIGKILL
    assert len(enqueued) == 6

    store = Store(db)
    rows = store.outbox_pending()
    assert [[r.id, r.call_id, r.idempotency_key] for r in rows] == enqueued
    assert rows[0].attempts >= 1 and rows[0].last_error  # the child's failed attempts were recorded

    async def scenario() -> None:
        backend.up()
        outbox = Outbox(store, {KEY: SECRET}.get, backoff=(0.05,))
        outbox.start()
        pending = outbox.pending()
        assert [d.idempotency_key for d in pending] == [key for _, _, key in enqueued]
        assert all(await asyncio.wait_for(asyncio.gather(*(d.delivered for d in pending)), 10))
        await outbox.close()

    asyncio.run(scenario())
    expected: dict[str, list[str]] = {}
    for _, call_id, key in enqueued:
        expected.setdefault(call_id, []).append(key)
    backend.check_once_in_order(expected)
    assert [r.state for r in store.delivery_log()] == ["delivered"] * 6
    store.close()
