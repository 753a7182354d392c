"""The callback outbox's rows in the cluster's Redis (docs/cluster.md, "When a node dies"): what
callbacks/outbox.py keeps in the node's SQLite when the node is alone, kept where a survivor can take
over the callbacks of a node that died (cluster/reaper.py).

Keys:
- `tonebridge:outbox:{node}`: a sorted set per node of the callbacks it holds, neither delivered nor
  given up. Member: the callback's id; score: its place in the cluster's one sequence
  (`tonebridge:outbox:seq`, INCR when the row is written), so a row written later always sorts later,
  whichever node wrote it; the per-call order of a node's callbacks is their score order.
- `tonebridge:cb:{id}`: a hash per callback: `app`, `url`, `call_id`, `event`, `body` (the exact UTF-8
  JSON that is signed and sent), `key` (its X-Idempotency-Key), `created_at`, `attempts`,
  `next_attempt_at`, `last_error` ("" for none).
- `tonebridge:outbox:epoch`: INCR once per start of a node. A callback id is `epoch << 32 | n`, `n`
  counting from 1 in that run: unique in the cluster, known when the callback is enqueued (the Outbox
  needs its id at once), and kept by a survivor that takes the row over.

A row is written (hash and sorted-set entry in one Lua script) before the callback's first attempt; a
failed attempt updates the hash; delivered or given up, the entry and the hash are deleted (the node's
SQLite keeps the call's history of attempts). Writes go through one task, in the order they were made,
batched in a pipeline; while Redis cannot be reached that task tries again every second and the
callbacks wait, in order, as they wait for a slow disk when the node is alone.

Redis must persist every write before it answers (`appendonly yes`, `appendfsync always`) for a stored
callback to survive Redis itself.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError
from redis.exceptions import TimeoutError as RedisTimeoutError

from tonebridge.cluster.directory import CALL, NODES
from tonebridge.store.db import OutboxRow, Write

__all__ = ["CB", "EPOCH", "OUTBOX", "SEQ", "RedisOutboxStorage", "row_fields", "row_from_hash"]

log = logging.getLogger("tonebridge.cluster")

OUTBOX = "tonebridge:outbox:"
CB = "tonebridge:cb:"
SEQ = "tonebridge:outbox:seq"
EPOCH = "tonebridge:outbox:epoch"
# A write batch: at most this many commands in one pipeline.
MAX_BATCH = 256
RETRY_SECONDS = 1.0
# How long close() waits for queued writes to reach Redis.
CLOSE_SECONDS = 3.0
# Where a node's epoch comes from when Redis cannot be reached at its start: a random one, above any
# that INCR will hand out.
_RANDOM_EPOCH_BASE = 1 << 30

# KEYS: seq, the node's outbox, the callback's hash. ARGV: the id, then the hash's fields and values.
ADD_SCRIPT = """
local seq = redis.call('INCR', KEYS[1])
redis.call('DEL', KEYS[3])
redis.call('HSET', KEYS[3], unpack(ARGV, 2))
redis.call('ZADD', KEYS[2], seq, ARGV[1])
return seq
"""
# KEYS: the callback's hash. ARGV: attempts, next_attempt_at, last_error. Only a row that still exists.
_ATTEMPTED = """
if redis.call('EXISTS', KEYS[1]) == 1 then
  redis.call('HSET', KEYS[1], 'attempts', ARGV[1], 'next_attempt_at', ARGV[2], 'last_error', ARGV[3])
  return 1
end
return 0
"""


def row_fields(
    *,
    app_key: str,
    call_id: str,
    event: str,
    url: str,
    body: bytes,
    idempotency_key: str,
    created_at: float,
    attempts: int = 0,
    next_attempt_at: float | None = None,
    last_error: str | None = None,
) -> list[str]:
    """The hash of one callback as field, value, field, value... (ADD_SCRIPT's ARGV after the id)."""
    values = {
        "app": app_key,
        "call_id": call_id,
        "event": event,
        "url": url,
        # The bytes are compact UTF-8 JSON (callbacks/outbox.py `encode_body`): decoding and encoding
        # gives them back exactly.
        "body": body.decode("utf-8"),
        "key": idempotency_key,
        "created_at": repr(created_at),
        "attempts": str(attempts),
        "next_attempt_at": repr(created_at if next_attempt_at is None else next_attempt_at),
        "last_error": last_error or "",
    }
    return [item for pair in values.items() for item in pair]


def row_from_hash(row_id: int, fields: dict[str, str]) -> OutboxRow:
    return OutboxRow(
        id=row_id,
        app_key=fields["app"],
        call_id=fields["call_id"],
        event=fields["event"],
        url=fields["url"],
        body=fields["body"].encode("utf-8"),
        idempotency_key=fields["key"],
        created_at=float(fields["created_at"]),
        state="pending",
        attempts=int(fields.get("attempts") or 0),
        next_attempt_at=float(fields.get("next_attempt_at") or fields["created_at"]),
        last_error=fields.get("last_error") or None,
        status=None,
        done_at=None,
    )


@dataclass(eq=False)
class _Op:
    name: str
    # Adds its commands to the pipeline; returns how many it added.
    queue: Callable[[Any], int]
    write: Write[Any]
    result: Callable[[list[Any]], Any] = field(default=lambda results: None)


class RedisOutboxStorage:
    """One node's outbox rows in Redis (an `OutboxStorage`, callbacks/outbox.py).

    `open()` (on the loop, before `Outbox.start`) takes the node's epoch, reads the rows its sorted set
    holds (left by this node's previous run) and starts the writer; `close()` lets queued writes reach
    Redis, then stops; `hand_over()`, once the node has left the directory, leaves what is still pending
    to a survivor. If Redis cannot be reached at `open()`, the node starts anyway with a random epoch
    and reads its rows when Redis answers, handing them to `on_late_rows` (the Outbox's `adopt`).
    """

    def __init__(self, redis: aioredis.Redis, node_id: str) -> None:
        self.redis = redis
        self.node_id = node_id
        self.key = OUTBOX + node_id
        self._epoch: int | None = None
        self._next = 1
        self._loaded: list[OutboxRow] = []
        self._ops: asyncio.Queue[_Op | None] = asyncio.Queue()
        self._writer: asyncio.Task[None] | None = None
        self._late: asyncio.Task[None] | None = None
        self.on_late_rows: Callable[[list[OutboxRow]], object] | None = None
        self.available = False
        self.writes = 0
        self.write_failures = 0
        self._own_client = False

    @classmethod
    def from_url(cls, url: str, node_id: str) -> RedisOutboxStorage:
        """With a client of its own, closed by `hand_over()`."""
        # One retry on a dropped connection (Redis restarted): every command here is safe to repeat.
        client = aioredis.from_url(
            url,
            socket_timeout=2.0,
            socket_connect_timeout=1.0,
            decode_responses=True,
            retry=Retry(NoBackoff(), 1),
            retry_on_error=[RedisConnectionError],
        )
        storage = cls(client, node_id)
        storage._own_client = True
        return storage

    # Lifecycle ------------------------------------------------------------------------------------------

    async def open(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            self._epoch = int(await self.redis.incr(EPOCH))
            self._loaded = await self.load(self.key)
            self.available = True
        except (RedisError, OSError) as exc:
            self._epoch = _RANDOM_EPOCH_BASE + secrets.randbelow(_RANDOM_EPOCH_BASE)
            log.warning("event=cluster_outbox_unreachable node=%s error=%r", self.node_id, exc)
            self._late = loop.create_task(self._load_late(), name="cluster-outbox:load")
        if self._loaded:
            log.info("event=cluster_outbox_loaded node=%s pending=%d", self.node_id, len(self._loaded))
        self._writer = loop.create_task(self._write_forever(), name="cluster-outbox:writer")

    async def close(self) -> None:
        if self._late is not None:
            self._late.cancel()
            await asyncio.gather(self._late, return_exceptions=True)
        writer, self._writer = self._writer, None
        if writer is not None:
            # The writer ends at the sentinel, once what was queued before it is written; if Redis is
            # away that long, it is cancelled (again and again: a client library may swallow one).
            self._ops.put_nowait(None)
            done, _ = await asyncio.wait([writer], timeout=CLOSE_SECONDS)
            while not done:
                writer.cancel()
                done, _ = await asyncio.wait([writer], timeout=0.1)
        while not self._ops.empty():
            op = self._ops.get_nowait()
            if op is not None and not op.write.done():
                op.write.set_exception(RuntimeError("the cluster outbox is closed"))

    async def hand_over(self) -> None:
        """After the node has left the directory, its calls all ended: if callbacks are still pending
        here, put the node back in `tonebridge:nodes` (with no heartbeat, it is dead) so that a survivor
        takes them over, as it would a dead node's. Stale call entries of this node go first: every call
        it had is over, and each one's DiCE is among the pending callbacks or delivered. Then the client
        closes."""
        try:
            stale = [
                key
                async for key in self.redis.scan_iter(match=CALL + "*", count=500)
                if await self.redis.hget(key, "node") == self.node_id
            ]
            if stale:
                await self.redis.delete(*stale)
            pending = int(await self.redis.zcard(self.key))
            if pending:
                await self.redis.sadd(NODES, self.node_id)
                log.info("event=cluster_outbox_handed_over node=%s pending=%d", self.node_id, pending)
        except (RedisError, OSError) as exc:
            log.warning("event=cluster_outbox_hand_over_failed node=%s error=%r", self.node_id, exc)
        finally:
            if self._own_client:
                await self.redis.aclose()

    async def _load_late(self) -> None:
        while True:
            await asyncio.sleep(RETRY_SECONDS)
            try:
                rows = await self.load(self.key)
            except (RedisError, OSError):
                continue
            # Rows written in this run are the Outbox's already (and may be delivered by now).
            rows = [row for row in rows if row.id >> 32 != self._epoch]
            self.available = True
            if rows:
                log.info("event=cluster_outbox_loaded node=%s pending=%d", self.node_id, len(rows))
                if self.on_late_rows is not None:
                    try:
                        self.on_late_rows(rows)
                    except RuntimeError:  # the Outbox closed meanwhile: the rows stay for the next start
                        log.info("event=cluster_outbox_late_rows_left node=%s", self.node_id)
            return

    async def load(self, key: str) -> list[OutboxRow]:
        """The rows of sorted set `key`, in score order. An entry whose hash is gone is dropped."""
        members = await self.redis.zrange(key, 0, -1)
        return await self.rows(members, key)

    async def rows(self, members: list[str], key: str | None = None) -> list[OutboxRow]:
        """The rows of these callback ids, in the order given; ids without a hash are skipped (and taken
        out of `key` when given)."""
        if not members:
            return []
        pipe = self.redis.pipeline(transaction=False)
        for member in members:
            pipe.hgetall(CB + member)
        hashes = await pipe.execute()
        rows, missing = [], []
        for member, fields in zip(members, hashes, strict=True):
            if fields:
                rows.append(row_from_hash(int(member), fields))
            else:
                missing.append(member)
        if missing and key is not None:
            await self.redis.zrem(key, *missing)
        return rows

    def next_id(self) -> int:
        """A callback id no other callback in the cluster has."""
        if self._epoch is None:
            raise RuntimeError("open() the cluster outbox first")
        row_id = self._epoch << 32 | self._next
        self._next += 1
        return row_id

    # OutboxStorage --------------------------------------------------------------------------------------

    def outbox_add(
        self,
        app_key: str,
        call_id: str,
        event: str,
        url: str,
        body: bytes,
        idempotency_key: str,
        *,
        created_at: float | None = None,
        row_id: int | None = None,
    ) -> Write[int]:
        rid = self.next_id() if row_id is None else row_id
        args = [
            str(rid),
            *row_fields(
                app_key=app_key,
                call_id=call_id,
                event=event,
                url=url,
                body=body,
                idempotency_key=idempotency_key,
                created_at=time.time() if created_at is None else created_at,
            ),
        ]
        keys = [SEQ, self.key, CB + str(rid)]

        def queue(pipe: Any) -> int:
            # EVAL rather than EVALSHA: a pipeline cannot load a script Redis lost (a restart) on its own.
            pipe.eval(ADD_SCRIPT, len(keys), *keys, *args)
            return 1

        write = self._submit("outbox_add", queue, lambda results: rid)
        write.row_id = rid
        return write

    def outbox_pending(self) -> list[OutboxRow]:
        rows, self._loaded = self._loaded, []
        return rows

    def outbox_attempted(
        self, id: int, attempts: int, next_attempt_at: float, last_error: str | None
    ) -> Write[None]:
        args = [str(attempts), repr(next_attempt_at), last_error or ""]

        def queue(pipe: Any) -> int:
            pipe.eval(_ATTEMPTED, 1, CB + str(id), *args)
            return 1

        return self._submit("outbox_attempted", queue)

    def outbox_delivered(self, id: int, status: int, at: float, attempts: int | None = None) -> Write[None]:
        return self._finish("outbox_delivered", id)

    def outbox_gave_up(self, id: int, at: float, reason: str, attempts: int | None = None) -> Write[None]:
        return self._finish("outbox_gave_up", id)

    def outbox_prune(self, done_before: float) -> Write[int]:
        """Nothing to prune: a finished row leaves Redis at once."""
        write: Write[int] = Write()
        write.set_result(0)
        return write

    # Inside ---------------------------------------------------------------------------------------------

    def _finish(self, name: str, id: int) -> Write[None]:
        def queue(pipe: Any) -> int:
            pipe.zrem(self.key, str(id))
            pipe.delete(CB + str(id))
            return 2

        return self._submit(name, queue)

    def _submit(
        self,
        name: str,
        queue: Callable[[Any], int],
        result: Callable[[list[Any]], Any] | None = None,
    ) -> Write[Any]:
        if self._writer is None or self._writer.done():
            raise RuntimeError("the cluster outbox is not open")
        write: Write[Any] = Write()
        self._ops.put_nowait(_Op(name, queue, write, result or (lambda results: None)))
        return write

    async def _write_forever(self) -> None:
        while True:
            first = await self._ops.get()
            if first is None:
                return
            batch = [first]
            while len(batch) < MAX_BATCH and not self._ops.empty():
                op = self._ops.get_nowait()
                if op is None:
                    await self._write(batch)
                    return
                batch.append(op)
            await self._write(batch)

    async def _write(self, batch: list[_Op]) -> None:
        """One pipeline for the batch, in order; while Redis cannot be reached, the same batch again every
        second (each op is safe to repeat), so no write is lost or reordered."""
        failures = 0
        while True:
            pipe = self.redis.pipeline(transaction=False)
            counts = [op.queue(pipe) for op in batch]
            try:
                results = await pipe.execute(raise_on_error=False)
            except (RedisConnectionError, RedisTimeoutError, OSError) as exc:
                if not failures:
                    log.warning(
                        "event=cluster_outbox_write_failed node=%s writes=%d error=%r",
                        self.node_id,
                        len(batch),
                        exc,
                    )
                failures += 1
                self.write_failures += 1
                self.available = False
                await asyncio.sleep(RETRY_SECONDS)
                continue
            except RedisError as exc:
                for op in batch:
                    if not op.write.done():
                        op.write.set_exception(exc)
                return
            break
        if failures:
            log.info("event=cluster_outbox_write_resumed node=%s after=%d", self.node_id, failures)
        self.available = True
        index = 0
        for op, count in zip(batch, counts, strict=True):
            own = results[index : index + count]
            index += count
            self.writes += 1
            error = next((r for r in own if isinstance(r, Exception)), None)
            if op.write.done():
                continue
            if error is not None:
                log.error("event=cluster_outbox_write_refused op=%s error=%r", op.name, error)
                op.write.set_exception(error)
            else:
                op.write.set_result(op.result(own))
