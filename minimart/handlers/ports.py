"""The interfaces handlers depend on. Adapters implement them; unit tests use fakes."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from types import TracebackType
from typing import Any, Protocol

from minimart.catalog import Event, EventType
from minimart.domain.orders import OrderLine, OrderStatus
from minimart.domain.rules import StockLevel


class UnitOfWork(Protocol):
    """One transaction. Idempotency lives inside it: the outcome of an event is recorded in
    the same transaction as the state change, and a duplicate reads it back."""

    def __enter__(self) -> UnitOfWork: ...

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None: ...

    def commit(self) -> None: ...

    def outcome_of(self, event_id: str) -> list[Event] | None:
        """The events already emitted for ``event_id``, or None if it was never processed."""

    def record_outcome(self, event_id: str, events: Sequence[Event]) -> None: ...


class InventoryUnitOfWork(UnitOfWork, Protocol):
    def __enter__(self) -> InventoryUnitOfWork: ...

    def lock_stock(self, skus: Sequence[str]) -> dict[str, StockLevel]:
        """Stock rows of ``skus``, locked until commit (in a fixed order: no deadlocks)."""

    def outcome_and_stock(
        self, event_id: str, skus: Sequence[str]
    ) -> tuple[list[Event] | None, dict[str, StockLevel]]:
        """``outcome_of(event_id)`` and ``lock_stock(skus)`` at once (one round trip)."""

    def reserve(self, order_id: str, lines: Sequence[OrderLine]) -> None: ...

    def release(self, order_id: str) -> list[OrderLine]:
        """Give an order's reserved stock back; the lines released (empty if none held)."""

    def ship(self, order_id: str) -> list[OrderLine]:
        """Move an order's reserved stock to shipped; the lines moved."""


class PaymentUnitOfWork(UnitOfWork, Protocol):
    def __enter__(self) -> PaymentUnitOfWork: ...

    def credit_limit(self, customer_id: int) -> int | None:
        """The customer's own limit in cents, or None to use the default."""

    def outcome_and_limit(
        self, event_id: str, customer_id: int
    ) -> tuple[list[Event] | None, int | None]:
        """``outcome_of(event_id)`` and ``credit_limit(customer_id)`` at once (one round trip)."""

    def outcome_limit_and_payment(
        self, event_id: str, customer_id: int, order_id: str
    ) -> tuple[list[Event] | None, int | None, Payment | None]:
        """``outcome_and_limit`` and the order's stored payment at once (one round trip)."""

    def save_payment(self, payment: Payment) -> None: ...

    def payment_of(self, order_id: str) -> Payment | None: ...

    def mark_refunded(self, order_id: str, reason: str) -> Payment | None:
        """Refund the order's payment if it is CAPTURED (one conditional update); the refunded
        payment, or None when there was no captured one (nothing changed)."""

    def outcome_and_refund(
        self, event_id: str, order_id: str, reason: str
    ) -> tuple[list[Event] | None, Payment | None]:
        """``outcome_of(event_id)`` and ``mark_refunded`` at once (one round trip)."""


@dataclass(frozen=True)
class Payment:
    order_id: str
    payment_id: str
    customer_id: int
    amount_cents: int
    status: str  # CAPTURED | DECLINED | REFUNDED
    reason: str = ""


class OrderUnitOfWork(UnitOfWork, Protocol):
    def __enter__(self) -> OrderUnitOfWork: ...

    def lock_order(self, order_id: str) -> OrderRecord | None: ...

    def outcome_and_order(
        self, event_id: str, order_id: str
    ) -> tuple[list[Event] | None, OrderRecord | None]:
        """``outcome_of(event_id)`` and ``lock_order(order_id)`` at once (one round trip)."""

    def set_status(self, order_id: str, status: OrderStatus, reason: str | None) -> None: ...

    def add_timeline(
        self, order_id: str, event: Event, status: OrderStatus, detail: Mapping[str, Any]
    ) -> None:
        """Append a step to the order's timeline and its type to the order's facts (nothing if
        that event is already there)."""


@dataclass(frozen=True)
class OrderRecord:
    order_id: str
    customer_id: int
    status: OrderStatus
    total_cents: int
    reason: str | None = None
    created_at: datetime | None = None
    # The saga's facts recorded for the order (minimart.domain.saga), whatever their order.
    facts: frozenset[EventType] = frozenset()


@dataclass(frozen=True)
class Shipment:
    order_id: str
    label_id: str
    status: str  # PREPARED | FAILED
    reason: str
    emitted: tuple[Event, ...]


class ShipmentStore(Protocol):
    def prepare_once(self, shipment: Shipment) -> Shipment:
        """Store the order's shipment unless one exists; return the stored one (atomic)."""


@dataclass(frozen=True)
class Notification:
    order_id: str
    customer_id: int
    template: str
    reason: str


class NotificationOutbox(Protocol):
    def enqueue_once(self, dedupe_key: str, notification: Notification) -> str:
        """Append to the notification stream unless ``dedupe_key`` was seen; the entry id."""


class Publisher(Protocol):
    def publish(self, events: Sequence[Event], source: str) -> None:
        """Publish to Kafka and return only once every event is durable (acks=all)."""


class RecordPublisher(Protocol):
    def publish_record(
        self, topic: str, key: bytes | None, value: bytes | None,
        headers: Sequence[tuple[str, bytes]],
    ) -> None:  # fmt: skip
        """Publish one record as it is (a dead letter going back to its topic); durable."""
