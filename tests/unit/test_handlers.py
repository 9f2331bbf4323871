"""The saga's handlers against in-memory fakes of their ports."""

from __future__ import annotations

import copy
import itertools
import random
import uuid
from collections.abc import Callable
from typing import Any

import pytest

from minimart.catalog import Event, EventType, derived_event_id
from minimart.domain.orders import InvalidOrder, OrderLimits, OrderLine, OrderStatus
from minimart.domain.rules import label_id, payment_id
from minimart.domain.saga import Contradiction
from minimart.handlers import inventory, notification, order_status, payment, shipping
from minimart.handlers.order_status import UnknownOrder
from minimart.handlers.orders import IdempotencyConflict, place_order
from minimart.handlers.payment import PaymentPolicy
from minimart.handlers.ports import OrderRecord
from tests.fakes import (
    FakeIntake,
    FakeInventory,
    FakeNotifications,
    FakeOrders,
    FakePayments,
    FakeShipments,
    InventoryState,
)

POLICY = PaymentPolicy(default_credit_limit_cents=100_000, decline_rate=0.0)
LIMITS = OrderLimits(max_items=50, max_quantity_per_line=1_000)


# -- events --------------------------------------------------------------------------------


def new_id() -> str:
    return str(uuid.uuid4())


def create_event(event_type: EventType, order_id: str, **data: Any) -> Event:
    return Event(event_type, new_id(), order_id, {"orderId": order_id, **data})


def order_facts(
    items: list[tuple[str, int, int]] | None = None,
    customer_id: int | None = None,
    address: dict[str, str] | None = None,
) -> dict[str, Any]:
    items = [("SKU-1001", 2, 4_999), ("SKU-1002", 1, 1_999)] if items is None else items
    return {
        "customerId": random.randint(1_000, 100_000) if customer_id is None else customer_id,
        "items": [{"sku": s, "quantity": q, "unitPriceCents": p} for s, q, p in items],
        "totalCents": sum(q * p for _, q, p in items),
        "shippingAddress": address or {"country": "US", "postalCode": "94107"},
    }


def order_created(order_id: str | None = None, **facts: Any) -> Event:
    return create_event(EventType.ORDER_CREATED, order_id or new_id(), **order_facts(**facts))


def payment_captured(order_id: str | None = None, **facts: Any) -> Event:
    order_id = order_id or new_id()
    return create_event(
        EventType.PAYMENT_CAPTURED, order_id, paymentId=payment_id(order_id), **order_facts(**facts)
    )


Handler = Callable[[Event], list[Event]]


def handled_twice(handle: Handler, event: Event, store: Callable[[], Any]) -> list[Event]:
    """Handle ``event``, then the same delivery again: nothing may change the second time."""
    first = handle(event)
    snapshot = copy.deepcopy(store())

    second = handle(event)

    assert second == first
    assert [e.id for e in second] == [e.id for e in first]
    assert store() == snapshot
    return first


# -- inventory -----------------------------------------------------------------------------


@pytest.fixture
def warehouse() -> FakeInventory:
    return FakeInventory({"SKU-1001": 10, "SKU-1002": 5, "SKU-OUT": 0})


def test_reserve_takes_every_line_from_stock(warehouse: FakeInventory) -> None:
    created = order_created()

    emitted = inventory.reserve(created, warehouse)

    assert emitted == [
        Event(
            EventType.INVENTORY_RESERVED,
            derived_event_id(created.id, EventType.INVENTORY_RESERVED),
            created.order_id,
            dict(created.data),
        )
    ]
    state = warehouse.committed
    assert state.available == {"SKU-1001": 8, "SKU-1002": 4, "SKU-OUT": 0}
    assert state.reserved == {"SKU-1001": 2, "SKU-1002": 1, "SKU-OUT": 0}
    assert warehouse.commits == 1


@pytest.mark.parametrize(
    ("items", "reason"),
    [
        ([("SKU-1001", 1, 1), ("SKU-RETIRED", 1, 1)], "unknown_sku: SKU-RETIRED is not stocked"),
        ([("SKU-1001", 1, 1), ("SKU-OUT", 1, 1)], "insufficient_stock: SKU-OUT: requested 1"),
        ([("SKU-1001", 11, 1)], "insufficient_stock: SKU-1001: requested 11, available 10"),
    ],
)
def test_reserve_refuses_the_whole_order(
    warehouse: FakeInventory, items: list[tuple[str, int, int]], reason: str
) -> None:
    created = order_created(items=items)
    before = copy.deepcopy(warehouse.committed.available)

    [emitted] = inventory.reserve(created, warehouse)

    assert emitted.type is EventType.INVENTORY_REJECTED
    assert emitted.id == derived_event_id(created.id, EventType.INVENTORY_REJECTED)
    assert emitted.data["orderId"] == created.order_id
    assert emitted.data["reason"].startswith(reason)
    assert warehouse.committed.available == before
    assert warehouse.committed.reservations == {}


@pytest.mark.parametrize("items", [None, [("SKU-OUT", 1, 1)]])
def test_reserve_twice_is_a_no_op(
    warehouse: FakeInventory, items: list[tuple[str, int, int]] | None
) -> None:
    created = order_created(items=items)

    handled_twice(lambda e: inventory.reserve(e, warehouse), created, lambda: warehouse.committed)


def test_reserve_leaves_nothing_when_its_transaction_fails(warehouse: FakeInventory) -> None:
    class Crashing(FakeInventory):
        def record_outcome(self, event_id: str, events: Any) -> None:
            raise ConnectionError("connection lost before commit")

    crashing = Crashing({"SKU-1001": 10, "SKU-1002": 5})
    before = copy.deepcopy(crashing.committed)

    with pytest.raises(ConnectionError):
        inventory.reserve(order_created(), crashing)

    assert crashing.committed == before
    assert crashing.rollbacks == 1


def test_release_gives_reserved_stock_back(warehouse: FakeInventory) -> None:
    created = order_created()
    inventory.reserve(created, warehouse)
    declined = create_event(
        EventType.PAYMENT_DECLINED, created.order_id, reason="payment_declined: limit"
    )

    [emitted] = inventory.release(declined, warehouse)

    assert emitted.type is EventType.INVENTORY_RELEASED
    assert emitted.id == derived_event_id(declined.id, EventType.INVENTORY_RELEASED)
    assert emitted.data == {
        "orderId": created.order_id,
        "reason": "payment_declined: limit",
        "items": [
            {"sku": "SKU-1001", "quantity": 2},
            {"sku": "SKU-1002", "quantity": 1},
        ],
    }
    assert warehouse.committed.available == {"SKU-1001": 10, "SKU-1002": 5, "SKU-OUT": 0}
    assert warehouse.committed.reserved == {"SKU-1001": 0, "SKU-1002": 0, "SKU-OUT": 0}


def test_release_of_an_order_holding_nothing_releases_nothing(warehouse: FakeInventory) -> None:
    refunded = create_event(
        EventType.PAYMENT_REFUNDED, new_id(), reason="shipping_failed: x", amountCents=1
    )
    before = copy.deepcopy(warehouse.committed.available)

    [emitted] = inventory.release(refunded, warehouse)

    assert emitted.data["items"] == []
    assert warehouse.committed.available == before


def test_release_twice_is_a_no_op(warehouse: FakeInventory) -> None:
    created = order_created()
    inventory.reserve(created, warehouse)
    declined = create_event(EventType.PAYMENT_DECLINED, created.order_id, reason="declined")

    handled_twice(lambda e: inventory.release(e, warehouse), declined, lambda: warehouse.committed)


def test_a_second_compensation_releases_nothing_more(warehouse: FakeInventory) -> None:
    created = order_created()
    inventory.reserve(created, warehouse)
    inventory.release(
        create_event(EventType.PAYMENT_DECLINED, created.order_id, reason="x"), warehouse
    )

    [again] = inventory.release(
        create_event(EventType.PAYMENT_REFUNDED, created.order_id, reason="y", amountCents=1),
        warehouse,
    )

    assert again.data["items"] == []
    assert warehouse.committed.available["SKU-1001"] == 10


def test_ship_moves_reserved_stock_to_shipped(warehouse: FakeInventory) -> None:
    created = order_created()
    inventory.reserve(created, warehouse)
    confirmed = create_event(EventType.ORDER_CONFIRMED, created.order_id, customerId=7)

    assert inventory.ship(confirmed, warehouse) == []

    state = warehouse.committed
    assert state.reserved == {"SKU-1001": 0, "SKU-1002": 0, "SKU-OUT": 0}
    assert state.shipped == {"SKU-1001": 2, "SKU-1002": 1, "SKU-OUT": 0}
    assert state.available == {"SKU-1001": 8, "SKU-1002": 4, "SKU-OUT": 0}


def test_ship_twice_is_a_no_op(warehouse: FakeInventory) -> None:
    created = order_created()
    inventory.reserve(created, warehouse)
    confirmed = create_event(EventType.ORDER_CONFIRMED, created.order_id, customerId=7)

    handled_twice(lambda e: inventory.ship(e, warehouse), confirmed, lambda: warehouse.committed)
    assert warehouse.committed.shipped["SKU-1001"] == 2


def test_inventory_handlers_cover_its_event_types() -> None:
    handlers = dict(inventory.HANDLERS)

    assert handlers == {
        EventType.ORDER_CREATED: inventory.reserve,
        EventType.PAYMENT_DECLINED: inventory.release,
        EventType.PAYMENT_REFUNDED: inventory.release,
        EventType.ORDER_CONFIRMED: inventory.ship,
    }


def test_inventory_state_is_comparable() -> None:  # the duplicate checks rely on it
    assert InventoryState() == InventoryState()


# -- payment -------------------------------------------------------------------------------


@pytest.fixture
def payments() -> FakePayments:
    return FakePayments({402: 0})


def inventory_reserved(**facts: Any) -> Event:
    return create_event(EventType.INVENTORY_RESERVED, new_id(), **order_facts(**facts))


def test_capture_charges_the_order(payments: FakePayments) -> None:
    reserved = inventory_reserved()

    [emitted] = payment.capture(reserved, payments, POLICY)

    assert emitted.type is EventType.PAYMENT_CAPTURED
    assert emitted.id == derived_event_id(reserved.id, EventType.PAYMENT_CAPTURED)
    assert emitted.data == {**reserved.data, "paymentId": payment_id(reserved.order_id)}
    stored = payments.committed.payments[reserved.order_id]
    assert (stored.status, stored.amount_cents) == ("CAPTURED", reserved.data["totalCents"])


def test_capture_declines_over_the_customers_limit(payments: FakePayments) -> None:
    reserved = inventory_reserved(customer_id=402)

    [emitted] = payment.capture(reserved, payments, POLICY)

    assert emitted.type is EventType.PAYMENT_DECLINED
    assert emitted.data == {
        "orderId": reserved.order_id,
        "reason": "payment_declined: amount 11997 cents exceeds the credit limit 0 of customer 402",
        "amountCents": 11_997,
    }
    assert payments.committed.payments[reserved.order_id].status == "DECLINED"


def test_capture_uses_the_default_limit_for_other_customers(payments: FakePayments) -> None:
    reserved = inventory_reserved(items=[("SKU-1001", 30, 4_999)])

    [emitted] = payment.capture(reserved, payments, POLICY)

    assert emitted.type is EventType.PAYMENT_DECLINED
    assert "credit limit 100000" in emitted.data["reason"]


def test_capture_declines_at_the_simulated_rate(payments: FakePayments) -> None:
    policy = PaymentPolicy(default_credit_limit_cents=100_000, decline_rate=1.0)

    [emitted] = payment.capture(inventory_reserved(), payments, policy)

    assert emitted.data["reason"] == "payment_declined: declined by the card issuer (simulated)"


@pytest.mark.parametrize("customer_id", [None, 402])
def test_capture_twice_is_a_no_op(payments: FakePayments, customer_id: int | None) -> None:
    reserved = inventory_reserved(customer_id=customer_id)

    handled_twice(
        lambda e: payment.capture(e, payments, POLICY), reserved, lambda: payments.committed
    )


def shipping_failed(order_id: str) -> Event:
    return create_event(EventType.SHIPPING_FAILED, order_id, reason="shipping_failed: 00000")


def test_refund_gives_a_captured_amount_back(payments: FakePayments) -> None:
    reserved = inventory_reserved()
    payment.capture(reserved, payments, POLICY)
    failed = shipping_failed(reserved.order_id)

    [emitted] = payment.refund(failed, payments, POLICY)

    assert emitted.type is EventType.PAYMENT_REFUNDED
    assert emitted.id == derived_event_id(failed.id, EventType.PAYMENT_REFUNDED)
    assert emitted.data == {
        "orderId": reserved.order_id,
        "reason": "shipping_failed: 00000",
        "amountCents": reserved.data["totalCents"],
    }
    stored = payments.committed.payments[reserved.order_id]
    assert (stored.status, stored.reason) == ("REFUNDED", "")  # the capture's reason stays
    assert payments.committed.refund_reasons[reserved.order_id] == "shipping_failed: 00000"


def test_refund_twice_is_a_no_op(payments: FakePayments) -> None:
    reserved = inventory_reserved()
    payment.capture(reserved, payments, POLICY)

    handled_twice(
        lambda e: payment.refund(e, payments, POLICY),
        shipping_failed(reserved.order_id),
        lambda: payments.committed,
    )


def refused(rule: str, handle: Callable[[], Any], store: Callable[[], Any]) -> Contradiction:
    """``handle()`` raises a Contradiction of ``rule`` and changes nothing in ``store()``."""
    before = copy.deepcopy(store())

    with pytest.raises(Contradiction) as raised:
        handle()

    assert raised.value.rule == rule
    assert store() == before
    return raised.value


def test_refund_without_a_payment_is_a_contradiction(payments: FakePayments) -> None:
    refusal = refused(
        "refund-captured",
        lambda: payment.refund(shipping_failed(new_id()), payments, POLICY),
        lambda: payments.committed,
    )

    assert "no payment" in str(refusal)
    assert payments.committed.processed == {}


def test_refund_of_a_declined_payment_is_a_contradiction(payments: FakePayments) -> None:
    reserved = inventory_reserved(customer_id=402)
    payment.capture(reserved, payments, POLICY)

    refusal = refused(
        "refund-captured",
        lambda: payment.refund(shipping_failed(reserved.order_id), payments, POLICY),
        lambda: payments.committed,
    )

    assert "its payment is DECLINED" in str(refusal)


def test_a_second_refund_by_another_event_is_a_contradiction(payments: FakePayments) -> None:
    """Refunded once: the duplicate of the refunding event re-emits the same payment.refunded,
    another event asking for a refund is refused."""
    reserved = inventory_reserved()
    payment.capture(reserved, payments, POLICY)
    failed = shipping_failed(reserved.order_id)
    first = payment.refund(failed, payments, POLICY)

    refusal = refused(
        "refund-captured",
        lambda: payment.refund(shipping_failed(reserved.order_id), payments, POLICY),
        lambda: payments.committed,
    )

    assert "its payment is REFUNDED" in str(refusal)
    assert payment.refund(failed, payments, POLICY) == first


@pytest.mark.parametrize("customer_id", [None, 402])  # captured, declined
def test_a_second_capture_of_an_order_is_a_contradiction(
    payments: FakePayments, customer_id: int | None
) -> None:
    reserved = inventory_reserved(customer_id=customer_id)
    first = payment.capture(reserved, payments, POLICY)
    again = create_event(EventType.INVENTORY_RESERVED, reserved.order_id, **order_facts())

    refusal = refused(
        "capture-once",
        lambda: payment.capture(again, payments, POLICY),
        lambda: payments.committed,
    )

    assert "already has a payment" in str(refusal)
    assert payment.capture(reserved, payments, POLICY) == first  # the duplicate still answers


def test_a_capture_of_an_amount_the_lines_do_not_hold_is_a_contradiction(
    payments: FakePayments,
) -> None:
    cheap = {**order_facts(items=[("SKU-1001", 2, 4_999)]), "totalCents": 1}
    reserved = create_event(EventType.INVENTORY_RESERVED, new_id(), **cheap)

    refusal = refused(
        "capture-amount",
        lambda: payment.capture(reserved, payments, POLICY),
        lambda: payments.committed,
    )

    assert "totalCents 1 is not what its lines hold (9998)" in str(refusal)
    assert payments.committed.payments == {}


# -- shipping ------------------------------------------------------------------------------


def test_prepare_ships_a_paid_order() -> None:
    store = FakeShipments()
    captured = payment_captured()

    [emitted] = shipping.prepare(captured, store, 0.0)

    assert emitted.type is EventType.SHIPPING_PREPARED
    assert emitted.id == derived_event_id(captured.id, EventType.SHIPPING_PREPARED)
    assert emitted.data == {"orderId": captured.order_id, "labelId": label_id(captured.order_id)}
    assert store.shipments[captured.order_id].status == "PREPARED"


@pytest.mark.parametrize(
    ("address", "reason"),
    [
        ({"country": "US", "postalCode": "00000"}, "shipping_failed: address undeliverable"),
        ({"country": "AQ"}, "shipping_failed: no carrier delivers to 'AQ'"),
    ],
)
def test_prepare_fails_an_undeliverable_order(address: dict[str, str], reason: str) -> None:
    store = FakeShipments()
    captured = payment_captured(address=address)

    [emitted] = shipping.prepare(captured, store, 0.0)

    assert emitted.type is EventType.SHIPPING_FAILED
    assert emitted.data["reason"].startswith(reason)
    shipment = store.shipments[captured.order_id]
    assert (shipment.status, shipment.label_id) == ("FAILED", "")


@pytest.mark.parametrize("address", [None, {"country": "US", "postalCode": "00000"}])
def test_prepare_twice_is_a_no_op(address: dict[str, str] | None) -> None:
    store = FakeShipments()

    handled_twice(
        lambda e: shipping.prepare(e, store, 0.0),
        payment_captured(address=address),
        lambda: store.shipments,
    )


def test_the_first_delivery_decides_the_shipment() -> None:
    store = FakeShipments()
    captured = payment_captured()
    first = shipping.prepare(captured, store, failure_rate=1.0)

    assert shipping.prepare(captured, store, failure_rate=0.0) == first
    assert first[0].type is EventType.SHIPPING_FAILED


# -- order status --------------------------------------------------------------------------


@pytest.fixture
def order() -> OrderRecord:
    return OrderRecord(new_id(), random.randint(1, 10_000), OrderStatus.PENDING, 11_997)


@pytest.fixture
def orders(order: OrderRecord) -> FakeOrders:
    return FakeOrders(order)


def saga_event(event_type: EventType, order: OrderRecord) -> Event:
    data: dict[str, Any] = {
        EventType.INVENTORY_RESERVED: order_facts(customer_id=order.customer_id),
        EventType.PAYMENT_CAPTURED: {
            **order_facts(customer_id=order.customer_id),
            "paymentId": payment_id(order.order_id),
        },
        EventType.SHIPPING_PREPARED: {"labelId": label_id(order.order_id)},
        EventType.NOTIFICATION_SENT: {"template": "OrderConfirmed", "streamId": "1-1"},
        EventType.PAYMENT_REFUNDED: {"reason": "shipping_failed: x", "amountCents": 11_997},
        EventType.PAYMENT_DECLINED: {"reason": "payment_declined: limit", "amountCents": 11_997},
    }.get(event_type, {"reason": f"{event_type.short}: reason"})
    return create_event(event_type, order.order_id, **data)


def track_all(orders: FakeOrders, events: list[Event]) -> list[tuple[OrderStatus, list[Event]]]:
    """Track each event; the order's status and the emitted events after each one."""
    seen = []
    for event in events:
        emitted = order_status.track(event, orders)
        seen.append((orders.committed.orders[event.order_id].status, emitted))
    return seen


def test_track_follows_the_happy_path_and_confirms_once(
    order: OrderRecord, orders: FakeOrders
) -> None:
    shipped = saga_event(EventType.SHIPPING_PREPARED, order)
    events = [
        saga_event(EventType.INVENTORY_RESERVED, order),
        saga_event(EventType.PAYMENT_CAPTURED, order),
        shipped,
        saga_event(EventType.NOTIFICATION_SENT, order),
    ]

    seen = track_all(orders, events)

    assert [status for status, _ in seen] == [
        OrderStatus.RESERVED,
        OrderStatus.PAID,
        OrderStatus.CONFIRMED,
        OrderStatus.CONFIRMED,
    ]
    assert [emitted for _, emitted in seen] == [
        [],
        [],
        [
            Event(
                EventType.ORDER_CONFIRMED,
                derived_event_id(shipped.id, EventType.ORDER_CONFIRMED),
                order.order_id,
                {
                    "orderId": order.order_id,
                    "customerId": order.customer_id,
                    "totalCents": 11_997,
                },
            )
        ],
        [],
    ]
    timeline = orders.committed.timeline[order.order_id]
    assert [(s.step, s.status) for s in timeline] == [
        ("inventory.reserved", OrderStatus.RESERVED),
        ("payment.captured", OrderStatus.PAID),
        ("shipping.prepared", OrderStatus.CONFIRMED),
        ("notification.sent", OrderStatus.CONFIRMED),
    ]
    assert timeline[1].detail == {"paymentId": payment_id(order.order_id)}
    assert timeline[2].detail == {"labelId": label_id(order.order_id)}


def test_track_cancels_a_rejected_order(order: OrderRecord, orders: FakeOrders) -> None:
    rejected = saga_event(EventType.INVENTORY_REJECTED, order)

    [emitted] = order_status.track(rejected, orders)

    assert emitted.type is EventType.ORDER_CANCELLED
    assert emitted.id == derived_event_id(rejected.id, EventType.ORDER_CANCELLED)
    assert emitted.data == {
        "orderId": order.order_id,
        "customerId": order.customer_id,
        "reason": "inventory.rejected: reason",
    }
    stored = orders.committed.orders[order.order_id]
    assert (stored.status, stored.reason) == (OrderStatus.CANCELLED, "inventory.rejected: reason")


def test_track_takes_out_of_order_events_in_its_stride(
    order: OrderRecord, orders: FakeOrders
) -> None:
    # The release (inventory topic) overtakes the decline that caused it (payment topic).
    events = [
        saga_event(EventType.INVENTORY_RELEASED, order),
        saga_event(EventType.PAYMENT_DECLINED, order),
        saga_event(EventType.INVENTORY_RESERVED, order),
    ]

    seen = track_all(orders, events)

    assert [status for status, _ in seen] == [OrderStatus.CANCELLED] * 3
    cancelled = [e for _, emitted in seen for e in emitted]
    assert [e.type for e in cancelled] == [EventType.ORDER_CANCELLED]
    assert len(orders.committed.timeline[order.order_id]) == 3


def test_track_cancels_after_a_shipping_failure_is_compensated(
    order: OrderRecord, orders: FakeOrders
) -> None:
    events = [
        saga_event(EventType.INVENTORY_RESERVED, order),
        saga_event(EventType.PAYMENT_CAPTURED, order),
        saga_event(EventType.SHIPPING_FAILED, order),
        saga_event(EventType.PAYMENT_REFUNDED, order),
        saga_event(EventType.INVENTORY_RELEASED, order),
    ]

    seen = track_all(orders, events)

    assert [status for status, _ in seen] == [
        OrderStatus.RESERVED,
        OrderStatus.PAID,
        OrderStatus.CANCELLING,
        OrderStatus.CANCELLING,
        OrderStatus.CANCELLED,
    ]
    assert [e.type for _, emitted in seen for e in emitted] == [EventType.ORDER_CANCELLED]


def test_a_late_payment_does_not_undo_cancelling(order: OrderRecord, orders: FakeOrders) -> None:
    seen = track_all(
        orders,
        [
            saga_event(EventType.SHIPPING_FAILED, order),
            saga_event(EventType.PAYMENT_CAPTURED, order),
        ],
    )

    assert [status for status, _ in seen] == [OrderStatus.CANCELLING, OrderStatus.CANCELLING]


@pytest.mark.parametrize("event_type", [EventType.SHIPPING_PREPARED, EventType.INVENTORY_REJECTED])
def test_track_twice_is_a_no_op_and_re_emits(
    order: OrderRecord, orders: FakeOrders, event_type: EventType
) -> None:
    paid = [EventType.INVENTORY_RESERVED, EventType.PAYMENT_CAPTURED]
    before = [] if event_type is EventType.INVENTORY_REJECTED else paid
    track_all(orders, [saga_event(t, order) for t in before])

    emitted = handled_twice(
        lambda e: order_status.track(e, orders),
        saga_event(event_type, order),
        lambda: orders.committed,
    )

    assert len(emitted) == 1
    assert len(orders.committed.timeline[order.order_id]) == len(before) + 1


def test_track_of_an_unknown_order_raises_and_records_nothing(orders: FakeOrders) -> None:
    stranger = OrderRecord(new_id(), 1, OrderStatus.PENDING, 0)

    with pytest.raises(UnknownOrder):
        order_status.track(saga_event(EventType.INVENTORY_RESERVED, stranger), orders)

    assert orders.committed.processed == {}
    assert orders.commits == 0


def test_a_shipment_alone_never_confirms_an_order(order: OrderRecord, orders: FakeOrders) -> None:
    """A forged (or early) shipping.prepared is recorded; the order stays as it was."""
    [(status, emitted)] = track_all(orders, [saga_event(EventType.SHIPPING_PREPARED, order)])

    assert (status, emitted) == (OrderStatus.PENDING, [])
    assert [s.step for s in orders.committed.timeline[order.order_id]] == ["shipping.prepared"]


CONFIRMING = (EventType.INVENTORY_RESERVED, EventType.PAYMENT_CAPTURED, EventType.SHIPPING_PREPARED)


@pytest.mark.parametrize("arrival", list(itertools.permutations(CONFIRMING)))
def test_an_order_is_confirmed_once_its_facts_are_all_recorded_whatever_their_order(
    order: OrderRecord, orders: FakeOrders, arrival: tuple[EventType, ...]
) -> None:
    events = [saga_event(t, order) for t in arrival]

    seen = track_all(orders, events)

    assert [status is OrderStatus.CONFIRMED for status, _ in seen] == [False, False, True]
    assert [[e.type for e in emitted] for _, emitted in seen] == [
        [], [], [EventType.ORDER_CONFIRMED]
    ]  # fmt: skip
    assert seen[-1][1][0].id == derived_event_id(events[-1].id, EventType.ORDER_CONFIRMED)


@pytest.mark.parametrize(
    ("recorded", "contradicting"),
    [
        ([EventType.INVENTORY_RESERVED], EventType.INVENTORY_REJECTED),
        ([EventType.INVENTORY_REJECTED], EventType.PAYMENT_CAPTURED),
        ([EventType.PAYMENT_DECLINED], EventType.PAYMENT_CAPTURED),
        ([EventType.PAYMENT_CAPTURED], EventType.PAYMENT_DECLINED),
        ([EventType.SHIPPING_FAILED], EventType.SHIPPING_PREPARED),
        ([EventType.SHIPPING_PREPARED], EventType.PAYMENT_REFUNDED),
        ([EventType.SHIPPING_PREPARED], EventType.INVENTORY_RELEASED),
        ([EventType.PAYMENT_DECLINED], EventType.SHIPPING_PREPARED),
        # the forgery: shipping.failed for a confirmed order
        ([*CONFIRMING], EventType.SHIPPING_FAILED),
    ],
)
def test_an_event_off_every_saga_path_is_a_contradiction(
    order: OrderRecord, orders: FakeOrders, recorded: list[EventType], contradicting: EventType
) -> None:
    track_all(orders, [saga_event(t, order) for t in recorded])

    refused(
        "saga-path",
        lambda: order_status.track(saga_event(contradicting, order), orders),
        lambda: orders.committed,
    )


def test_a_fact_recorded_by_another_event_is_a_contradiction(
    order: OrderRecord, orders: FakeOrders
) -> None:
    reserved = saga_event(EventType.INVENTORY_RESERVED, order)
    track_all(orders, [reserved])

    refused(
        "once",
        lambda: order_status.track(saga_event(EventType.INVENTORY_RESERVED, order), orders),
        lambda: orders.committed,
    )
    assert order_status.track(reserved, orders) == []  # its duplicate is still a no-op


@pytest.mark.parametrize(
    "facts",
    [{"totalCents": 1}, {"customerId": 1}],
)
def test_a_capture_of_another_amount_or_customer_is_a_contradiction(
    order: OrderRecord, orders: FakeOrders, facts: dict[str, Any]
) -> None:
    captured = saga_event(EventType.PAYMENT_CAPTURED, order)
    forged = Event(captured.type, captured.id, order.order_id, {**captured.data, **facts})

    refused(
        "order-facts",
        lambda: order_status.track(forged, orders),
        lambda: orders.committed,
    )


def test_the_timeline_is_shown_in_causal_order() -> None:
    intake = FakeIntake()
    accepted = place_order(order_body(), None, intake, LIMITS)
    assert accepted.event is not None
    data = accepted.event.data
    arrival = [
        create_event(EventType.NOTIFICATION_SENT, accepted.order_id, template="T", streamId="1"),
        create_event(EventType.SHIPPING_PREPARED, accepted.order_id, labelId="L"),
        create_event(EventType.PAYMENT_CAPTURED, accepted.order_id, paymentId="P", **data),
        create_event(EventType.INVENTORY_RESERVED, accepted.order_id, **data),
    ]
    for event in arrival:
        order_status.track(event, intake.status)

    view = intake.view(accepted.order_id)

    assert view is not None and view["status"] == "CONFIRMED"
    assert [s["step"] for s in view["timeline"]] == [
        "order.created",
        "inventory.reserved",
        "payment.captured",
        "shipping.prepared",
        "notification.sent",
    ]


# -- notification --------------------------------------------------------------------------


def test_notify_enqueues_the_confirmation() -> None:
    outbox = FakeNotifications()
    confirmed = create_event(EventType.ORDER_CONFIRMED, new_id(), customerId=7, totalCents=1)

    [emitted] = notification.notify(confirmed, outbox)

    [(entry_id, sent)] = outbox.stream
    assert (sent.template, sent.customer_id, sent.reason) == ("OrderConfirmed", 7, "")
    assert emitted == Event(
        EventType.NOTIFICATION_SENT,
        derived_event_id(confirmed.id, EventType.NOTIFICATION_SENT),
        confirmed.order_id,
        {"orderId": confirmed.order_id, "template": "OrderConfirmed", "streamId": entry_id},
    )


def test_notify_enqueues_the_cancellation_with_its_reason() -> None:
    outbox = FakeNotifications()
    cancelled = create_event(EventType.ORDER_CANCELLED, new_id(), customerId=7, reason="no stock")

    [emitted] = notification.notify(cancelled, outbox)

    [(_, sent)] = outbox.stream
    assert (sent.template, sent.reason) == ("OrderCancelled", "no stock")
    assert emitted.data["template"] == "OrderCancelled"


def test_notify_twice_is_a_no_op() -> None:
    outbox = FakeNotifications()
    confirmed = create_event(EventType.ORDER_CONFIRMED, new_id(), customerId=7)

    handled_twice(lambda e: notification.notify(e, outbox), confirmed, lambda: list(outbox.stream))
    assert len(outbox.stream) == 1


def test_notify_refuses_an_event_without_a_template() -> None:
    with pytest.raises(KeyError):
        notification.notify(
            create_event(EventType.PAYMENT_CAPTURED, new_id(), customerId=7), FakeNotifications()
        )


# -- placing an order ----------------------------------------------------------------------


def order_body(**overrides: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "customerId": random.randint(1, 10_000),
        "items": [{"sku": "SKU-42", "quantity": 2}, {"sku": "SKU-1003", "quantity": 1}],
        "shippingAddress": {"country": "GB", "postalCode": "SW1A 1AA"},
    }
    body.update(overrides)
    return body


def test_place_order_prices_and_accepts_the_order() -> None:
    intake = FakeIntake()
    body = order_body()

    accepted = place_order(body, None, intake, LIMITS)

    assert accepted.created
    assert accepted.status is OrderStatus.PENDING
    assert uuid.UUID(accepted.order_id)
    created = accepted.event
    assert created is not None
    assert created.type is EventType.ORDER_CREATED
    assert created.id == derived_event_id(accepted.order_id, EventType.ORDER_CREATED)
    assert created.data == {
        "orderId": accepted.order_id,
        "customerId": body["customerId"],
        "items": [
            {"sku": "SKU-1003", "quantity": 1, "unitPriceCents": 899},
            {"sku": "SKU-42", "quantity": 2, "unitPriceCents": 2_500},
        ],
        "totalCents": 5_899,
        "shippingAddress": {"country": "GB", "postalCode": "SW1A 1AA"},
    }
    assert intake.outbox == [created]


def test_place_order_refuses_an_invalid_body_and_stores_nothing() -> None:
    intake = FakeIntake()

    with pytest.raises(InvalidOrder):
        place_order(order_body(customerId=0), None, intake, LIMITS)

    assert intake.orders == {}


def test_place_order_refuses_a_sku_the_shop_does_not_sell() -> None:
    intake = FakeIntake()

    with pytest.raises(InvalidOrder) as raised:
        place_order(order_body(items=[{"sku": "SKU-NOPE", "quantity": 1}]), None, intake, LIMITS)

    assert [e.pointer for e in raised.value.errors] == ["/items"]
    assert intake.orders == {}


def test_place_order_accepts_a_sold_but_unstocked_sku() -> None:  # inventory rejects it later
    accepted = place_order(
        order_body(items=[{"sku": "SKU-RETIRED", "quantity": 1}]), None, FakeIntake(), LIMITS
    )

    assert accepted.created


def test_place_order_twice_with_one_key_accepts_it_once() -> None:
    intake = FakeIntake()
    body, key = order_body(), new_id()
    first = place_order(body, key, intake, LIMITS)

    again = place_order(copy.deepcopy(body), key, intake, LIMITS)

    assert again.order_id == first.order_id
    assert (again.created, again.event) == (False, None)
    assert list(intake.orders) == [first.order_id]
    assert len(intake.outbox) == 1


def test_place_order_refuses_a_reused_key_with_another_body() -> None:
    intake = FakeIntake()
    key = new_id()
    place_order(order_body(customerId=1), key, intake, LIMITS)

    with pytest.raises(IdempotencyConflict):
        place_order(order_body(customerId=2), key, intake, LIMITS)

    assert len(intake.orders) == 1


def test_place_order_without_a_key_accepts_each_request() -> None:
    intake = FakeIntake()
    body = order_body()

    first = place_order(body, None, intake, LIMITS)
    second = place_order(body, None, intake, LIMITS)

    assert first.order_id != second.order_id
    assert len(intake.orders) == 2


def test_order_line_prices_survive_the_event() -> None:
    reserved = inventory_reserved(items=[("SKU-42", 3, 2_500)])

    assert inventory.lines_of(reserved.data) == (OrderLine("SKU-42", 3, 2_500),)
