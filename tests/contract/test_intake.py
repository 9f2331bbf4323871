"""The order intake (the ingress's store): one suite, run on the fake and on PostgreSQL."""

from __future__ import annotations

import pytest

from minimart.bootstrap import Container
from minimart.domain.orders import OrderStatus
from minimart.handlers.orders import IdempotencyConflict
from tests.contract.orders_db import (
    STOCKED,
    FakeOrdersDatabase,
    OrdersDatabase,
    PostgresOrdersDatabase,
    new_key,
    order_body,
    placed,
)
from tests.contract.support import concurrently


def set_status(db: OrdersDatabase, order_id: str, status: OrderStatus, reason: str | None) -> None:
    with db.uow() as uow:
        assert uow.lock_order(order_id) is not None
        uow.set_status(order_id, status, reason)
        uow.commit()


class IntakeContract:
    @pytest.fixture
    def db(self) -> OrdersDatabase:
        raise NotImplementedError

    def test_prices_of_the_products_sold(self, db: OrdersDatabase) -> None:
        assert db.intake.prices([STOCKED.sku, "NOT-SOLD"]) == {STOCKED.sku: STOCKED.price_cents}

    def test_an_accepted_order_is_pending_with_its_first_step(self, db: OrdersDatabase) -> None:
        body = order_body(quantity=3)
        accepted = placed(db, body)
        assert accepted.created and accepted.status is OrderStatus.PENDING
        assert accepted.event is not None
        view = db.intake.view(accepted.order_id)
        assert view is not None
        assert (view["order_id"], view["customer_id"], view["status"], view["reason"]) == (
            accepted.order_id, body["customerId"], "PENDING", None,
        )  # fmt: skip
        assert view["items"] == accepted.event.data["items"]
        assert view["total_cents"] == 3 * STOCKED.price_cents
        assert view["shipping_address"] == body["shippingAddress"]
        assert [(s["step"], s["status"], s["event_id"]) for s in view["timeline"]] == [
            ("order.created", "PENDING", accepted.event.id)
        ]
        assert db.intake.view(accepted.event.id) is None  # an id of no order

    def test_a_replayed_request_answers_the_order_in_its_current_status(
        self, db: OrdersDatabase
    ) -> None:
        body, key = order_body(), new_key()
        first = placed(db, body, key)
        set_status(db, first.order_id, OrderStatus.RESERVED, None)

        again = placed(db, body, key)

        assert (again.order_id, again.status, again.created, again.event) == (
            first.order_id, OrderStatus.RESERVED, False, None,
        )  # fmt: skip

    def test_a_key_reused_for_another_body_is_refused(self, db: OrdersDatabase) -> None:
        key = new_key()
        first = placed(db, order_body(quantity=1), key)
        with pytest.raises(IdempotencyConflict):
            placed(db, order_body(quantity=2), key)
        view = db.intake.view(first.order_id)
        assert view is not None and view["total_cents"] == STOCKED.price_cents

    def test_without_a_key_every_request_is_a_new_order(self, db: OrdersDatabase) -> None:
        body = order_body()
        first, second = placed(db, body), placed(db, body)
        assert first.created and second.created and first.order_id != second.order_id

    def test_concurrent_requests_with_one_key_make_one_order(self, db: OrdersDatabase) -> None:
        body, key = order_body(), new_key()

        answers = concurrently(8, lambda _: placed(db, body, key))

        assert len({a.order_id for a in answers}) == 1
        assert [a.created for a in answers].count(True) == 1
        created = next(a.event for a in answers if a.created)
        assert created is not None
        pending = db.intake.claim_unpublished(0, limit=10_000)
        mine = [e.id for e in pending if e.data["customerId"] == body["customerId"]]
        assert mine == [created.id]  # one outbox record for the eight requests

    def test_the_view_follows_order_status(self, db: OrdersDatabase) -> None:
        accepted = placed(db)
        set_status(db, accepted.order_id, OrderStatus.CANCELLED, "insufficient_stock: SKU")
        view = db.intake.view(accepted.order_id)
        assert view is not None
        assert (view["status"], view["reason"]) == ("CANCELLED", "insufficient_stock: SKU")


class TestFakeIntake(IntakeContract):
    @pytest.fixture
    def db(self) -> OrdersDatabase:
        return FakeOrdersDatabase()


@pytest.mark.integration
class TestPostgresIntake(IntakeContract):
    @pytest.fixture
    def db(self, postgres: object, container: Container) -> OrdersDatabase:
        return PostgresOrdersDatabase(container)
