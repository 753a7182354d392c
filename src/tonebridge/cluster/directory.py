"""This node's entry in the cluster's Redis: its heartbeat and load, the conferences it is home to, and the
calls it carries (docs/cluster.md, "The directory").

Keys (one Redis database per cluster):
- `tonebridge:nodes`: a set of node ids; `tonebridge:node:{id}`: a hash (sip, http, calls, conferences,
  participants, started, updated) whose TTL the heartbeat renews. A node whose hash has expired is dead.
- `tonebridge:home:{conference_id}`: the id of the node that mixes that conference. The first node to need
  a conference claims it; a claim held by a dead node may be taken over; the claim ends with the conference.
- `tonebridge:call:{call_id}`: a hash for each answered call, deleted when it ends: `node`, `answered`
  (unix seconds) and, for a call of an application that is to get a DiCE, `app`, `dice_url` and
  `dice_body` (the DiCE as it would be sent now, but for result, reason, duration and timestamp), so that
  a survivor can send the DiCE of a call whose node died.

Redis is reached only from the loop, in this module. While it cannot be reached the node keeps its calls
and rooms, refuses new calls (`unavailable`, which the SIP stack turns into 503 with Retry-After) and says
so in health and metrics; when Redis answers again the node registers anew and reconciles its homes.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from tonebridge.calls.events import CallAnswered, CallEnded, CallEvent
from tonebridge.cluster.keys import CALL, HOME, NODE, NODES
from tonebridge.config import ClusterConfig

log = logging.getLogger("tonebridge.cluster")

# While Redis is unreachable: how often to try again, and the Retry-After given to refused callers.
RETRY_SECONDS = 1.0
RETRY_AFTER = 5

# Take the home of a conference unless a live node other than us holds it; answer who holds it now.
_CLAIM = """
local holder = redis.call('GET', KEYS[1])
if (not holder) or holder == ARGV[1] or redis.call('EXISTS', ARGV[2] .. holder) == 0 then
  redis.call('SET', KEYS[1], ARGV[1])
  return ARGV[1]
end
return holder
"""
# End our claim, and only ours.
_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
"""


@dataclass(frozen=True)
class NodeLoad:
    calls: int
    conferences: int
    participants: int


@dataclass(frozen=True)
class NodeEntry:
    node_id: str
    sip: str
    http: str
    calls: int
    conferences: int
    participants: int
    updated: float


class ClusterDirectory:
    def __init__(
        self,
        config: ClusterConfig,
        *,
        sip: str,
        http: str,
        load: Callable[[], NodeLoad],
        local_conferences: Callable[[], set[str]],
    ) -> None:
        self.config = config
        self.node_id = config.node_id
        self.sip = config.advertise_sip or sip
        self.http = config.advertise_http or http
        self._load = load
        self._local_conferences = local_conferences
        # The entry of each call this node carries as last written (or to be written): put back whole
        # after Redis lost it.
        self._calls: dict[str, dict[str, str]] = {}
        self.redis = aioredis.from_url(
            config.redis, socket_timeout=1.0, socket_connect_timeout=1.0, decode_responses=True
        )
        self._claim = self.redis.register_script(_CLAIM)
        self._release = self.redis.register_script(_RELEASE)
        self.available = False
        self.started = time.time()
        # Home changes in the order the rooms made them, applied by one task so a quick start-and-end of a
        # conference never releases before it claims.
        self._changes: asyncio.Queue[tuple[str, str, dict[str, str] | None]] = asyncio.Queue()
        self._tasks: list[asyncio.Task[None]] = []
        self._wake = asyncio.Event()
        self.counters: Counter[str] = Counter()
        # Conferences whose home another live node held when this node opened a room for it.
        self.conflicts: set[str] = set()

    # Lifecycle ------------------------------------------------------------------------------------------

    async def start(self) -> None:
        """Register (or find Redis unreachable, and keep trying in the background)."""
        await self._heartbeat()
        loop = asyncio.get_running_loop()
        self._tasks = [loop.create_task(self._beat_forever()), loop.create_task(self._apply_changes())]

    async def close(self) -> None:
        """Leave the cluster: our homes and our entry go at once, not at the TTL's end."""
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        try:
            homes = [key async for key in self._our_homes()]
            pipe = self.redis.pipeline(transaction=True)
            for key in homes:
                pipe.delete(key)
            pipe.srem(NODES, self.node_id)
            pipe.delete(NODE + self.node_id)
            await pipe.execute()
        except (RedisError, OSError) as exc:
            log.warning("event=cluster_leave_failed node=%s error=%r", self.node_id, exc)
        await self.redis.aclose()

    def unavailable(self) -> int | None:
        """The Retry-After for a new call while this node cannot reach the directory, else None."""
        return None if self.available else RETRY_AFTER

    # Rooms and calls (called on the loop, synchronously, by the server's wiring) ---------------------------

    def conference_started(self, conference_id: str) -> None:
        self._changes.put_nowait(("claim", conference_id, None))

    def conference_ended(self, conference_id: str) -> None:
        self._changes.put_nowait(("release", conference_id, None))

    def call_answered(self, call_id: str) -> None:
        fields = {"node": self.node_id, "answered": repr(time.time())}
        self._calls.setdefault(call_id, {}).update(fields)
        self._changes.put_nowait(("call_fields", call_id, fields))

    def call_dice(self, call_id: str, app_key: str, url: str, body: dict[str, object]) -> None:
        """What a survivor needs to send this call's DiCE should this node die (the latest wins)."""
        fields = {"app": app_key, "dice_url": url, "dice_body": json.dumps(body, separators=(",", ":"))}
        if call_id not in self._calls:
            return  # not answered, or over: nothing a survivor would have to end
        self._calls[call_id].update(fields)
        self._changes.put_nowait(("call_fields", call_id, fields))

    def call_ended(self, call_id: str) -> None:
        if self._calls.pop(call_id, None) is not None:
            self._changes.put_nowait(("call_ended", call_id, None))

    def on_call_event(self, event: CallEvent) -> None:
        """An engine observer: answered calls are entered in the directory, ended ones taken out."""
        if isinstance(event, CallAnswered):
            self.call_answered(event.session.call_id)
        elif isinstance(event, CallEnded):
            self.call_ended(event.session.call_id)

    def on_room_event(self, event: dict[str, object]) -> None:
        """A tap on the rooms' event bus: a conference's start claims its home, its end releases it."""
        kind = event.get("type")
        if kind == "conference_started":
            self.conference_started(str(event["conferenceId"]))
        elif kind == "conference_ended":
            self.conference_ended(str(event["conferenceId"]))

    # Queries --------------------------------------------------------------------------------------------

    async def home_of(self, conference_id: str) -> str | None:
        return await self.redis.get(HOME + conference_id)

    async def claim(self, conference_id: str) -> str:
        """Become the home of `conference_id` unless a live node holds it; the home's node id."""
        return await self._claim(keys=[HOME + conference_id], args=[self.node_id, NODE])

    async def nodes(self) -> dict[str, NodeEntry]:
        """The live nodes: those whose heartbeat has not lapsed."""
        ids = sorted(await self.redis.smembers(NODES))
        pipe = self.redis.pipeline(transaction=False)
        for node_id in ids:
            pipe.hgetall(NODE + node_id)
        entries = await pipe.execute()
        return {
            node_id: NodeEntry(
                node_id,
                entry.get("sip", ""),
                entry.get("http", ""),
                int(entry.get("calls", 0)),
                int(entry.get("conferences", 0)),
                int(entry.get("participants", 0)),
                float(entry.get("updated", 0)),
            )
            for node_id, entry in zip(ids, entries, strict=True)
            if entry
        }

    def metrics(self) -> dict[str, object]:
        return {
            "nodeId": self.node_id,
            "redisReachable": self.available,
            "homeConflicts": len(self.conflicts),
            **dict(self.counters),
        }

    # Inside ---------------------------------------------------------------------------------------------

    async def _beat_forever(self) -> None:
        while True:
            interval = self.config.heartbeat_seconds if self.available else RETRY_SECONDS
            try:
                await asyncio.wait_for(self._wake.wait(), interval)
            except TimeoutError:
                pass
            self._wake.clear()
            await self._heartbeat()

    async def _heartbeat(self) -> None:
        load = self._load()
        now = time.time()
        key = NODE + self.node_id
        try:
            pipe = self.redis.pipeline(transaction=True)
            pipe.sadd(NODES, self.node_id)
            pipe.hset(
                key,
                mapping={
                    "sip": self.sip,
                    "http": self.http,
                    "calls": load.calls,
                    "conferences": load.conferences,
                    "participants": load.participants,
                    "started": self.started,
                    "updated": now,
                },
            )
            pipe.expire(key, max(1, round(self.config.node_ttl_seconds)))
            await pipe.execute()
            if not self.available:
                await self._reconcile()
        except (RedisError, OSError) as exc:
            if self.available or not self.counters["redis_failures"]:
                log.warning("event=cluster_redis_unreachable node=%s error=%r", self.node_id, exc)
            self.counters["redis_failures"] += 1
            self.available = False
            return
        if not self.available:
            log.info("event=cluster_registered node=%s sip=%s http=%s", self.node_id, self.sip, self.http)
        self.available = True

    async def _reconcile(self) -> None:
        """After a start or an outage: claim every room we mix and enter every call we carry, and drop the
        entries of rooms and calls that ended while Redis could not hear of it."""
        local = self._local_conferences()
        for conference_id in sorted(local):
            await self._claim_one(conference_id)
        stale = [key async for key in self._our_homes() if key.removeprefix(HOME) not in local]
        for key in stale:
            await self._release(keys=[key], args=[self.node_id])
        calls = dict(self._calls)
        pipe = self.redis.pipeline(transaction=False)
        for call_id, fields in calls.items():
            pipe.hset(CALL + call_id, mapping=fields)
        async for key in self.redis.scan_iter(match=CALL + "*", count=500):
            if key.removeprefix(CALL) not in calls and await self.redis.hget(key, "node") == self.node_id:
                pipe.delete(key)
        await pipe.execute()
        self.counters["reconciliations"] += 1

    async def _our_homes(self):  # type: ignore[no-untyped-def]
        async for key in self.redis.scan_iter(match=HOME + "*", count=500):
            if await self.redis.get(key) == self.node_id:
                yield key

    async def _claim_one(self, conference_id: str) -> None:
        holder = await self.claim(conference_id)
        if holder == self.node_id:
            self.conflicts.discard(conference_id)
            return
        # Another live node mixes this conference: until calls are moved to their conference's home, the
        # two rooms are apart, so say so loudly.
        self.conflicts.add(conference_id)
        log.warning(
            "event=cluster_home_conflict conference_id=%s node=%s home=%s",
            conference_id,
            self.node_id,
            holder,
        )

    async def _apply_changes(self) -> None:
        while True:
            kind, name, fields = await self._changes.get()
            try:
                if kind == "claim":
                    await self._claim_one(name)
                elif kind == "release":
                    self.conflicts.discard(name)
                    await self._release(keys=[HOME + name], args=[self.node_id])
                elif kind == "call_fields" and fields is not None:
                    await self.redis.hset(CALL + name, mapping=fields)
                elif kind == "call_ended":
                    await self.redis.delete(CALL + name)
            except (RedisError, OSError) as exc:
                # The reconciliation after the outage puts the homes right; a call's entry is advisory.
                self.counters["changes_lost"] += 1
                if self.available:
                    log.warning("event=cluster_change_failed kind=%s name=%s error=%r", kind, name, exc)
                    self.available = False
                    self._wake.set()
