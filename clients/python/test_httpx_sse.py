"""httpx-sse, an independent SSE client library, against the live stream."""

from __future__ import annotations

import json

import httpx
from httpx_sse import ServerSentEvent, connect_sse

from support import HOSTILE_CUSTOMER, create_order, expected_event, read_raw

# A missing event fails the read after this long instead of hanging the suite.
TIMEOUT = httpx.Timeout(10.0)


def as_dict(sse: ServerSentEvent) -> dict:
    return {"id": sse.id, "event": sse.event, "data": sse.data}


def read_orders(event_source, count: int) -> list[dict]:
    """The next `count` order-created events; `retry:`-only blocks and comments are skipped."""
    events = []
    for sse in event_source.iter_sse():
        if sse.event == "order-created":
            events.append(as_dict(sse))
            if len(events) == count:
                break
    return events


def parsed(events: list[dict]) -> list[dict]:
    return [{**event, "data": json.loads(event["data"])} for event in events]


def test_httpx_sse_receives_exactly_the_created_events_in_order_whatever_the_customer_text(server):
    # Starting after a known event makes the expected list exact whatever else the log holds.
    marker = create_order(server.base_url)
    url = f"{server.base_url}/api/order/stream"
    with httpx.Client(timeout=TIMEOUT) as client:
        with connect_sse(client, "GET", url, headers={"Last-Event-ID": marker["eventId"]}) as source:
            assert source.response.status_code == 200
            assert source.response.headers["content-type"].startswith("text/event-stream")
            created = [create_order(server.base_url, HOSTILE_CUSTOMER if i == 2 else None) for i in range(5)]
            events = read_orders(source, len(created))

    assert parsed(events) == [expected_event(order) for order in created]
    assert events == read_raw(url, marker["eventId"], len(created)), "the library and the raw bytes disagree"


def test_httpx_sse_resumes_with_last_event_id_and_gets_exactly_the_missed_events(server):
    marker = create_order(server.base_url)
    url = f"{server.base_url}/api/order/stream"
    with httpx.Client(timeout=TIMEOUT) as client:
        with connect_sse(client, "GET", url, headers={"Last-Event-ID": marker["eventId"]}) as source:
            before = [create_order(server.base_url) for _ in range(3)]
            first = read_orders(source, len(before))
        # Disconnected: these are created while nobody listens.
        missed = [create_order(server.base_url) for _ in range(4)]
        with connect_sse(client, "GET", url, headers={"Last-Event-ID": first[-1]["id"]}) as source:
            after = [create_order(server.base_url) for _ in range(2)]
            resumed = read_orders(source, len(missed) + len(after))

    assert parsed(first) == [expected_event(order) for order in before]
    assert parsed(resumed) == [expected_event(order) for order in missed + after]
    assert first + resumed == read_raw(url, marker["eventId"], len(first) + len(resumed))


def test_httpx_sse_resumes_from_the_last_event_id_query_parameter(server):
    # For clients that cannot set headers; the result must be the same.
    marker = create_order(server.base_url)
    created = [create_order(server.base_url) for _ in range(3)]
    url = f"{server.base_url}/api/order/stream"
    with httpx.Client(timeout=TIMEOUT) as client:
        with connect_sse(client, "GET", url, params={"lastEventId": marker["eventId"]}) as source:
            events = read_orders(source, len(created))
    assert parsed(events) == [expected_event(order) for order in created]
