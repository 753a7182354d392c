"""Call history: the store's records, room stays and callback attempts (round trips, queries by time,
conference and application, the migration of a version-1 database), what the recorder and the room bus
write, the outbox's attempt log, the formats and times of `tonebridge records`, and the command itself."""

from __future__ import annotations

import asyncio
import base64
import csv
import io
import json
import sqlite3
from pathlib import Path
from types import SimpleNamespace

import httpx
import pytest

from tonebridge import cli
from tonebridge.callbacks.outbox import Outbox
from tonebridge.calls.call import Call, CallResult, Direction, EndReason
from tonebridge.calls.events import CallAnswered, CallEnded
from tonebridge.calls.history import CallRecorder, HistoryPruner, RoomMembershipBus
from tonebridge.calls.history_format import CSV_COLUMNS, as_csv, as_json, iso, parse_since, parse_time
from tonebridge.store import SCHEMA_VERSION, Store
from tonebridge.store import db as dbmod
from tonebridge.store.db import CallbackAttempt

WAIT = 10.0  # a guard on each commit, not a synchronisation
T0 = 1_780_000_000.0  # 2026-05-28T20:26:40Z


@pytest.fixture
def store(tmp_path: Path):  # type: ignore[no-untyped-def]
    with Store(tmp_path / "tonebridge.sqlite3") as opened:
        yield opened


def committed(store: Store) -> None:
    """Block until everything queued so far is committed (writes commit in order)."""
    store._submit("barrier", lambda db: None).result(WAIT)


def attempt(
    call_id: str, event: str, at: float, status: int | None, error: str | None = None
) -> CallbackAttempt:
    return CallbackAttempt(call_id, "app", event, "http://backend/cb", at, status, error, 12.5, None)


# The store ------------------------------------------------------------------------------------------------


def test_a_call_of_no_application_is_recorded_and_if_new_never_overrides(store: Store) -> None:
    store.save_call({"call_id": "demo", "status": "FINAL"}, if_new={"app_key": None, "from_": "alice"})
    store.save_call({"call_id": "sinch", "app_key": "app", "from_": "+1555"})
    store.save_call({"call_id": "sinch", "result": "ANSWERED"}, if_new={"app_key": None, "from_": "x"})
    committed(store)
    demo, sinch = store.get_call("demo"), store.get_call("sinch")
    assert demo is not None and (demo["app_key"], demo["from_"], demo["status"]) == (None, "alice", "FINAL")
    assert sinch is not None and (sinch["app_key"], sinch["from_"], sinch["result"]) == (
        "app",
        "+1555",
        "ANSWERED",
    )
    with pytest.raises(ValueError, match="needs app_key"):
        store.save_call({"call_id": "nobody"}, if_new={"from_": "x"})


def test_history_has_each_calls_stays_and_attempts_newest_call_first(store: Store) -> None:
    store.save_call({"call_id": "old", "app_key": "app", "started_at": T0})
    store.save_call({"call_id": "new", "app_key": "app", "started_at": T0 + 60})
    store.conference_joined("old", "room", T0 + 1)
    store.conference_left("old", "room", T0 + 5, "hungup")
    store.conference_joined("old", "room", T0 + 6)  # back again: a second stay, still open
    store.conference_joined("new", "other", T0 + 61)
    store.callback_attempted(attempt("old", "dice", T0 + 7, None, "timeout after 5 s"))
    store.callback_attempted(attempt("old", "dice", T0 + 8, 200))
    committed(store)
    history = store.call_history()
    assert [h.record["call_id"] for h in history] == ["new", "old"]
    old = history[1]
    assert [(s.conference_id, s.joined_at, s.left_at, s.left_reason) for s in old.conferences] == [
        ("room", T0 + 1, T0 + 5, "hungup"),
        ("room", T0 + 6, None, None),
    ]
    assert [(a.event, a.status, a.error) for a in old.callbacks] == [
        ("dice", None, "timeout after 5 s"),
        ("dice", 200, None),
    ]
    assert history[0].callbacks == []


def test_history_queries_by_time_conference_application_and_limit(store: Store) -> None:
    for i, (app, bound_for) in enumerate([("a", None), ("b", "room"), ("a", None), (None, None)]):
        store.save_call(
            {"call_id": f"c{i}", "app_key": app, "started_at": T0 + i * 10, "conference_id": bound_for}
        )
    store.conference_joined("c0", "room", T0 + 1)
    committed(store)

    def ids(**query: object) -> list[str]:
        return [h.record["call_id"] for h in store.call_history(**query)]  # type: ignore[arg-type]

    assert ids() == ["c3", "c2", "c1", "c0"]
    assert ids(since=T0 + 10) == ["c3", "c2", "c1"]
    assert ids(since=T0 + 10, until=T0 + 30) == ["c2", "c1"]  # since <= start < until
    assert ids(conference_id="room") == ["c1", "c0"]  # bound for it, or was in it
    assert ids(app_key="a") == ["c2", "c0"]
    assert ids(limit=1) == ["c3"]


def test_a_version_1_database_is_migrated_with_its_calls(tmp_path: Path) -> None:
    path = tmp_path / "old.sqlite3"
    raw = sqlite3.connect(path)
    raw.executescript(dbmod._MIGRATIONS[0])
    raw.execute(
        "INSERT INTO calls (call_id, app_key, status, result, reason, started_at, to_) VALUES "
        "('c1', 'app', 'FINAL', 'ANSWERED', 'CALLERHANGUP', '2026-05-28T20:26:40Z', '{\"type\":\"did\"}')"
    )
    raw.execute(
        "INSERT INTO outbox (app_key, call_id, event, url, body, idempotency_key, created_at, "
        "next_attempt_at) VALUES ('app', 'c1', 'dice', 'http://x', x'00', 'k', 1, 1)"
    )
    raw.execute("PRAGMA user_version = 1")
    raw.commit()
    raw.close()
    with Store(path) as store:
        assert store.schema_version == SCHEMA_VERSION == 2
        [entry] = store.call_history()
        assert entry.record["started_at"] == T0  # ISO text became epoch seconds
        assert (entry.record["app_key"], entry.record["result"], entry.record["reason"]) == (
            "app",
            "ANSWERED",
            "CALLERHANGUP",
        )
        assert len(store.outbox_pending()) == 1  # the outbox is untouched
        store.save_call({"call_id": "demo", "app_key": None, "started_at": T0 + 1}).result(WAIT)
        assert store.call_history(app_key="app")[0].record["call_id"] == "c1"


# The recorder and the room bus ------------------------------------------------------------------------


def test_the_recorder_writes_times_and_outcome_on_wall_clock(store: Store) -> None:
    clock = {"mono": 100.0}
    recorder = CallRecorder(store, lambda: clock["mono"], wall=lambda: T0 + clock["mono"] - 100.0)
    call = Call(
        Direction.INBOUND, "sip:alice@127.0.0.1", "sip:demo@127.0.0.1:5060", started_at=98.0, cli="alice"
    )
    session = SimpleNamespace(call=call)
    call.answered(99.0)
    recorder.on_call_event(CallAnswered(session))  # type: ignore[arg-type]
    answered = store.get_call(call.call_id)
    assert answered is not None
    assert (answered["status"], answered["result"], answered["app_key"]) == ("ONGOING", None, None)
    assert answered["started_at"] == T0 - 2 and answered["answered_at"] == T0 - 1
    assert json.loads(answered["to"]) == {"type": "sip", "endpoint": "sip:demo@127.0.0.1:5060"}
    clock["mono"] = 110.0
    call.ended(110.0, EndReason.CALLER_HANGUP)
    recorder.on_call_event(CallEnded(session))  # type: ignore[arg-type]
    ended = store.get_call(call.call_id)
    assert ended is not None
    assert (ended["status"], ended["result"], ended["reason"], ended["duration"]) == (
        "FINAL",
        "ANSWERED",
        "CALLERHANGUP",
        11,
    )
    assert ended["ended_at"] == T0 + 10 and ended["from_"] == "alice"


def test_the_recorder_keeps_the_applications_identity_of_a_call(store: Store) -> None:
    call = Call(Direction.OUTBOUND, "sip:bob@127.0.0.1:5099", "", started_at=1.0)
    store.save_call({"call_id": call.call_id, "app_key": "app", "to": '{"type":"sip","endpoint":"bob"}'})
    call.ended(2.0, EndReason.NO_ANSWER, result=CallResult.NOANSWER, sip_status=408)
    CallRecorder(store, lambda: 2.0).on_call_event(CallEnded(SimpleNamespace(call=call)))  # type: ignore[arg-type]
    record = store.get_call(call.call_id)
    assert record is not None
    assert (record["app_key"], record["to"], record["result"], record["reason"]) == (
        "app",
        '{"type":"sip","endpoint":"bob"}',
        "NOANSWER",
        "NOANSWER",
    )


def test_the_room_bus_records_joins_and_leaves_and_still_publishes(store: Store) -> None:
    bus = RoomMembershipBus(store)
    subscription = bus.subscribe()
    store.save_call({"call_id": "c", "app_key": None, "started_at": T0})
    bus.publish({"type": "joined", "callId": "c", "conferenceId": "room", "time": T0 + 1})
    bus.publish({"type": "press", "callId": "c", "conferenceId": "room", "digit": "1"})
    bus.publish({"type": "left", "callId": "c", "conferenceId": "room", "reason": "kicked", "time": T0 + 2})
    committed(store)
    [entry] = store.call_history(conference_id="room")
    assert [(s.joined_at, s.left_at, s.left_reason) for s in entry.conferences] == [
        (T0 + 1, T0 + 2, "kicked")
    ]
    assert subscription.queue.qsize() == 3


def test_the_pruner_deletes_ended_calls_older_than_the_retention_with_their_stays_and_attempts(
    store: Store,
) -> None:
    day = 86400.0
    store.save_call({"call_id": "old", "app_key": "app", "started_at": T0, "status": "FINAL"})
    store.save_call({"call_id": "old-ongoing", "app_key": "app", "started_at": T0})
    store.save_call({"call_id": "recent", "app_key": None, "started_at": T0 + 29 * day, "status": "FINAL"})
    for call_id in ("old", "old-ongoing", "recent"):
        store.conference_joined(call_id, "room", T0 + 1)
        store.callback_attempted(attempt(call_id, "dice", T0 + 2, 200))
    committed(store)
    pruner = HistoryPruner(store, 30 * day, wall=lambda: T0 + 30 * day + 1)

    assert asyncio.run(pruner.prune()) == 1
    assert store.get_call("old") is None
    assert [h.record["call_id"] for h in store.call_history()] == ["recent", "old-ongoing"]
    stays = store._read("SELECT call_id FROM call_conferences ORDER BY call_id")
    attempts = store._read("SELECT call_id FROM callback_attempts ORDER BY call_id")
    assert stays == attempts == [("old-ongoing",), ("recent",)]
    assert asyncio.run(pruner.prune()) == 0
    assert pruner.pruned == 1


def test_the_pruner_works_in_batches_and_runs_at_start(store: Store, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("tonebridge.calls.history.PRUNE_BATCH", 3)
    for i in range(7):
        store.save_call({"call_id": f"c{i}", "app_key": "app", "started_at": T0 + i, "status": "FINAL"})
    committed(store)

    async def run() -> int:
        pruner = HistoryPruner(store, 10.0, wall=lambda: T0 + 100, interval=3600)
        pruner.start()  # prunes at once, then sleeps for the interval
        for _ in range(200):
            if pruner.pruned == 7:
                break
            await asyncio.sleep(0.01)
        await pruner.close()
        return pruner.pruned

    assert asyncio.run(run()) == 7
    assert store.call_history() == []
    with pytest.raises(ValueError, match="retention"):
        HistoryPruner(store, 0)


# The outbox's attempt log -----------------------------------------------------------------------------


def test_every_outbox_attempt_and_every_synchronous_one_is_logged(store: Store) -> None:
    statuses = iter([500, 200, 200])
    transport = httpx.MockTransport(lambda request: httpx.Response(next(statuses), json={}))
    secret = base64.b64encode(b"secret").decode()

    async def run() -> None:
        async with httpx.AsyncClient(transport=transport) as client:
            outbox = Outbox(store, lambda key: secret, client, backoff=(0.0,))
            outbox.start()
            delivery = outbox.enqueue("app", "http://backend/cb", "c1", "dice", {"event": "dice"})
            assert await asyncio.wait_for(delivery.delivered, WAIT)
            await outbox.request_sync("app", "http://backend/ice", {"event": "ice", "callid": "c1"})
            await outbox.close()

    asyncio.run(run())
    store.save_call({"call_id": "c1", "app_key": "app", "started_at": T0})
    committed(store)
    [entry] = store.call_history()
    assert [(a.event, a.url, a.status, a.error, a.outbox_id is not None) for a in entry.callbacks] == [
        ("dice", "http://backend/cb", 500, "HTTP 500", True),
        ("dice", "http://backend/cb", 200, None, True),
        ("ice", "http://backend/ice", 200, None, False),
    ]
    assert all(a.duration_ms >= 0 and a.attempted_at > T0 - 86400 * 365 for a in entry.callbacks)


# Formats and times ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("1780000000", T0),
        ("1780000000.5", T0 + 0.5),
        ("2026-05-28T20:26:40Z", T0),
        ("2026-05-28T22:26:40+02:00", T0),
        ("2026-05-28T20:26:40", T0),  # no offset: UTC
        ("2026-05-28", T0 - (20 * 3600 + 26 * 60 + 40)),
    ],
)
def test_times_are_iso_8601_or_unix_seconds(text: str, expected: float) -> None:
    assert parse_time(text) == expected
    assert parse_since(text, now=0.0) == expected


@pytest.mark.parametrize(("text", "back"), [("90s", 90), ("10m", 600), ("2h", 7200), ("1.5d", 129600)])
def test_since_takes_a_duration_back_from_now(text: str, back: float) -> None:
    assert parse_since(text, now=T0) == T0 - back


@pytest.mark.parametrize("text", ["yesterday", "10 m", "-5", "2h30m", ""])
def test_bad_times_say_what_is_accepted(text: str) -> None:
    with pytest.raises(ValueError, match="ISO 8601"):
        parse_since(text, now=T0)
    with pytest.raises(ValueError, match="ISO 8601"):
        parse_time(text)


def _sample(store: Store) -> None:
    store.save_call(
        {
            "call_id": "c1",
            "app_key": "app",
            "direction": "inbound",
            "from_": "alice",
            "to": '{"type":"did","endpoint":"+15550001111"}',
            "status": "FINAL",
            "result": "ANSWERED",
            "reason": "CALLERHANGUP",
            "started_at": T0,
            "answered_at": T0 + 1,
            "ended_at": T0 + 9.25,
            "duration": 8,
        }
    )
    store.save_call({"call_id": "c2", "app_key": None, "started_at": T0 - 5, "conference_id": "room"})
    store.conference_joined("c1", "room", T0 + 1)
    store.conference_left("c1", "room", T0 + 9, "hungup")
    store.conference_joined("c1", "room", T0 + 9.1)
    store.callback_attempted(attempt("c1", "ice", T0, 200))
    store.callback_attempted(attempt("c1", "dice", T0 + 10, None, "timeout after 5 s"))
    committed(store)


def test_json_and_csv_of_the_history(store: Store) -> None:
    _sample(store)
    history = store.call_history()
    first = as_json(history[0])
    assert first["to"] == {"type": "did", "endpoint": "+15550001111"}
    assert (first["startedAt"], first["endedAt"]) == ("2026-05-28T20:26:40.000Z", "2026-05-28T20:26:49.250Z")
    assert first["conferences"][0] == {
        "conferenceId": "room",
        "joinedAt": iso(T0 + 1),
        "leftAt": iso(T0 + 9),
        "leftReason": "hungup",
    }
    assert first["callbacks"][1]["error"] == "timeout after 5 s" and first["callbacks"][1]["status"] is None
    rows = list(csv.reader(io.StringIO(as_csv(history))))
    assert rows[0] == list(CSV_COLUMNS)
    by_id = {row[0]: dict(zip(CSV_COLUMNS, row, strict=True)) for row in rows[1:]}
    c1, c2 = by_id["c1"], by_id["c2"]
    assert (c1["to"], c1["result"], c1["reason"], c1["duration"]) == (
        "+15550001111",
        "ANSWERED",
        "CALLERHANGUP",
        "8",
    )
    assert c1["conferences"] == "room"  # one room, twice: named once
    assert c1["callbacks"] == "ice 200;dice timeout after 5 s"
    assert (c2["applicationKey"], c2["conferences"], c2["result"], c2["endedAt"]) == ("", "room", "", "")


# The command ------------------------------------------------------------------------------------------


@pytest.fixture
def config_file(tmp_path: Path) -> Path:
    path = tmp_path / "tonebridge.toml"
    path.write_text(f'[server]\ndata_dir = "{tmp_path / "data"}"\n', encoding="utf-8")
    return path


def test_records_command_prints_csv_and_json(config_file: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (config_file.parent / "data").mkdir()
    with Store(config_file.parent / "data" / "tonebridge.sqlite3") as store:
        _sample(store)
    assert cli.main(["records", "--config", str(config_file)]) == 0
    rows = list(csv.reader(io.StringIO(capsys.readouterr().out)))
    assert rows[0] == list(CSV_COLUMNS) and [r[0] for r in rows[1:]] == ["c1", "c2"]
    assert (
        cli.main(["records", "--config", str(config_file), "--format", "json", "--since", str(int(T0))]) == 0
    )
    assert [c["callId"] for c in json.loads(capsys.readouterr().out)] == ["c1"]


def test_records_command_refuses_a_missing_store_and_a_bad_since(
    config_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli.main(["records", "--config", str(config_file)]) == 1
    assert "no store at" in capsys.readouterr().err
    assert not (config_file.parent / "data" / "tonebridge.sqlite3").exists()  # none was made
    assert cli.main(["records", "--config", str(config_file), "--since", "last week"]) == 1
    assert "duration" in capsys.readouterr().err
