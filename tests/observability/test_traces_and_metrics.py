"""On the running local stack: one trace per order across every hop; metrics in Prometheus."""

from __future__ import annotations

import json
import secrets
import uuid
from collections import Counter
from typing import Any

import pytest
import requests

from minimart.catalog import REDRIVES_EXTENSION, Event, EventType, build
from minimart.console.client import OrderClient
from minimart.handlers.redrive import MAX_REDRIVES
from minimart.local import stack
from minimart.local.servers.supervision import Supervisor
from minimart.observability import tracing
from minimart.observability.trace_view import (
    SpanRecord,
    load_order_traces,
    read_spans,
    span_files,
    trace_dir,
)
from minimart.settings import Settings
from tests.stack import dead_letter_within_s, eventually, new_sku
from tests.stack import producer as kafka_producer

pytestmark = pytest.mark.e2e

US = {
    "name": "Ada",
    "line1": "1 Loop Rd",
    "city": "Springfield",
    "postalCode": "12345",
    "country": "US",
}
SAGA_FUNCTIONS = {"order", "inventory", "payment", "shipping", "order-status", "notification"}


def place(client: OrderClient, customer: int, sku: str) -> str:
    response = client.place(customer, [{"sku": sku, "quantity": 1}], US)
    assert response.status_code == 202, response.text
    return str(response.json()["orderId"])


# The deliveries of a confirmed order, as (function, event type): what the KafkaSources of
# eventing/ deliver for the events a confirmed order produces (nine in all).
CONFIRMED_DELIVERIES = Counter(
    (service, event_type.value)
    for service, event_type in [
        ("inventory", EventType.ORDER_CREATED),
        ("payment", EventType.INVENTORY_RESERVED),
        ("order-status", EventType.INVENTORY_RESERVED),
        ("shipping", EventType.PAYMENT_CAPTURED),
        ("order-status", EventType.PAYMENT_CAPTURED),
        ("order-status", EventType.SHIPPING_PREPARED),
        ("inventory", EventType.ORDER_CONFIRMED),
        ("notification", EventType.ORDER_CONFIRMED),
        ("order-status", EventType.NOTIFICATION_SENT),
    ]
)

DECLINED_DELIVERIES = Counter(
    (service, event_type.value)
    for service, event_type in [
        ("inventory", EventType.ORDER_CREATED),
        ("payment", EventType.INVENTORY_RESERVED),
        ("order-status", EventType.INVENTORY_RESERVED),
        ("inventory", EventType.PAYMENT_DECLINED),
        ("order-status", EventType.PAYMENT_DECLINED),
        ("order-status", EventType.INVENTORY_RELEASED),
        ("notification", EventType.ORDER_CANCELLED),
        ("order-status", EventType.NOTIFICATION_SENT),
    ]
)


def deliveries(spans: list[SpanRecord]) -> Counter[tuple[str, str]]:
    """(function, event type) of every function's server span (the POST /orders aside)."""
    return Counter(
        (s.attributes.get(tracing.SERVICE), s.attributes.get(tracing.EVENT_TYPE))
        for s in spans
        if s.kind == "SERVER" and s.name != "POST /orders"
    )


def ingress_trace(
    settings: Settings, order_id: str, services: set[str], expected: Counter[tuple[str, str]]
) -> list[SpanRecord]:
    """The trace started by the order's POST /orders, once it holds spans of ``services``,
    at least the ``expected`` deliveries, and every parent of its spans has been written."""

    def check() -> list[SpanRecord] | None:
        for spans in load_order_traces(settings.state_dir, order_id).values():
            if any(s.name == "POST /orders" and not s.parent_id for s in spans):
                handled = {s.attributes.get(tracing.SERVICE) for s in spans if s.kind == "SERVER"}
                ids = {s.span_id for s in spans}
                complete = all(not s.parent_id or s.parent_id in ids for s in spans)
                delivered = not (expected - deliveries(spans))
                if services <= handled and delivered and complete:  # parents come later
                    return spans
        return None

    return eventually(check, timeout=30, what=f"trace of {order_id} covering {sorted(services)}")


def assert_well_parented(spans: list[SpanRecord]) -> None:
    ids = {s.span_id for s in spans}
    assert len({s.trace_id for s in spans}) == 1
    roots = [s for s in spans if not s.parent_id]
    assert [r.name for r in roots] == ["POST /orders"]
    orphans = [s.name for s in spans if s.parent_id and s.parent_id not in ids]
    assert not orphans, f"spans whose parent is not in the trace: {orphans}"


def test_a_confirmed_order_is_one_trace_with_each_of_its_nine_deliveries_once(
    running_stack: Settings, client: OrderClient
) -> None:
    order_id = place(client, 7, new_sku(running_stack, stock=5))
    assert client.wait_final(order_id)["status"] == "CONFIRMED"
    spans = ingress_trace(running_stack, order_id, SAGA_FUNCTIONS, CONFIRMED_DELIVERIES)
    assert_well_parented(spans)
    # Exactly these deliveries, each once (a retry or a redelivery would add a span), and no
    # span of the order in any other trace (a hop that lost the context starts a new one).
    assert deliveries(spans) == CONFIRMED_DELIVERIES
    assert list(load_order_traces(running_stack.state_dir, order_id)) == [spans[0].trace_id]
    by_id = {s.span_id: s for s in spans}
    for span in spans:
        if span.kind == "SERVER" and span.name != "POST /orders":
            # function <- dispatcher attempt <- dispatcher consumer <- Kafka producer
            attempt = by_id[span.parent_id]
            assert attempt.kind == "CLIENT" and attempt.attributes["minimart.delivery.attempt"] == 1
            consumer = by_id[attempt.parent_id]
            assert consumer.kind == "CONSUMER"
            assert by_id[consumer.parent_id].kind == "PRODUCER"
            assert span.attributes[tracing.ORDER_ID] == order_id
            assert span.attributes[tracing.EVENT_ID]
            assert span.attributes[tracing.OUTCOME] == "ok"
    assert any(s.kind == "CLIENT" and s.attributes.get("db.system") for s in spans), "no DB spans"


def test_a_compensation_is_in_its_orders_trace(
    running_stack: Settings, client: OrderClient
) -> None:
    order_id = place(client, 402, new_sku(running_stack, stock=5))  # credit limit 0: declined
    assert client.wait_final(order_id)["status"] == "CANCELLED"
    spans = ingress_trace(
        running_stack,
        order_id,
        {"order", "inventory", "payment", "order-status", "notification"},
        DECLINED_DELIVERIES,
    )
    assert_well_parented(spans)
    assert deliveries(spans) == DECLINED_DELIVERIES  # the compensation (stock released) too
    assert list(load_order_traces(running_stack.state_dir, order_id)) == [spans[0].trace_id]


def test_a_retried_delivery_and_its_dead_letter_are_in_the_trace(running_stack: Settings) -> None:
    """order-status is stopped (supervisord leaves it down): each attempt to deliver an event
    to it gets no answer, the dispatcher retries (a span per attempt) through its whole retry
    budget, then dead-letters it (a producer span). A real transient fault: the event itself
    is refused as poison once order-status is back (its order does not exist)."""
    order_id = str(uuid.uuid4())
    trace_id, parent_id = secrets.token_hex(16), secrets.token_hex(8)
    event = Event(
        EventType.NOTIFICATION_SENT,
        f"poison-{uuid.uuid4()}",  # dead-lettered on purpose (`make check` allows poison-*)
        order_id,
        {"orderId": order_id, "template": "OrderConfirmed", "streamId": "0-1"},
    )
    cloud_event = build(event, "test")
    # Re-driven MAX_REDRIVES times already: the redrive function keeps its dead letter at once
    # instead of waiting (503) for order-status to come back, which would hold the dead-letter
    # topic's one partition, and the letters of later tests, behind it.
    cloud_event[REDRIVES_EXTENSION] = str(MAX_REDRIVES)
    headers = [(f"ce_{k}", str(v).encode()) for k, v in cloud_event.get_attributes().items()
               if k != "datacontenttype"]  # fmt: skip
    headers += [("content-type", b"application/json"),
                ("traceparent", f"00-{trace_id}-{parent_id}-01".encode())]  # fmt: skip

    def trace_spans() -> list[SpanRecord]:
        files = span_files(trace_dir(running_stack.state_dir))
        return [s for s in read_spans(files) if s.trace_id == trace_id]

    def dead_lettered() -> list[SpanRecord] | None:
        spans = trace_spans()
        return spans if any(s.name.endswith("deadletter publish") for s in spans) else None

    program = stack.plan_stack(running_stack).function("order-status").process_name
    sup = Supervisor(running_stack)
    sup.stop([program])
    try:
        producer = kafka_producer(running_stack)
        try:
            value = json.dumps(event.data).encode()
            producer.send(event.type.topic, key=order_id.encode(), value=value,
                          headers=headers).get(timeout=15)  # fmt: skip
        finally:
            producer.close(timeout=5)
        within = dead_letter_within_s(event.type.topic)
        spans = eventually(dead_lettered, timeout=within, what="the dead-letter span")
    finally:
        sup.start(program)
        stack.wait_ready(running_stack)
    dead_at = min(s.start_ns for s in spans if s.name.endswith("deadletter publish"))
    attempts = [
        s for s in spans if s.kind == "CLIENT" and "minimart.delivery.attempt" in s.attributes
        and s.start_ns < dead_at
    ]  # fmt: skip
    assert len(attempts) >= 2
    assert sorted(a.attributes["minimart.delivery.attempt"] for a in attempts) == list(
        range(1, len(attempts) + 1)
    )
    assert all(a.attributes["http.response.status_code"] == 0 for a in attempts)  # no answer
    consumer = min((s for s in spans if s.kind == "CONSUMER"), key=lambda s: s.start_ns)
    assert consumer.parent_id == parent_id
    assert consumer.attributes[tracing.OUTCOME] == "dead_lettered"


def query(prometheus: str, promql: str) -> list[dict[str, Any]]:
    response = requests.get(f"{prometheus}/api/v1/query", params={"query": promql}, timeout=10)
    response.raise_for_status()
    return list(response.json()["data"]["result"])


def test_metrics_of_a_completed_order_are_in_prometheus(
    running_stack: Settings, client: OrderClient, prometheus: str
) -> None:
    order_id = place(client, 7, new_sku(running_stack, stock=5))
    assert client.wait_final(order_id)["status"] == "CONFIRMED"
    handled = 'minimart_events_handled_total{service="order-status",outcome="ok"}'
    assert eventually(lambda: query(prometheus, handled), timeout=30, what=handled)
    confirmed = 'minimart_saga_outcomes_total{status="CONFIRMED"}'
    assert eventually(lambda: query(prometheus, confirmed), timeout=30, what=confirmed)
    latency = "minimart_order_end_to_end_seconds_count"
    assert eventually(lambda: query(prometheus, latency), timeout=30, what=latency)

    def functions_up() -> set[str]:
        up = query(prometheus, "up == 1")
        found = {r["metric"]["function"] for r in up if r["metric"]["job"].startswith("minimart")}
        return found if found >= SAGA_FUNCTIONS else set()

    assert eventually(functions_up, timeout=60, what="every function's scrape target up")
