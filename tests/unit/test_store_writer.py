"""The store's writer thread: writes commit in the order they were queued, a Write is done only once its
commit has returned, what queues up during a commit shares the next one, close() commits everything
queued, and the event loop goes on while a commit (the fsync) is stuck.

A commit is held with `GatedStore`, whose writer stops inside its commit until the test releases it;
the tests wait on events with deadlines, never on sleeps."""

from __future__ import annotations

import asyncio
import sqlite3
import threading
import time
from collections.abc import Awaitable
from pathlib import Path
from typing import TypeVar

import pytest

from tonebridge.store import Store
from tonebridge.store.db import Write

WAIT = 10.0  # seconds before a wait fails the test; a guard, not a synchronisation
T = TypeVar("T")


class GatedStore(Store):
    """A Store whose commits can be held. While `hold` is set the writer, inside its commit (where the
    fsync happens), sets `entered` and waits for `release`; `fail` makes commits fail like a full disk.
    `commits` holds the time.monotonic() at which each commit returned."""

    def __init__(self, path: Path) -> None:
        self.hold = threading.Event()
        self.entered = threading.Event()
        self.release = threading.Event()
        self.fail = threading.Event()
        self.commits: list[float] = []
        super().__init__(path)

    def _commit(self, db: sqlite3.Connection) -> None:
        if self.hold.is_set():
            self.entered.set()
            if not self.release.wait(WAIT):
                raise TimeoutError("the test never released the commit")
        if self.fail.is_set():
            raise sqlite3.OperationalError("disk I/O error")
        super()._commit(db)
        self.commits.append(time.monotonic())


def run(coro: Awaitable[T]) -> T:
    async def bounded() -> T:
        return await asyncio.wait_for(coro, WAIT)

    return asyncio.run(bounded())


def count_rows(path: Path) -> int:
    """Outbox rows as another process would see them."""
    other = sqlite3.connect(path)
    try:
        return int(other.execute("SELECT count(*) FROM outbox").fetchone()[0])
    finally:
        other.close()


def add(store: Store, key: str, call_id: str = "c") -> Write[int]:
    return store.outbox_add("app", call_id, "dice", "http://x/cb", b"{}", key)


def test_writes_commit_in_the_order_they_were_queued(tmp_path: Path) -> None:
    with Store(tmp_path / "t.db") as store:
        finished: list[int] = []
        writes = []
        for i in range(300):
            if i % 3 == 0:
                write = store.save_call({"call_id": "c", "app_key": "app", "duration": i})
            else:
                write = store.outbox_add("app", f"call-{i % 2}", "dice", "http://x", b"", f"k{i}")
            # Runs on the writer thread as the write is resolved (or here, if it already was).
            write.add_done_callback(lambda _, i=i: finished.append(i))
            writes.append(write)
        writes[-1].result(WAIT)
        assert finished == list(range(300))
        ids = [w.result() for i, w in enumerate(writes) if i % 3]
        assert ids == sorted(ids) and [r.id for r in store.outbox_pending()] == ids
        assert store._unsaved == {}
        record = store.get_call("c")
        assert record is not None and record["duration"] == 297  # the last update wins


def test_a_write_is_done_only_once_its_commit_has_returned(tmp_path: Path) -> None:
    path = tmp_path / "t.db"
    with GatedStore(path) as store:
        store.hold.set()
        write = store.outbox_add("app", "c", "dice", "http://x", b"{}", "k")
        assert write.row_id is not None  # the id is known before the commit
        assert store.entered.wait(WAIT)
        assert not write.done()
        assert count_rows(path) == 0  # another reader is not blocked, and sees nothing uncommitted
        store.release.set()
        assert write.result(WAIT) == write.row_id
        assert count_rows(path) == 1


def test_writes_queued_during_a_commit_share_the_next_and_a_failing_one_is_rolled_back_alone(
    tmp_path: Path,
) -> None:
    with GatedStore(tmp_path / "t.db") as store:
        store.hold.set()
        first = add(store, "k0")
        assert store.entered.wait(WAIT)
        store.hold.clear()
        good = add(store, "k1")
        duplicate = add(store, "k0")  # the idempotency key is unique
        call = store.save_call({"call_id": "c", "app_key": "app"})
        last = add(store, "k2")
        store.release.set()
        assert last.result(WAIT) is not None
        assert len(store.commits) == 2  # the held commit, then one for the four queued behind it
        assert isinstance(duplicate.exception(), sqlite3.IntegrityError)
        assert call.exception() is None
        ids = [w.result() for w in (first, good, last)]
        assert [r.id for r in store.outbox_pending()] == ids
        assert store.get_call("c") is not None


def test_a_failed_commit_fails_its_writes_and_stores_none_of_them(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with GatedStore(tmp_path / "t.db") as store:
        store.fail.set()
        store.hold.set()  # hold the first commit so that both writes are in it
        call = store.save_call({"call_id": "c", "app_key": "app"})
        row = store.outbox_add("app", "c", "dice", "http://x", b"{}", "k")
        assert store.entered.wait(WAIT)
        assert store.get_call("c") is not None  # queued: read back before the commit
        store.release.set()
        with pytest.raises(sqlite3.OperationalError):
            row.result(WAIT)
        assert isinstance(call.exception(WAIT), sqlite3.OperationalError)
        assert store.get_call("c") is None and store.delivery_log() == []  # the database is the truth again
        # Nobody waits on a call record: its failure is logged.
        assert "event=store_write_failed write=save_call" in caplog.text
        store.fail.clear()
        # The outbox queues a refused insert again under the id it already handed out.
        again = store.outbox_add("app", "c", "dice", "http://x", b"{}", "k", row_id=row.row_id)
        assert again.result(WAIT) == row.row_id
        assert [r.id for r in store.outbox_pending()] == [row.row_id]


def test_close_commits_everything_queued(tmp_path: Path) -> None:
    path = tmp_path / "t.db"
    store = Store(path)
    writes = [add(store, f"k{i}", f"call-{i % 7}") for i in range(500)]
    writes.append(store.save_call({"call_id": "c", "app_key": "app", "status": "FINAL"}))
    store.close()
    assert all(w.done() and w.exception() is None for w in writes)
    with pytest.raises(RuntimeError, match="closed"):
        add(store, "late")
    with pytest.raises(RuntimeError, match="closed"):
        store.save_call({"call_id": "c", "status": "ONGOING"})
    store.close()  # a second close is harmless
    with Store(path) as again:
        assert len(again.outbox_pending()) == 500
        record = again.get_call("c")
        assert record is not None and record["status"] == "FINAL"


def test_aclose_drains_without_holding_up_the_loop(tmp_path: Path) -> None:
    path = tmp_path / "t.db"
    store = GatedStore(path)

    async def scenario() -> None:
        store.hold.set()
        write = add(store, "k")
        closing = asyncio.create_task(store.aclose())
        assert await asyncio.to_thread(store.entered.wait, WAIT)
        for _ in range(50):
            await asyncio.sleep(0)  # the loop turns while close() waits for the held commit
        assert not closing.done() and not write.done()
        store.release.set()
        await closing
        assert write.done()

    run(scenario())
    assert count_rows(path) == 1


def test_the_loop_keeps_running_while_a_commit_is_stuck(tmp_path: Path) -> None:
    store = GatedStore(tmp_path / "t.db")

    async def scenario() -> None:
        ticks = 0
        ticking = True

        async def ticker() -> None:  # stands for the media tick: it must never stall on the disk
            nonlocal ticks
            while ticking:
                ticks += 1
                await asyncio.sleep(0)

        task = asyncio.create_task(ticker())
        store.hold.set()
        store.save_call({"call_id": "c", "app_key": "app"})
        row = store.outbox_add("app", "c", "dice", "http://x", b"{}", "k1")
        assert await asyncio.to_thread(store.entered.wait, WAIT)
        # The writer is inside its commit. Everything the loop asks of the store still returns at once.
        start = ticks
        store.save_call({"call_id": "c", "status": "FINAL"})
        record = store.get_call("c")
        assert record is not None and record["status"] == "FINAL"  # the loop reads back its own writes
        assert row.row_id is not None and store.outbox_get(row.row_id) is None  # uncommitted: not read
        more = store.outbox_add("app", "c", "notify", "http://x", b"{}", "k2")
        for _ in range(100):
            await asyncio.sleep(0)
        assert ticks >= start + 100
        assert not row.done() and not more.done()
        store.release.set()
        assert await row == row.row_id  # the writer thread wakes the loop
        assert await more == more.row_id
        assert store.outbox_get(row.row_id) is not None
        ticking = False
        await task
        await store.aclose()

    run(scenario())


def test_cancelling_an_await_leaves_the_write_to_commit(tmp_path: Path) -> None:
    path = tmp_path / "t.db"
    store = GatedStore(path)

    async def scenario() -> None:
        store.hold.set()
        row = store.outbox_add("app", "c", "dice", "http://x", b"{}", "k")

        async def wait_for_it() -> int:
            return await row

        waiter = asyncio.create_task(wait_for_it())
        assert await asyncio.to_thread(store.entered.wait, WAIT)
        waiter.cancel()
        with pytest.raises(asyncio.CancelledError):
            await waiter
        store.release.set()
        assert await row == row.row_id
        await store.aclose()

    run(scenario())
    assert count_rows(path) == 1
