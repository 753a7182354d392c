"""The event stream: what happens in calls and conferences, numbered, kept for a while and fanned out to
every subscriber that may see it.

Publishers (the conference service, the call engine) hand in plain dicts. Each gets an id, `"<epoch>-<n>"`:
`n` counts from 1 for the life of the bus and `epoch` is the millisecond the bus was made, so the ids of
one server run never meet those of another. The latest events stay in a ring bounded in count and age,
from which a subscriber that comes back with the id it last saw is sent what it missed before the live
events, with nothing lost or repeated between the two. Each subscriber (an HTTP client of
`/tonebridge/v1/events`) has a bounded queue, so a slow reader loses its oldest events, never the server's
memory or speed. Counters for metrics are kept beside it.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter, deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, NamedTuple

if TYPE_CHECKING:
    from tonebridge.calls.sinch import SinchApplication

__all__ = [
    "RETAIN_EVENTS",
    "RETAIN_SECONDS",
    "SUBSCRIBER_QUEUE",
    "EventBus",
    "EventFilter",
    "OwnerOf",
    "Subscription",
    "application_owner",
]

SUBSCRIBER_QUEUE = 1000
# What a reconnecting client can get back: the latest 10,000 events, none older than 5 minutes. A press
# makes four to six events, so this holds minutes of a busy server and all of a quiet one.
RETAIN_EVENTS = 10_000
RETAIN_SECONDS = 300.0

Event = dict[str, Any]
# The application an event is about (its key), or None when it belongs to none (demo mode).
OwnerOf = Callable[[Event], str | None]


class _Retained(NamedTuple):
    n: int
    at: float  # monotonic, for the age bound
    owner: str | None  # kept here, never in the event, so that it is never sent
    event: Event


@dataclass(frozen=True)
class EventFilter:
    """Which events a subscriber gets. An empty set lets every value through; an event without the field
    passes no set but the empty one. `application` scopes the reader to one application's events; None
    means no scope (demo mode, or a reader allowed to see everything)."""

    conference_ids: frozenset[str] = frozenset()
    call_ids: frozenset[str] = frozenset()
    application: str | None = None

    def passes(self, event: Event, owner: str | None) -> bool:
        if self.application is not None and owner != self.application:
            return False
        if self.conference_ids and event.get("conferenceId") not in self.conference_ids:
            return False
        return not self.call_ids or event.get("callId") in self.call_ids


@dataclass(eq=False)
class Subscription:
    """One reader: first `backlog` (a `gap` notice, if any, then the retained events it missed), then what
    arrives on `queue`. `dropped` counts live events the queue let go because the reader fell behind."""

    filter: EventFilter
    backlog: list[Event]
    queue: asyncio.Queue[Event] = field(default_factory=lambda: asyncio.Queue(SUBSCRIBER_QUEUE))
    dropped: int = 0


class EventBus:
    def __init__(
        self,
        *,
        retain_events: int = RETAIN_EVENTS,
        retain_seconds: float = RETAIN_SECONDS,
        clock: Callable[[], float] = time.monotonic,
        epoch: int | None = None,
    ) -> None:
        self.epoch = epoch if epoch is not None else time.time_ns() // 1_000_000
        self.owner_of: OwnerOf | None = None  # given by the server when applications own calls
        self.retain_seconds = retain_seconds
        self._clock = clock
        self._ring: deque[_Retained] = deque(maxlen=retain_events)
        self._last = 0
        self._subscribers: set[Subscription] = set()
        self.counters: Counter[str] = Counter()
        self.dropped = 0
        # Called with every event as it is published, on the publisher's thread (the cluster directory).
        self.taps: list[Callable[[Event], None]] = []

    def event_id(self, n: int) -> str:
        return f"{self.epoch}-{n}"

    @property
    def last_id(self) -> str:
        return self.event_id(self._last)

    def publish(self, event: Event) -> None:
        self._last += 1
        event["id"] = self.event_id(self._last)
        event.setdefault("time", round(time.time(), 3))
        owner = self.owner_of(event) if self.owner_of is not None else None
        now = self._clock()
        self._expire(now)
        self._ring.append(_Retained(self._last, now, owner, event))
        for tap in self.taps:
            tap(event)
        for subscriber in self._subscribers:
            if not subscriber.filter.passes(event, owner):
                continue
            queue = subscriber.queue
            if queue.full():
                queue.get_nowait()
                subscriber.dropped += 1
                self.dropped += 1
            queue.put_nowait(event)

    def subscribe(self, after: str | None = None, filter: EventFilter | None = None) -> Subscription:
        """A new reader of the events `filter` lets through: with `after` (the id it last saw), first
        those of the retained events that came after it. No await between taking them and registering the
        queue, so the replay and the live events meet with no gap and no repeat."""
        filter = filter or EventFilter()
        subscription = Subscription(filter, self._backlog(after, filter) if after else [])
        self._subscribers.add(subscription)
        return subscription

    def unsubscribe(self, subscription: Subscription) -> None:
        self._subscribers.discard(subscription)

    @property
    def subscribers(self) -> int:
        return len(self._subscribers)

    def _expire(self, now: float) -> None:
        horizon = now - self.retain_seconds
        while self._ring and self._ring[0].at < horizon:
            self._ring.popleft()

    def _parse(self, event_id: str) -> int | None:
        """`n` of an id of this bus, or None for any other (another run's, a malformed one, a future one)."""
        epoch, _, n = event_id.strip().partition("-")
        # ASCII digits only, and few of them: int() refuses other digits and very long numbers by raising.
        if (
            epoch != str(self.epoch)
            or not (n.isascii() and n.isdigit())
            or len(n) > 18
            or int(n) > self._last
        ):
            return None
        return int(n)

    def _backlog(self, after: str, filter: EventFilter) -> list[Event]:
        self._expire(self._clock())
        oldest = self._ring[0].n if self._ring else self._last + 1
        n = self._parse(after)
        out: list[Event] = []
        if n is None or n + 1 < oldest:
            # Something after the reader's id may be gone. The notice carries the id from which all is
            # held, so a reader cut off right after it resumes without losing the replay that follows.
            out.append(
                {
                    "type": "gap",
                    "reason": "unknown" if n is None else "expired",
                    "lastEventId": after,
                    "id": self.event_id(oldest - 1),
                }
            )
            n = 0
        out.extend(r.event for r in _after(self._ring, n) if filter.passes(r.event, r.owner))
        return out


def _after(ring: deque[_Retained], n: int) -> Iterable[_Retained]:
    # Ids in the ring are consecutive, so the first one after `n` is found by arithmetic, not a search.
    if not ring:
        return ()
    start = max(0, n + 1 - ring[0].n)
    return (ring[i] for i in range(start, len(ring)))


def application_owner(app: SinchApplication) -> OwnerOf:
    """Which application an event is about, from what the Sinch application knows: the application of its
    call (for the far leg of a bridge, of the call that dialled it), else of its room, which is that of the
    room's members (a room admits only calls of the application that opened it). A room that has just
    ended has no members left, so the owner its `joined` events had is kept until its `conference_ended`."""
    rooms: dict[str, str] = {}

    def call_owner(call_id: str) -> str | None:
        call = app.calls.get(call_id)
        if call is None and (caller := app.far_legs.get(call_id)) is not None:
            call = app.calls.get(caller.call_id)
        return call.app_key if call is not None else None

    def room_owner(conference_id: str) -> str | None:
        room = app.conferences.rooms.get(conference_id) if app.conferences is not None else None
        for call_id in room.participants if room is not None else ():
            if (owner := call_owner(call_id)) is not None:
                return owner
        return rooms.get(conference_id)

    def owner_of(event: Event) -> str | None:
        call_id, conference_id = event.get("callId"), event.get("conferenceId")
        owner = call_owner(call_id) if call_id is not None else None
        if conference_id is None:
            return owner
        if owner is None:
            owner = room_owner(conference_id)
        if event.get("type") == "joined" and owner is not None:
            rooms[conference_id] = owner
        elif event.get("type") == "conference_ended":
            rooms.pop(conference_id, None)
        return owner

    return owner_of
