"""When a node dies, a survivor takes over what it left (docs/cluster.md, "When a node dies").

Every node looks once a heartbeat for dead nodes: in `tonebridge:nodes` but with no
`tonebridge:node:{id}` (its heartbeat lapsed). For each, the node that wins `SET tonebridge:reap:{id}
<self> NX EX 60`:

1. moves the dead node's outbox (`tonebridge:outbox:{dead}`) into its own in one Lua script, scores and
   all, provided the dead node has still not come back; then hands those callbacks to its Outbox in
   score order (same ids, bytes and idempotency keys, so the application sees each one once however many
   nodes tried it), each due at once;
2. for each call the dead node had answered (`tonebridge:call:{id}` whose `node` is the dead one) that is
   to get a DiCE and has none among the callbacks just taken over: writes the DiCE (result ANSWERED,
   reason GENERALERROR, duration since the answer, a fresh timestamp) as a row of its own outbox and
   deletes the call's entry, in one Lua script, then hands it to its Outbox behind the call's other
   callbacks; the entries of the other calls are deleted;
3. deletes the conference homes the dead node still holds (a claim would take them over anyway) and
   takes the dead node out of `tonebridge:nodes`.

Each step can be repeated: a survivor that dies half-way is itself dead a TTL later, its outbox (with
what it took over) goes to another survivor, and its lock on the first dead node lapses after 60 s, when
another survivor finishes the job; a call entry is turned into a DiCE only once (the script checks and
deletes it atomically).
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
import uuid
from typing import TYPE_CHECKING

from redis.exceptions import RedisError

from tonebridge.callbacks.bodies import iso_now
from tonebridge.callbacks.outbox import encode_body
from tonebridge.cluster.directory import CALL, HOME, NODE, NODES
from tonebridge.cluster.outbox import CB, OUTBOX, SEQ, row_fields

if TYPE_CHECKING:
    from tonebridge.callbacks.outbox import Outbox
    from tonebridge.cluster.directory import ClusterDirectory
    from tonebridge.cluster.outbox import RedisOutboxStorage
    from tonebridge.store.db import OutboxRow

__all__ = ["REAP", "REAP_LOCK_SECONDS", "Reaper", "dead_call_dice"]

log = logging.getLogger("tonebridge.cluster")

REAP = "tonebridge:reap:"
REAP_LOCK_SECONDS = 60
DEAD_NODE_REASON = "GENERALERROR"

# KEYS: the dead node's entry, its outbox, ours. Nil if the dead node is back; else its entries and scores.
_MOVE = """
if redis.call('EXISTS', KEYS[1]) == 1 then
  return false
end
local entries = redis.call('ZRANGE', KEYS[2], 0, -1, 'WITHSCORES')
for i = 1, #entries, 2 do
  redis.call('ZADD', KEYS[3], entries[i + 1], entries[i])
end
redis.call('DEL', KEYS[2])
return entries
"""
# KEYS: the call's entry, seq, our outbox, the DiCE's hash. ARGV: the dead node, the DiCE's id, then its
# hash's fields and values. The DiCE is written and the entry deleted together, once.
_DICE = """
if redis.call('HGET', KEYS[1], 'node') ~= ARGV[1] then
  return false
end
local seq = redis.call('INCR', KEYS[2])
redis.call('HSET', KEYS[4], unpack(ARGV, 3))
redis.call('ZADD', KEYS[3], seq, ARGV[2])
redis.call('DEL', KEYS[1])
return seq
"""
# KEYS: a key. ARGV: a value. Delete the key only if it holds that value.
_DELETE_IF = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
"""
_FORGET_CALL = """
if redis.call('HGET', KEYS[1], 'node') == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
"""
# KEYS: the dead node's entry, the set of nodes. ARGV: the dead node. Only if it has not come back.
_FORGET_NODE = """
if redis.call('EXISTS', KEYS[1]) == 1 then
  return 0
end
return redis.call('SREM', KEYS[2], ARGV[1])
"""


def dead_call_dice(dice_body: str, answered: float, now: float) -> dict[str, object]:
    """The DiCE of a call whose node died, from the body its node left in the directory."""
    body = json.loads(dice_body)
    body.update(
        result="ANSWERED",
        reason=DEAD_NODE_REASON,
        duration=max(0, int(now - answered)),
        timestamp=iso_now(),
    )
    return body


class Reaper:
    """Looks for dead nodes every `directory.config.heartbeat_seconds` and takes over what they left."""

    def __init__(self, directory: ClusterDirectory, storage: RedisOutboxStorage, outbox: Outbox) -> None:
        self.directory = directory
        self.storage = storage
        self.outbox = outbox
        self.node_id = directory.node_id
        redis = storage.redis
        self.redis = redis
        self._move = redis.register_script(_MOVE)
        self._dice = redis.register_script(_DICE)
        self._delete_if = redis.register_script(_DELETE_IF)
        self._forget_call = redis.register_script(_FORGET_CALL)
        self._forget_node = redis.register_script(_FORGET_NODE)
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._forever(), name="cluster:reaper")

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    async def _forever(self) -> None:
        while True:
            await asyncio.sleep(self.directory.config.heartbeat_seconds)
            if not self.directory.available:
                continue
            try:
                await self.sweep()
            except (RedisError, OSError) as exc:
                log.warning("event=cluster_reap_failed node=%s error=%r", self.node_id, exc)
            except Exception:
                log.exception("event=cluster_reap_failed node=%s", self.node_id)

    async def dead_nodes(self) -> list[str]:
        members = sorted(await self.redis.smembers(NODES))
        pipe = self.redis.pipeline(transaction=False)
        for node_id in members:
            pipe.exists(NODE + node_id)
        alive = await pipe.execute()
        return [n for n, live in zip(members, alive, strict=True) if not live and n != self.node_id]

    async def sweep(self) -> list[str]:
        """Reap every dead node whose lock this node wins; the ids reaped."""
        reaped = []
        for dead in await self.dead_nodes():
            if await self.redis.set(REAP + dead, self.node_id, nx=True, ex=REAP_LOCK_SECONDS):
                await self.reap(dead)
                reaped.append(dead)
        return reaped

    async def reap(self, dead: str) -> None:
        """Take over what `dead` left (this node holds its lock)."""
        started = time.monotonic()
        moved = await self._move(keys=[NODE + dead, OUTBOX + dead, self.storage.key])
        if moved is None:
            log.info("event=cluster_reap_skipped node=%s dead=%s reason=back", self.node_id, dead)
            await self._delete_if(keys=[REAP + dead], args=[self.node_id])
            return
        members = [str(m) for m in moved[0::2]]
        rows = await self.storage.rows(members, self.storage.key)
        now = time.time()
        dice_rows = await self._end_calls(dead, rows, now)
        # The dead node's callbacks first (score order), then the DiCEs written here: each call's DiCE
        # goes after its other callbacks.
        self.outbox.adopt([*rows, *dice_rows], due=now)
        homes = 0
        async for key in self.redis.scan_iter(match=HOME + "*", count=500):
            homes += int(await self._delete_if(keys=[key], args=[dead]))
        await self._forget_node(keys=[NODE + dead, NODES], args=[dead])
        await self._delete_if(keys=[REAP + dead], args=[self.node_id])
        counters = self.directory.counters
        counters["nodes_reaped"] += 1
        counters["callbacks_taken_over"] += len(rows)
        counters["dead_calls_ended"] += len(dice_rows)
        log.info(
            "event=cluster_node_reaped node=%s dead=%s callbacks=%d dice=%d homes=%d took_ms=%.1f",
            self.node_id,
            dead,
            len(rows),
            len(dice_rows),
            homes,
            (time.monotonic() - started) * 1000,
        )

    async def _end_calls(self, dead: str, taken: list[OutboxRow], now: float) -> list[OutboxRow]:
        """Write a DiCE for each of the dead node's calls that is to get one and has none among `taken`;
        forget the others' entries. The rows written, in call order."""
        has_dice = {row.call_id for row in taken if row.event == "dice"}
        written: list[OutboxRow] = []
        async for key in self.redis.scan_iter(match=CALL + "*", count=500):
            entry = await self.redis.hgetall(key)
            if entry.get("node") != dead:
                continue
            call_id = key.removeprefix(CALL)
            if call_id in has_dice or not entry.get("dice_body") or not entry.get("dice_url"):
                await self._forget_call(keys=[key], args=[dead])
                continue
            try:
                answered = float(entry.get("answered") or now)
                body = encode_body(dead_call_dice(entry["dice_body"], answered, now))
            except (ValueError, TypeError) as exc:
                log.warning("event=cluster_dead_call_unreadable call_id=%s error=%r", call_id, exc)
                await self._forget_call(keys=[key], args=[dead])
                continue
            row_id = self.storage.next_id()
            fields = row_fields(
                app_key=entry.get("app", ""),
                call_id=call_id,
                event="dice",
                url=entry["dice_url"],
                body=body,
                idempotency_key=str(uuid.uuid4()),
                created_at=now,
            )
            seq = await self._dice(
                keys=[key, SEQ, self.storage.key, CB + str(row_id)], args=[dead, str(row_id), *fields]
            )
            if seq is None:
                continue  # another survivor got there first
            written.extend(await self.storage.rows([str(row_id)]))
            log.info(
                "event=cluster_dead_call_ended call_id=%s dead=%s reason=%s", call_id, dead, DEAD_NODE_REASON
            )
        return written
