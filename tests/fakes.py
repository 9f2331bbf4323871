"""In-memory fakes of the ports in ``minimart.handlers.ports`` (and the order intake).

Units of work model a transaction by staging: ``__enter__`` copies the committed state,
every change goes to the copy, ``commit()`` makes the copy the committed state, and leaving
the ``with`` block without a commit throws the copy away (rollback). Outcome records are
kept in the same state, so the idempotency record and the state change commit together, as
they do in Postgres. The constraints of the PostgreSQL schema are checked too (a second
outcome record for one event id, a second reservation of an order's SKU, stock below zero):
each fails with ``IntegrityViolation``, as psycopg raises ``IntegrityError``.

Concurrency: units of work on one fake database (``another()`` opens a second one, as a
second pooled connection would) run one at a time: a transaction holds the database's lock
from ``__enter__`` to its commit or ``__exit__``. That is stricter than PostgreSQL's row
locks (``lock_stock``, ``lock_order`` and ``payment_of`` lock rows ``FOR UPDATE``; a
concurrent duplicate insert waits, then fails on the key), and every guarantee the handlers
rely on holds under both: tests/contract runs the same assertions on the fakes and on the
real adapters.
"""

from __future__ import annotations

import copy
import dataclasses
import itertools
import json
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from types import TracebackType
from typing import Any, Generic, Protocol, Self, TypeVar

from minimart.adapters import events_json
from minimart.catalog import Event
from minimart.domain.orders import OrderLine, OrderStatus
from minimart.domain.rules import StockLevel
from minimart.domain.saga import causal_rank
from minimart.handlers.orders import Accepted, IdempotencyConflict
from minimart.handlers.ports import Notification, OrderRecord, Payment, Shipment
from minimart.seed import CREDIT_LIMITS, PRODUCTS


class IntegrityViolation(RuntimeError):
    """A key, reference or CHECK constraint of the schema refused a change."""


class DuplicateOutcome(IntegrityViolation):
    """A second outcome record for one event id (the primary key of processed_events)."""


def _stored(events: Sequence[Event]) -> list[dict[str, Any]]:
    """Events as a store keeps them: through JSON, so unserialisable data fails here too."""
    stored: list[dict[str, Any]] = json.loads(json.dumps(events_json.dump(events)))
    return stored


class _State(Protocol):
    processed: dict[str, list[dict[str, Any]]]


S = TypeVar("S", bound=_State)


# A transaction waits this long for the database's lock: a test that deadlocks fails instead.
LOCK_TIMEOUT_S = 30.0


class FakeDatabase(Generic[S]):
    """The committed state of one fake database and the lock its transactions hold."""

    def __init__(self, state: S) -> None:
        self.state = state
        self.lock = threading.Lock()

    def acquire(self) -> None:
        if not self.lock.acquire(timeout=LOCK_TIMEOUT_S):
            raise RuntimeError(f"fake database locked for more than {LOCK_TIMEOUT_S}s")


class _FakeUnitOfWork(Generic[S]):
    """A transaction over a state ``S`` that has a ``processed`` dict (event id -> events)."""

    def __init__(self, state: S | FakeDatabase[S]) -> None:
        self.database: FakeDatabase[S] = (
            state if isinstance(state, FakeDatabase) else FakeDatabase(state)
        )
        self._staged: S | None = None
        self._holds_lock = False
        self.commits = 0
        self.rollbacks = 0

    @property
    def committed(self) -> S:
        return self.database.state

    def another(self) -> Self:
        """A second unit of work on the same database (another connection of the pool)."""
        twin = copy.copy(self)
        twin._staged, twin._holds_lock, twin.commits, twin.rollbacks = None, False, 0, 0
        return twin

    def __enter__(self) -> Self:
        if self._staged is not None:
            raise RuntimeError("unit of work entered twice")
        self.database.acquire()
        self._holds_lock = True
        self._staged = copy.deepcopy(self.committed)
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._staged is not None:
            self.rollbacks += 1
        self._staged = None
        self._release()

    @property
    def staged(self) -> S:
        if self._staged is None:
            raise RuntimeError("unit of work used outside its `with` block")
        return self._staged

    def commit(self) -> None:
        """Make the staged state the committed one; the transaction ends (its lock is free)."""
        self.database.state = self.staged
        self._staged = None
        self.commits += 1
        self._release()

    def _release(self) -> None:
        if self._holds_lock:
            self._holds_lock = False
            self.database.lock.release()

    def outcome_of(self, event_id: str) -> list[Event] | None:
        rows = self.staged.processed.get(event_id)
        return None if rows is None else events_json.load(rows)

    def record_outcome(self, event_id: str, events: Sequence[Event]) -> None:
        processed = self.staged.processed
        if event_id in processed:
            raise DuplicateOutcome(event_id)
        processed[event_id] = _stored(events)


# -- inventory -----------------------------------------------------------------------------


@dataclass
class Reservation:
    sku: str
    quantity: int
    state: str  # RESERVED | RELEASED | SHIPPED


@dataclass
class InventoryState:
    available: dict[str, int] = field(default_factory=dict)
    reserved: dict[str, int] = field(default_factory=dict)
    shipped: dict[str, int] = field(default_factory=dict)
    reservations: dict[str, list[Reservation]] = field(default_factory=dict)
    processed: dict[str, list[dict[str, Any]]] = field(default_factory=dict)


class FakeInventory(_FakeUnitOfWork[InventoryState]):
    def __init__(self, stock: Mapping[str, int] | None = None) -> None:
        if stock is None:
            stock = {p.sku: p.stock for p in PRODUCTS if p.stock is not None}
        super().__init__(
            InventoryState(
                available=dict(stock),
                reserved=dict.fromkeys(stock, 0),
                shipped=dict.fromkeys(stock, 0),
            )
        )

    def outcome_and_stock(
        self, event_id: str, skus: Sequence[str]
    ) -> tuple[list[Event] | None, dict[str, StockLevel]]:
        return self.outcome_of(event_id), self.lock_stock(skus)

    def lock_stock(self, skus: Sequence[str]) -> dict[str, StockLevel]:
        available = self.staged.available
        return {
            sku: StockLevel(sku, available[sku]) for sku in sorted(set(skus)) if sku in available
        }

    def stock_sku(self, sku: str, quantity: int) -> None:
        """A new SKU in the warehouse (outside any transaction, as a migration would)."""
        with self:
            self.staged.available[sku] = quantity
            self.staged.reserved[sku] = 0
            self.staged.shipped[sku] = 0
            self.commit()

    def reserve(self, order_id: str, lines: Sequence[OrderLine]) -> None:
        state = self.staged
        for line in lines:
            held = state.reservations.setdefault(order_id, [])
            if line.sku not in state.available:  # reservations.sku REFERENCES stock
                raise IntegrityViolation(f"{line.sku} is not stocked")
            if state.available[line.sku] < line.quantity:  # CHECK (available >= 0)
                raise IntegrityViolation(f"{line.sku}: available would go below zero")
            if any(r.sku == line.sku for r in held):  # PRIMARY KEY (order_id, sku)
                raise IntegrityViolation(f"order {order_id} already holds {line.sku}")
            state.available[line.sku] -= line.quantity
            state.reserved[line.sku] += line.quantity
            held.append(Reservation(line.sku, line.quantity, "RESERVED"))

    def _move(self, order_id: str, to_state: str, column: dict[str, int]) -> list[OrderLine]:
        moved: list[OrderLine] = []
        for reservation in self.staged.reservations.get(order_id, []):
            if reservation.state != "RESERVED":
                continue
            reservation.state = to_state
            self.staged.reserved[reservation.sku] -= reservation.quantity
            column[reservation.sku] += reservation.quantity
            moved.append(OrderLine(reservation.sku, reservation.quantity))
        return sorted(moved, key=lambda line: line.sku)

    def release(self, order_id: str) -> list[OrderLine]:
        return self._move(order_id, "RELEASED", self.staged.available)

    def ship(self, order_id: str) -> list[OrderLine]:
        return self._move(order_id, "SHIPPED", self.staged.shipped)


# -- payments ------------------------------------------------------------------------------


@dataclass
class PaymentState:
    limits: dict[int, int] = field(default_factory=dict)
    payments: dict[str, Payment] = field(default_factory=dict)
    # The refund's reason has its own column: the payment keeps its own reason.
    refund_reasons: dict[str, str] = field(default_factory=dict)
    processed: dict[str, list[dict[str, Any]]] = field(default_factory=dict)


class FakePayments(_FakeUnitOfWork[PaymentState]):
    def __init__(self, limits: Mapping[int, int] | None = None) -> None:
        super().__init__(PaymentState(limits=dict(CREDIT_LIMITS if limits is None else limits)))

    def outcome_and_limit(
        self, event_id: str, customer_id: int
    ) -> tuple[list[Event] | None, int | None]:
        return self.outcome_of(event_id), self.credit_limit(customer_id)

    def credit_limit(self, customer_id: int) -> int | None:
        return self.staged.limits.get(customer_id)

    def outcome_limit_and_payment(
        self, event_id: str, customer_id: int, order_id: str
    ) -> tuple[list[Event] | None, int | None, Payment | None]:
        done, limit = self.outcome_and_limit(event_id, customer_id)
        return done, limit, self.payment_of(order_id)

    def save_payment(self, payment: Payment) -> None:
        if payment.order_id in self.staged.payments:  # PRIMARY KEY (order_id)
            raise IntegrityViolation(f"payment of order {payment.order_id} exists")
        self.staged.payments[payment.order_id] = payment

    def payment_of(self, order_id: str) -> Payment | None:
        return self.staged.payments.get(order_id)

    def mark_refunded(self, order_id: str, reason: str) -> Payment | None:
        payment = self.staged.payments.get(order_id)
        if payment is None or payment.status != "CAPTURED":  # WHERE status = 'CAPTURED'
            return None
        refunded = dataclasses.replace(payment, status="REFUNDED")
        self.staged.payments[order_id] = refunded
        self.staged.refund_reasons[order_id] = reason
        return refunded

    def outcome_and_refund(
        self, event_id: str, order_id: str, reason: str
    ) -> tuple[list[Event] | None, Payment | None]:
        return self.outcome_of(event_id), self.mark_refunded(order_id, reason)


# -- orders (the order-status service's unit of work) ---------------------------------------


@dataclass(frozen=True)
class TimelineStep:
    event_id: str
    step: str
    status: OrderStatus
    detail: Mapping[str, Any]
    at: datetime | None = None


@dataclass
class OrderState:
    orders: dict[str, OrderRecord] = field(default_factory=dict)
    timeline: dict[str, list[TimelineStep]] = field(default_factory=dict)
    processed: dict[str, list[dict[str, Any]]] = field(default_factory=dict)


class FakeOrders(_FakeUnitOfWork[OrderState]):
    """The order-status service's unit of work on the orders database (which the intake
    writes too: ``FakeIntake(orders=...)`` shares it)."""

    def __init__(self, *orders: OrderRecord) -> None:
        super().__init__(OrderState(orders={o.order_id: o for o in orders}))

    def lock_order(self, order_id: str) -> OrderRecord | None:
        return self.staged.orders.get(order_id)

    def outcome_and_order(
        self, event_id: str, order_id: str
    ) -> tuple[list[Event] | None, OrderRecord | None]:
        return self.outcome_of(event_id), self.lock_order(order_id)

    def set_status(self, order_id: str, status: OrderStatus, reason: str | None) -> None:
        order = self.staged.orders[order_id]
        self.staged.orders[order_id] = dataclasses.replace(order, status=status, reason=reason)

    def add_timeline(
        self, order_id: str, event: Event, status: OrderStatus, detail: Mapping[str, Any]
    ) -> None:
        steps = self.staged.timeline.setdefault(order_id, [])
        if not any(step.event_id == event.id for step in steps):
            steps.append(
                TimelineStep(event.id, event.type.short, status, dict(detail), datetime.now(UTC))
            )
            order = self.staged.orders.get(order_id)
            if order is not None:  # the fact goes on the order row with its new step
                self.staged.orders[order_id] = dataclasses.replace(
                    order, facts=order.facts | {event.type}
                )


# -- shipments, notifications --------------------------------------------------------------


class FakeShipments:
    def __init__(self) -> None:
        self.shipments: dict[str, Shipment] = {}

    def prepare_once(self, shipment: Shipment) -> Shipment:
        stored = self.shipments.setdefault(shipment.order_id, shipment)
        return Shipment(
            stored.order_id,
            stored.label_id,
            stored.status,
            stored.reason,
            tuple(events_json.load(_stored(stored.emitted))),
        )


class FakeNotifications:
    def __init__(self) -> None:
        self.stream: list[tuple[str, Notification]] = []
        self.seen: dict[str, str] = {}
        self._ids = itertools.count(1)
        self._lock = threading.Lock()  # the Lua script runs atomically in Redis

    def enqueue_once(self, dedupe_key: str, notification: Notification) -> str:
        with self._lock:
            if dedupe_key not in self.seen:
                entry_id = f"1700000000000-{next(self._ids)}"
                self.stream.append((entry_id, notification))
                self.seen[dedupe_key] = entry_id
            return self.seen[dedupe_key]


# -- the order intake ----------------------------------------------------------------------


@dataclass
class _IntakeOrder:
    event: Event
    idempotency_key: str | None
    fingerprint: str
    created_at: datetime


class FakeIntake:
    """Accepts orders (once per Idempotency-Key), keeps their outbox, shows them.

    The order rows live in the orders database that order-status changes: ``orders`` (a
    ``FakeOrders``, made here unless given) shares it, so a replayed request and ``view``
    answer the order's current status, as PostgreSQL does."""

    def __init__(
        self,
        prices: Mapping[str, int] | None = None,
        orders: FakeOrders | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._prices = dict({p.sku: p.price_cents for p in PRODUCTS} if prices is None else prices)
        self.status = FakeOrders() if orders is None else orders
        self._clock = clock
        self.orders: dict[str, _IntakeOrder] = {}
        self.by_key: dict[str, str] = {}
        self.outbox: list[Event] = []
        self._outbox_at: dict[str, float] = {}
        self.published: set[str] = set()

    def prices(self, skus: Sequence[str]) -> dict[str, int]:
        return {sku: self._prices[sku] for sku in skus if sku in self._prices}

    def accept(self, event: Event, idempotency_key: str | None, fingerprint: str) -> Accepted:
        database = self.status.database
        database.acquire()  # one transaction: the order row, its first step, its outbox row
        try:
            if idempotency_key is not None and idempotency_key in self.by_key:
                earlier = self.orders[self.by_key[idempotency_key]]
                if earlier.fingerprint != fingerprint:
                    raise IdempotencyConflict(
                        f"Idempotency-Key {idempotency_key!r} was already used for a different"
                        " order"
                    )
                order_id = earlier.event.order_id
                current = database.state.orders[order_id].status
                return Accepted(order_id, current, created=False, event=None)
            if event.order_id in self.orders:  # orders.id PRIMARY KEY
                raise IntegrityViolation(f"order {event.order_id} exists")
            now = datetime.now(UTC)
            data = event.data
            database.state.orders[event.order_id] = OrderRecord(
                event.order_id,
                data["customerId"],
                OrderStatus.PENDING,
                data["totalCents"],
                None,
                now,
            )
            database.state.timeline[event.order_id] = [
                TimelineStep(event.id, event.type.short, OrderStatus.PENDING, {}, now)
            ]
            self.orders[event.order_id] = _IntakeOrder(event, idempotency_key, fingerprint, now)
            if idempotency_key is not None:
                self.by_key[idempotency_key] = event.order_id
            self.outbox.append(event)
            self._outbox_at[event.id] = self._clock()
        finally:
            database.lock.release()
        return Accepted(event.order_id, OrderStatus.PENDING, created=True, event=event)

    def view(self, order_id: str) -> Mapping[str, Any] | None:
        order = self.orders.get(order_id)
        if order is None:
            return None
        with self.status.database.lock:
            record = self.status.committed.orders[order_id]
            steps = list(self.status.committed.timeline.get(order_id, []))
        data = order.event.data
        return {
            "order_id": order_id,
            "customer_id": data["customerId"],
            "status": record.status.value,
            "reason": record.reason,
            "items": data["items"],
            "total_cents": data["totalCents"],
            "shipping_address": data["shippingAddress"],
            "created_at": order.created_at,
            "updated_at": order.created_at,
            "timeline": [
                {
                    "step": step.step,
                    "status": step.status.value,
                    "detail": dict(step.detail),
                    "at": step.at,
                    "event_id": step.event_id,
                }
                for step in sorted(
                    steps, key=lambda s: (causal_rank(s.step), s.at or order.created_at)
                )
            ],
        }

    def mark_published(self, event_ids: Sequence[str]) -> None:
        self.published.update(e for e in event_ids if e in self._outbox_at)

    def claim_unpublished(self, older_than_s: float, limit: int = 100) -> list[Event]:
        """Outbox records not yet published and older than ``older_than_s``, oldest first."""
        cutoff = self._clock() - older_than_s
        return [
            e for e in self.outbox if e.id not in self.published and self._outbox_at[e.id] < cutoff
        ][:limit]


# -- the publisher -------------------------------------------------------------------------


class PublishFailed(ConnectionError):
    """The broker did not acknowledge (a transient fault)."""


class FakePublisher:
    def __init__(self) -> None:
        self.published: list[tuple[str, Event]] = []
        self.fail = False

    def publish(self, events: Sequence[Event], source: str) -> None:
        if self.fail:
            raise PublishFailed("broker unavailable (fake)")
        self.published.extend((source, event) for event in events)

    @property
    def events(self) -> list[Event]:
        return [event for _, event in self.published]
