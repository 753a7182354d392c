"""The callback outbox against a real HTTP server on 127.0.0.1 that checks every signature with our
own verifier and can be told to fail, stall or be down (bound but not listening: connection refused)."""

from __future__ import annotations

import asyncio
import json
import re
import sqlite3
import threading
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, TypeVar

import pytest
from test_store_writer import WAIT, GatedStore

from tonebridge.callbacks.outbox import (
    DEFAULT_BACKOFF,
    IDEMPOTENCY_HEADER,
    Outbox,
    backoff_delay,
    encode_body,
)
from tonebridge.callbacks.signing import AuthError, verify_request
from tonebridge.store import Store

KEY = "669E367E-6BBA-48AB-AF15-266871C28135"
SECRET = "BeIukql3pTKJ8RGL5zo0DA=="
T = TypeVar("T")


@dataclass
class Received:
    path: str
    headers: dict[str, str]
    body: bytes
    app_key: str | None  # None: the signature did not verify
    at: float  # time.monotonic() on arrival

    @property
    def json(self) -> dict[str, Any]:
        return json.loads(self.body)


class Backend:
    """An application's callback server. `decide(request)` returns the status to answer (default 200);
    `fail_next` answers that many requests with 500 first; `hold` stalls each request until set."""

    def __init__(self, secrets: dict[str, str], now: Callable[[], datetime] | None = None) -> None:
        self.secrets = secrets
        self.now = now or (lambda: datetime.now(UTC))
        self.received: list[Received] = []
        self.fail_next = 0
        self.decide: Callable[[Received], int] = lambda r: 200
        self.hold: threading.Event | None = None
        self.reply = b'{"action":{"name":"continue"}}'
        self._lock = threading.Lock()
        backend = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 (http.server's naming)
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                headers = dict(self.headers.items())
                try:
                    key: str | None = verify_request(
                        "POST", self.path, headers, body, backend.secrets.get, backend.now()
                    )
                except AuthError:
                    key = None
                request = Received(self.path, headers, body, key, time.monotonic())
                with backend._lock:
                    backend.received.append(request)
                    failing = backend.fail_next > 0
                    backend.fail_next -= failing
                if backend.hold is not None:
                    backend.hold.wait(10)
                status = 401 if key is None else 500 if failing else backend.decide(request)
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(backend.reply)))
                self.end_headers()
                self.wfile.write(backend.reply)

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler, bind_and_activate=False)
        self.server.daemon_threads = True
        self.server.server_bind()  # bound, not listening: connections are refused until up()
        self.port = self.server.server_address[1]
        self._thread: threading.Thread | None = None

    def url(self, path: str = "/cb") -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def up(self) -> None:
        self.server.server_activate()
        self._thread = threading.Thread(
            target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self._thread.start()

    def stop(self) -> None:
        if self.hold is not None:
            self.hold.set()
        if self._thread is not None:
            self.server.shutdown()
        self.server.server_close()

    def events(self) -> list[str]:
        with self._lock:
            return [r.json.get("tag", r.json["event"]) for r in self.received]


class Clock:
    def __init__(self) -> None:
        self.t = time.time()

    def __call__(self) -> float:
        return self.t


@pytest.fixture
def backends() -> Iterator[Callable[..., Backend]]:
    made: list[Backend] = []

    def make(up: bool = True, now: Callable[[], datetime] | None = None) -> Backend:
        backend = Backend({KEY: SECRET}, now)
        if up:
            backend.up()
        made.append(backend)
        return backend

    yield make
    for backend in made:
        backend.stop()


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    with Store(tmp_path / "outbox.db") as s:
        yield s


def run(coro: Awaitable[T], limit: float = 10.0) -> T:
    """Run one test scenario; `limit` only guards against a hang, it synchronises nothing."""

    async def bounded() -> T:
        return await asyncio.wait_for(coro, limit)

    return asyncio.run(bounded())


def secrets_of(table: dict[str, str]) -> Callable[[str], str | None]:
    return table.get


def dice(call_id: str, tag: str = "") -> dict[str, Any]:
    body: dict[str, Any] = {
        "event": "dice",
        "callid": call_id,
        "timestamp": "2024-06-06T17:20:14Z",
        "version": 1,
    }
    if tag:
        body["tag"] = tag
    return body


# -- pure helpers ---------------------------------------------------------------------------------------


def test_backoff_steps_and_last_repeats() -> None:
    assert [backoff_delay(DEFAULT_BACKOFF, n) for n in range(1, 10)] == [1, 2, 4, 8, 15, 30, 60, 60, 60]
    with pytest.raises(ValueError):
        backoff_delay(DEFAULT_BACKOFF, 0)


def test_body_is_compact_utf8_json() -> None:
    assert (
        encode_body({"event": "pie", "value": "1#", "name": "Åsa"})
        == '{"event":"pie","value":"1#","name":"Åsa"}'.encode()
    )


def test_constructor_and_lifecycle_misuse(store: Store) -> None:
    with pytest.raises(ValueError):
        Outbox(store, secrets_of({}), backoff=())
    with pytest.raises(ValueError):
        Outbox(store, secrets_of({}), attempt_timeout=0)
    with pytest.raises(RuntimeError):
        Outbox(store, secrets_of({})).start()  # no running loop

    async def scenario() -> None:
        outbox = Outbox(store, secrets_of({}))
        outbox.start()
        await outbox.close()
        with pytest.raises(RuntimeError):
            outbox.enqueue(KEY, "http://127.0.0.1:1/cb", "c", "dice", dice("c"))
        with pytest.raises(RuntimeError):
            outbox.start()

    run(scenario())


# -- delivery -------------------------------------------------------------------------------------------


def test_callback_is_signed_and_carries_an_idempotency_key(
    store: Store, backends: Callable[..., Backend]
) -> None:
    backend = backends()
    body = {
        "event": "pie",
        "callid": "c1",
        "menuResult": {"menuId": "room#1", "type": "sequence", "value": "42"},
        "custom": "Åsa",
        "version": 1,
    }

    async def scenario() -> None:
        outbox = Outbox(store, secrets_of({KEY: SECRET}))
        outbox.start()
        delivery = outbox.enqueue(KEY, backend.url("/sinch/cb/pie"), "c1", "pie", body)
        assert await delivery.delivered is True
        assert delivery.first_attempt.result() == 200
        [got] = backend.received
        assert got.app_key == KEY and got.path == "/sinch/cb/pie"
        assert got.headers["Content-Type"] == "application/json"
        assert got.headers["Authorization"].startswith(f"application {KEY}:")
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", got.headers["x-timestamp"])
        assert got.headers[IDEMPOTENCY_HEADER] == delivery.idempotency_key
        assert uuid.UUID(delivery.idempotency_key).version == 4
        assert got.body == encode_body(body) == delivery.body
        row = store.outbox_get(delivery.id)
        assert row is not None and (row.state, row.status, row.attempts) == ("delivered", 200, 1)
        assert outbox.pending() == []
        await outbox.close()

    run(scenario())


def test_failures_are_retried_with_the_same_key_after_the_backoff(
    store: Store, backends: Callable[..., Backend]
) -> None:
    backend = backends()
    backend.fail_next = 3

    async def scenario() -> None:
        outbox = Outbox(store, secrets_of({KEY: SECRET}), backoff=(0.05, 0.1))
        outbox.start()
        delivery = outbox.enqueue(KEY, backend.url(), "c1", "dice", dice("c1"))
        assert await delivery.first_attempt == 500
        assert await delivery.delivered is True
        await outbox.close()
        return None

    run(scenario())
    assert len(backend.received) == 4
    assert {r.headers[IDEMPOTENCY_HEADER] for r in backend.received} == {
        backend.received[0].headers[IDEMPOTENCY_HEADER]
    }
    assert all(r.app_key == KEY for r in backend.received)  # each attempt freshly and validly signed
    gaps = [b.at - a.at for a, b in zip(backend.received, backend.received[1:], strict=False)]
    # Waits follow the steps, the last one repeating (a lower bound: timers never fire early).
    for gap, step in zip(gaps, (0.05, 0.1, 0.1), strict=True):
        assert gap >= step - 0.005, gaps
    [row] = store.delivery_log()
    assert (row.state, row.attempts, row.status, row.last_error) == ("delivered", 4, 200, "HTTP 500")


def test_connection_refused_then_up(store: Store, backends: Callable[..., Backend]) -> None:
    backend = backends(up=False)

    async def scenario() -> None:
        outbox = Outbox(store, secrets_of({KEY: SECRET}), backoff=(0.02,))
        outbox.start()
        delivery = outbox.enqueue(KEY, backend.url(), "c1", "dice", dice("c1"))
        assert await delivery.first_attempt is None
        row = store.outbox_get(delivery.id)
        assert row is not None and row.state == "pending" and row.attempts >= 1
        assert row.last_error is not None and "Connect" in row.last_error
        backend.up()
        assert await delivery.delivered is True
        await outbox.close()

    run(scenario())
    assert len(backend.received) == 1


def test_one_call_in_order_while_other_calls_go_ahead(store: Store, backends: Callable[..., Backend]) -> None:
    backend = backends()
    a_refused = threading.Event()
    a_refused.set()
    backend.decide = lambda r: 503 if r.json["callid"] == "A" and a_refused.is_set() else 200

    async def scenario() -> None:
        outbox = Outbox(store, secrets_of({KEY: SECRET}), backoff=(0.02,))
        outbox.start()
        a1 = outbox.enqueue(KEY, backend.url(), "A", "dice", dice("A", "A1"))
        a2 = outbox.enqueue(KEY, backend.url(), "A", "notify", dice("A", "A2"))
        b1 = outbox.enqueue(KEY, backend.url(), "B", "dice", dice("B", "B1"))
        assert await b1.delivered is True
        assert await a1.first_attempt == 503
        assert not a1.delivered.done() and not a2.first_attempt.done()
        assert "A2" not in backend.events()  # A2 waits for A1
        a_refused.clear()
        assert await a2.delivered is True
        assert a1.delivered.result() is True
        await outbox.close()

    run(scenario())
    events = backend.events()
    a_events = [e for e in events if e.startswith("A")]
    assert a_events[-1] == "A2" and set(a_events[:-1]) == {"A1"} and a_events.count("A2") == 1
    assert events.count("B1") == 1


def test_give_up_after_the_window_then_the_next_callback_goes(
    store: Store, backends: Callable[..., Backend]
) -> None:
    clock = Clock()
    backend = backends(now=lambda: datetime.fromtimestamp(clock(), UTC))
    backend.decide = lambda r: 500 if r.json.get("tag") == "doomed" else 200

    async def scenario() -> None:
        outbox = Outbox(store, secrets_of({KEY: SECRET}), clock=clock, backoff=(0.01,), give_up_after=10.0)
        outbox.start()
        doomed = outbox.enqueue(KEY, backend.url(), "c1", "dice", dice("c1", "doomed"))
        after = outbox.enqueue(KEY, backend.url(), "c1", "notify", dice("c1", "after"))
        assert await doomed.first_attempt == 500
        row = store.outbox_get(doomed.id)
        assert row is not None and row.state == "pending"
        clock.t += 10.5  # past the window: the next failure is the last
        assert await doomed.delivered is False
        assert await after.delivered is True
        await outbox.close()
        return None

    run(scenario())
    gave_up, delivered = store.delivery_log(call_id="c1")[::-1]
    assert gave_up.state == "gave_up" and gave_up.attempts >= 2
    assert (
        gave_up.last_error is not None
        and "HTTP 500" in gave_up.last_error
        and "gave up" in gave_up.last_error
    )
    assert delivered.state == "delivered"


def test_last_attempt_is_at_the_deadline_not_a_step_beyond(
    store: Store, backends: Callable[..., Backend]
) -> None:
    backend = backends()
    backend.decide = lambda r: 502

    async def scenario() -> float:
        outbox = Outbox(store, secrets_of({KEY: SECRET}), backoff=(30,), give_up_after=0.1)
        outbox.start()
        delivery = outbox.enqueue(KEY, backend.url(), "c1", "dice", dice("c1"))
        await delivery.first_attempt
        row = store.outbox_get(delivery.id)
        assert row is not None and row.next_attempt_at == pytest.approx(delivery.created_at + 0.1)
        started = time.monotonic()
        assert await delivery.delivered is False
        await outbox.close()
        return time.monotonic() - started

    assert run(scenario()) < 5  # not the 30 s step
    [row] = store.delivery_log()
    assert (row.state, row.attempts) == ("gave_up", 2)


def test_attempt_timeout_counts_as_a_failure(store: Store, backends: Callable[..., Backend]) -> None:
    backend = backends()
    backend.hold = threading.Event()

    async def scenario() -> None:
        outbox = Outbox(store, secrets_of({KEY: SECRET}), backoff=(0.02,), attempt_timeout=5.0)
        outbox.start()
        # The per-callback timeout (2 s for a conference PIE) overrides the Outbox's 5 s.
        delivery = outbox.enqueue(KEY, backend.url(), "c1", "pie", dice("c1"), attempt_timeout=0.2)
        started = time.monotonic()
        assert await delivery.first_attempt is None
        assert time.monotonic() - started < 2
        row = store.outbox_get(delivery.id)
        assert row is not None and row.last_error == "timeout after 0.2 s"
        assert backend.hold is not None
        backend.hold.set()
        assert await delivery.delivered is True
        await outbox.close()

    run(scenario())
    # The stalled request was processed after all: the application sees it twice with one key.
    assert len({r.headers[IDEMPOTENCY_HEADER] for r in backend.received}) == 1 and len(backend.received) >= 2


def test_unknown_secret_is_a_failed_attempt_and_nothing_is_sent(
    store: Store, backends: Callable[..., Backend]
) -> None:
    backend = backends()
    table: dict[str, str] = {}

    async def scenario() -> None:
        outbox = Outbox(store, secrets_of(table), backoff=(0.02,))
        outbox.start()
        delivery = outbox.enqueue(KEY, backend.url(), "c1", "dice", dice("c1"))
        assert await delivery.first_attempt is None
        row = store.outbox_get(delivery.id)
        assert row is not None and row.last_error is not None and "no secret" in row.last_error
        assert backend.received == []
        table[KEY] = SECRET  # looked up at send time, never stored
        assert await delivery.delivered is True
        await outbox.close()

    run(scenario())
    assert SECRET.encode() not in Path(store.path).read_bytes()


def test_enqueue_stores_the_row_before_anything_is_sent(
    store: Store, backends: Callable[..., Backend]
) -> None:
    backend = backends()

    async def scenario() -> None:
        outbox = Outbox(store, secrets_of({KEY: SECRET}))
        delivery = outbox.enqueue(KEY, backend.url(), "c1", "dice", dice("c1"))  # not started yet
        await delivery.stored
        other = sqlite3.connect(store.path)
        try:
            rows = other.execute("SELECT id, body, idempotency_key, state FROM outbox").fetchall()
        finally:
            other.close()
        assert rows == [(delivery.id, delivery.body, delivery.idempotency_key, "pending")]
        assert backend.received == []
        outbox.start()
        assert await delivery.delivered is True
        await outbox.close()

    run(scenario())


def test_close_keeps_rows_and_a_new_outbox_delivers_them_in_order(
    store: Store, backends: Callable[..., Backend]
) -> None:
    backend = backends(up=False)

    async def scenario() -> None:
        first = Outbox(store, secrets_of({KEY: SECRET}), backoff=(0.02,))
        first.start()
        sent = [first.enqueue(KEY, backend.url(), "A", "dice", dice("A", f"A{i}")) for i in range(3)]
        sent.append(first.enqueue(KEY, backend.url(), "B", "dice", dice("B", "B0")))
        await asyncio.gather(sent[0].first_attempt, sent[3].first_attempt)
        await first.close()
        assert all(d.delivered.cancelled() for d in sent)
        assert [r.id for r in store.outbox_pending()] == [d.id for d in sent]

        backend.up()
        second = Outbox(store, secrets_of({KEY: SECRET}), backoff=(0.02,))
        second.start()
        resumed = second.pending()
        assert [(d.id, d.idempotency_key, d.body) for d in resumed] == [
            (d.id, d.idempotency_key, d.body) for d in sent
        ]
        assert all(await asyncio.gather(*(d.delivered for d in resumed)))
        await second.close()

    run(scenario())
    assert [e for e in backend.events() if e.startswith("A")] == ["A0", "A1", "A2"]
    assert backend.events().count("B0") == 1
    assert store.outbox_pending() == []


def test_cancelling_a_wait_does_not_disturb_delivery(store: Store, backends: Callable[..., Backend]) -> None:
    backend = backends()
    backend.hold = threading.Event()

    async def scenario() -> None:
        outbox = Outbox(store, secrets_of({KEY: SECRET}), backoff=(0.02,))
        outbox.start()
        delivery = outbox.enqueue(KEY, backend.url(), "c1", "pie", dice("c1"))
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(delivery.first_attempt, 0.1)  # cancels the future
        assert backend.hold is not None
        backend.hold.set()
        assert await delivery.delivered is True
        assert delivery.first_attempt.cancelled()
        await outbox.close()

    run(scenario())
    row = store.outbox_get(1)
    assert row is not None and row.state == "delivered"


# -- synchronous requests (ICE, ACE) ---------------------------------------------------------------------


def test_request_sync_returns_the_answer_and_stores_nothing(
    store: Store, backends: Callable[..., Backend]
) -> None:
    backend = backends()
    backend.reply = b'{"instructions":[],"action":{"name":"hangup"}}'

    async def scenario() -> None:
        outbox = Outbox(store, secrets_of({KEY: SECRET}))
        response = await outbox.request_sync(KEY, backend.url("/ice"), {"event": "ice", "callid": "c1"}, 2.0)
        assert response is not None and response.status_code == 200
        assert response.json() == {"instructions": [], "action": {"name": "hangup"}}
        await outbox.close()

    run(scenario())
    [got] = backend.received
    assert got.app_key == KEY and got.path == "/ice" and got.body == b'{"event":"ice","callid":"c1"}'
    assert store.delivery_log() == []


def test_request_sync_none_when_down_or_slow_or_failing(
    store: Store, backends: Callable[..., Backend]
) -> None:
    down = backends(up=False)
    slow = backends()
    slow.hold = threading.Event()
    failing = backends()
    failing.decide = lambda r: 500

    async def scenario() -> None:
        outbox = Outbox(store, secrets_of({KEY: SECRET}))
        assert await outbox.request_sync(KEY, down.url(), {"event": "ice"}, 2.0) is None
        started = time.monotonic()
        assert await outbox.request_sync(KEY, slow.url(), {"event": "ace"}, 0.2) is None
        assert time.monotonic() - started < 2
        assert await outbox.request_sync(KEY, failing.url(), {"event": "ice"}, 2.0) is None
        assert await outbox.request_sync("unknown-key", failing.url(), {"event": "ice"}, 2.0) is None
        await outbox.close()

    run(scenario())
    assert len(failing.received) == 1  # the unknown key sent nothing


def test_request_sync_falls_back_when_the_primary_fails(
    store: Store, backends: Callable[..., Backend]
) -> None:
    primary = backends(up=False)
    fallback = backends()

    async def scenario() -> None:
        outbox = Outbox(store, secrets_of({KEY: SECRET}))
        response = await outbox.request_sync(
            KEY, primary.url("/main/ice"), {"event": "ice"}, 2.0, fallback_url=fallback.url("/backup/ice")
        )
        assert response is not None and response.status_code == 200
        # The primary answering means the fallback is never asked.
        primary.up()
        again = await outbox.request_sync(
            KEY, primary.url("/main/ice"), {"event": "ice"}, 2.0, fallback_url=fallback.url("/backup/ice")
        )
        assert again is not None
        await outbox.close()

    run(scenario())
    [got] = fallback.received
    assert got.path == "/backup/ice" and got.app_key == KEY  # re-signed for the fallback's path
    assert len(primary.received) == 1


def test_enqueued_before_start_goes_after_older_rows_of_the_same_call(
    store: Store, backends: Callable[..., Backend]
) -> None:
    backend = backends()
    older = store.outbox_add(KEY, "A", "dice", backend.url(), encode_body(dice("A", "old")), "k-old").result()

    async def scenario() -> None:
        outbox = Outbox(store, secrets_of({KEY: SECRET}))
        newer = outbox.enqueue(KEY, backend.url(), "A", "notify", dice("A", "new"))
        await newer.stored
        outbox.start()
        assert [d.id for d in outbox.pending()] == [older, newer.id]
        assert await newer.delivered is True
        await outbox.close()

    run(scenario())
    assert backend.events() == ["old", "new"]


# -- the store's writer thread ----------------------------------------------------------------------------


def test_a_callback_is_not_attempted_before_its_row_is_committed(
    tmp_path: Path, backends: Callable[..., Backend]
) -> None:
    backend = backends()
    store = GatedStore(tmp_path / "gated.db")

    async def scenario() -> None:
        outbox = Outbox(store, secrets_of({KEY: SECRET}))
        outbox.start()
        store.hold.set()
        # enqueue returns at once although the row's commit is stuck (a slow fsync).
        delivery = outbox.enqueue(KEY, backend.url(), "c1", "dice", dice("c1"))
        assert await asyncio.to_thread(store.entered.wait, WAIT)
        for _ in range(100):
            await asyncio.sleep(0)  # ample turns for the call's task to reach its POST, were it not waiting
        assert not delivery.first_sent.done() and not delivery.stored.done()
        assert outbox.pending() == []  # listed only once it would survive a crash
        store.hold.clear()
        store.release.set()
        await delivery.stored
        assert await delivery.delivered is True
        [got] = backend.received
        assert got.at >= store.commits[0]  # the request left after the commit had returned
        row = store.outbox_get(delivery.id)
        assert row is not None and row.state == "delivered"  # resolved only once that was committed
        await outbox.close()

    run(scenario())
    store.close()


def test_a_refused_insert_is_stored_again_and_then_delivered(
    tmp_path: Path, backends: Callable[..., Backend]
) -> None:
    backend = backends()
    store = GatedStore(tmp_path / "gated.db")

    async def scenario() -> None:
        outbox = Outbox(store, secrets_of({KEY: SECRET}), backoff=(0.01,))
        store.fail.set()  # the disk refuses the insert
        delivery = outbox.enqueue(KEY, backend.url(), "c1", "dice", dice("c1"))
        insert = outbox._inserts[delivery.id]
        assert isinstance(await asyncio.to_thread(insert.exception, WAIT), sqlite3.OperationalError)
        assert outbox.pending() == [] and not delivery.stored.done()
        store.fail.clear()
        outbox.start()  # the call's task finds the insert failed, pauses, queues it again
        await delivery.stored
        assert await delivery.delivered is True
        await outbox.close()

    run(scenario())
    [got] = backend.received
    [row] = store.delivery_log()
    assert (row.state, row.idempotency_key) == ("delivered", got.headers[IDEMPOTENCY_HEADER])
    store.close()
