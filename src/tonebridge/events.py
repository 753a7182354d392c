"""The event stream: what happens in calls and conferences, fanned out to every subscriber.

Publishers (the conference service, the call engine) hand in plain dicts; each subscriber (an HTTP client
of `/tonebridge/v1/events`) has a bounded queue, so a slow reader loses its oldest events, never the
server's memory or speed. Counters for metrics are kept beside it.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from typing import Any

SUBSCRIBER_QUEUE = 1000


class EventBus:
    def __init__(self) -> None:
        self._subscribers: set[asyncio.Queue[dict[str, Any]]] = set()
        self.counters: Counter[str] = Counter()
        self.dropped = 0

    def publish(self, event: dict[str, Any]) -> None:
        event.setdefault("time", round(time.time(), 3))
        for queue in self._subscribers:
            if queue.full():
                queue.get_nowait()
                self.dropped += 1
            queue.put_nowait(event)

    def subscribe(self) -> asyncio.Queue[dict[str, Any]]:
        queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue(SUBSCRIBER_QUEUE)
        self._subscribers.add(queue)
        return queue

    def unsubscribe(self, queue: asyncio.Queue[dict[str, Any]]) -> None:
        self._subscribers.discard(queue)

    @property
    def subscribers(self) -> int:
        return len(self._subscribers)
