"""The SQLite store: call records, the outbox, durability settings and schema versioning. Writes return a
`Write` that is done once committed; these tests block on it (`.result`), being off the event loop. The
writer thread itself (order, batching, the loop never waiting) is tested in test_store_writer.py."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from tonebridge.store import SCHEMA_VERSION, SchemaError, Store
from tonebridge.store.db import CALL_FIELDS

WAIT = 10.0  # seconds a test waits for a commit before failing; a guard, not a synchronisation


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "tonebridge.db"


FULL_CALL = {
    "call_id": "c-1",
    "app_key": "app",
    "direction": "inbound",
    "from_": "+46700000001",
    "to": "+46700000002",
    "domain": "pstn",
    "status": "ONGOING",
    "result": None,
    "reason": None,
    "started_at": 1700000000.25,
    "answered_at": 1700000001.5,
    "ended_at": None,
    "duration": None,
    "custom": '{"x":1}',
    "conference_id": "myconf#1",
    "cookies": [{"key": "lang", "value": "sv"}],
}


def on_writer(store: Store, sql: str) -> object:
    """One value from `sql` run on the writer's own connection, inside its transaction."""
    return store._submit("probe", lambda db: db.execute(sql).fetchone()[0]).result(WAIT)


def test_new_database_gets_wal_full_sync_and_current_version(db_path: Path) -> None:
    with Store(db_path) as store:
        assert store.schema_version == SCHEMA_VERSION >= 1
        assert on_writer(store, "PRAGMA journal_mode") == "wal"
        assert on_writer(store, "PRAGMA synchronous") == 2  # FULL: the writer syncs every commit
        assert not store._db.in_transaction  # the writer leaves no transaction open between batches


def test_call_record_round_trip(db_path: Path) -> None:
    with Store(db_path) as store:
        store.save_call(FULL_CALL)
        assert store.get_call("c-1") == FULL_CALL  # queued or committed, the same record
        store.save_call({"call_id": "c-1"}).result(WAIT)
        assert store._unsaved == {}
        assert store.get_call("c-1") == FULL_CALL  # now read from the database
        assert set(FULL_CALL) == set(CALL_FIELDS)
        assert store.get_call("nope") is None


def test_save_call_updates_only_the_fields_given(db_path: Path) -> None:
    with Store(db_path) as store:
        store.save_call(FULL_CALL)
        store.save_call(
            {
                "call_id": "c-1",
                "status": "FINAL",
                "result": "ANSWERED",
                "reason": "CALLERHANGUP",
                "ended_at": 1700000061.5,
                "duration": 60,
            }
        )
        got = store.get_call("c-1")
        assert got is not None
        assert got["status"] == "FINAL" and got["duration"] == 60 and got["reason"] == "CALLERHANGUP"
        assert got["from_"] == "+46700000001" and got["cookies"] == [{"key": "lang", "value": "sv"}]


def test_save_call_minimal_record_has_defaults(db_path: Path) -> None:
    with Store(db_path) as store:
        store.save_call({"call_id": "c-2", "app_key": "app"})
        got = store.get_call("c-2")
        assert got is not None
        assert got["status"] == "ONGOING" and got["cookies"] is None and got["to"] is None


def test_save_call_rejects_bad_records(db_path: Path) -> None:
    with Store(db_path) as store:
        with pytest.raises(ValueError, match="unknown call record fields"):
            store.save_call({"call_id": "c", "app_key": "a", "from": "x"})
        with pytest.raises(ValueError, match="needs app_key"):
            store.save_call({"call_id": "c", "status": "FINAL"})
        with pytest.raises(ValueError, match="needs call_id"):
            store.save_call({"app_key": "a"})
        with pytest.raises(ValueError, match="call status"):
            store.save_call({"call_id": "c", "app_key": "a", "status": "DONE"})
        with pytest.raises(TypeError):
            store.save_call({"call_id": "c", "app_key": "a", "cookies": {1, 2}})  # not JSON
        assert store.get_call("c") is None
        # The rejected records were never queued; the table's CHECK stays the last line of defence.
        assert on_writer(store, "SELECT count(*) FROM calls") == 0
        with pytest.raises(sqlite3.IntegrityError):
            store._submit(
                "probe",
                lambda db: db.execute(
                    "INSERT INTO calls (call_id, app_key, status) VALUES ('c', 'a', 'DONE')"
                ),
            ).result(WAIT)


def test_outbox_add_and_pending_in_id_order(db_path: Path) -> None:
    with Store(db_path) as store:
        writes = [
            store.outbox_add(
                "app",
                f"call-{i % 2}",
                "dice",
                "http://x/cb",
                f"body{i}".encode(),
                f"key-{i}",
                created_at=100.0 + i,
            )
            for i in range(4)
        ]
        ids = [w.result(WAIT) for w in writes]
        assert ids == [w.row_id for w in writes] == sorted(ids)  # the id is known before the commit
        rows = store.outbox_pending()
        assert [r.id for r in rows] == ids
        first = rows[0]
        assert (first.app_key, first.call_id, first.event, first.url, first.body, first.idempotency_key) == (
            "app",
            "call-0",
            "dice",
            "http://x/cb",
            b"body0",
            "key-0",
        )
        assert first.state == "pending" and first.attempts == 0
        assert first.created_at == first.next_attempt_at == 100.0
        assert isinstance(first.body, bytes)


def test_outbox_idempotency_key_is_unique(db_path: Path) -> None:
    with Store(db_path) as store:
        store.outbox_add("app", "c", "dice", "http://x", b"{}", "same").result(WAIT)
        with pytest.raises(sqlite3.IntegrityError):
            store.outbox_add("app", "c", "dice", "http://x", b"{}", "same").result(WAIT)


def test_outbox_lifecycle_and_delivery_log(db_path: Path) -> None:
    with Store(db_path) as store:
        a = store.outbox_add("app", "c1", "pie", "http://x", b"a", "k1", created_at=1.0).result(WAIT)
        b = store.outbox_add("app", "c1", "dice", "http://x", b"b", "k2", created_at=2.0).result(WAIT)
        c = store.outbox_add("app", "c2", "dice", "http://x", b"c", "k3", created_at=3.0).result(WAIT)
        store.outbox_attempted(a, 1, 5.0, "HTTP 503").result(WAIT)
        row = store.outbox_get(a)
        assert row is not None and (row.attempts, row.next_attempt_at, row.last_error) == (1, 5.0, "HTTP 503")
        store.outbox_delivered(a, 200, 6.0, attempts=2).result(WAIT)
        store.outbox_gave_up(b, 7.0, "gave up after 9 attempts: timeout").result(WAIT)
        assert [r.id for r in store.outbox_pending()] == [c]

        log = store.delivery_log()
        assert [r.id for r in log] == [c, b, a]  # newest first
        assert [r.id for r in store.delivery_log(call_id="c1")] == [b, a]
        assert [r.id for r in store.delivery_log(limit=1)] == [c]
        delivered, gave_up = store.outbox_get(a), store.outbox_get(b)
        assert delivered is not None and gave_up is not None
        assert (delivered.state, delivered.status, delivered.done_at, delivered.attempts) == (
            "delivered",
            200,
            6.0,
            2,
        )
        assert (gave_up.state, gave_up.done_at, gave_up.last_error) == (
            "gave_up",
            7.0,
            "gave up after 9 attempts: timeout",
        )


def test_finished_rows_cannot_change_state_again(db_path: Path) -> None:
    with Store(db_path) as store:
        a = store.outbox_add("app", "c1", "pie", "http://x", b"a", "k1").result(WAIT)
        store.outbox_delivered(a, 204, 1.0).result(WAIT)
        with pytest.raises(ValueError, match="already delivered"):
            store.outbox_gave_up(a, 2.0, "late").result(WAIT)
        with pytest.raises(ValueError, match="already delivered"):
            store.outbox_attempted(a, 3, 9.0, "late").result(WAIT)
        with pytest.raises(KeyError):
            store.outbox_delivered(999, 200, 1.0).result(WAIT)


def test_prune_keeps_pending_rows(db_path: Path) -> None:
    with Store(db_path) as store:
        a = store.outbox_add("app", "c1", "dice", "http://x", b"a", "k1").result(WAIT)
        b = store.outbox_add("app", "c1", "dice", "http://x", b"b", "k2").result(WAIT)
        c = store.outbox_add("app", "c1", "dice", "http://x", b"c", "k3").result(WAIT)
        store.outbox_delivered(a, 200, 10.0)
        store.outbox_gave_up(b, 20.0, "x")
        assert store.outbox_prune(15.0).result(WAIT) == 1  # committed after the two updates before it
        assert [r.id for r in store.delivery_log()] == [c, b]


def test_reopen_keeps_everything(db_path: Path) -> None:
    # Nothing is waited for before close(): closing commits whatever is still queued.
    store = Store(db_path)
    store.save_call(FULL_CALL)
    a = store.outbox_add(
        "app", "c-1", "dice", "http://x/cb", b'{"event":"dice"}', "k1", created_at=5.0
    ).row_id
    b = store.outbox_add("app", "c-1", "notify", "http://x/cb", b"\x00\xff", "k2", created_at=6.0).row_id
    assert a is not None and b is not None
    store.outbox_attempted(a, 2, 9.0, "ConnectError")
    store.close()

    with Store(db_path) as again:
        assert again.get_call("c-1") == FULL_CALL
        rows = again.outbox_pending()
        assert [r.id for r in rows] == [a, b]
        assert rows[0].attempts == 2 and rows[0].last_error == "ConnectError" and rows[1].body == b"\x00\xff"
        # AUTOINCREMENT: a new row never reuses an id, so id order stays enqueue order.
        assert again.outbox_add("app", "c-1", "dice", "http://x", b"", "k3").result(WAIT) > b


def test_ids_continue_after_the_newest_rows_were_pruned(db_path: Path) -> None:
    # The store hands out ids itself (enqueue needs one before the commit); it must continue from
    # AUTOINCREMENT's high-water mark, not from the largest id left in the table.
    with Store(db_path) as store:
        ids = [store.outbox_add("app", "c", "dice", "http://x", b"", f"k{i}").result(WAIT) for i in range(3)]
        for row_id in ids:
            store.outbox_delivered(row_id, 200, 1.0)
        assert store.outbox_prune(2.0).result(WAIT) == 3
    with Store(db_path) as again:
        assert again.delivery_log() == []
        assert again.outbox_add("app", "c", "dice", "http://x", b"", "k9").result(WAIT) == ids[-1] + 1


def test_a_done_write_is_visible_to_another_connection(db_path: Path) -> None:
    # "Done means committed": a second connection (as a fresh process would) sees the row without the
    # store being closed.
    with Store(db_path) as writer:
        row_id = writer.outbox_add("app", "c", "dice", "http://x", b"{}", "k").result(WAIT)
        other = sqlite3.connect(db_path)
        try:
            assert other.execute("SELECT id FROM outbox").fetchall() == [(row_id,)]
        finally:
            other.close()


def test_newer_schema_is_refused(db_path: Path) -> None:
    Store(db_path).close()
    raw = sqlite3.connect(db_path)
    raw.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    raw.commit()
    raw.close()
    with pytest.raises(SchemaError, match="newer"):
        Store(db_path)


def test_migration_applies_forward_from_version_zero(db_path: Path) -> None:
    # A database from before any schema (user_version 0) with an unrelated table gets migrated.
    raw = sqlite3.connect(db_path)
    raw.execute("CREATE TABLE unrelated (x)")
    raw.commit()
    raw.close()
    with Store(db_path) as store:
        assert store.schema_version == SCHEMA_VERSION
        tables = {r[0] for r in store._read("SELECT name FROM sqlite_master WHERE type = 'table'")}
        assert {"calls", "outbox", "unrelated"} <= tables


def test_failed_migration_leaves_the_old_version(db_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from tonebridge.store import db as dbmod

    Store(db_path).close()
    broken = (*dbmod._MIGRATIONS, "CREATE TABLE extra (x); THIS IS NOT SQL;")
    monkeypatch.setattr(dbmod, "_MIGRATIONS", broken)
    monkeypatch.setattr(dbmod, "SCHEMA_VERSION", len(broken))
    with pytest.raises(sqlite3.OperationalError):
        Store(db_path)
    monkeypatch.undo()
    with Store(db_path) as store:
        assert store.schema_version == SCHEMA_VERSION
        tables = {r[0] for r in store._read("SELECT name FROM sqlite_master WHERE type = 'table'")}
        assert "extra" not in tables
