"""The outbox's rows in a real Redis (Debian's redis-server, started once for this module, with
`appendonly yes` and `appendfsync always` as docs/cluster.md asks), and the reaper that gives a dead
node's callbacks and calls to a survivor (docs/cluster.md, "When a node dies")."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pytest
from cluster_harness import RedisServer
from harness import HOST, free_port

from tonebridge.callbacks.outbox import IDEMPOTENCY_HEADER, Outbox, encode_body
from tonebridge.cluster.outbox import CB, OUTBOX, SEQ, RedisOutboxStorage
from tonebridge.cluster.reaper import REAP, Reaper, dead_call_dice
from tonebridge.store.db import Store

pytestmark = pytest.mark.integration

T = TypeVar("T")
DEADLINE = 10.0
KEY = "669E367E-6BBA-48AB-AF15-266871C28135"
SECRET = "BeIukql3pTKJ8RGL5zo0DA=="
URL = "http://app.invalid/callbacks"


@pytest.fixture(scope="module")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path_factory.mktemp("redis"))
    yield server
    server.stop()


@pytest.fixture
def redis_url(redis_server: RedisServer) -> str:
    import redis

    client = redis.Redis(host=HOST, port=redis_server.port)
    client.flushdb()
    client.close()
    return redis_server.url


def run(coro: Awaitable[T], limit: float = 20.0) -> T:
    async def bounded() -> T:
        return await asyncio.wait_for(coro, limit)

    return asyncio.run(bounded())


@dataclass
class App:
    """An application's callback server behind httpx's MockTransport: answers `status` (a 2xx delivers)."""

    status: int = 200
    received: list[httpx.Request] = field(default_factory=list)
    changed: asyncio.Event = field(default_factory=asyncio.Event)

    def handle(self, request: httpx.Request) -> httpx.Response:
        self.received.append(request)
        self.changed.set()
        return httpx.Response(self.status)

    def client(self) -> httpx.AsyncClient:
        return httpx.AsyncClient(transport=httpx.MockTransport(self.handle))

    def bodies(self) -> list[dict[str, Any]]:
        return [json.loads(r.content) for r in self.received if 200 <= self.status]

    async def wait(self, predicate: Callable[[], bool], timeout: float = DEADLINE) -> None:
        deadline = time.monotonic() + timeout
        while not predicate():
            self.changed.clear()
            remaining = deadline - time.monotonic()
            assert remaining > 0, f"not within {timeout}s; received {[r.content for r in self.received]}"
            try:
                await asyncio.wait_for(self.changed.wait(), remaining)
            except TimeoutError:
                pass


def pie(call_id: str, digit: str) -> dict[str, Any]:
    return {"event": "pie", "callid": call_id, "menuResult": {"value": digit}, "name": "Åsa"}


async def node(url: str, node_id: str, tmp_path: Path, app: App) -> tuple[RedisOutboxStorage, Outbox, Store]:
    storage = RedisOutboxStorage.from_url(url, node_id)
    await storage.open()
    store = Store(tmp_path / f"{node_id}.sqlite3")
    outbox = Outbox(store, {KEY: SECRET}.get, app.client(), storage=storage, backoff=(0.2,))
    outbox.start()
    return storage, outbox, store


async def shut(storage: RedisOutboxStorage, outbox: Outbox, store: Store) -> None:
    await outbox.close()
    await storage.close()
    await storage.hand_over()
    await store.aclose()


@dataclass
class FakeDirectory:
    node_id: str
    config: Any
    available: bool = True
    counters: dict[str, int] = field(default_factory=lambda: __import__("collections").Counter())


class _Timings:
    heartbeat_seconds = 0.2


# -- the storage ---------------------------------------------------------------------------------------


def test_a_row_is_in_redis_before_its_first_attempt_and_gone_once_delivered(redis_url, tmp_path) -> None:  # type: ignore[no-untyped-def]
    async def scenario() -> None:
        app = App()
        storage, outbox, store = await node(redis_url, "n1", tmp_path, app)
        seen: list[tuple[float | None, dict[str, str]]] = []

        def handle(request: httpx.Request) -> httpx.Response:
            # What Redis holds while the application is being called.
            import redis

            client = redis.Redis.from_url(redis_url, decode_responses=True)
            member = client.zrange(OUTBOX + "n1", 0, -1, withscores=True)
            seen.append(
                (member[0][1] if member else None, client.hgetall(CB + member[0][0]) if member else {})
            )
            client.close()
            return app.handle(request)

        outbox._client = httpx.AsyncClient(transport=httpx.MockTransport(handle))
        delivery = outbox.enqueue(KEY, URL, "call-1", "pie", pie("call-1", "1"))
        assert await delivery.delivered is True
        score, row = seen[0]
        assert score is not None and row["event"] == "pie" and row["call_id"] == "call-1"
        assert row["body"].encode() == encode_body(pie("call-1", "1"))
        assert row["key"] == app.received[0].headers[IDEMPOTENCY_HEADER]
        assert app.received[0].content == encode_body(pie("call-1", "1"))
        assert await storage.redis.zcard(OUTBOX + "n1") == 0
        assert not await storage.redis.exists(CB + str(delivery.id))
        await shut(storage, outbox, store)

    run(scenario())


def test_failed_attempts_are_recorded_and_a_restart_resumes_in_order(redis_url, tmp_path) -> None:  # type: ignore[no-untyped-def]
    async def scenario() -> None:
        app = App(status=503)
        storage, outbox, store = await node(redis_url, "n1", tmp_path, app)
        first = [outbox.enqueue(KEY, URL, "call-1", "pie", pie("call-1", d)) for d in "123"]
        await first[0].first_attempt
        await app.wait(lambda: len(app.received) >= 2)  # retried: the same row, the same key
        keys = {r.headers[IDEMPOTENCY_HEADER] for r in app.received}
        assert len(keys) == 1
        row = await storage.redis.hgetall(CB + str(first[0].id))
        assert int(row["attempts"]) >= 1 and row["last_error"] == "HTTP 503"
        await outbox.close()
        await storage.close()
        await store.aclose()
        assert await storage.redis.zcard(OUTBOX + "n1") == 3  # nothing delivered, nothing lost

        # The node starts again: a new epoch, the same rows, in order, with their keys.
        app2 = App()
        storage2, outbox2, store2 = await node(redis_url, "n1", tmp_path, app2)
        assert [d.id for d in outbox2.pending()] == [d.id for d in first]
        later = outbox2.enqueue(KEY, URL, "call-1", "pie", pie("call-1", "4"))
        assert later.id >> 32 > first[0].id >> 32
        assert await later.delivered is True
        assert [b["menuResult"]["value"] for b in app2.bodies()] == ["1", "2", "3", "4"]
        assert app2.received[0].headers[IDEMPOTENCY_HEADER] in keys
        assert await storage2.redis.zcard(OUTBOX + "n1") == 0
        await storage.hand_over()
        await shut(storage2, outbox2, store2)

    run(scenario())


def test_given_up_rows_leave_redis(redis_url, tmp_path) -> None:  # type: ignore[no-untyped-def]
    async def scenario() -> None:
        app = App(status=500)
        storage = RedisOutboxStorage.from_url(redis_url, "n1")
        await storage.open()
        store = Store(tmp_path / "n1.sqlite3")
        outbox = Outbox(
            store, {KEY: SECRET}.get, app.client(), storage=storage, backoff=(0.05,), give_up_after=0.2
        )
        outbox.start()
        delivery = outbox.enqueue(KEY, URL, "call-1", "dice", {"event": "dice", "callid": "call-1"})
        assert await delivery.delivered is False
        assert await storage.redis.zcard(OUTBOX + "n1") == 0
        assert not await storage.redis.exists(CB + str(delivery.id))
        await shut(storage, outbox, store)

    run(scenario())


def test_rows_survive_a_redis_restart(redis_server, redis_url, tmp_path) -> None:  # type: ignore[no-untyped-def]
    """appendfsync always: a row acknowledged is on disk; writes made while Redis is away wait and go."""

    async def scenario() -> None:
        app = App(status=503)
        storage, outbox, store = await node(redis_url, "n1", tmp_path, app)
        first = outbox.enqueue(KEY, URL, "call-1", "pie", pie("call-1", "1"))
        await first.first_attempt
        redis_server.stop()
        redis_server.start()
        assert await storage.redis.zrange(OUTBOX + "n1", 0, -1) == [str(first.id)]
        app.status = 200
        assert await first.delivered is True
        await shut(storage, outbox, store)

    run(scenario(), limit=30)


def test_a_node_started_while_redis_is_away_writes_once_it_is_back(tmp_path) -> None:  # type: ignore[no-untyped-def]
    async def scenario() -> None:
        port = free_port()
        storage = RedisOutboxStorage.from_url(f"redis://{HOST}:{port}/0", "late")
        await storage.open()  # Redis is not there: the node starts all the same
        assert not storage.available
        late: list[list[Any]] = []
        storage.on_late_rows = late.append
        app = App()
        store = Store(tmp_path / "late.sqlite3")
        outbox = Outbox(store, {KEY: SECRET}.get, app.client(), storage=storage)
        outbox.start()
        delivery = outbox.enqueue(KEY, URL, "call-1", "pie", pie("call-1", "1"))
        assert delivery.id >> 32 >= 1 << 30  # the random epoch, above any INCR gives
        done, _ = await asyncio.wait([delivery.stored], timeout=1.5)
        assert not done and not app.received  # nothing is sent before it is stored
        directory = tmp_path / "late-redis"
        directory.mkdir()
        server = await asyncio.to_thread(RedisServer, directory, port)
        try:
            assert await delivery.delivered is True
            assert len(app.received) == 1 and storage.available
            await shut(storage, outbox, store)
        finally:
            server.stop()
        assert late == []  # it held nothing from before

    run(scenario(), limit=30)


# -- the reaper ----------------------------------------------------------------------------------------


async def dead_node_leaves(url: str, tmp_path: Path) -> tuple[list[int], list[str]]:
    """Node `dead` holds three PIEs of call-1 and one of call-2 it could not deliver, a call entry for
    call-1 and call-3 (to get a DiCE) and call-4 (no DiCE), and the home of conference `room`; then its
    heartbeat lapses. Returns its callback ids and keys."""
    app = App(status=503)
    storage, outbox, store = await node(url, "dead", tmp_path, app)
    made = [outbox.enqueue(KEY, URL, "call-1", "pie", pie("call-1", d)) for d in "123"]
    made.append(outbox.enqueue(KEY, URL, "call-2", "pie", pie("call-2", "9")))
    for d in made:
        await d.stored
    await made[0].first_attempt
    await outbox.close()  # as if killed: its rows stay where they are
    await storage.close()
    await store.aclose()
    redis = storage.redis
    answered = time.time() - 42
    for call_id in ("call-1", "call-3"):
        body = {"event": "dice", "callid": call_id, "result": "N/A", "reason": "N/A", "duration": 0}
        await redis.hset(
            "tonebridge:call:" + call_id,
            mapping={
                "node": "dead",
                "answered": repr(answered),
                "app": KEY,
                "dice_url": URL,
                "dice_body": json.dumps(body),
            },
        )
    await redis.hset("tonebridge:call:call-4", mapping={"node": "dead", "answered": repr(answered)})
    await redis.hset("tonebridge:call:call-5", mapping={"node": "alive", "answered": repr(answered)})
    await redis.set("tonebridge:home:room", "dead")
    await redis.set("tonebridge:home:other", "alive")
    await redis.sadd("tonebridge:nodes", "dead")
    keys = [str((await redis.hgetall(CB + str(d.id)))["key"]) for d in made]
    await redis.aclose()
    return [d.id for d in made], keys


def test_a_survivor_takes_over_a_dead_nodes_callbacks_and_ends_its_calls(redis_url, tmp_path) -> None:  # type: ignore[no-untyped-def]
    async def scenario() -> None:
        ids, keys = await dead_node_leaves(redis_url, tmp_path)
        app = App()
        storage, outbox, store = await node(redis_url, "alive", tmp_path, app)
        await storage.redis.hset("tonebridge:node:alive", "sip", "x")
        await storage.redis.sadd("tonebridge:nodes", "alive")
        directory = FakeDirectory("alive", _Timings())
        reaper = Reaper(directory, storage, outbox)  # type: ignore[arg-type]
        assert await reaper.dead_nodes() == ["dead"]
        assert await reaper.sweep() == ["dead"]
        await app.wait(lambda: len(app.received) == 6)
        by_call: dict[str, list[httpx.Request]] = {}
        for request in app.received:
            by_call.setdefault(json.loads(request.content)["callid"], []).append(request)
        # The same bytes and keys as the dead node's, in order per call, then the DiCE.
        assert [json.loads(r.content)["menuResult"]["value"] for r in by_call["call-1"][:3]] == list("123")
        assert [r.headers[IDEMPOTENCY_HEADER] for r in by_call["call-1"][:3]] == keys[:3]
        assert by_call["call-2"][0].headers[IDEMPOTENCY_HEADER] == keys[3]
        for call_id in ("call-1", "call-3"):
            dice = json.loads(by_call[call_id][-1].content)
            assert (dice["event"], dice["result"], dice["reason"]) == ("dice", "ANSWERED", "GENERALERROR")
            assert 41 <= dice["duration"] <= 45
            assert dice["timestamp"].endswith("Z") and "T" in dice["timestamp"]
        assert "call-4" not in by_call and "call-5" not in by_call
        redis = storage.redis
        await app.wait(lambda: True)
        deadline = time.monotonic() + DEADLINE
        while await redis.zcard(OUTBOX + "alive"):
            assert time.monotonic() < deadline, "the survivor's outbox never emptied"
            await asyncio.sleep(0.05)
        assert not await redis.exists(OUTBOX + "dead")
        assert sorted(await redis.keys("tonebridge:call:*")) == ["tonebridge:call:call-5"]
        assert await redis.get("tonebridge:home:room") is None
        assert await redis.get("tonebridge:home:other") == "alive"
        assert await redis.smembers("tonebridge:nodes") == {"alive"}
        assert not await redis.exists(REAP + "dead")
        assert directory.counters["callbacks_taken_over"] == 4
        assert directory.counters["dead_calls_ended"] == 2
        assert await reaper.sweep() == []  # nothing left to take
        assert len(app.received) == 6
        await shut(storage, outbox, store)

    run(scenario())


def test_one_survivor_reaps_and_a_node_that_came_back_is_left_alone(redis_url, tmp_path) -> None:  # type: ignore[no-untyped-def]
    async def scenario() -> None:
        await dead_node_leaves(redis_url, tmp_path)
        app = App()  # both survivors call the same application
        b = await node(redis_url, "b", tmp_path, app)
        c = await node(redis_url, "c", tmp_path, app)
        redis = b[0].redis
        # The dead node is back before anyone reaps it: nothing is taken.
        await redis.hset("tonebridge:node:dead", "sip", "x")
        reaper_b = Reaper(FakeDirectory("b", _Timings()), b[0], b[1])  # type: ignore[arg-type]
        reaper_c = Reaper(FakeDirectory("c", _Timings()), c[0], c[1])  # type: ignore[arg-type]
        assert await reaper_b.sweep() == []
        await redis.set(REAP + "dead", "b", ex=60)
        await reaper_b.reap("dead")  # as if it won the lock just before the node came back
        assert await redis.zcard(OUTBOX + "dead") == 4
        assert await redis.exists("tonebridge:call:call-1")
        assert not await redis.exists(REAP + "dead")
        # It dies again; both look at once: one takes everything, the other nothing.
        await redis.delete("tonebridge:node:dead")
        won = await asyncio.gather(reaper_b.sweep(), reaper_c.sweep())
        assert sorted(len(w) for w in won) == [0, 1]
        await app.wait(lambda: len(app.received) == 6)
        dice = [json.loads(r.content) for r in app.received]
        assert sum(1 for d in dice if d["event"] == "dice") == 2
        for parts in (b, c):
            await shut(*parts)

    run(scenario())


def test_a_dice_already_pending_is_not_sent_twice(redis_url, tmp_path) -> None:  # type: ignore[no-untyped-def]
    """The dead node had ended call-1 and queued its DiCE, but died before its entry was deleted."""

    async def scenario() -> None:
        app = App(status=503)
        storage, outbox, store = await node(redis_url, "dead", tmp_path, app)
        own = outbox.enqueue(KEY, URL, "call-1", "dice", {"event": "dice", "callid": "call-1", "reason": "X"})
        await own.stored
        await outbox.close()
        await storage.close()
        await store.aclose()
        await storage.redis.hset(
            "tonebridge:call:call-1",
            mapping={"node": "dead", "answered": "1.0", "app": KEY, "dice_url": URL, "dice_body": "{}"},
        )
        await storage.redis.sadd("tonebridge:nodes", "dead")
        await storage.redis.aclose()
        survivor = App()
        parts = await node(redis_url, "alive", tmp_path, survivor)
        reaper = Reaper(FakeDirectory("alive", _Timings()), parts[0], parts[1])  # type: ignore[arg-type]
        assert await reaper.sweep() == ["dead"]
        await survivor.wait(lambda: len(survivor.received) == 1)
        assert json.loads(survivor.received[0].content)["reason"] == "X"
        assert not await parts[0].redis.exists("tonebridge:call:call-1")
        await shut(*parts)
        assert len(survivor.received) == 1

    run(scenario())


def test_a_node_stopping_with_callbacks_pending_hands_them_over(redis_url, tmp_path) -> None:  # type: ignore[no-untyped-def]
    async def scenario() -> None:
        app = App(status=503)
        storage, outbox, store = await node(redis_url, "leaving", tmp_path, app)
        delivery = outbox.enqueue(KEY, URL, "call-1", "pie", pie("call-1", "1"))
        await delivery.first_attempt
        await shut(storage, outbox, store)  # hand_over: back in the set, with no heartbeat
        survivor = App()
        parts = await node(redis_url, "alive", tmp_path, survivor)
        reaper = Reaper(FakeDirectory("alive", _Timings()), parts[0], parts[1])  # type: ignore[arg-type]
        assert await reaper.sweep() == ["leaving"]
        await survivor.wait(lambda: len(survivor.received) == 1)
        assert survivor.received[0].headers[IDEMPOTENCY_HEADER] == app.received[0].headers[IDEMPOTENCY_HEADER]
        await shut(*parts)

    run(scenario())


def test_dead_call_dice_body() -> None:
    body = dead_call_dice(json.dumps({"event": "dice", "result": "N/A", "reason": "N/A"}), 100.0, 163.9)
    assert (body["result"], body["reason"], body["duration"]) == ("ANSWERED", "GENERALERROR", 63)
    assert isinstance(body["timestamp"], str) and len(body["timestamp"]) == 20


def test_sequence_orders_rows_across_nodes(redis_url, tmp_path) -> None:  # type: ignore[no-untyped-def]
    async def scenario() -> None:
        a = await node(redis_url, "a", tmp_path, App(status=503))
        b = await node(redis_url, "b", tmp_path, App(status=503))
        first = a[1].enqueue(KEY, URL, "c", "pie", pie("c", "1"))
        await first.stored
        second = b[1].enqueue(KEY, URL, "c", "pie", pie("c", "2"))
        await second.stored
        redis = a[0].redis
        assert await redis.zscore(OUTBOX + "a", str(first.id)) < await redis.zscore(
            OUTBOX + "b", str(second.id)
        )
        assert int(await redis.get(SEQ)) >= 2
        assert first.id != second.id
        for parts in (a, b):
            await parts[1].close()
            await parts[0].close()
            await parts[2].aclose()
            await parts[0].redis.aclose()

    run(scenario())
