"""Events that contradict the stored state, produced straight onto the saga's topics: each
function that reads one refuses it as poison (400, dead-lettered once with its rule and
reason), nothing changes, and the books stay balanced."""

from __future__ import annotations

import json
import uuid
from collections import Counter
from typing import Any

import pytest
from kafka import KafkaProducer

from minimart.catalog import EventType
from minimart.console import replay
from minimart.console.client import OrderClient
from minimart.local import stack
from minimart.manifests import load_topology
from minimart.settings import PROJECT_ROOT, Settings
from tests.reliability.saga import US, assert_books, place_batch, wait_final
from tests.stack import eventually, new_sku
from tests.stack import producer as kafka_producer

pytestmark = pytest.mark.e2e


def forge(producer: KafkaProducer, event_type: EventType, order_id: str, **data: Any) -> str:
    """A CloudEvent of ``event_type`` about ``order_id``, keyed by its order; its id."""
    event_id = f"contradiction-{uuid.uuid4()}"
    headers = [
        ("ce_specversion", b"1.0"),
        ("ce_id", event_id.encode()),
        ("ce_source", b"/tests/contradiction"),
        ("ce_type", event_type.value.encode()),
        ("ce_subject", order_id.encode()),
        ("content-type", b"application/json"),
    ]
    body = json.dumps({"orderId": order_id, **data}).encode()
    producer.send(event_type.topic, value=body, key=order_id.encode(), headers=headers).get(15)
    return event_id


def test_events_that_contradict_the_stored_state_are_refused_and_change_nothing(
    running_stack: Settings, client: OrderClient
) -> None:
    sku = new_sku(running_stack, stock=100)
    [confirmed] = place_batch(client, sku, 1)
    [declined] = place_batch(client, sku, 1, customer=402)  # over its credit limit
    before = {o["orderId"]: o for o in wait_final(client, [confirmed, declined])}
    assert [o["status"] for o in before.values()] == ["CONFIRMED", "CANCELLED"]
    order = before[confirmed]
    reserved_again = {key: order[key] for key in ("customerId", "items", "totalCents")}
    reserved_again["shippingAddress"] = US

    producer = kafka_producer(running_stack)
    try:
        forged = {
            # a refund of a declined payment; a shipment failing after the decline
            forge(producer, EventType.SHIPPING_FAILED, declined, reason="shipping_failed: x"): {
                "payment": "refund-captured", "order-status": "saga-path"},
            # a second capture of a paid order; a second reservation of it
            forge(producer, EventType.INVENTORY_RESERVED, confirmed, **reserved_again): {
                "payment": "capture-once", "order-status": "once"},
            # a shipment of a declined order
            forge(producer, EventType.SHIPPING_PREPARED, declined, labelId="LBL-FORGED"): {
                "order-status": "saga-path"},
        }  # fmt: skip
    finally:
        producer.close(timeout=5)

    expected = {(event_id, service) for event_id, rules in forged.items() for service in rules}

    plan = stack.plan_stack(running_stack, load_topology(PROJECT_ROOT))
    services = {d.sink_url: d.source.name.removesuffix("-source") for d in plan.dispatchers}

    def service_of(letter: replay.DeadLetter) -> str:
        return services.get(letter.destination, letter.destination)

    def letters() -> list[replay.DeadLetter] | None:
        found = [d for d in replay.read_dead_letters(running_stack) if d.event_id in forged]
        return found if len(found) >= len(expected) else None

    found = eventually(letters, timeout=60, what="every contradiction dead-lettered")
    assert found is not None
    assert Counter((d.event_id, service_of(d)) for d in found) == Counter(expected)
    for letter in found:
        rule = forged[letter.event_id][service_of(letter)]
        assert letter.code == "400", letter
        assert f"{rule}: " in letter.detail, (rule, letter.detail)

    after = {o["orderId"]: o for o in wait_final(client, [confirmed, declined])}
    assert after == before  # status, reason and timeline as they were
    assert_books(running_stack, [confirmed, declined], [sku], expected_dead_letters=set(forged))
