"""The conference glue handles every kind of room effect: none is dropped, and a kind it does not know
fails loudly instead of being ignored."""

from __future__ import annotations

import dataclasses
import logging
from collections import Counter
from typing import get_args

import pytest

from tonebridge.calls.conferencing import ConferenceService
from tonebridge.conference import room as r
from tonebridge.conference.options import DtmfMode, DtmfOptions

FIELD_VALUES = {
    "call_id": "c1",
    "conference_id": "room",
    "to_call_id": "c2",
    "from_call_id": "c1",
    "digit": "5",
    "digits": "12",
    "contributes": True,
    "hears_room": True,
    "moh": None,
    "reason": r.LeaveReason.LEFT,
    "source": r.PressSource.RFC4733,
    "mode": DtmfMode.DETECT,
    "outcome": r.PressOutcome.IGNORED,
    "options": DtmfOptions(),
    "receivers": (),
}


class _Clock:
    def __init__(self) -> None:
        self.tick_hooks: list[object] = []
        self.legs: set[object] = set()


class _Engine:
    """The few engine services the glue calls; with no members, every effect touches only these."""

    def __init__(self) -> None:
        self.clock = _Clock()
        self.published: list[object] = []

    def publish(self, event: object) -> None:
        self.published.append(event)

    def now(self) -> float:
        return 0.0

    def find(self, call_id: str) -> None:
        return None

    def log_event(self, event: str, session: object = None, **fields: object) -> None:
        pass


def _example(kind: type) -> object:
    return kind(**{f.name: FIELD_VALUES[f.name] for f in dataclasses.fields(kind) if f.name in FIELD_VALUES})


@pytest.mark.parametrize("kind", get_args(r.Effect), ids=lambda kind: kind.__name__)
def test_every_effect_kind_is_handled(kind: type, caplog: pytest.LogCaptureFixture) -> None:
    engine = _Engine()
    service = ConferenceService(engine, lambda session, done: None)  # type: ignore[arg-type]
    with caplog.at_level(logging.ERROR):
        service._apply([_example(kind)])
    assert not caplog.records, caplog.text
    # The end of a conference is news for the application too: it goes out as a call event.
    assert engine.published == ([_example(kind)] if kind is r.ConferenceEnded else [])


def test_an_unknown_effect_kind_is_reported_not_dropped(caplog: pytest.LogCaptureFixture) -> None:
    service = ConferenceService(_Engine(), lambda session, done: None)  # type: ignore[arg-type]
    with caplog.at_level(logging.ERROR):
        service._apply([object()])  # type: ignore[list-item]
    assert "conference_effect_failed" in caplog.text


def test_room_events_reach_the_event_stream() -> None:
    service = ConferenceService(_Engine(), lambda session, done: None)  # type: ignore[arg-type]
    queue = service.events.subscribe().queue
    service._apply(
        [
            r.ConferenceStarted("room"),
            r.OptionsChanged("c1", "room", DtmfOptions()),
            r.ConferenceEnded("room"),
        ]
    )
    kinds = Counter()
    while not queue.empty():
        kinds[queue.get_nowait()["type"]] += 1
    assert kinds == {"conference_started": 1, "options_changed": 1, "conference_ended": 1}
