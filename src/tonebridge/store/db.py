"""The SQLite store: schema, forward migrations and every query Tonebridge makes.

One `Store` wraps one sqlite3 connection, used from the asyncio thread only. Every method is synchronous
and short; every write is committed before the method returns, and with WAL plus `synchronous=FULL` a
committed row survives the process being killed (and, as far as the disk keeps its promises, power loss).
Nothing outside this module writes SQL.
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = ["CALL_FIELDS", "OutboxRow", "SchemaError", "Store", "SCHEMA_VERSION"]

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


_OUTBOX_COLUMNS = (
    "id, app_key, call_id, event, url, body, idempotency_key, created_at, state, attempts, "
    "next_attempt_at, last_error, status, done_at"
)


def _outbox_row(row: sqlite3.Row | tuple[Any, ...]) -> OutboxRow:
    values = list(row)
    values[5] = bytes(values[5])
    return OutboxRow(*values)


class Store:
    """SQLite file at `path` (created if missing, migrated forward on open). Use from one thread."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        # isolation_level=None: the module does not open transactions behind our back; each statement
        # outside an explicit BEGIN commits on its own, so "returned" means "committed".
        self._db = sqlite3.connect(str(self.path), isolation_level=None)
        try:
            self._db.execute("PRAGMA busy_timeout = 5000")
            mode = self._db.execute("PRAGMA journal_mode = WAL").fetchone()[0]
            if str(mode).lower() != "wal":
                raise SchemaError(f"{self.path}: cannot switch to WAL journal mode (got {mode!r})")
            # FULL syncs the WAL on every commit; NORMAL (the usual WAL setting) could lose the last
            # commits on power loss, and the outbox promises that an enqueued callback is not lost.
            self._db.execute("PRAGMA synchronous = FULL")
            self._db.execute("PRAGMA foreign_keys = ON")
            self._migrate()
        except BaseException:
            self._db.close()
            raise

    # -- lifecycle ---------------------------------------------------------------------------------

    def _migrate(self) -> None:
        version = self.schema_version
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
        return int(self._db.execute("PRAGMA user_version").fetchone()[0])

    def close(self) -> None:
        self._db.close()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- call records ------------------------------------------------------------------------------

    def save_call(self, record: dict[str, Any]) -> None:
        """Insert or update the call `record["call_id"]`. Only the fields present are written, so an
        update may carry just what changed; a new call needs at least `app_key`. `cookies` (any
        JSON-serialisable value, usually `[{key, value}]`) is stored as JSON. Times are float seconds
        since the epoch (UTC); `duration` whole seconds."""
        unknown = set(record) - set(_CALL_COLUMNS)
        if unknown:
            raise ValueError(f"unknown call record fields: {sorted(unknown)} (known: {list(CALL_FIELDS)})")
        if "call_id" not in record:
            raise ValueError("a call record needs call_id")
        values = {_CALL_COLUMNS[k]: v for k, v in record.items()}
        if "cookies" in values and values["cookies"] is not None:
            values["cookies"] = json.dumps(values["cookies"], separators=(",", ":"))
        call_id = values.pop("call_id")
        with self._transaction():
            updated = 0
            if values:
                assignments = ", ".join(f"{col} = ?" for col in values)
                updated = self._db.execute(
                    f"UPDATE calls SET {assignments} WHERE call_id = ?", [*values.values(), call_id]
                ).rowcount
            else:
                updated = (
                    self._db.execute("SELECT 1 FROM calls WHERE call_id = ?", (call_id,)).fetchone()
                    is not None
                )
            if not updated:
                if not values.get("app_key"):
                    raise ValueError(f"new call record {call_id!r} needs app_key")
                columns = ["call_id", *values]
                self._db.execute(
                    f"INSERT INTO calls ({', '.join(columns)}) VALUES ({', '.join('?' * len(columns))})",
                    [call_id, *values.values()],
                )

    def get_call(self, call_id: str) -> dict[str, Any] | None:
        columns = ", ".join(_CALL_COLUMNS.values())
        row = self._db.execute(f"SELECT {columns} FROM calls WHERE call_id = ?", (call_id,)).fetchone()
        if row is None:
            return None
        record = dict(zip(CALL_FIELDS, row, strict=True))
        if record["cookies"] is not None:
            record["cookies"] = json.loads(record["cookies"])
        return record

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
    ) -> int:
        """Store one callback to deliver; committed (and synced) when this returns. `created_at` (default
        now) is when it was enqueued, the start of its give-up window; its first attempt is due then."""
        at = time.time() if created_at is None else created_at
        cur = self._db.execute(
            "INSERT INTO outbox (app_key, call_id, event, url, body, idempotency_key, created_at, next_attempt_at)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (app_key, call_id, event, url, sqlite3.Binary(body), idempotency_key, at, at),
        )
        assert cur.lastrowid is not None
        return cur.lastrowid

    def outbox_pending(self) -> list[OutboxRow]:
        """Every callback neither delivered nor given up, in enqueue (id) order."""
        rows = self._db.execute(f"SELECT {_OUTBOX_COLUMNS} FROM outbox WHERE state = 'pending' ORDER BY id")
        return [_outbox_row(r) for r in rows]

    def outbox_get(self, id: int) -> OutboxRow | None:
        row = self._db.execute(f"SELECT {_OUTBOX_COLUMNS} FROM outbox WHERE id = ?", (id,)).fetchone()
        return None if row is None else _outbox_row(row)

    def outbox_attempted(
        self, id: int, attempts: int, next_attempt_at: float, last_error: str | None
    ) -> None:
        """Record a failed attempt: how many so far, when the next is due, and what went wrong."""
        self._update_pending(
            "UPDATE outbox SET attempts = ?, next_attempt_at = ?, last_error = ? WHERE id = ? AND state = 'pending'",
            (attempts, next_attempt_at, last_error, id),
            id,
        )

    def outbox_delivered(self, id: int, status: int, at: float, attempts: int | None = None) -> None:
        """Mark delivered with the HTTP status that accepted it (`attempts` counts the successful one)."""
        self._update_pending(
            "UPDATE outbox SET state = 'delivered', status = ?, done_at = ?, attempts = COALESCE(?, attempts)"
            " WHERE id = ? AND state = 'pending'",
            (status, at, attempts, id),
            id,
        )

    def outbox_gave_up(self, id: int, at: float, reason: str, attempts: int | None = None) -> None:
        """Stop trying; the row stays for the delivery log with `reason` as its last error."""
        self._update_pending(
            "UPDATE outbox SET state = 'gave_up', done_at = ?, last_error = ?, attempts = COALESCE(?, attempts)"
            " WHERE id = ? AND state = 'pending'",
            (at, reason, attempts, id),
            id,
        )

    def delivery_log(self, call_id: str | None = None, limit: int = 100) -> list[OutboxRow]:
        """The latest callbacks in any state, newest first; only the call's when `call_id` is given."""
        if call_id is None:
            rows = self._db.execute(
                f"SELECT {_OUTBOX_COLUMNS} FROM outbox ORDER BY id DESC LIMIT ?", (limit,)
            )
        else:
            rows = self._db.execute(
                f"SELECT {_OUTBOX_COLUMNS} FROM outbox WHERE call_id = ? ORDER BY id DESC LIMIT ?",
                (call_id, limit),
            )
        return [_outbox_row(r) for r in rows]

    def outbox_prune(self, done_before: float) -> int:
        """Delete delivered and given-up rows finished before `done_before`; returns how many. Pending
        rows are never pruned."""
        return self._db.execute(
            "DELETE FROM outbox WHERE state != 'pending' AND done_at < ?", (done_before,)
        ).rowcount

    # -- helpers -----------------------------------------------------------------------------------

    def _update_pending(self, sql: str, params: tuple[Any, ...], id: int) -> None:
        if self._db.execute(sql, params).rowcount == 1:
            return
        row = self.outbox_get(id)
        if row is None:
            raise KeyError(f"no outbox row {id}")
        raise ValueError(f"outbox row {id} is already {row.state}")

    def _transaction(self) -> _Transaction:
        return _Transaction(self._db)


class _Transaction:
    """BEGIN IMMEDIATE ... COMMIT, or ROLLBACK when the block raises."""

    def __init__(self, db: sqlite3.Connection) -> None:
        self._db = db

    def __enter__(self) -> None:
        self._db.execute("BEGIN IMMEDIATE")

    def __exit__(self, exc_type: object, *rest: object) -> None:
        self._db.execute("ROLLBACK" if exc_type is not None else "COMMIT")
