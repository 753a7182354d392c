"""The event bus: ids, the retention ring and replay after an id, filters, application scoping, gaps."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

from tonebridge.events import EventBus, EventFilter, Subscription, application_owner


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def press(n: int, conference: str = "room", call: str = "c1") -> dict[str, Any]:
    return {"type": "press", "callId": call, "conferenceId": conference, "digit": str(n % 10)}


def drain(subscription: Subscription) -> list[dict[str, Any]]:
    out = []
    while not subscription.queue.empty():
        out.append(subscription.queue.get_nowait())
    return out


def seq(event_id: str) -> int:
    return int(event_id.rpartition("-")[2])


def test_ids_increase_and_carry_the_epoch() -> None:
    bus = EventBus(epoch=42)
    events = [press(i) for i in range(5)]
    for event in events:
        bus.publish(event)
    assert [e["id"] for e in events] == ["42-1", "42-2", "42-3", "42-4", "42-5"]
    assert bus.last_id == "42-5" and all("time" in e for e in events)
    assert EventBus().epoch != 42  # a real bus takes the time it was made


def test_replay_after_an_id_is_exactly_what_came_after_then_live_without_gap_or_repeat() -> None:
    bus = EventBus(epoch=7)
    first = bus.subscribe()
    for i in range(10):
        bus.publish(press(i))
    seen = drain(first)
    bus.unsubscribe(first)
    missed = [press(i) for i in range(10, 15)]
    for event in missed:
        bus.publish(event)
    again = bus.subscribe(after=seen[-1]["id"])
    bus.publish(press(15))
    assert again.backlog == missed and [e["id"] for e in missed] == [f"7-{n}" for n in range(11, 16)]
    assert [e["id"] for e in drain(again)] == ["7-16"]
    # One that read less gets more back, in order.
    behind = bus.subscribe(after=seen[3]["id"])
    assert [e["id"] for e in behind.backlog] == [f"7-{n}" for n in range(5, 17)]


def test_a_subscriber_without_an_id_gets_only_live_events() -> None:
    bus = EventBus(epoch=1)
    bus.publish(press(1))
    subscription = bus.subscribe()
    assert subscription.backlog == []
    bus.publish(press(2))
    assert [e["id"] for e in drain(subscription)] == ["1-2"]


def test_up_to_date_reader_gets_nothing_replayed_and_no_gap() -> None:
    bus = EventBus(epoch=1)
    for i in range(3):
        bus.publish(press(i))
    assert bus.subscribe(after="1-3").backlog == []


def test_the_ring_is_bounded_in_count_and_a_reader_behind_it_is_told_of_the_gap() -> None:
    bus = EventBus(retain_events=4, epoch=3)
    for i in range(10):
        bus.publish(press(i))
    backlog = bus.subscribe(after="3-2").backlog
    gap, *replayed = backlog
    # 3..6 are gone; the notice's id is the one after which everything is still held.
    assert gap == {"type": "gap", "reason": "expired", "lastEventId": "3-2", "id": "3-6"}
    assert [e["id"] for e in replayed] == ["3-7", "3-8", "3-9", "3-10"]
    # Just at the edge of the ring nothing is missing.
    assert [e["id"] for e in bus.subscribe(after="3-6").backlog] == ["3-7", "3-8", "3-9", "3-10"]


def test_the_ring_is_bounded_in_age() -> None:
    clock = Clock()
    bus = EventBus(retain_seconds=300, clock=clock, epoch=5)
    bus.publish(press(1))
    clock.now += 200
    bus.publish(press(2))
    clock.now += 150  # the first is 350 s old, the second 150 s
    gap, *replayed = bus.subscribe(after="5-0").backlog
    assert gap["reason"] == "expired" and gap["id"] == "5-1"
    assert [e["id"] for e in replayed] == ["5-2"]
    clock.now += 200
    gap, *replayed = bus.subscribe(after="5-1").backlog
    assert gap["reason"] == "expired" and gap["id"] == "5-2" and replayed == []


def test_an_id_of_another_run_gets_a_reset_notice_then_all_that_is_retained() -> None:
    bus = EventBus(epoch=9)
    for i in range(3):
        bus.publish(press(i))
    for foreign in ("8-2", "9-99", "garbage", "9-x", "9-\u00b2", "9-" + "1" * 5000, "9--1", "-3"):
        gap, *replayed = bus.subscribe(after=foreign).backlog
        assert gap == {"type": "gap", "reason": "unknown", "lastEventId": foreign, "id": "9-0"}
        assert [e["id"] for e in replayed] == ["9-1", "9-2", "9-3"]


def test_filters_apply_to_replay_and_live_events() -> None:
    bus = EventBus(epoch=2)
    bus.publish(press(0, "a", "c1"))
    bus.publish(press(1, "b", "c2"))
    bus.publish({"type": "conference_started", "conferenceId": "c"})
    bus.publish(press(3, "c", "c3"))

    def ids(subscription: Subscription) -> list[str]:
        return [e["id"] for e in subscription.backlog + drain(subscription)]

    by_room = bus.subscribe(after="2-0", filter=EventFilter(conference_ids=frozenset({"b", "c"})))
    by_call = bus.subscribe(after="2-0", filter=EventFilter(call_ids=frozenset({"c1", "c3"})))
    both = bus.subscribe(
        after="2-0", filter=EventFilter(conference_ids=frozenset({"c"}), call_ids=frozenset({"c3", "c1"}))
    )
    bus.publish(press(4, "a", "c1"))
    bus.publish(press(5, "c", "c2"))
    assert ids(by_room) == ["2-2", "2-3", "2-4", "2-6"]
    assert ids(by_call) == ["2-1", "2-4", "2-5"]  # an event without a callId passes no call filter
    assert ids(both) == ["2-4"]


def test_events_of_one_application_never_reach_another() -> None:
    owners = {"a1": "A", "b1": "B"}
    bus = EventBus(epoch=4)
    bus.owner_of = lambda event: owners.get(event.get("callId", ""))
    app_a = bus.subscribe(filter=EventFilter(application="A"))
    app_b = bus.subscribe(filter=EventFilter(application="B"))
    everyone = bus.subscribe()
    bus.publish(press(1, "ra", "a1"))
    bus.publish(press(2, "rb", "b1"))
    bus.publish(press(3, "rx", "x1"))  # nobody's: only an unscoped reader sees it
    assert [e["callId"] for e in drain(app_a)] == ["a1"]
    assert [e["callId"] for e in drain(app_b)] == ["b1"]
    assert [e["callId"] for e in drain(everyone)] == ["a1", "b1", "x1"]
    replay = bus.subscribe(after="4-0", filter=EventFilter(application="B")).backlog
    assert [e["callId"] for e in replay] == ["b1"]
    # The owner is kept beside the event, never in it.
    assert all(set(e) == {"type", "callId", "conferenceId", "digit", "id", "time"} for e in replay)


def test_a_slow_reader_loses_its_oldest_events_and_counts_them() -> None:
    bus = EventBus(epoch=6)
    subscription = bus.subscribe()
    limit = subscription.queue.maxsize
    for i in range(limit + 3):
        bus.publish(press(i))
    got = drain(subscription)
    assert len(got) == limit and seq(got[0]["id"]) == 4 and seq(got[-1]["id"]) == limit + 3
    assert subscription.dropped == 3 and bus.dropped == 3
    # What it lost is still in the ring for a reconnect after the last id it had.
    assert [seq(e["id"]) for e in bus.subscribe(after="6-0").backlog[:3]] == [1, 2, 3]


def test_unsubscribed_readers_get_nothing() -> None:
    bus = EventBus()
    subscription = bus.subscribe()
    assert bus.subscribers == 1
    bus.unsubscribe(subscription)
    bus.publish(press(1))
    assert bus.subscribers == 0 and subscription.queue.empty()


def _sinch(calls: dict[str, str], rooms: dict[str, list[str]], far_legs: dict[str, str]) -> Any:
    """The parts of a SinchApplication the owner lookup reads."""
    return SimpleNamespace(
        calls={call_id: SimpleNamespace(app_key=key) for call_id, key in calls.items()},
        far_legs={far: SimpleNamespace(call_id=caller) for far, caller in far_legs.items()},
        conferences=SimpleNamespace(
            rooms={
                name: SimpleNamespace(participants=dict.fromkeys(members)) for name, members in rooms.items()
            }
        ),
    )


def test_application_owner_by_call_far_leg_and_room() -> None:
    sinch = _sinch({"a1": "A", "b1": "B"}, {"room": ["a1"], "bridge": ["a1", "far"]}, {"far": "a1"})
    owner_of = application_owner(sinch)
    assert owner_of({"type": "press", "callId": "b1", "conferenceId": "room"}) == "B"
    assert owner_of({"type": "joined", "callId": "far", "conferenceId": "bridge"}) == "A"
    # Events about a room alone: its members' application, also once the room is gone (its end).
    assert owner_of({"type": "conference_started", "conferenceId": "room"}) == "A"
    del sinch.conferences.rooms["bridge"]
    assert owner_of({"type": "conference_ended", "conferenceId": "bridge"}) == "A"
    # Forgotten at its end: the id may open a room of another application.
    assert owner_of({"type": "conference_ended", "conferenceId": "bridge"}) is None
    assert owner_of({"type": "conference_started", "conferenceId": "nowhere"}) is None
