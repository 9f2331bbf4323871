"""Dead letters as the dispatcher writes them, in binary and in structured mode: read back with
their type, code and reason, and re-driven as the same event to its original topic."""

from __future__ import annotations

import json
import uuid

import pytest
from cloudevents.conversion import to_structured
from cloudevents.kafka import to_binary

from minimart.binding import to_event
from minimart.catalog import DEAD_LETTER_TOPIC, Event, EventType, build
from minimart.console.replay import ERROR_EXTENSIONS, RecordedEvent, dead_letter, plan_redrive

SINK = "http://127.0.0.1:18083/"
TOPIC = EventType.INVENTORY_REJECTED.topic


def rejected() -> Event:
    order_id = str(uuid.uuid4())
    return Event(
        EventType.INVENTORY_REJECTED,
        str(uuid.uuid4()),
        order_id,
        {"orderId": order_id, "reason": "insufficient_stock: 50% off"},
    )


def as_record(event: Event, mode: str) -> RecordedEvent:
    """The record the publisher (binary) or another producer (structured) puts on the topic."""
    cloud_event = build(event, "inventory")
    if mode == "binary":
        message = to_binary(cloud_event)
        headers = [(k, v) for k, v in message.headers.items()]
        return RecordedEvent(TOPIC, 3, 41, 1_700_000_000_000, message.key, message.value, headers)
    http_headers, body = to_structured(cloud_event)
    headers = [("content-type", str(http_headers["content-type"]).encode())]
    return RecordedEvent(TOPIC, 3, 41, 1_700_000_000_000, event.order_id.encode(), body, headers)


def dead_lettered(record: RecordedEvent) -> RecordedEvent:
    """The dead-letter record the dispatcher writes for ``record`` (delivery's own code)."""
    letter = to_event("order-status-source", record).with_extensions(
        {"knativeerrordest": SINK, "knativeerrorcode": "500", "knativeerrordata": "order unknown"}
    )
    return RecordedEvent(
        DEAD_LETTER_TOPIC, 0, 7, 1_700_000_001_000, letter.key, letter.body, letter.kafka_headers()
    )


@pytest.mark.parametrize("mode", ["binary", "structured"])
def test_a_dead_letter_shows_its_event_and_the_reason(mode: str) -> None:
    event = rejected()
    record = dead_lettered(as_record(event, mode))
    assert record.structured == (mode == "structured")

    letter = dead_letter(record)

    assert letter.event_id == event.id
    assert letter.event_type == EventType.INVENTORY_REJECTED.value
    assert (letter.code, letter.destination) == ("500", SINK)
    assert letter.reason == f"HTTP 500 from {SINK}: order unknown"
    assert letter.order_id == event.order_id
    assert letter.original_topic == TOPIC


@pytest.mark.parametrize("mode", ["binary", "structured"])
def test_a_dead_letter_is_redriven_as_the_same_event_without_the_error_extensions(
    mode: str,
) -> None:
    event = rejected()
    original = as_record(event, mode)
    letter = dead_letter(dead_lettered(original))

    [outcome], [record] = plan_redrive([letter])

    assert (outcome.event_id, outcome.topic) == (event.id, TOPIC)
    assert record.topic == TOPIC
    assert record.key == original.key
    assert record.structured == (mode == "structured")
    for name in ERROR_EXTENSIONS:
        assert record.attribute(name) is None
    redelivered = to_event("inventory-source", record)
    assert redelivered.http_headers() == to_event("inventory-source", original).http_headers()
    if mode == "structured":
        assert json.loads(redelivered.body) == json.loads(original.value or b"")
    else:
        assert redelivered.body == original.value


def test_a_dead_letter_of_an_unknown_type_is_skipped() -> None:
    record = RecordedEvent(DEAD_LETTER_TOPIC, 0, 9, 0, b"k", b"not json", [])

    [outcome], records = plan_redrive([dead_letter(record)])

    assert (outcome.event_id, outcome.topic, records) == ("partition:0/offset:9", None, [])
    assert outcome.note.startswith("skipped")
