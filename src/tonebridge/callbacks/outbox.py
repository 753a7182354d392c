"""The callback outbox: persisted, signed, retried delivery of asynchronous callbacks (DiCE, conference
PIE, Notify), in order per call; and the one-shot signed request used for the synchronous ICE and ACE.

Rules (docs/callbacks.md):
- `enqueue` serialises the body once, queues its row for the store's writer thread and returns at once;
  the callback's first attempt waits until that row is committed, so nothing is sent that a crash could
  make the server forget. Those exact bytes are hashed, signed and sent on every attempt.
- Every attempt's outcome is committed before the Delivery's futures resolve and before the call's next
  callback goes; the event loop awaits those commits, it never waits on the disk.
- One call's callbacks go strictly in order: the next waits until the previous is delivered or given up.
  Different calls are delivered in parallel.
- A 2xx delivers. Anything else (other status, connection error, timeout) is retried after the backoff
  steps, the last step repeating, until `give_up_after` seconds have passed since enqueue; then the row is
  marked given up and stays in the delivery log.
- Every attempt carries the row's `X-Idempotency-Key` and fresh signing headers.
- Delivered and given-up rows are kept for `retention` seconds after they finish, then pruned.
- Every callback is counted by event and outcome (`delivered`, `failed_attempt`, `given_up`) in
  `counters`, for the metrics.
- Every attempt, stored callbacks' and synchronous ones' alike, goes into the call's history
  (`Store.callback_attempted`): when, where, the status or error, how long it took. Those writes are not
  awaited; the history is kept after the outbox prunes the callback itself.

Where the rows live is an `OutboxStorage`: the node's SQLite `Store` by default; in cluster mode the
cluster's Redis (cluster/outbox.py), so that a survivor can take over a dead node's pending callbacks
(`Outbox.adopt`). The call history stays in the node's SQLite either way.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
import uuid
from collections import Counter, deque
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol

import httpx

from tonebridge.callbacks.signing import callback_headers
from tonebridge.netguard import FetchPolicy, FetchRefused
from tonebridge.store.db import CallbackAttempt, OutboxRow, Store, Write

__all__ = [
    "DEFAULT_BACKOFF",
    "IDEMPOTENCY_HEADER",
    "SYNC_TIMEOUT",
    "Delivery",
    "Outbox",
    "OutboxStorage",
    "backoff_delay",
    "encode_body",
]

log = logging.getLogger("tonebridge.callbacks")

DEFAULT_BACKOFF: tuple[float, ...] = (1, 2, 4, 8, 15, 30, 60)
DEFAULT_GIVE_UP_AFTER = 86400.0
DEFAULT_ATTEMPT_TIMEOUT = 5.0
DEFAULT_RETENTION = 7 * 86400.0
# Pruning is cheap (one indexed DELETE) but need not be frequent; a short retention prunes sooner.
MAX_PRUNE_INTERVAL = 3600.0
# Sinch publishes no ICE/ACE timeout; 5 s keeps a caller from waiting in silence much longer than a ring.
SYNC_TIMEOUT = 5.0
# Below httpx's default pool of 100 connections, so stored callbacks never queue inside the pool.
MAX_IN_FLIGHT = 64
IDEMPOTENCY_HEADER = "X-Idempotency-Key"

SecretLookup = Callable[[str], str | None]


def encode_body(body: dict[str, Any]) -> bytes:
    """Compact JSON in UTF-8: the one serialisation whose bytes are hashed, signed and sent."""
    return json.dumps(body, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def backoff_delay(backoff: Sequence[float], failures: int) -> float:
    """Seconds to wait after the `failures`-th failed attempt (1-based); the last step repeats."""
    if failures < 1:
        raise ValueError("failures counts from 1")
    return float(backoff[min(failures, len(backoff)) - 1])


def _is_success(status: int | None) -> bool:
    return status is not None and 200 <= status < 300


def _outcome(response: httpx.Response | None, error: str | None) -> tuple[int | None, str | None]:
    """(HTTP status, None) for a 2xx, (status, "HTTP status") for any other answer, (None, error) for none."""
    if response is None:
        return None, error
    status = response.status_code
    return status, None if _is_success(status) else f"HTTP {status}"


def _settle(future: asyncio.Future[Any], value: Any) -> None:
    # A waiter may have cancelled the future (asyncio.wait_for); delivery goes on regardless.
    if not future.done():
        future.set_result(value)


class OutboxStorage(Protocol):
    """Where the outbox's rows live: what `Outbox` calls, with `Store`'s signatures (Store is one).

    - `outbox_add` queues a row and returns at once a `Write` whose `row_id` is known already and which is
      done once the row is durable; `row_id` given means "the earlier insert of this row failed, again".
    - `outbox_pending` (synchronous, at `Outbox.start`) lists the durable rows neither delivered nor given
      up, oldest first.
    - `outbox_attempted`, `outbox_delivered`, `outbox_gave_up` and `outbox_prune` are awaited; each is done
      once durable.
    """

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
    ) -> Write[int]: ...

    def outbox_pending(self) -> list[OutboxRow]: ...

    def outbox_attempted(
        self, id: int, attempts: int, next_attempt_at: float, last_error: str | None
    ) -> Awaitable[None]: ...

    def outbox_delivered(
        self, id: int, status: int, at: float, attempts: int | None = None
    ) -> Awaitable[None]: ...

    def outbox_gave_up(
        self, id: int, at: float, reason: str, attempts: int | None = None
    ) -> Awaitable[None]: ...

    def outbox_prune(self, done_before: float) -> Awaitable[int]: ...


@dataclass(eq=False)
class Delivery:
    """One queued callback. Awaiting its futures never affects delivery (cancelling them is harmless).

    - `first_attempt` resolves when the first attempt ends, with its HTTP status, or None after a
      connection error or timeout. Because a call's callbacks go in order, that may be later than the
      enqueue plus one timeout when an earlier callback of the call is still being retried: bound the wait
      (`asyncio.wait_for(delivery.first_attempt, 2)` for a conference PIE, conference-dtmf.md §3 rule 4).
    - `delivered` resolves True on a 2xx, False when given up.
    - `first_sent` resolves when the first attempt's request leaves (its signing time).
    - `stored` resolves once the row is committed (at once for a row loaded from the store).
    `first_attempt` and `delivered` resolve only once the attempt's outcome is committed.
    All are cancelled by `Outbox.close()` if still open (the row stays pending in the store).
    """

    id: int
    app_key: str
    call_id: str
    event: str
    url: str
    body: bytes
    idempotency_key: str
    created_at: float
    attempt_timeout: float
    first_attempt: asyncio.Future[int | None]
    delivered: asyncio.Future[bool]
    first_sent: asyncio.Future[None]
    stored: asyncio.Future[None]
    attempts: int = 0
    next_attempt_at: float = 0.0
    last_error: str | None = field(default=None)


class Outbox:
    """Delivers stored callbacks over `client` (its own httpx.AsyncClient when None).

    `secrets(app_key)` returns the application's Base64 secret at send time, or None when the key is
    unknown (that attempt then fails and is retried like any other). Only the key is stored with a row,
    never the secret. `clock` (seconds since the epoch) stamps rows, decides give-up and dates the
    signatures; waits between attempts run on the event loop's timers. `storage` holds the rows (`store`
    itself when None); `store` always keeps the calls' history of attempts.
    """

    def __init__(
        self,
        store: Store,
        secrets: SecretLookup,
        client: httpx.AsyncClient | None = None,
        *,
        storage: OutboxStorage | None = None,
        clock: Callable[[], float] = time.time,
        backoff: Sequence[float] = DEFAULT_BACKOFF,
        give_up_after: float = DEFAULT_GIVE_UP_AFTER,
        attempt_timeout: float = DEFAULT_ATTEMPT_TIMEOUT,
        retention: float = DEFAULT_RETENTION,
    ) -> None:
        if not backoff or any(step < 0 for step in backoff):
            raise ValueError("backoff needs at least one step, none negative")
        if attempt_timeout <= 0:
            raise ValueError("attempt_timeout must be positive")
        if retention <= 0:
            raise ValueError("retention must be positive")
        self._store = store
        self._rows: OutboxStorage = store if storage is None else storage
        self._secrets = secrets
        self._own_client = client is None
        # trust_env=False: a callback goes where the application said, not through a proxy the server's
        # environment happens to name. Pass your own client to change that.
        self._client = (
            client if client is not None else httpx.AsyncClient(trust_env=False, follow_redirects=False)
        )
        # Where callbacks may go: set from `[security]` by the Sinch application (calls/sinch.py); None
        # sends anywhere (tests, and servers with no applications).
        self.fetch_policy: FetchPolicy | None = None
        self._clock = clock
        self._backoff = tuple(float(step) for step in backoff)
        self._give_up_after = float(give_up_after)
        self._attempt_timeout = float(attempt_timeout)
        self._retention = float(retention)
        self._pruner: asyncio.Task[None] | None = None
        self.counters: Counter[tuple[str, str]] = Counter()  # (event, outcome) -> count
        # Stored callbacks in flight at once. A thousand calls ending together would otherwise queue a
        # thousand requests in the HTTP client's connection pool, whose scheduling is quadratic in its
        # queue; the calls' own tasks wait here instead (ICE and ACE, which a call waits for, do not).
        self._in_flight = asyncio.Semaphore(MAX_IN_FLIGHT)
        self.pruned = 0
        self._queues: dict[str, deque[Delivery]] = {}
        self._workers: dict[str, asyncio.Task[None]] = {}
        self._known: dict[int, Delivery] = {}
        # Inserts not yet seen committed by their call's task; a row absent here is in the store.
        self._inserts: dict[int, Write[int]] = {}
        self._started = False
        self._closed = False

    # -- lifecycle ---------------------------------------------------------------------------------

    def start(self) -> None:
        """Load the store's pending rows (those this Outbox does not hold yet) and start delivering.
        Call from inside the running event loop."""
        asyncio.get_running_loop()  # fails early, outside a loop, rather than at the first send
        if self._closed:
            raise RuntimeError("this Outbox is closed; make a new one")
        if self._started:
            return
        self._started = True
        rows = [row for row in self._rows.outbox_pending() if row.id not in self._known]
        if rows:
            log.info("event=outbox_resumed pending=%d", len(rows))
            # Callbacks enqueued before start() are younger than rows left by a previous run (or taken
            # over from a dead node): the stored rows go first, in the storage's order, then the others in
            # enqueue order.
            early = {call_id: list(queue) for call_id, queue in self._queues.items()}
            self._queues.clear()
            for row in rows:
                self._add(self._from_row(row))
            for call_id, deliveries in early.items():
                self._queues.setdefault(call_id, deque()).extend(deliveries)
        for call_id in list(self._queues):
            self._ensure_worker(call_id)
        self._pruner = asyncio.get_running_loop().create_task(self._prune_forever(), name="outbox:prune")

    def adopt(self, rows: Iterable[OutboxRow], *, due: float | None = None) -> list[Delivery]:
        """Take over stored rows this Outbox did not write (a dead node's, already moved into this one's
        storage), oldest first: same ids, bytes and idempotency keys, each behind the call's earlier
        callbacks. A row's next attempt is due no later than `due` when given. Rows already held are
        skipped; the Deliveries taken are returned."""
        if self._closed:
            raise RuntimeError("this Outbox is closed")
        taken = []
        for row in rows:
            if row.id in self._known:
                continue
            delivery = self._from_row(row)
            if due is not None:
                delivery.next_attempt_at = min(delivery.next_attempt_at, due)
            self._add(delivery)
            taken.append(delivery)
            if self._started:
                self._ensure_worker(delivery.call_id)
        if taken:
            log.info("event=outbox_adopted callbacks=%d", len(taken))
        return taken

    async def prune(self) -> int:
        """Delete delivered and given-up rows that finished more than `retention` seconds ago."""
        removed = await self._rows.outbox_prune(self._clock() - self._retention)
        if removed:
            self.pruned += removed
            log.info("event=outbox_pruned rows=%d", removed)
        return removed

    async def _prune_forever(self) -> None:
        interval = min(MAX_PRUNE_INTERVAL, max(self._retention / 2, 0.5))
        while True:
            try:
                await self.prune()
            except Exception:
                log.exception("event=outbox_prune_failed")
            await asyncio.sleep(interval)

    async def close(self) -> None:
        """Stop delivering. Rows not yet delivered stay pending in the store for the next start();
        an attempt cut short here may reach the application again later (same idempotency key)."""
        if self._closed:
            return
        self._closed = True
        workers = list(self._workers.values())
        if self._pruner is not None:
            workers.append(self._pruner)
        for task in workers:
            task.cancel()
        await asyncio.gather(*workers, return_exceptions=True)
        for delivery in self._known.values():
            delivery.first_attempt.cancel()
            delivery.delivered.cancel()
            delivery.first_sent.cancel()
            delivery.stored.cancel()
        if self._own_client:
            await self._client.aclose()

    # -- queueing ----------------------------------------------------------------------------------

    def enqueue(
        self,
        app_key: str,
        url: str,
        call_id: str,
        event: str,
        body: dict[str, Any],
        *,
        attempt_timeout: float | None = None,
    ) -> Delivery:
        """Queue the callback's row for the store and the callback behind the call's earlier ones, and
        return at once: the first attempt waits for the row's commit (`Delivery.stored`).
        `attempt_timeout` overrides the Outbox's for this callback (2 s for a conference PIE)."""
        if self._closed:
            raise RuntimeError("this Outbox is closed")
        loop = asyncio.get_running_loop()
        data = encode_body(body)
        key = str(uuid.uuid4())
        now = self._clock()
        write = self._rows.outbox_add(app_key, call_id, event, url, data, key, created_at=now)
        assert write.row_id is not None
        row_id = write.row_id
        delivery = Delivery(
            id=row_id,
            app_key=app_key,
            call_id=call_id,
            event=event,
            url=url,
            body=data,
            idempotency_key=key,
            created_at=now,
            attempt_timeout=self._attempt_timeout if attempt_timeout is None else float(attempt_timeout),
            first_attempt=loop.create_future(),
            delivered=loop.create_future(),
            first_sent=loop.create_future(),
            stored=loop.create_future(),
            next_attempt_at=now,
        )
        self._track_insert(delivery, write)
        self._add(delivery)
        log.debug("event=callback_queued call_id=%s callback=%s id=%d", call_id, event, row_id)
        if self._started:
            self._ensure_worker(call_id)
        return delivery

    def pending(self) -> list[Delivery]:
        """The stored callbacks this Outbox still holds (queued or being retried), in enqueue order. A
        callback just enqueued shows once its row is committed: what is listed survives a crash."""
        return [self._known[i] for i in sorted(self._known) if self._committed(i)]

    def _committed(self, row_id: int) -> bool:
        write = self._inserts.get(row_id)
        return write is None or (write.done() and write.exception() is None)

    def _track_insert(self, delivery: Delivery, write: Write[int]) -> None:
        self._inserts[delivery.id] = write

        def settle(done: Write[int]) -> None:
            if done.exception() is None and not delivery.stored.done():
                delivery.stored.set_result(None)

        write.add_loop_callback(asyncio.get_running_loop(), settle)

    def _from_row(self, row: OutboxRow) -> Delivery:
        loop = asyncio.get_running_loop()
        stored: asyncio.Future[None] = loop.create_future()
        stored.set_result(None)
        return Delivery(
            id=row.id,
            app_key=row.app_key,
            call_id=row.call_id,
            event=row.event,
            url=row.url,
            body=row.body,
            idempotency_key=row.idempotency_key,
            created_at=row.created_at,
            attempt_timeout=self._attempt_timeout,
            first_attempt=loop.create_future(),
            delivered=loop.create_future(),
            first_sent=loop.create_future(),
            stored=stored,
            attempts=row.attempts,
            next_attempt_at=row.next_attempt_at,
            last_error=row.last_error,
        )

    def _add(self, delivery: Delivery) -> None:
        self._known[delivery.id] = delivery
        self._queues.setdefault(delivery.call_id, deque()).append(delivery)

    def _ensure_worker(self, call_id: str) -> None:
        if call_id not in self._workers:
            self._workers[call_id] = asyncio.get_running_loop().create_task(
                self._run(call_id), name=f"outbox:{call_id}"
            )

    # -- delivery ----------------------------------------------------------------------------------

    async def _run(self, call_id: str) -> None:
        """One task per call with queued callbacks: the head of the queue is delivered or given up
        before the next is touched. The task ends when the queue is empty."""
        queue = self._queues[call_id]
        try:
            while queue:
                delivery = queue[0]
                try:
                    await self._deliver(delivery)
                except Exception:
                    # A store failure (disk full, I/O error): keep the row, pause, try again. The
                    # exception is logged once per occurrence; the call's later callbacks wait.
                    log.exception("event=outbox_error call_id=%s id=%d", call_id, delivery.id)
                    await asyncio.sleep(self._backoff[-1])
                    continue
                queue.popleft()
                del self._known[delivery.id]
                self._inserts.pop(delivery.id, None)
            del self._queues[call_id]
        finally:
            self._workers.pop(call_id, None)

    async def _row_committed(self, d: Delivery) -> None:
        """Wait for the row's insert to commit. An insert the store refused is queued again under the same
        id and key; the failure propagates, so the call's task logs it and pauses first."""
        write = self._inserts.get(d.id)
        if write is None:
            return
        if write.done() and write.exception() is not None:
            write = self._rows.outbox_add(
                d.app_key,
                d.call_id,
                d.event,
                d.url,
                d.body,
                d.idempotency_key,
                created_at=d.created_at,
                row_id=d.id,
            )
            self._track_insert(d, write)
        await write
        del self._inserts[d.id]

    async def _deliver(self, d: Delivery) -> None:
        # Never send what a crash could make us forget: the application would get a callback the store
        # can neither retry nor mark, and a restart would not know it had gone.
        await self._row_committed(d)
        while True:
            wait = d.next_attempt_at - self._clock()
            if wait > 0:
                await asyncio.sleep(wait)
            status, error = await self._attempt(d)
            d.attempts += 1
            now = self._clock()
            self.counters[(d.event, "delivered" if _is_success(status) else "failed_attempt")] += 1
            if _is_success(status):
                assert status is not None
                # Committed before the call's next callback goes and before anyone is told: after a crash
                # the application never sees a later callback followed by this one again.
                await self._rows.outbox_delivered(d.id, status, now, attempts=d.attempts)
                _settle(d.first_attempt, status)
                log.info(
                    "event=callback_delivered call_id=%s callback=%s id=%d status=%d attempts=%d",
                    d.call_id,
                    d.event,
                    d.id,
                    status,
                    d.attempts,
                )
                _settle(d.delivered, True)
                return
            d.last_error = error
            deadline = d.created_at + self._give_up_after
            if now >= deadline:
                self.counters[(d.event, "given_up")] += 1
                reason = f"gave up after {d.attempts} attempts: {error}"
                await self._rows.outbox_gave_up(d.id, now, reason, attempts=d.attempts)
                _settle(d.first_attempt, status)
                log.warning(
                    "event=callback_gave_up call_id=%s callback=%s id=%d attempts=%d error=%r",
                    d.call_id,
                    d.event,
                    d.id,
                    d.attempts,
                    error,
                )
                _settle(d.delivered, False)
                return
            # The last attempt happens at the deadline itself rather than one step past it.
            d.next_attempt_at = min(now + backoff_delay(self._backoff, d.attempts), deadline)
            await self._rows.outbox_attempted(d.id, d.attempts, d.next_attempt_at, error)
            _settle(d.first_attempt, status)
            log.info(
                "event=callback_retry call_id=%s callback=%s id=%d attempts=%d error=%r retry_in=%.3f",
                d.call_id,
                d.event,
                d.id,
                d.attempts,
                error,
                d.next_attempt_at - now,
            )

    async def _attempt(self, d: Delivery) -> tuple[int | None, str | None]:
        """One POST. Returns (HTTP status, None) for any answer that is 2xx, (status, error) for any other
        answer, (None, error) when no answer came."""
        async with self._in_flight:
            at, started = self._clock(), time.perf_counter()
            response, error = await self._post(
                d.app_key,
                d.url,
                d.body,
                d.attempt_timeout,
                {IDEMPOTENCY_HEADER: d.idempotency_key},
                sent=None if d.first_sent.done() else d.first_sent,
            )
            took = time.perf_counter() - started
        status, error = _outcome(response, error)
        self._log_attempt(d.app_key, d.call_id, d.event, d.url, at, took, status, error, d.id)
        return status, error

    def _log_attempt(
        self,
        app_key: str,
        call_id: str,
        event: str,
        url: str,
        at: float,
        took: float,
        status: int | None,
        error: str | None,
        outbox_id: int | None = None,
    ) -> None:
        attempt = CallbackAttempt(
            call_id, app_key, event, url, at, status, error, round(took * 1000, 3), outbox_id
        )
        try:
            self._store.callback_attempted(attempt)
        except RuntimeError:
            # The store closed under an attempt cut short by shutdown: the callback itself is still
            # pending there, and its next attempt will be logged.
            log.debug("event=callback_attempt_unlogged call_id=%s callback=%s", call_id, event)

    async def _post(
        self,
        app_key: str,
        url: str,
        body: bytes,
        timeout: float,
        extra: dict[str, str] | None = None,
        sent: asyncio.Future[None] | None = None,
    ) -> tuple[httpx.Response | None, str | None]:
        secret = self._secrets(app_key)
        if secret is None:
            return None, f"no secret for application key {app_key!r}"
        now = datetime.fromtimestamp(self._clock(), UTC)
        try:
            headers = callback_headers(app_key, secret, url, body, now)
        except ValueError as exc:
            return None, str(exc)
        if extra:
            headers.update(extra)
        if sent is not None and not sent.done():
            sent.set_result(None)
        if self.fetch_policy is not None:
            try:
                async with asyncio.timeout(timeout):
                    await self.fetch_policy.check_async(url)
            except TimeoutError:
                return None, f"timeout resolving after {timeout:g} s"
            except (FetchRefused, ValueError, httpx.InvalidURL) as exc:
                log.warning("event=callback_refused app_key=%s url=%s reason=%r", app_key, url, str(exc))
                return None, f"refused: {exc}"
        try:
            # asyncio.timeout bounds the whole exchange (connect, send, response); httpx's own timeout
            # only bounds each phase.
            async with asyncio.timeout(timeout):
                response = await self._client.post(url, content=body, headers=headers, timeout=timeout)
        except (TimeoutError, httpx.TimeoutException):
            return None, f"timeout after {timeout:g} s"
        except (httpx.HTTPError, httpx.InvalidURL, OSError) as exc:
            return None, f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
        return response, None

    # -- synchronous callbacks (ICE, ACE) ----------------------------------------------------------

    async def request_sync(
        self,
        app_key: str,
        url: str,
        body: dict[str, Any],
        timeout: float = SYNC_TIMEOUT,
        *,
        fallback_url: str | None = None,
    ) -> httpx.Response | None:
        """POST a signed callback whose answer the call waits for; neither stored nor retried.

        Returns the 2xx response, or None when the application gave no usable answer: connection error,
        timeout (`timeout` seconds per URL) or a non-2xx status. When the primary fails and
        `fallback_url` is given, the same bytes go there (re-signed for its path). On None the caller
        applies the safe default (ICE: hang up with reason CALLBACKERROR; ACE: continue).
        """
        data = encode_body(body)
        event = body.get("event", "?")
        call_id = body.get("callid", "?")
        for target in (url, fallback_url):
            if not target:
                continue
            at, started = self._clock(), time.perf_counter()
            response, error = await self._post(app_key, target, data, timeout)
            status, outcome = _outcome(response, error)
            self._log_attempt(
                app_key, str(call_id), str(event), target, at, time.perf_counter() - started, status, outcome
            )
            if response is not None and _is_success(response.status_code):
                self.counters[(event, "delivered")] += 1
                return response
            self.counters[(event, "failed_attempt")] += 1
            if response is not None:
                error = f"HTTP {response.status_code}"
            log.warning(
                "event=callback_failed call_id=%s callback=%s url=%s error=%r", call_id, event, target, error
            )
        # A synchronous callback is not retried: the call goes on without its answer.
        self.counters[(event, "given_up")] += 1
        return None
