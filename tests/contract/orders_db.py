"""The orders database as the contract suite sees it: the ingress's intake (with its outbox)
and order-status's unit of work, on the fake and on PostgreSQL."""

from __future__ import annotations

import random
import uuid
from collections.abc import Mapping, Sequence
from typing import Any, Protocol

import psycopg

from minimart.bootstrap import Container
from minimart.catalog import Event
from minimart.domain.orders import OrderLimits
from minimart.handlers.orders import Accepted, place_order
from minimart.handlers.ports import OrderUnitOfWork
from minimart.seed import PRODUCTS
from tests.fakes import FakeIntake, FakeOrders, IntegrityViolation

LIMITS = OrderLimits(max_items=50, max_quantity_per_line=1_000)
STOCKED = next(p for p in PRODUCTS if p.stock is not None and p.stock >= 1_000)


class Intake(Protocol):
    def prices(self, skus: Sequence[str]) -> dict[str, int]: ...
    def accept(self, event: Event, idempotency_key: str | None, fingerprint: str) -> Accepted: ...
    def view(self, order_id: str) -> Mapping[str, Any] | None: ...
    def mark_published(self, event_ids: Sequence[str]) -> None: ...
    def claim_unpublished(self, older_than_s: float, limit: int = 100) -> list[Event]: ...


class OrdersDatabase(Protocol):
    integrity_error: type[Exception]

    @property
    def intake(self) -> Intake: ...
    def uow(self) -> OrderUnitOfWork: ...


class FakeOrdersDatabase:
    integrity_error: type[Exception] = IntegrityViolation

    def __init__(self) -> None:
        self.orders = FakeOrders()
        self.intake: Intake = FakeIntake(orders=self.orders)

    def uow(self) -> OrderUnitOfWork:
        return self.orders.another()


class PostgresOrdersDatabase:
    integrity_error: type[Exception] = psycopg.IntegrityError

    def __init__(self, container: Container) -> None:
        self.container = container
        self.intake: Intake = container.intake

    def uow(self) -> OrderUnitOfWork:
        return self.container.orders_uow()


def order_body(customer_id: int | None = None, quantity: int = 1) -> dict[str, Any]:
    return {
        "customerId": random.randint(10**9, 10**12) if customer_id is None else customer_id,
        "items": [{"sku": STOCKED.sku, "quantity": quantity}],
        "shippingAddress": {"name": "Ada", "city": "Springfield", "country": "US"},
    }


def placed(db: OrdersDatabase, body: Mapping[str, Any] | None = None,
           key: str | None = None) -> Accepted:  # fmt: skip
    """An order placed through the ingress's handler (priced, with a fresh order id)."""
    return place_order(dict(body or order_body()), key, db.intake, LIMITS)


def new_key() -> str:
    return str(uuid.uuid4())
