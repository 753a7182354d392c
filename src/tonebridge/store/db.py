"""The SQLite store: schema, forward migrations and every query Tonebridge makes, with every write
committed on the store's own writer thread so that the event loop never waits on the disk.

A write method queues its statement and returns a `Write` at once. The writer thread takes whatever is
queued, runs it in one transaction (each write in its own savepoint, so a failing one is rolled back alone)
and commits: one fsync for the lot. Only then is each `Write` resolved, so "done" means "committed", and
with WAL plus `synchronous=FULL` a committed row survives the process being killed (and, as far as the disk
keeps its promises, power loss). Writes commit in the order they were queued. The loop awaits a `Write`
where it needs durability before going on (the outbox does); call records are fire-and-forget.

Reads run synchronously on a second connection: under WAL a reader sees the last commit without waiting
for the writer's transaction or its fsync. `get_call` also sees call records still queued, so a caller
reads back what it saved. Nothing outside this module writes SQL.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import json
import logging
import queue
import sqlite3
import threading
import time
from collections.abc import Callable, Generator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

__all__ = [
    "CALL_FIELDS",
    "CallbackAttempt",
    "CallHistory",
    "ConferenceStay",
    "OutboxRow",
    "SchemaError",
    "Store",
    "SCHEMA_VERSION",
    "Write",
]

log = logging.getLogger("tonebridge.store")

T = TypeVar("T")

# Each entry moves the schema from version i to i + 1. Append only: a released migration never changes,
# because databases already carrying its version will not run it again.
_MIGRATIONS: Sequence[str] = (
    # 1: call records and the callback outbox.
    """
    CREATE TABLE calls (
        call_id       TEXT PRIMARY KEY,
        app_key       TEXT NOT NULL,
        direction     TEXT,
        from_         TEXT,
        to_           TEXT,
        domain        TEXT,
        status        TEXT NOT NULL DEFAULT 'ONGOING' CHECK (status IN ('ONGOING', 'FINAL')),
        result        TEXT,
        reason        TEXT,
        started_at    REAL,
        answered_at   REAL,
        ended_at      REAL,
        duration      INTEGER,
        custom        TEXT,
        conference_id TEXT,
        cookies       TEXT
    );
    CREATE INDEX calls_app_key ON calls (app_key);

    CREATE TABLE outbox (
        id              INTEGER PRIMARY KEY AUTOINCREMENT,  -- never reused: id order is enqueue order
        app_key         TEXT NOT NULL,
        call_id         TEXT NOT NULL,
        event           TEXT NOT NULL,
        url             TEXT NOT NULL,
        body            BLOB NOT NULL,
        idempotency_key TEXT NOT NULL UNIQUE,
        created_at      REAL NOT NULL,
        state           TEXT NOT NULL DEFAULT 'pending' CHECK (state IN ('pending', 'delivered', 'gave_up')),
        attempts        INTEGER NOT NULL DEFAULT 0,
        next_attempt_at REAL NOT NULL,
        last_error      TEXT,
        status          INTEGER,
        done_at         REAL
    );
    CREATE INDEX outbox_pending ON outbox (state, id);
    CREATE INDEX outbox_call ON outbox (call_id, id);
    """,
    # 2: call history. Every call is recorded, those of no application too (the demo's, a bridge's far
    # leg), so app_key may be NULL: SQLite cannot drop a NOT NULL in place, hence the copy. Start times
    # were ISO text; they become seconds since the epoch like the other times, so ranges can be queried.
    # The rooms a call was in and every callback attempt get tables of their own.
    """
    CREATE TABLE calls_v2 (
        call_id       TEXT PRIMARY KEY,
        app_key       TEXT,
        direction     TEXT,
        from_         TEXT,
        to_           TEXT,
        domain        TEXT,
        status        TEXT NOT NULL DEFAULT 'ONGOING' CHECK (status IN ('ONGOING', 'FINAL')),
        result        TEXT,
        reason        TEXT,
        started_at    REAL,
        answered_at   REAL,
        ended_at      REAL,
        duration      INTEGER,
        custom        TEXT,
        conference_id TEXT,
        cookies       TEXT
    );
    INSERT INTO calls_v2 SELECT call_id, app_key, direction, from_, to_, domain, status, result, reason,
        CASE WHEN typeof(started_at) = 'text' THEN CAST(strftime('%s', started_at) AS REAL) ELSE started_at END,
        answered_at, ended_at, duration, custom, conference_id, cookies
        FROM calls;
    DROP TABLE calls;
    ALTER TABLE calls_v2 RENAME TO calls;
    CREATE INDEX calls_app_key ON calls (app_key);
    CREATE INDEX calls_started_at ON calls (started_at);

    CREATE TABLE call_conferences (
        id            INTEGER PRIMARY KEY,
        call_id       TEXT NOT NULL,
        conference_id TEXT NOT NULL,
        joined_at     REAL NOT NULL,
        left_at       REAL,
        left_reason   TEXT
    );
    CREATE INDEX call_conferences_call ON call_conferences (call_id, id);
    CREATE INDEX call_conferences_conference ON call_conferences (conference_id);

    CREATE TABLE callback_attempts (
        id           INTEGER PRIMARY KEY,
        call_id      TEXT NOT NULL,
        app_key      TEXT NOT NULL,
        event        TEXT NOT NULL,
        url          TEXT NOT NULL,
        outbox_id    INTEGER,  -- NULL for a synchronous callback (ICE, ACE, a menu's PIE): never stored
        attempted_at REAL NOT NULL,
        status       INTEGER,  -- the HTTP status answered, NULL when none came
        error        TEXT,
        duration_ms  REAL NOT NULL
    );
    CREATE INDEX callback_attempts_call ON callback_attempts (call_id, id);
    """,
)

SCHEMA_VERSION = len(_MIGRATIONS)

# The record fields `save_call` takes and `get_call` returns, mapped to their columns (`to` is an SQL
# keyword, so both ends of the call get a trailing underscore in the table).
_CALL_COLUMNS: dict[str, str] = {
    "call_id": "call_id",
    "app_key": "app_key",
    "direction": "direction",
    "from_": "from_",
    "to": "to_",
    "domain": "domain",
    "status": "status",
    "result": "result",
    "reason": "reason",
    "started_at": "started_at",
    "answered_at": "answered_at",
    "ended_at": "ended_at",
    "duration": "duration",
    "custom": "custom",
    "conference_id": "conference_id",
    "cookies": "cookies",
}
CALL_FIELDS = tuple(_CALL_COLUMNS)


class SchemaError(RuntimeError):
    """The database cannot be used by this version of Tonebridge."""


@dataclass(frozen=True, slots=True)
class OutboxRow:
    """One callback in the outbox. `state` is `pending`, `delivered` or `gave_up`; `status` is the HTTP
    status that delivered it; `last_error` says why the latest attempt failed (or why it was given up)."""

    id: int
    app_key: str
    call_id: str
    event: str
    url: str
    body: bytes
    idempotency_key: str
    created_at: float
    state: str
    attempts: int
    next_attempt_at: float
    last_error: str | None
    status: int | None
    done_at: float | None


@dataclass(frozen=True, slots=True)
class CallbackAttempt:
    """One HTTP attempt at a callback: when it went, where, and what came of it. `status` is the HTTP
    status answered (None when no answer came, `error` then says why); `outbox_id` is the stored
    callback's row, None for a synchronous one (ICE, ACE), which is never stored."""

    call_id: str
    app_key: str
    event: str
    url: str
    attempted_at: float
    status: int | None
    error: str | None
    duration_ms: float
    outbox_id: int | None = None


@dataclass(frozen=True, slots=True)
class ConferenceStay:
    """A call's time in one conference: `left_at` is None while it is still there."""

    conference_id: str
    joined_at: float
    left_at: float | None
    left_reason: str | None


@dataclass(frozen=True, slots=True)
class CallHistory:
    """One call as the history shows it: its record (the fields of `get_call`), the conferences it was
    in and every attempt at its callbacks, both oldest first."""

    record: dict[str, Any]
    conferences: list[ConferenceStay]
    callbacks: list[CallbackAttempt]


_ATTEMPT_COLUMNS = "call_id, app_key, event, url, attempted_at, status, error, duration_ms, outbox_id"

# How many call ids one `IN (...)` read binds: well below SQLite's limit on parameters.
_IDS_PER_READ = 500

_OUTBOX_COLUMNS = (
    "id, app_key, call_id, event, url, body, idempotency_key, created_at, state, attempts, "
    "next_attempt_at, last_error, status, done_at"
)


def _outbox_row(row: sqlite3.Row | tuple[Any, ...]) -> OutboxRow:
    values = list(row)
    values[5] = bytes(values[5])
    return OutboxRow(*values)


def _call_fields(columns: dict[str, Any]) -> dict[str, Any]:
    record = {field: columns[column] for field, column in _CALL_COLUMNS.items()}
    if record["cookies"] is not None:
        record["cookies"] = json.loads(record["cookies"])
    return record


# Call columns whose numbers SQLite stores converted (column affinity): a record read back before its
# commit must equal the one read after it.
_REAL_COLUMNS = frozenset({"started_at", "answered_at", "ended_at"})
_INTEGER_COLUMNS = frozenset({"duration"})
_CALL_STATUSES = ("ONGOING", "FINAL")

# The most writes one transaction takes: a long backlog still commits in bounded steps.
_MAX_BATCH = 256


def _as_stored(column: str, value: Any) -> Any:
    if isinstance(value, bool):
        value = int(value)
    if column in _REAL_COLUMNS and isinstance(value, int):
        return float(value)
    if column in _INTEGER_COLUMNS and isinstance(value, float) and value.is_integer():
        return int(value)
    return value


class Write(concurrent.futures.Future[T]):
    """A write queued for the writer thread: done once committed (its result: an outbox row's id, a
    count of rows, or None) or failed (its exception; that write alone was rolled back).

    Off the event loop, block with `result()`. On the loop, `await` it: the writer thread wakes the loop
    with `call_soon_threadsafe`, and cancelling the await leaves the write to go ahead. `row_id` is the
    id an outbox insert will get, known as soon as it is queued.
    """

    row_id: int | None = None

    def add_loop_callback(
        self, loop: asyncio.AbstractEventLoop, callback: Callable[[Write[T]], None]
    ) -> None:
        """Call `callback(self)` on `loop`'s thread once the write is done (at once, if it is)."""

        def relay(_: concurrent.futures.Future[T]) -> None:
            # A loop that has closed has nobody left waiting for the answer.
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(callback, self)

        self.add_done_callback(relay)

    def __await__(self) -> Generator[Any, None, T]:
        loop = asyncio.get_running_loop()
        waiter: asyncio.Future[T] = loop.create_future()

        def settle(write: Write[T]) -> None:
            if waiter.done():  # the awaiting task was cancelled
                return
            if write.cancelled():
                waiter.cancel()
            elif (error := write.exception()) is not None:
                waiter.set_exception(error)
            else:
                waiter.set_result(write.result())

        self.add_loop_callback(loop, settle)
        return (yield from waiter.__await__())


@dataclass(slots=True)
class _Op:
    name: str
    run: Callable[[sqlite3.Connection], Any]
    write: Write[Any]
    log_failure: bool


class Store:
    """SQLite file at `path` (created if missing, migrated forward on open, which happens on the opening
    thread). One Store per database file writes at a time: it hands out the outbox's row ids itself.
    Reads and queueing writes are safe from any thread; `close()` (or `aclose()` on the loop) commits
    what is queued, then closes."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        # isolation_level=None: the module does not open transactions behind our back; the writer's
        # BEGIN ... COMMIT are the only ones, and a read outside them sees the latest commit.
        self._db = sqlite3.connect(str(self.path), isolation_level=None, check_same_thread=False)
        try:
            self._db.execute("PRAGMA busy_timeout = 5000")
            mode = self._db.execute("PRAGMA journal_mode = WAL").fetchone()[0]
            if str(mode).lower() != "wal":
                raise SchemaError(f"{self.path}: cannot switch to WAL journal mode (got {mode!r})")
            # FULL syncs the WAL on every commit; NORMAL (the usual WAL setting) could lose the last
            # commits on power loss, and the outbox promises that a stored callback is not lost.
            self._db.execute("PRAGMA synchronous = FULL")
            self._db.execute("PRAGMA foreign_keys = ON")
            self._migrate()
            # AUTOINCREMENT's high-water mark: ids handed out here continue it, so they are never
            # reused and id order stays enqueue order across restarts.
            seq = self._db.execute("SELECT seq FROM sqlite_sequence WHERE name = 'outbox'").fetchall()
            top = self._db.execute("SELECT max(id) FROM outbox").fetchall()[0][0]
            self._next_row_id = max(seq[0][0] if seq else 0, top or 0) + 1
            self._reader = sqlite3.connect(str(self.path), isolation_level=None, check_same_thread=False)
        except BaseException:
            self._db.close()
            raise
        self._reader.execute("PRAGMA busy_timeout = 5000")
        self._reader.execute("PRAGMA query_only = ON")
        self._read_lock = threading.Lock()
        # Guards the queue's closing, row ids and the unsaved call records; never held across a commit.
        self._lock = threading.Lock()
        self._closed = False
        self._queue: queue.SimpleQueue[_Op | None] = queue.SimpleQueue()
        # call_id -> (the record's columns with every queued update applied, writes still in flight)
        self._unsaved: dict[str, tuple[dict[str, Any], int]] = {}
        # A daemon: a Store never closed (a process being killed anyway) must not keep the interpreter
        # alive; close() is what commits the queue.
        self._writer = threading.Thread(
            target=self._write_forever, name=f"store-writer:{self.path.name}", daemon=True
        )
        self._writer.start()

    # -- lifecycle ---------------------------------------------------------------------------------

    def _migrate(self) -> None:
        version = int(self._db.execute("PRAGMA user_version").fetchone()[0])
        if version > SCHEMA_VERSION:
            raise SchemaError(
                f"{self.path} has schema version {version}, newer than this Tonebridge knows "
                f"({SCHEMA_VERSION}): upgrade Tonebridge or use another database file"
            )
        for target in range(version + 1, SCHEMA_VERSION + 1):
            # One transaction per step: a crash mid-migration leaves the previous version intact.
            # user_version lives in the database header and is part of the transaction.
            try:
                self._db.executescript(
                    f"BEGIN IMMEDIATE;\n{_MIGRATIONS[target - 1]}\nPRAGMA user_version = {target};\nCOMMIT;"
                )
            except BaseException:
                if self._db.in_transaction:
                    self._db.execute("ROLLBACK")
                raise

    @property
    def schema_version(self) -> int:
        return int(self._read("PRAGMA user_version")[0][0])

    def close(self) -> None:
        """Commit every write queued so far, then close. Blocks until the disk has them: on the event
        loop use `aclose()`."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            self._queue.put(None)
        with self._read_lock:
            self._reader.close()
        # The writer closes its connection last, so the final checkpoint runs on its thread.
        self._writer.join()

    async def aclose(self) -> None:
        """`close()` without holding up the event loop while the queue drains."""
        await asyncio.to_thread(self.close)

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- call records ------------------------------------------------------------------------------

    def save_call(self, record: dict[str, Any], *, if_new: dict[str, Any] | None = None) -> Write[None]:
        """Queue an insert or update of the call `record["call_id"]`; returns at once (callers need not
        wait: records commit in order, and `get_call` sees queued ones). Only the fields present are
        written, so an update may carry just what changed; a new call needs at least `app_key` (None for a
        call of no application). `if_new` holds fields written only if the call has no record yet, under
        those of `record`: what one writer knows of a call without overriding what another has said.
        `cookies` (any JSON-serialisable value, usually `[{key, value}]`) is stored as JSON. Times are
        float seconds since the epoch (UTC); `duration` whole seconds. A record that is wrong by itself
        raises here; a write the disk refuses is logged."""
        values = self._call_values(record)
        defaults = self._call_values({"call_id": values["call_id"], **(if_new or {})})
        call_id = values.pop("call_id")
        defaults.pop("call_id")
        with self._lock:
            self._check_open_locked()
            held = self._unsaved.get(call_id)
            current = held[0] if held is not None else self._call_columns(call_id)
            if current is None:
                if "app_key" not in values and "app_key" not in defaults:
                    raise ValueError(f"new call record {call_id!r} needs app_key")
                current = {column: None for column in _CALL_COLUMNS.values()}
                current.update(call_id=call_id, status="ONGOING", **defaults)
            write: Write[None] = self._submit_locked(
                "save_call", lambda db: self._save_call_on(db, call_id, values, defaults), log_failure=True
            )
            self._unsaved[call_id] = ({**current, **values}, (held[1] if held is not None else 0) + 1)
        write.add_done_callback(lambda _: self._call_settled(call_id))
        return write

    @staticmethod
    def _call_values(record: dict[str, Any]) -> dict[str, Any]:
        """A record's fields as the columns they are stored in, checked."""
        unknown = set(record) - set(_CALL_COLUMNS)
        if unknown:
            raise ValueError(f"unknown call record fields: {sorted(unknown)} (known: {list(CALL_FIELDS)})")
        if "call_id" not in record:
            raise ValueError("a call record needs call_id")
        values = {_CALL_COLUMNS[k]: _as_stored(_CALL_COLUMNS[k], v) for k, v in record.items()}
        if "cookies" in values and values["cookies"] is not None:
            values["cookies"] = json.dumps(values["cookies"], separators=(",", ":"))
        if "status" in values and values["status"] not in _CALL_STATUSES:
            raise ValueError(f"call status must be one of {_CALL_STATUSES}, not {values['status']!r}")
        return values

    def get_call(self, call_id: str) -> dict[str, Any] | None:
        """The call's record with every field, including updates still queued; None if never saved."""
        with self._lock:
            held = self._unsaved.get(call_id)
            columns = dict(held[0]) if held is not None else self._call_columns(call_id)
        if columns is None:
            return None
        return _call_fields(columns)

    def _call_columns(self, call_id: str) -> dict[str, Any] | None:
        names = list(_CALL_COLUMNS.values())
        rows = self._read(f"SELECT {', '.join(names)} FROM calls WHERE call_id = ?", (call_id,))
        return dict(zip(names, rows[0], strict=True)) if rows else None

    def _call_settled(self, call_id: str) -> None:
        # Once a call's last queued write has committed (or failed) the database is the truth again.
        with self._lock:
            columns, in_flight = self._unsaved[call_id]
            if in_flight == 1:
                del self._unsaved[call_id]
            else:
                self._unsaved[call_id] = (columns, in_flight - 1)

    @staticmethod
    def _save_call_on(
        db: sqlite3.Connection, call_id: str, values: dict[str, Any], defaults: dict[str, Any]
    ) -> None:
        updated: bool
        if values:
            assignments = ", ".join(f"{col} = ?" for col in values)
            updated = (
                db.execute(
                    f"UPDATE calls SET {assignments} WHERE call_id = ?", [*values.values(), call_id]
                ).rowcount
                > 0
            )
        else:
            updated = bool(db.execute("SELECT 1 FROM calls WHERE call_id = ?", (call_id,)).fetchall())
        if not updated:
            inserted = {**defaults, **values}
            if "app_key" not in inserted:
                raise ValueError(f"new call record {call_id!r} needs app_key")
            columns = ["call_id", *inserted]
            db.execute(
                f"INSERT INTO calls ({', '.join(columns)}) VALUES ({', '.join('?' * len(columns))})",
                [call_id, *inserted.values()],
            )

    # -- call history ------------------------------------------------------------------------------

    def conference_joined(self, call_id: str, conference_id: str, at: float) -> Write[None]:
        """Queue the call's entry into a conference (a call may be in several, one after the other, and
        in the same one more than once)."""
        return self._submit(
            "conference_joined",
            lambda db: db.execute(
                "INSERT INTO call_conferences (call_id, conference_id, joined_at) VALUES (?, ?, ?)",
                (call_id, conference_id, at),
            ),
            log_failure=True,
        )

    def conference_left(self, call_id: str, conference_id: str, at: float, reason: str | None) -> Write[None]:
        """Queue the end of the call's latest stay in the conference."""
        return self._submit(
            "conference_left",
            lambda db: db.execute(
                "UPDATE call_conferences SET left_at = ?, left_reason = ? WHERE id = (SELECT max(id) FROM"
                " call_conferences WHERE call_id = ? AND conference_id = ? AND left_at IS NULL)",
                (at, reason, call_id, conference_id),
            ),
            log_failure=True,
        )

    def callback_attempted(self, attempt: CallbackAttempt) -> Write[None]:
        """Queue one callback attempt for the call's history."""
        a = attempt
        # In the order of _ATTEMPT_COLUMNS.
        values = (
            a.call_id,
            a.app_key,
            a.event,
            a.url,
            a.attempted_at,
            a.status,
            a.error,
            a.duration_ms,
            a.outbox_id,
        )
        return self._submit(
            "callback_attempted",
            lambda db: db.execute(
                f"INSERT INTO callback_attempts ({_ATTEMPT_COLUMNS}) VALUES ({', '.join('?' * len(values))})",
                values,
            ),
            log_failure=True,
        )

    def call_history(
        self,
        *,
        since: float | None = None,
        until: float | None = None,
        conference_id: str | None = None,
        app_key: str | None = None,
        limit: int | None = None,
    ) -> list[CallHistory]:
        """Committed calls, newest start first, with their conferences and callback attempts. `since`
        and `until` bound the start (`since` <= start < `until`); `conference_id` keeps the calls that
        were in that conference or were placed to join it; `app_key` keeps one application's calls."""
        where: list[str] = []
        params: list[Any] = []
        if since is not None:
            where.append("started_at >= ?")
            params.append(float(since))
        if until is not None:
            where.append("started_at < ?")
            params.append(float(until))
        if conference_id is not None:
            where.append(
                "(conference_id = ? OR call_id IN (SELECT call_id FROM call_conferences WHERE conference_id = ?))"
            )
            params += [conference_id, conference_id]
        if app_key is not None:
            where.append("app_key = ?")
            params.append(app_key)
        names = list(_CALL_COLUMNS.values())
        sql = f"SELECT {', '.join(names)} FROM calls"
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " ORDER BY started_at DESC, call_id"
        if limit is not None:
            sql += " LIMIT ?"
            params.append(int(limit))
        with self._read_lock:
            # One read transaction: the calls, their stays and their attempts are the same snapshot.
            self._reader.execute("BEGIN")
            try:
                rows = self._reader.execute(sql, params).fetchall()
                ids = [row[0] for row in rows]
                stays: dict[str, list[ConferenceStay]] = {}
                attempts: dict[str, list[CallbackAttempt]] = {}
                for start in range(0, len(ids), _IDS_PER_READ):
                    chunk = ids[start : start + _IDS_PER_READ]
                    marks = ", ".join("?" * len(chunk))
                    for call_id, *stay in self._reader.execute(
                        "SELECT call_id, conference_id, joined_at, left_at, left_reason FROM call_conferences"
                        f" WHERE call_id IN ({marks}) ORDER BY id",
                        chunk,
                    ).fetchall():
                        stays.setdefault(call_id, []).append(ConferenceStay(*stay))
                    for attempt in self._reader.execute(
                        f"SELECT {_ATTEMPT_COLUMNS} FROM callback_attempts WHERE call_id IN ({marks}) ORDER BY id",
                        chunk,
                    ).fetchall():
                        attempts.setdefault(attempt[0], []).append(CallbackAttempt(*attempt))
            finally:
                self._reader.execute("COMMIT")
        return [
            CallHistory(
                _call_fields(dict(zip(names, row, strict=True))),
                stays.get(row[0], []),
                attempts.get(row[0], []),
            )
            for row in rows
        ]

    def calls_prune(self, started_before: float, limit: int = 5000) -> Write[int]:
        """Delete at most `limit` ended calls that started before `started_before`, with their stays in
        conferences and their callback attempts; the result is how many calls. Ongoing calls are kept."""

        def prune(db: sqlite3.Connection) -> int:
            ids = [
                (row[0],)
                for row in db.execute(
                    "SELECT call_id FROM calls WHERE started_at < ? AND status = 'FINAL' LIMIT ?",
                    (started_before, limit),
                )
            ]
            db.executemany("DELETE FROM call_conferences WHERE call_id = ?", ids)
            db.executemany("DELETE FROM callback_attempts WHERE call_id = ?", ids)
            db.executemany("DELETE FROM calls WHERE call_id = ?", ids)
            return len(ids)

        return self._submit("calls_prune", prune)

    # -- callback outbox ---------------------------------------------------------------------------

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
        """Queue one callback to deliver; the Write's result (and its `row_id`, known at once) is the row's
        id. `created_at` (default now) is when it was enqueued, the start of its give-up window; its first
        attempt is due then. `row_id` queues the insert again under the id an earlier, failed one had."""
        at = time.time() if created_at is None else created_at
        blob = sqlite3.Binary(body)
        with self._lock:
            if row_id is None:
                row_id = self._next_row_id
                self._next_row_id += 1
            rid = row_id

            def insert(db: sqlite3.Connection) -> int:
                db.execute(
                    "INSERT INTO outbox (id, app_key, call_id, event, url, body, idempotency_key, created_at,"
                    " next_attempt_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (rid, app_key, call_id, event, url, blob, idempotency_key, at, at),
                )
                return rid

            write: Write[int] = self._submit_locked("outbox_add", insert)
        write.row_id = rid
        return write

    def outbox_pending(self) -> list[OutboxRow]:
        """Every committed callback neither delivered nor given up, in enqueue (id) order."""
        rows = self._read(f"SELECT {_OUTBOX_COLUMNS} FROM outbox WHERE state = 'pending' ORDER BY id")
        return [_outbox_row(r) for r in rows]

    def outbox_get(self, id: int) -> OutboxRow | None:
        rows = self._read(f"SELECT {_OUTBOX_COLUMNS} FROM outbox WHERE id = ?", (id,))
        return _outbox_row(rows[0]) if rows else None

    def outbox_attempted(
        self, id: int, attempts: int, next_attempt_at: float, last_error: str | None
    ) -> Write[None]:
        """Record a failed attempt: how many so far, when the next is due, and what went wrong."""
        return self._update_pending(
            "outbox_attempted",
            "UPDATE outbox SET attempts = ?, next_attempt_at = ?, last_error = ? WHERE id = ? AND state = 'pending'",
            (attempts, next_attempt_at, last_error, id),
            id,
        )

    def outbox_delivered(self, id: int, status: int, at: float, attempts: int | None = None) -> Write[None]:
        """Mark delivered with the HTTP status that accepted it (`attempts` counts the successful one)."""
        return self._update_pending(
            "outbox_delivered",
            "UPDATE outbox SET state = 'delivered', status = ?, done_at = ?, attempts = COALESCE(?, attempts)"
            " WHERE id = ? AND state = 'pending'",
            (status, at, attempts, id),
            id,
        )

    def outbox_gave_up(self, id: int, at: float, reason: str, attempts: int | None = None) -> Write[None]:
        """Stop trying; the row stays for the delivery log with `reason` as its last error."""
        return self._update_pending(
            "outbox_gave_up",
            "UPDATE outbox SET state = 'gave_up', done_at = ?, last_error = ?, attempts = COALESCE(?, attempts)"
            " WHERE id = ? AND state = 'pending'",
            (at, reason, attempts, id),
            id,
        )

    def delivery_log(self, call_id: str | None = None, limit: int = 100) -> list[OutboxRow]:
        """The latest committed callbacks in any state, newest first; only the call's when `call_id` is
        given."""
        if call_id is None:
            rows = self._read(f"SELECT {_OUTBOX_COLUMNS} FROM outbox ORDER BY id DESC LIMIT ?", (limit,))
        else:
            rows = self._read(
                f"SELECT {_OUTBOX_COLUMNS} FROM outbox WHERE call_id = ? ORDER BY id DESC LIMIT ?",
                (call_id, limit),
            )
        return [_outbox_row(r) for r in rows]

    def outbox_prune(self, done_before: float) -> Write[int]:
        """Delete delivered and given-up rows finished before `done_before`; the result is how many.
        Pending rows are never pruned."""
        return self._submit(
            "outbox_prune",
            lambda db: (
                db.execute(
                    "DELETE FROM outbox WHERE state != 'pending' AND done_at < ?", (done_before,)
                ).rowcount
            ),
        )

    # -- helpers -----------------------------------------------------------------------------------

    def _update_pending(self, name: str, sql: str, params: tuple[Any, ...], id: int) -> Write[None]:
        def update(db: sqlite3.Connection) -> None:
            if db.execute(sql, params).rowcount == 1:
                return
            rows = db.execute("SELECT state FROM outbox WHERE id = ?", (id,)).fetchall()
            if not rows:
                raise KeyError(f"no outbox row {id}")
            raise ValueError(f"outbox row {id} is already {rows[0][0]}")

        return self._submit(name, update)

    def _read(self, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        # fetchall() ends the statement, and with it the read transaction: the next read sees the
        # latest commit instead of an old snapshot.
        with self._read_lock:
            return self._reader.execute(sql, params).fetchall()

    def _submit(
        self, name: str, run: Callable[[sqlite3.Connection], Any], *, log_failure: bool = False
    ) -> Write[Any]:
        with self._lock:
            return self._submit_locked(name, run, log_failure=log_failure)

    def _submit_locked(
        self, name: str, run: Callable[[sqlite3.Connection], Any], *, log_failure: bool = False
    ) -> Write[Any]:
        self._check_open_locked()
        write: Write[Any] = Write()
        self._queue.put(_Op(name, run, write, log_failure))
        return write

    def _check_open_locked(self) -> None:
        if self._closed:
            raise RuntimeError(f"{self.path}: the store is closed")

    # -- the writer thread -------------------------------------------------------------------------

    def _write_forever(self) -> None:
        try:
            running = True
            while running:
                item = self._queue.get()
                batch: list[_Op] = []
                while item is not None:
                    batch.append(item)
                    if len(batch) == _MAX_BATCH:
                        break
                    try:
                        item = self._queue.get_nowait()
                    except queue.Empty:
                        break
                else:
                    running = False  # close() queued nothing after its marker
                if batch:
                    self._commit_batch(batch)
        finally:
            self._db.close()

    def _commit_batch(self, batch: list[_Op]) -> None:
        """Run the batch in one transaction, one savepoint per write, then resolve every Write: only
        after COMMIT has returned, so that done means durable."""
        ops = [op for op in batch if op.write.set_running_or_notify_cancel()]
        outcomes: dict[int, tuple[bool, Any]] = {}
        db = self._db
        try:
            db.execute("BEGIN IMMEDIATE")
            for i, op in enumerate(ops):
                db.execute("SAVEPOINT write")
                try:
                    value = op.run(db)
                except Exception as exc:
                    db.execute("ROLLBACK TO write")
                    db.execute("RELEASE write")
                    outcomes[i] = (False, exc)
                else:
                    db.execute("RELEASE write")
                    outcomes[i] = (True, value)
            self._commit(db)
        except Exception as exc:
            # BEGIN, a savepoint or COMMIT itself failed: nothing of the batch is stored.
            if db.in_transaction:
                with contextlib.suppress(sqlite3.Error):
                    db.execute("ROLLBACK")
            for i in range(len(ops)):
                if outcomes.get(i, (True, None))[0]:
                    outcomes[i] = (False, exc)
        for i, op in enumerate(ops):
            ok, value = outcomes[i]
            if ok:
                op.write.set_result(value)
            else:
                if op.log_failure:
                    log.error("event=store_write_failed write=%s error=%r", op.name, value)
                op.write.set_exception(value)

    def _commit(self, db: sqlite3.Connection) -> None:
        """End the batch's transaction. The fsync happens here, on the writer thread."""
        db.execute("COMMIT")
