"""The read models (``adapters/*_views.py``) read what the adapters write: an order, its
reservation, payment, shipment and notification written through the write side, read back
through the console's and the benchmark's queries, on the real servers."""

from __future__ import annotations

import uuid

import pytest

from minimart.adapters import mongo_views, postgres_views, redis_views
from minimart.bootstrap import Container
from minimart.domain.orders import OrderLine, OrderStatus
from minimart.handlers.ports import Notification, Payment, Shipment
from minimart.settings import Settings
from tests.contract.orders_db import STOCKED, PostgresOrdersDatabase, order_body, placed


@pytest.fixture(scope="module")
def stores(postgres: Settings, mongo: Settings, redis_server: Settings) -> Settings:
    return postgres


@pytest.fixture(scope="module")
def order(stores: Settings, container: Container) -> str:
    """An order with a reservation, a payment, a shipment and a notification."""
    accepted = placed(PostgresOrdersDatabase(container), order_body(customer_id=77, quantity=2))
    order_id = accepted.order_id
    with container.inventory_uow() as inventory:
        inventory.reserve(order_id, [OrderLine(STOCKED.sku, 2)])
        inventory.commit()
    with container.payments_uow() as payments:
        payments.save_payment(Payment(order_id, f"PAY-{order_id[:8]}", 77, 2 * STOCKED.price_cents,
                                      "CAPTURED"))  # fmt: skip
        payments.commit()
    container.shipments.prepare_once(Shipment(order_id, "LBL-1", "PREPARED", "", ()))
    container.notifications.enqueue_once(
        f"{order_id}:OrderConfirmed", Notification(order_id, 77, "OrderConfirmed", "")
    )
    return order_id


def test_the_orders_view_reads_an_accepted_order(stores: Settings, order: str) -> None:
    with postgres_views.connect(stores.orders_dsn) as conn:
        [row] = postgres_views.orders(conn, {order})
        everything = postgres_views.orders(conn)
        none = postgres_views.orders(conn, {str(uuid.uuid4())})
    assert (row.order_id, row.status, row.total_cents) == (
        order, OrderStatus.PENDING, 2 * STOCKED.price_cents,
    )  # fmt: skip
    assert row.lines == (postgres_views.Line(STOCKED.sku, 2),)
    assert order in {o.order_id for o in everything} and none == []


def test_the_inventory_views_read_reservations_and_their_stock(
    stores: Settings, order: str
) -> None:
    with postgres_views.connect(stores.inventory_dsn) as conn:
        reservations = postgres_views.reservations(conn, [order])
        effects = postgres_views.order_reservations(conn, order)
        [stock] = postgres_views.stock(conn, {STOCKED.sku})
    assert reservations == [postgres_views.ReservationRow(order, STOCKED.sku, 2, "RESERVED")]
    assert effects == [{"sku": STOCKED.sku, "quantity": 2, "state": "RESERVED"}]
    assert stock.sku == STOCKED.sku and stock.reservations_held >= 2
    assert stock.reserved == stock.reservations_held


def test_the_payments_views_read_a_payment(stores: Settings, order: str) -> None:
    with postgres_views.connect(stores.payments_dsn) as conn:
        rows = postgres_views.payments(conn, [order])
        [effect] = postgres_views.order_payments(conn, order)
    assert rows == [postgres_views.PaymentRow(order, "CAPTURED", 2 * STOCKED.price_cents)]
    assert (effect["payment_id"], effect["status"]) == (f"PAY-{order[:8]}", "CAPTURED")


def test_the_shipment_views_read_a_shipment(stores: Settings, order: str) -> None:
    with mongo_views.connect(stores.mongo_url) as shipments:
        rows = mongo_views.shipments(shipments, [order])
        document = mongo_views.shipment_document(shipments, order)
        missing = mongo_views.shipment_document(shipments, str(uuid.uuid4()))
    assert rows == [mongo_views.ShipmentRow(order, "PREPARED")]
    assert document is not None and document["labelId"] == "LBL-1"
    assert "emitted" not in document and missing is None


def test_the_notification_views_read_the_stream(stores: Settings, order: str) -> None:
    with redis_views.connect(stores.redis_url) as client:
        everything = redis_views.notifications(client)
        [mine] = redis_views.order_notifications(client, order)
    assert redis_views.NotificationRow(order, "OrderConfirmed", "77", mine["id"]) in everything
    assert mine["template"] == "OrderConfirmed"


def test_the_benchmarks_views_read_an_orders_progress(stores: Settings, order: str) -> None:
    with postgres_views.connect(stores.orders_dsn) as conn:
        [(order_id, status, changed, created, notified)] = postgres_views.order_progress(
            conn, [order]
        )
        moments = postgres_views.timeline_moments(conn, [order])
        assert created is not None
        accepted, final, last = postgres_views.orders_between(conn, created - 1, created + 1)
    assert (order_id, status, notified) == (order, "PENDING", None)
    assert changed + 1 >= created
    assert [(o, step) for o, step, _ in moments] == [(order, "order.created")]
    assert accepted >= 1 and final >= 0 and (last is None or last > 0)
