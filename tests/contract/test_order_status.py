"""Order-status's unit of work (``OrderUnitOfWork``): one suite, on the fake and PostgreSQL."""

from __future__ import annotations

import uuid
from typing import Any

import psycopg
import pytest

from minimart.adapters.postgres import ORDERS_SCHEMA, PostgresOrders, migrate, open_pool
from minimart.bootstrap import Container
from minimart.catalog import Event, EventType
from minimart.domain.orders import OrderStatus
from minimart.domain.saga import Contradiction
from minimart.handlers import order_status
from minimart.local import servers
from tests.contract.orders_db import (
    FakeOrdersDatabase,
    OrdersDatabase,
    PostgresOrdersDatabase,
    placed,
)
from tests.contract.support import blocked, concurrently, delivered, new_id


def event(event_type: EventType, order_id: str, **data: Any) -> Event:
    return Event(event_type, new_id(), order_id, {"orderId": order_id, **data})


def steps(db: OrdersDatabase, order_id: str) -> list[tuple[str, str]]:
    view = db.intake.view(order_id)
    assert view is not None
    return sorted((s["step"], s["status"]) for s in view["timeline"])


class OrderStatusContract:
    @pytest.fixture
    def db(self) -> OrdersDatabase:
        raise NotImplementedError

    def test_lock_order_reads_the_accepted_order(self, db: OrdersDatabase) -> None:
        accepted = placed(db)
        assert accepted.event is not None
        with db.uow() as uow:
            order = uow.lock_order(accepted.order_id)
            outcome, same = uow.outcome_and_order(new_id(), accepted.order_id)
            unknown = uow.lock_order(new_id())
        assert order is not None and order == same and outcome is None and unknown is None
        data = accepted.event.data
        assert (order.order_id, order.customer_id, order.status, order.total_cents) == (
            accepted.order_id, data["customerId"], OrderStatus.PENDING, data["totalCents"],
        )  # fmt: skip
        assert order.reason is None and order.created_at is not None

    def test_set_status_keeps_the_rest_of_the_order(self, db: OrdersDatabase) -> None:
        order_id = placed(db).order_id
        with db.uow() as uow:
            before = uow.lock_order(order_id)
            uow.set_status(order_id, OrderStatus.CANCELLED, "payment_declined: limit")
            uow.commit()
        with db.uow() as uow:
            after = uow.lock_order(order_id)
        assert before is not None and after is not None
        assert (after.status, after.reason) == (OrderStatus.CANCELLED, "payment_declined: limit")
        assert (after.customer_id, after.total_cents, after.created_at) == (
            before.customer_id, before.total_cents, before.created_at,
        )  # fmt: skip

    def test_leaving_without_commit_keeps_nothing(self, db: OrdersDatabase) -> None:
        order_id, event_id = placed(db).order_id, new_id()
        with db.uow() as uow:
            uow.lock_order(order_id)
            uow.set_status(order_id, OrderStatus.RESERVED, None)
            uow.add_timeline(order_id, event(EventType.INVENTORY_RESERVED, order_id),
                             OrderStatus.RESERVED, {})  # fmt: skip
            uow.record_outcome(event_id, [])
        with db.uow() as uow:
            order = uow.lock_order(order_id)
            assert order is not None and order.status is OrderStatus.PENDING
            assert uow.outcome_of(event_id) is None
        assert steps(db, order_id) == [("order.created", "PENDING")]

    def test_an_outcome_is_recorded_once(self, db: OrdersDatabase) -> None:
        event_id = new_id()
        with db.uow() as uow:
            uow.record_outcome(event_id, [])
            uow.commit()
        with pytest.raises(db.integrity_error), db.uow() as uow:
            uow.record_outcome(event_id, [])
            uow.commit()
        with db.uow() as uow:
            assert uow.outcome_of(event_id) == []

    def test_a_replayed_event_changes_nothing(self, db: OrdersDatabase) -> None:
        order_id = placed(db).order_id
        rejected = event(EventType.INVENTORY_REJECTED, order_id, reason="unknown_sku: X")
        first = order_status.track(rejected, db.uow())
        view = db.intake.view(order_id)
        assert order_status.track(rejected, db.uow()) == first
        assert db.intake.view(order_id) == view
        assert [e.type for e in first] == [EventType.ORDER_CANCELLED]

    def test_concurrent_duplicates_of_one_event_close_the_order_once(
        self, db: OrdersDatabase
    ) -> None:
        order_id = placed(db).order_id
        rejected = event(EventType.INVENTORY_REJECTED, order_id, reason="insufficient_stock: X")

        deliveries = concurrently(
            6, lambda _: delivered(lambda: order_status.track(rejected, db.uow()))
        )

        assert all(d.result == deliveries[0].result for d in deliveries)
        assert [e.type for e in deliveries[0].result] == [EventType.ORDER_CANCELLED]
        assert steps(db, order_id) == [("inventory.rejected", "CANCELLED"),
                                       ("order.created", "PENDING")]  # fmt: skip
        errors = [e for d in deliveries for e in d.errors]
        assert all(isinstance(e, db.integrity_error) for e in errors), errors

    def test_concurrent_steps_of_one_order_never_move_it_back(self, db: OrdersDatabase) -> None:
        """lock_order serialises an order's events: the last writer cannot undo a later
        status, and the order is confirmed exactly once."""
        order_id = placed(db).order_id
        events = [
            event(EventType.INVENTORY_RESERVED, order_id),
            event(EventType.PAYMENT_CAPTURED, order_id, paymentId="pay"),
            event(EventType.SHIPPING_PREPARED, order_id, labelId="label"),
        ]

        results = concurrently(
            3, lambda i: delivered(lambda: order_status.track(events[i], db.uow())).result
        )

        emitted = [e.type for result in results for e in result]
        assert emitted == [EventType.ORDER_CONFIRMED]
        with db.uow() as uow:
            order = uow.lock_order(order_id)
        assert order is not None and order.status is OrderStatus.CONFIRMED
        assert len(steps(db, order_id)) == 4

    def test_a_timeline_step_and_its_fact_are_recorded_once_per_event(
        self, db: OrdersDatabase
    ) -> None:
        order_id = placed(db).order_id
        reserved = event(EventType.INVENTORY_RESERVED, order_id)
        for _ in range(2):
            with db.uow() as uow:
                uow.add_timeline(order_id, reserved, OrderStatus.RESERVED, {})
                uow.commit()
        assert steps(db, order_id) == [("inventory.reserved", "RESERVED"),
                                       ("order.created", "PENDING")]  # fmt: skip
        with db.uow() as uow:
            order = uow.lock_order(order_id)
            _, same = uow.outcome_and_order(new_id(), order_id)
        assert order is not None and order.facts == {EventType.INVENTORY_RESERVED}
        assert same == order

    def test_early_facts_are_kept_and_confirm_once_all_are_recorded(
        self, db: OrdersDatabase
    ) -> None:
        """shipping.prepared and payment.captured overtake inventory.reserved: the order is
        confirmed by the last of the three; the timeline is shown in causal order."""
        accepted = placed(db)
        assert accepted.event is not None
        order_id, data = accepted.order_id, dict(accepted.event.data)
        arrival = [
            event(EventType.SHIPPING_PREPARED, order_id, labelId="label"),
            event(EventType.PAYMENT_CAPTURED, order_id, paymentId="pay", **data),
            event(EventType.INVENTORY_RESERVED, order_id, **data),
        ]

        emitted = [order_status.track(e, db.uow()) for e in arrival]

        assert [[e.type for e in out] for out in emitted] == [
            [], [], [EventType.ORDER_CONFIRMED]
        ]  # fmt: skip
        view = db.intake.view(order_id)
        assert view is not None and view["status"] == "CONFIRMED"
        assert [(s["step"], s["status"]) for s in view["timeline"]] == [
            ("order.created", "PENDING"),
            ("inventory.reserved", "CONFIRMED"),
            ("payment.captured", "PAID"),
            ("shipping.prepared", "PENDING"),
        ]

    def test_an_event_that_contradicts_the_order_changes_nothing(self, db: OrdersDatabase) -> None:
        """shipping.failed for a confirmed order (the issue's forgery), then a capture of
        another amount: each refused, the order, its timeline and the outcomes as they were."""
        accepted = placed(db)
        assert accepted.event is not None
        order_id, data = accepted.order_id, dict(accepted.event.data)
        for e in (
            event(EventType.INVENTORY_RESERVED, order_id, **data),
            event(EventType.PAYMENT_CAPTURED, order_id, paymentId="pay", **data),
            event(EventType.SHIPPING_PREPARED, order_id, labelId="label"),
        ):
            order_status.track(e, db.uow())
        view = db.intake.view(order_id)
        failed = event(EventType.SHIPPING_FAILED, order_id, reason="shipping_failed: forged")
        other = event(EventType.PAYMENT_CAPTURED, order_id, **{**data, "totalCents": 1})

        with pytest.raises(Contradiction, match=r"saga-path: shipping\.failed contradicts"):
            order_status.track(failed, db.uow())
        with pytest.raises(Contradiction, match="order-facts: totalCents 1"):
            order_status.track(other, db.uow())

        assert db.intake.view(order_id) == view
        with db.uow() as uow:
            assert (uow.outcome_of(failed.id), uow.outcome_of(other.id)) == (None, None)

    def test_an_event_that_waited_for_the_order_sees_the_facts_recorded_meanwhile(
        self, db: OrdersDatabase
    ) -> None:
        """shipping.prepared waits for the order's lock while another transaction records
        reserved and captured: once it has the lock it reads them (the facts are on the row
        it locks, not in a snapshot older than the wait) and confirms."""
        order_id = placed(db).order_id
        prepared = event(EventType.SHIPPING_PREPARED, order_id, labelId="label")
        holder = db.uow()
        with holder:
            holder.lock_order(order_id)
            for fact in (EventType.INVENTORY_RESERVED, EventType.PAYMENT_CAPTURED):
                holder.add_timeline(order_id, event(fact, order_id), OrderStatus.PAID, {})
            holder.set_status(order_id, OrderStatus.PAID, None)

            emitted = blocked(lambda: order_status.track(prepared, db.uow()), holder.commit)

        assert [e.type for e in emitted] == [EventType.ORDER_CONFIRMED]

    def test_a_duplicate_that_waited_for_its_twin_is_answered_not_refused(
        self, db: OrdersDatabase
    ) -> None:
        """The twin records the fact and its outcome while the duplicate waits for the lock:
        the duplicate then finds the fact recorded, and answers the twin's outcome instead of
        refusing it as recorded twice."""
        order_id = placed(db).order_id
        rejected = event(EventType.INVENTORY_REJECTED, order_id, reason="unknown_sku: X")
        twin = db.uow()
        with twin:
            twin.lock_order(order_id)
            twin.add_timeline(order_id, rejected, OrderStatus.CANCELLED, {})
            twin.record_outcome(rejected.id, [])

            emitted = blocked(lambda: order_status.track(rejected, db.uow()), twin.commit)

        assert emitted == []


class TestFakeOrderStatus(OrderStatusContract):
    @pytest.fixture
    def db(self) -> OrdersDatabase:
        return FakeOrdersDatabase()


@pytest.mark.integration
class TestPostgresOrderStatus(OrderStatusContract):
    @pytest.fixture
    def db(self, postgres: object, container: Container) -> OrdersDatabase:
        return PostgresOrdersDatabase(container)


@pytest.mark.integration
def test_an_older_orders_database_gets_the_facts_its_timelines_hold(
    postgres: object, container: Container
) -> None:
    """The migration adds ``orders.steps`` to a database made before it, filled from each
    order's timeline, so an order in flight across the upgrade keeps what it recorded."""
    name = f"minimart_older_{uuid.uuid4().hex[:12]}"
    older_schema = ORDERS_SCHEMA[: ORDERS_SCHEMA.index("-- The saga's facts")]
    base = container.settings.orders_dsn  # the orders role's login: it owns the new database
    superuser = servers.Postgres(container.settings).dsn()
    with psycopg.connect(superuser, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}" OWNER minimart_orders'.encode())
    try:
        dsn = base.rsplit("/", 1)[0] + "/" + name
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute(older_schema.encode())
            order_id = new_id()
            conn.execute(
                "INSERT INTO orders (id, customer_id, status, total_cents, items,"
                " shipping_address, fingerprint) VALUES (%s, 1, 'PAID', 1, '[]', '{}', '')",
                (order_id,),
            )
            for step in ("order.created", "inventory.reserved", "payment.captured"):
                conn.execute(
                    "INSERT INTO order_timeline (order_id, event_id, step, status)"
                    " VALUES (%s, %s, %s, 'PAID')",
                    (order_id, new_id(), step),
                )
        pool = open_pool(dsn, "older", max_size=1)
        try:
            migrate(pool, ORDERS_SCHEMA)
            migrate(pool, ORDERS_SCHEMA)  # a second start changes nothing
            with PostgresOrders(pool, consumer="order-status") as uow:
                order = uow.lock_order(order_id)
        finally:
            pool.close()
        assert order is not None
        assert order.facts == {
            EventType.ORDER_CREATED, EventType.INVENTORY_RESERVED, EventType.PAYMENT_CAPTURED
        }  # fmt: skip
    finally:
        with psycopg.connect(superuser, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'.encode())
