"""A client of the server's event stream (`/tonebridge/v1/events`) over a real HTTP connection: server-sent
events parsed as a browser's EventSource parses them, read on a thread, waited on with deadlines; and the
Sinch signature headers an application's stream request carries (sinch_app.signature_headers)."""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Callable
from typing import Any

import httpx
from harness import HOST
from sinch_app import signature_headers

PATH = "/tonebridge/v1/events"


def signed_headers(key: str, secret: str, method: str = "GET", path: str = PATH) -> dict[str, str]:
    """An application's signature of a request without a body."""
    return signature_headers(method, path, key=key, secret=secret)


class EventStream:
    """One connection to the stream. `events` holds every dispatched event's JSON with the id the stream
    gave it (`lastEventId`, as EventSource keeps it); `retry` the reconnection hint."""

    def __init__(
        self, port: int, params: dict[str, Any] | None = None, headers: dict[str, str] | None = None
    ) -> None:
        self.events: list[dict[str, Any]] = []
        self.ids: list[str] = []  # the id in force when each event was dispatched
        self.retry: int | None = None
        self.error: BaseException | None = None
        self.closed = False
        self.changed = threading.Condition()
        self._client = httpx.Client(base_url=f"http://{HOST}:{port}", timeout=httpx.Timeout(10, read=None))
        self._context = self._client.stream("GET", PATH, params=params, headers=headers)
        self.response = self._context.__enter__()
        self.status = self.response.status_code
        if self.status != 200:
            self.body = json.loads(self.response.read())
            self.close()
            return
        lines = self.response.iter_lines()
        # The stream's first line is written once the subscription is in place: nothing published from
        # now on is missed.
        assert next(lines).startswith(": tonebridge event stream")
        self._thread = threading.Thread(target=self._read, args=(lines,), daemon=True)
        self._thread.start()

    @property
    def last_event_id(self) -> str | None:
        return self.ids[-1] if self.ids else None

    def _read(self, lines: Any) -> None:
        last_id: str | None = None
        data: list[str] = []
        try:
            for line in lines:
                if not line:
                    if data:
                        with self.changed:
                            if self.closed:
                                return
                            self.events.append(json.loads("\n".join(data)))
                            self.ids.append(last_id or "")
                            self.changed.notify_all()
                    data = []
                    continue
                field, _, value = line.partition(":")
                value = value[1:] if value.startswith(" ") else value
                if field == "data":
                    data.append(value)
                elif field == "id":
                    last_id = value
                elif field == "retry":
                    self.retry = int(value)
        except (httpx.HTTPError, RuntimeError, ValueError) as exc:
            if not self.closed:
                self.error = exc
        finally:
            with self.changed:
                self.changed.notify_all()

    def wait(self, predicate: Callable[[dict[str, Any]], bool], timeout: float = 20.0) -> dict[str, Any]:
        """The first event matching, waiting for it until the deadline."""
        deadline = time.monotonic() + timeout
        with self.changed:
            while True:
                for event in self.events:
                    if predicate(event):
                        return event
                remaining = deadline - time.monotonic()
                if remaining <= 0 or self.error is not None:
                    raise AssertionError(
                        f"no matching event in {timeout}s ({self.error}); seen: {self.events}"
                    )
                self.changed.wait(remaining)

    def snapshot(self) -> list[dict[str, Any]]:
        with self.changed:
            return list(self.events)

    def close(self) -> None:
        """Disconnect now: the reader thread stops with what it had, and the server sees the connection go
        (a shutdown wakes a blocked read; a close from another thread would wait for it)."""
        with self.changed:
            self.closed = True
        network = self.response.extensions.get("network_stream")
        sock = network.get_extra_info("socket") if network is not None else None
        if sock is not None:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass  # already gone
        try:
            self._context.__exit__(None, None, None)
        except httpx.HTTPError:
            pass  # the body was cut short: that is the point
        finally:
            self._client.close()
