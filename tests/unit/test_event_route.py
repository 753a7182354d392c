"""The event stream route's reading of its query and its framing of events."""

from __future__ import annotations

from starlette.requests import Request

from tonebridge.api.events import _frame, _query


def request(query: bytes) -> Request:
    return Request({"type": "http", "method": "GET", "path": "/tonebridge/v1/events", "query_string": query})


def test_ids_are_split_on_commas_before_decoding_and_collected_over_repeats() -> None:
    query = _query(request(b"conferenceId=a,b&conferenceId=c%2Cd&callId=x+y&lastEventId=1-2&conferenceId="))
    assert query == {"conferenceId": ["a", "b", "c,d"], "callId": ["x y"], "lastEventId": ["1-2"]}
    assert _query(request(b"")) == {}


def test_an_event_goes_out_with_its_id_and_a_notice_without_one_keeps_the_last() -> None:
    assert _frame({"type": "press", "id": "5-1"}) == b'id: 5-1\ndata: {"type":"press","id":"5-1"}\n\n'
    assert _frame({"type": "gap", "reason": "overflow", "dropped": 2}) == (
        b'data: {"type":"gap","reason":"overflow","dropped":2}\n\n'
    )
    # A newline in a value stays inside the JSON string: one event cannot frame another.
    assert _frame({"type": "x", "id": "1-1", "cli": "a\n\ndata: b"}).count(b"\n\n") == 1
