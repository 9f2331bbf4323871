"""The event catalog: parsing incoming CloudEvents, building outgoing ones."""

from __future__ import annotations

import json
import uuid
from typing import Any

import pytest
from cloudevents.http import CloudEvent
from cloudevents.kafka import to_binary as to_kafka

from minimart.catalog import (
    ALL_TOPICS,
    DEAD_LETTER_TOPIC,
    DEAD_LETTER_TOPICS,
    SCHEMAS,
    Event,
    EventType,
    InvalidEvent,
    build,
    derived_event_id,
    next_event,
    parse,
)


def order_facts(order_id: str | None = None, **overrides: Any) -> dict[str, Any]:
    order_id = order_id or str(uuid.uuid4())
    data: dict[str, Any] = {
        "orderId": order_id,
        "customerId": 7,
        "items": [{"sku": "SKU-42", "quantity": 1, "unitPriceCents": 2_500}],
        "totalCents": 2_500,
        "shippingAddress": {"country": "US", "postalCode": "94107"},
    }
    data.update(overrides)
    return data


def create_event(event_type: str, data: Any, event_id: str | None = None) -> CloudEvent:
    attributes = {"type": event_type, "source": "/test", "id": event_id or str(uuid.uuid4())}
    return CloudEvent(attributes, data)


def test_parse_accepts_a_valid_event() -> None:
    data = order_facts()
    cloud_event = create_event(EventType.ORDER_CREATED.value, data)

    event = parse(cloud_event)

    assert event.type is EventType.ORDER_CREATED
    assert event.id == cloud_event["id"]
    assert event.order_id == data["orderId"]
    assert event.data == data


def test_parse_accepts_every_type_with_its_minimal_data() -> None:
    order_id = str(uuid.uuid4())
    minimal = {
        EventType.ORDER_CREATED: order_facts(order_id),
        EventType.INVENTORY_RESERVED: order_facts(order_id),
        EventType.INVENTORY_REJECTED: {"orderId": order_id, "reason": "r"},
        EventType.INVENTORY_RELEASED: {"orderId": order_id, "reason": "r"},
        EventType.PAYMENT_CAPTURED: order_facts(order_id, paymentId="PAY-1"),
        EventType.PAYMENT_DECLINED: {"orderId": order_id, "reason": "r"},
        EventType.PAYMENT_REFUNDED: {"orderId": order_id, "reason": "r", "amountCents": 1},
        EventType.SHIPPING_PREPARED: {"orderId": order_id, "labelId": "LBL-1"},
        EventType.SHIPPING_FAILED: {"orderId": order_id, "reason": "r"},
        EventType.ORDER_CONFIRMED: {"orderId": order_id, "customerId": 7},
        EventType.ORDER_CANCELLED: {"orderId": order_id, "customerId": 7, "reason": "r"},
        EventType.NOTIFICATION_SENT: {"orderId": order_id, "template": "t", "streamId": "1-0"},
    }
    assert set(minimal) == set(EventType)
    for event_type, data in minimal.items():
        assert parse(create_event(event_type.value, data)).order_id == order_id


def test_parse_rejects_an_unknown_type() -> None:
    with pytest.raises(InvalidEvent, match=r"unknown event type 'com\.minimart\.nope'"):
        parse(create_event("com.minimart.nope", {"orderId": str(uuid.uuid4())}))


@pytest.mark.parametrize("data", [[1, 2], "text", 42, None])
def test_parse_rejects_data_that_is_not_an_object(data: Any) -> None:
    with pytest.raises(InvalidEvent, match="data must be a JSON object"):
        parse(create_event(EventType.ORDER_CREATED.value, data))


@pytest.mark.parametrize(
    ("change", "field"),
    [
        (lambda d: d.pop("customerId"), "(root)"),
        (lambda d: d.update(orderId="not-a-uuid"), "orderId"),
        (lambda d: d.update(customerId=0), "customerId"),
        (lambda d: d.update(items=[]), "items"),
        (lambda d: d["items"][0].update(quantity=0), "items/0/quantity"),
        (lambda d: d["items"][0].pop("unitPriceCents"), "items/0"),
        (lambda d: d.update(totalCents=-1), "totalCents"),
        (lambda d: d["shippingAddress"].update(country="USA"), "shippingAddress/country"),
    ],
)
def test_parse_rejects_a_schema_violation_naming_the_field(change: Any, field: str) -> None:
    data = order_facts()
    change(data)

    with pytest.raises(InvalidEvent) as raised:
        parse(create_event(EventType.ORDER_CREATED.value, data))

    assert str(raised.value).startswith(f"order.created: {field}: ")


def test_parse_names_a_missing_required_property() -> None:
    data = order_facts()
    del data["customerId"]

    with pytest.raises(InvalidEvent, match="'customerId' is a required property"):
        parse(create_event(EventType.ORDER_CREATED.value, data))


def test_derived_event_id_is_deterministic_and_distinct_per_type() -> None:
    cause = str(uuid.uuid4())

    ids = {event_type: derived_event_id(cause, event_type) for event_type in EventType}

    assert ids == {event_type: derived_event_id(cause, event_type) for event_type in EventType}
    assert len(set(ids.values())) == len(EventType)
    assert (
        derived_event_id(str(uuid.uuid4()), EventType.ORDER_CREATED) != ids[EventType.ORDER_CREATED]
    )
    assert all(uuid.UUID(value).version == 5 for value in ids.values())


def test_next_event_keeps_the_order_and_derives_its_id() -> None:
    order_id = str(uuid.uuid4())
    cause = Event(EventType.ORDER_CREATED, str(uuid.uuid4()), order_id, order_facts(order_id))

    emitted = next_event(cause, EventType.INVENTORY_REJECTED, {"orderId": order_id, "reason": "x"})

    assert emitted.order_id == order_id
    assert emitted.id == derived_event_id(cause.id, EventType.INVENTORY_REJECTED)


def test_build_sets_content_type_source_and_partition_key() -> None:
    order_id = str(uuid.uuid4())
    event = Event(
        EventType.SHIPPING_PREPARED,
        str(uuid.uuid4()),
        order_id,
        {
            "orderId": order_id,
            "labelId": "LBL-1",
        },
    )

    cloud_event = build(event, "shipping")

    assert cloud_event["type"] == EventType.SHIPPING_PREPARED.value
    assert cloud_event["id"] == event.id
    assert cloud_event["source"] == "/minimart/shipping"
    assert cloud_event["datacontenttype"] == "application/json"
    assert cloud_event["partitionkey"] == order_id
    assert cloud_event["subject"] == order_id
    assert cloud_event.get_data() == {"orderId": order_id, "labelId": "LBL-1"}


def test_a_built_event_round_trips_through_parse() -> None:
    order_id = str(uuid.uuid4())
    event = Event(
        EventType.PAYMENT_DECLINED,
        str(uuid.uuid4()),
        order_id,
        {
            "orderId": order_id,
            "reason": "payment_declined: no",
        },
    )

    assert parse(build(event, "payment")) == event


def test_a_built_event_converts_to_a_kafka_record_keyed_by_order_id() -> None:
    order_id = str(uuid.uuid4())
    event = Event(
        EventType.INVENTORY_REJECTED,
        str(uuid.uuid4()),
        order_id,
        {
            "orderId": order_id,
            "reason": "unknown_sku: SKU-RETIRED is not stocked",
        },
    )

    record = to_kafka(build(event, "inventory"))

    assert record.key == order_id
    assert record.headers["ce_type"] == EventType.INVENTORY_REJECTED.value.encode()
    assert record.headers["ce_id"] == event.id.encode()
    assert record.headers["content-type"] == b"application/json"
    assert json.loads(record.value) == dict(event.data)


def test_every_event_type_has_a_schema_and_a_topic_of_its_own() -> None:
    assert set(SCHEMAS) == set(EventType)
    topics = [event_type.topic for event_type in EventType]
    assert len(set(topics)) == len(topics)
    assert all(topic.startswith("minimart.") for topic in topics)
    assert DEAD_LETTER_TOPIC not in topics
    assert set(ALL_TOPICS) == {*topics, *DEAD_LETTER_TOPICS}
    for event_type in EventType:
        assert EventType.for_topic(event_type.topic) is event_type
        assert "orderId" in SCHEMAS[event_type]["required"]


def test_for_topic_rejects_an_unknown_topic() -> None:
    with pytest.raises(KeyError):
        EventType.for_topic("minimart.nope")
