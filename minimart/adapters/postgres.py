"""PostgreSQL (psycopg 3) implementations of the order, inventory and payment ports.

Each service owns its database. Every unit of work is one transaction that also records the
outcome of the event it handled (table ``processed_events``): a redelivered event reads its
outcome back and changes nothing.
"""

from __future__ import annotations

import contextlib
from collections.abc import Mapping, Sequence
from types import TracebackType
from typing import Any, Self

import psycopg
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb
from psycopg_pool import ConnectionPool

from minimart.adapters import events_json
from minimart.catalog import Event, EventType
from minimart.domain.orders import OrderLine, OrderStatus
from minimart.domain.rules import StockLevel
from minimart.domain.saga import CAUSAL_STEPS
from minimart.handlers.orders import Accepted, IdempotencyConflict
from minimart.handlers.ports import OrderRecord, Payment
from minimart.seed import CREDIT_LIMITS, PRODUCTS


class StoreUnavailable(RuntimeError):
    """The database could not be reached or failed transiently (the delivery is retried)."""


PROCESSED_EVENTS = """
CREATE TABLE IF NOT EXISTS processed_events (
    consumer     text        NOT NULL,
    event_id     text        NOT NULL,
    emitted      jsonb       NOT NULL,
    processed_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (consumer, event_id)
);
"""

ORDERS_SCHEMA = (
    PROCESSED_EVENTS
    + """
CREATE TABLE IF NOT EXISTS products (
    sku         text PRIMARY KEY,
    name        text NOT NULL,
    price_cents bigint NOT NULL CHECK (price_cents >= 0)
);
CREATE TABLE IF NOT EXISTS orders (
    id               uuid PRIMARY KEY,
    customer_id      bigint      NOT NULL,
    status           text        NOT NULL,
    reason           text,
    total_cents      bigint      NOT NULL,
    items            jsonb       NOT NULL,
    shipping_address jsonb       NOT NULL,
    idempotency_key  text UNIQUE,
    fingerprint      text        NOT NULL,
    created_at       timestamptz NOT NULL DEFAULT clock_timestamp(),
    updated_at       timestamptz NOT NULL DEFAULT clock_timestamp(),
    version          integer     NOT NULL DEFAULT 1
);
CREATE TABLE IF NOT EXISTS order_timeline (
    order_id   uuid        NOT NULL REFERENCES orders (id),
    event_id   text        NOT NULL,
    step       text        NOT NULL,
    status     text        NOT NULL,
    detail     jsonb       NOT NULL DEFAULT '{}',
    at         timestamptz NOT NULL DEFAULT clock_timestamp(),
    PRIMARY KEY (order_id, event_id)
);
CREATE TABLE IF NOT EXISTS outbox (
    seq          bigserial PRIMARY KEY,
    event_id     text UNIQUE NOT NULL,
    event        jsonb       NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT clock_timestamp(),
    published_at timestamptz
);
CREATE INDEX IF NOT EXISTS outbox_unpublished ON outbox (seq) WHERE published_at IS NULL;
-- The saga's facts order-status recorded for the order (timeline steps, by type), on the row
-- it locks: read with the lock, so a transaction that waited for it sees the latest. Added to
-- an older database with the facts its timeline already holds.
DO $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM information_schema.columns
                   WHERE table_schema = current_schema() AND table_name = 'orders'
                   AND column_name = 'steps') THEN
        ALTER TABLE orders ADD COLUMN steps text[] NOT NULL DEFAULT '{}';
        UPDATE orders o SET steps = ARRAY(
            SELECT DISTINCT t.step FROM order_timeline t WHERE t.order_id = o.id);
    END IF;
END $$;
"""
)

INVENTORY_SCHEMA = (
    PROCESSED_EVENTS
    + """
CREATE TABLE IF NOT EXISTS stock (
    sku       text PRIMARY KEY,
    initial   bigint NOT NULL CHECK (initial >= 0),
    available bigint NOT NULL CHECK (available >= 0),
    reserved  bigint NOT NULL DEFAULT 0 CHECK (reserved >= 0),
    shipped   bigint NOT NULL DEFAULT 0 CHECK (shipped >= 0)
);
CREATE TABLE IF NOT EXISTS reservations (
    order_id uuid   NOT NULL,
    sku      text   NOT NULL REFERENCES stock (sku),
    quantity bigint NOT NULL CHECK (quantity > 0),
    state    text   NOT NULL CHECK (state IN ('RESERVED', 'RELEASED', 'SHIPPED')),
    PRIMARY KEY (order_id, sku)
);
"""
)

PAYMENTS_SCHEMA = (
    PROCESSED_EVENTS
    + """
CREATE TABLE IF NOT EXISTS customer_limits (
    customer_id bigint PRIMARY KEY,
    limit_cents bigint NOT NULL CHECK (limit_cents >= 0)
);
CREATE TABLE IF NOT EXISTS payments (
    order_id     uuid PRIMARY KEY,
    payment_id   text        NOT NULL,
    customer_id  bigint      NOT NULL,
    amount_cents bigint      NOT NULL,
    status       text        NOT NULL CHECK (status IN ('CAPTURED', 'DECLINED', 'REFUNDED')),
    reason       text        NOT NULL DEFAULT '',
    refund_reason text,
    created_at   timestamptz NOT NULL DEFAULT clock_timestamp(),
    refunded_at  timestamptz
);
"""
)

_MIGRATION_LOCK = 0x6D696E69  # "mini"


def migrate(pool: ConnectionPool, schema: str) -> None:
    """Create the schema if missing; safe when several processes start at once."""
    with pool.connection() as conn, conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (_MIGRATION_LOCK,))
        conn.execute(schema.encode())


def seed_orders(pool: ConnectionPool) -> None:
    with pool.connection() as conn, conn.transaction(), conn.cursor() as cur:
        cur.executemany(
            "INSERT INTO products (sku, name, price_cents) VALUES (%s, %s, %s)"
            " ON CONFLICT (sku) DO NOTHING",
            [(p.sku, p.name, p.price_cents) for p in PRODUCTS],
        )


def seed_inventory(pool: ConnectionPool) -> None:
    with pool.connection() as conn, conn.transaction(), conn.cursor() as cur:
        cur.executemany(
            "INSERT INTO stock (sku, initial, available) VALUES (%s, %s, %s)"
            " ON CONFLICT (sku) DO NOTHING",
            [(p.sku, p.stock, p.stock) for p in PRODUCTS if p.stock is not None],
        )


def seed_payments(pool: ConnectionPool) -> None:
    with pool.connection() as conn, conn.transaction(), conn.cursor() as cur:
        cur.executemany(
            "INSERT INTO customer_limits (customer_id, limit_cents) VALUES (%s, %s)"
            " ON CONFLICT (customer_id) DO NOTHING",
            list(CREDIT_LIMITS.items()),
        )


def open_pool(dsn: str, name: str, max_size: int = 8) -> ConnectionPool:
    pool = ConnectionPool(
        dsn,
        min_size=1,
        max_size=max_size,
        name=name,
        open=False,
        kwargs={"autocommit": False},
        reconnect_timeout=30,
    )
    pool.open(wait=True, timeout=30)
    return pool


class _PostgresUnitOfWork:
    """A transaction on one pooled connection, with the processed-events record."""

    def __init__(self, pool: ConnectionPool, consumer: str) -> None:
        self._pool = pool
        self._consumer = consumer
        self._conn: psycopg.Connection[Any] | None = None
        self._pipeline: psycopg.Pipeline | None = None
        self._pipeline_cm: contextlib.ExitStack | None = None
        self._committed = False

    def __enter__(self) -> Self:
        try:
            self._conn = self._pool.getconn()
            # Pipeline mode: statements whose results are not read (the writes) travel with
            # the next read or the COMMIT, so a step costs fewer round trips; a failure still
            # surfaces before the commit succeeds.
            self._pipeline_cm = contextlib.ExitStack()
            self._pipeline = self._pipeline_cm.enter_context(self._conn.pipeline())
        except psycopg.Error as exc:
            if self._conn is not None:
                self._pool.putconn(self._conn)
                self._conn = None
            raise StoreUnavailable(str(exc)) from exc
        self._committed = False
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        conn, self._conn = self._conn, None
        pipeline, self._pipeline = self._pipeline_cm, None
        assert conn is not None
        try:
            if pipeline is not None:
                try:
                    pipeline.__exit__(exc_type, exc, tb)
                except psycopg.Error:
                    if exc is None:
                        raise
            if not self._committed and not conn.closed:
                conn.rollback()
        finally:
            self._pool.putconn(conn)
        if isinstance(exc, psycopg.OperationalError):
            raise StoreUnavailable(str(exc)) from exc

    @property
    def conn(self) -> psycopg.Connection[Any]:
        if self._conn is None:
            raise RuntimeError("unit of work used outside its `with` block")
        return self._conn

    def execute(self, query: str, params: Sequence[Any] | Mapping[str, Any] = ()) -> Any:
        return self.conn.execute(query.encode(), params)  # type: ignore[arg-type]

    def commit(self) -> None:
        self.conn.commit()
        self._committed = True

    _OUTCOME = "SELECT emitted FROM processed_events WHERE consumer = %s AND event_id = %s"

    def outcome_of(self, event_id: str) -> list[Event] | None:
        row = self.execute(self._OUTCOME, (self._consumer, event_id)).fetchone()
        return None if row is None else events_json.load(row[0])

    def record_outcome(self, event_id: str, events: Sequence[Event]) -> None:
        self.execute(
            "INSERT INTO processed_events (consumer, event_id, emitted) VALUES (%s, %s, %s)",
            (self._consumer, event_id, Jsonb(events_json.dump(events))),
        )


class PostgresInventory(_PostgresUnitOfWork):
    _LOCK_STOCK = "SELECT sku, available FROM stock WHERE sku = ANY(%s) ORDER BY sku FOR UPDATE"

    def lock_stock(self, skus: Sequence[str]) -> dict[str, StockLevel]:
        rows = self.execute(self._LOCK_STOCK, (sorted(set(skus)),)).fetchall()
        return {sku: StockLevel(sku, available) for sku, available in rows}

    def outcome_and_stock(
        self, event_id: str, skus: Sequence[str]
    ) -> tuple[list[Event] | None, dict[str, StockLevel]]:
        # Both statements are queued before either result is read: one round trip.
        outcome = self.execute(self._OUTCOME, (self._consumer, event_id))
        stock = self.execute(self._LOCK_STOCK, (sorted(set(skus)),))
        row = outcome.fetchone()
        levels = {sku: StockLevel(sku, available) for sku, available in stock.fetchall()}
        return (None if row is None else events_json.load(row[0])), levels

    def reserve(self, order_id: str, lines: Sequence[OrderLine]) -> None:
        with self.conn.cursor() as cur:
            cur.executemany(
                "UPDATE stock SET available = available - %s, reserved = reserved + %s"
                " WHERE sku = %s",
                [(line.quantity, line.quantity, line.sku) for line in lines],
            )
            cur.executemany(
                "INSERT INTO reservations (order_id, sku, quantity, state)"
                " VALUES (%s, %s, %s, 'RESERVED')",
                [(order_id, line.sku, line.quantity) for line in lines],
            )

    def _move(self, order_id: str, to_state: str, column: str) -> list[OrderLine]:
        rows = self.execute(
            "UPDATE reservations SET state = %s WHERE order_id = %s AND state = 'RESERVED'"
            " RETURNING sku, quantity",
            (to_state, order_id),
        ).fetchall()
        with self.conn.cursor() as cur:
            cur.executemany(
                f"UPDATE stock SET reserved = reserved - %s, {column} = {column} + %s"
                " WHERE sku = %s",
                [(qty, qty, sku) for sku, qty in sorted(rows)],
            )
        return [OrderLine(sku, qty) for sku, qty in sorted(rows)]

    def release(self, order_id: str) -> list[OrderLine]:
        return self._move(order_id, "RELEASED", "available")

    def ship(self, order_id: str) -> list[OrderLine]:
        return self._move(order_id, "SHIPPED", "shipped")


class PostgresPayments(_PostgresUnitOfWork):
    _LIMIT = "SELECT limit_cents FROM customer_limits WHERE customer_id = %s"

    def credit_limit(self, customer_id: int) -> int | None:
        row = self.execute(self._LIMIT, (customer_id,)).fetchone()
        return None if row is None else int(row[0])

    def outcome_and_limit(
        self, event_id: str, customer_id: int
    ) -> tuple[list[Event] | None, int | None]:
        # Both statements are queued before either result is read: one round trip.
        outcome = self.execute(self._OUTCOME, (self._consumer, event_id))
        limit = self.execute(self._LIMIT, (customer_id,))
        row, limit_row = outcome.fetchone(), limit.fetchone()
        return (None if row is None else events_json.load(row[0])), (
            None if limit_row is None else int(limit_row[0])
        )

    _PAYMENT = (
        "SELECT order_id::text, payment_id, customer_id, amount_cents, status, reason"
        " FROM payments WHERE order_id = %s"
    )

    def outcome_limit_and_payment(
        self, event_id: str, customer_id: int, order_id: str
    ) -> tuple[list[Event] | None, int | None, Payment | None]:
        # The three statements are queued before any result is read: one round trip.
        outcome = self.execute(self._OUTCOME, (self._consumer, event_id))
        limit = self.execute(self._LIMIT, (customer_id,))
        payment = self.execute(self._PAYMENT, (order_id,))
        row, limit_row, payment_row = outcome.fetchone(), limit.fetchone(), payment.fetchone()
        return (
            None if row is None else events_json.load(row[0]),
            None if limit_row is None else int(limit_row[0]),
            None if payment_row is None else Payment(*payment_row),
        )

    def save_payment(self, payment: Payment) -> None:
        self.execute(
            "INSERT INTO payments (order_id, payment_id, customer_id, amount_cents, status,"
            " reason) VALUES (%s, %s, %s, %s, %s, %s)",
            (
                payment.order_id,
                payment.payment_id,
                payment.customer_id,
                payment.amount_cents,
                payment.status,
                payment.reason,
            ),
        )

    def payment_of(self, order_id: str) -> Payment | None:
        row = self.execute(self._PAYMENT + " FOR UPDATE", (order_id,)).fetchone()
        return None if row is None else Payment(*row)

    # Conditional: only a CAPTURED payment is refunded (a concurrent refund waits for the row
    # and then finds it REFUNDED: nothing returned).
    _REFUND = (
        "UPDATE payments SET status = 'REFUNDED', refund_reason = %s,"
        " refunded_at = clock_timestamp() WHERE order_id = %s AND status = 'CAPTURED'"
        " RETURNING order_id::text, payment_id, customer_id, amount_cents, status, reason"
    )

    def mark_refunded(self, order_id: str, reason: str) -> Payment | None:
        row = self.execute(self._REFUND, (reason, order_id)).fetchone()
        return None if row is None else Payment(*row)

    def outcome_and_refund(
        self, event_id: str, order_id: str, reason: str
    ) -> tuple[list[Event] | None, Payment | None]:
        # Both statements are queued before either result is read: one round trip.
        outcome = self.execute(self._OUTCOME, (self._consumer, event_id))
        refunded = self.execute(self._REFUND, (reason, order_id))
        row, payment_row = outcome.fetchone(), refunded.fetchone()
        return (None if row is None else events_json.load(row[0])), (
            None if payment_row is None else Payment(*payment_row)
        )


class PostgresOrders(_PostgresUnitOfWork):
    """The order-status service's unit of work on the orders database."""

    _LOCK_ORDER = (
        "SELECT id::text, customer_id, status, total_cents, reason, created_at, steps"
        " FROM orders WHERE id = %s FOR UPDATE"
    )
    _TYPES = {t.short: t for t in EventType}

    @classmethod
    def _order(cls, row: Sequence[Any] | None) -> OrderRecord | None:
        if row is None:
            return None
        facts = frozenset(cls._TYPES[step] for step in row[6] if step in cls._TYPES)
        return OrderRecord(row[0], row[1], OrderStatus(row[2]), row[3], row[4], row[5], facts)

    def lock_order(self, order_id: str) -> OrderRecord | None:
        return self._order(self.execute(self._LOCK_ORDER, (order_id,)).fetchone())

    def outcome_and_order(
        self, event_id: str, order_id: str
    ) -> tuple[list[Event] | None, OrderRecord | None]:
        # Both statements are queued before either result is read: one round trip.
        outcome = self.execute(self._OUTCOME, (self._consumer, event_id))
        order = self.execute(self._LOCK_ORDER, (order_id,))
        row = outcome.fetchone()
        return (None if row is None else events_json.load(row[0])), self._order(order.fetchone())

    def set_status(self, order_id: str, status: OrderStatus, reason: str | None) -> None:
        self.execute(
            "UPDATE orders SET status = %s, reason = %s, updated_at = clock_timestamp(),"
            " version = version + 1 WHERE id = %s",
            (status.value, reason, order_id),
        )

    def add_timeline(
        self, order_id: str, event: Event, status: OrderStatus, detail: Mapping[str, Any]
    ) -> None:
        # Queued: travels with the COMMIT (a failure still surfaces before it succeeds). The
        # fact goes on the order row only with a new timeline step (a replay adds neither).
        self.execute(
            "WITH step AS (INSERT INTO order_timeline (order_id, event_id, step, status, detail)"
            " VALUES (%s, %s, %s, %s, %s) ON CONFLICT DO NOTHING RETURNING order_id, step)"
            " UPDATE orders SET steps = array_append(orders.steps, step.step) FROM step"
            " WHERE orders.id = step.order_id AND NOT step.step = ANY(orders.steps)",
            (order_id, event.id, event.type.short, status.value, Jsonb(dict(detail))),
        )


class PostgresOrderIntake:
    """The order ingress's store: accept orders with their outbox record, read them back."""

    def __init__(self, pool: ConnectionPool) -> None:
        self._pool = pool

    def prices(self, skus: Sequence[str]) -> dict[str, int]:
        with self._pool.connection() as conn:
            rows = conn.execute(
                "SELECT sku, price_cents FROM products WHERE sku = ANY(%s)", (list(skus),)
            ).fetchall()
        return {sku: int(price) for sku, price in rows}

    def _existing(
        self, conn: psycopg.Connection[Any], key: str, fingerprint: str
    ) -> Accepted | None:
        row = conn.execute(
            "SELECT id::text, status, fingerprint FROM orders WHERE idempotency_key = %s",
            (key,),
        ).fetchone()
        if row is None:
            return None
        if row[2] != fingerprint:
            raise IdempotencyConflict(
                f"Idempotency-Key {key!r} was already used for a different order request"
            )
        return Accepted(order_id=row[0], status=OrderStatus(row[1]), created=False, event=None)

    def accept(self, event: Event, idempotency_key: str | None, fingerprint: str) -> Accepted:
        data = event.data
        with self._pool.connection() as conn:
            # Insert first, in one pipelined transaction (one round trip); a used
            # Idempotency-Key fails the insert and the earlier order is read back below.
            try:
                with conn.pipeline(), conn.transaction():
                    conn.execute(
                        "INSERT INTO orders (id, customer_id, status, total_cents, items,"
                        " shipping_address, idempotency_key, fingerprint)"
                        " VALUES (%s, %s, %s, %s, %s, %s, %s, %s)",
                        (
                            event.order_id,
                            data["customerId"],
                            OrderStatus.PENDING.value,
                            data["totalCents"],
                            Jsonb(data["items"]),
                            Jsonb(data["shippingAddress"]),
                            idempotency_key,
                            fingerprint,
                        ),
                    )
                    conn.execute(
                        "INSERT INTO order_timeline (order_id, event_id, step, status)"
                        " VALUES (%s, %s, %s, %s)",
                        (event.order_id, event.id, event.type.short, OrderStatus.PENDING.value),
                    )
                    conn.execute(
                        "INSERT INTO outbox (event_id, event) VALUES (%s, %s)",
                        (event.id, Jsonb(events_json.dump([event])[0])),
                    )
            except psycopg.errors.UniqueViolation:
                # The Idempotency-Key was used before (or by a concurrent request).
                if idempotency_key is None:
                    raise
                existing = self._existing(conn, idempotency_key, fingerprint)
                if existing is None:
                    raise
                return existing
        return Accepted(
            order_id=event.order_id, status=OrderStatus.PENDING, created=True, event=event
        )

    def view(self, order_id: str) -> dict[str, Any] | None:
        with self._pool.connection() as conn, conn.cursor(row_factory=dict_row) as cur:
            order = cur.execute(
                "SELECT id::text AS order_id, customer_id, status, reason, total_cents,"
                " items, shipping_address, created_at, updated_at FROM orders WHERE id = %s",
                (order_id,),
            ).fetchone()
            if order is None:
                return None
            steps = cur.execute(
                "SELECT step, status, detail, at, event_id FROM order_timeline"
                " WHERE order_id = %s ORDER BY array_position(%s::text[], step), at",
                (order_id, list(CAUSAL_STEPS)),
            ).fetchall()
        return {**order, "timeline": steps}

    def mark_published(self, event_ids: Sequence[str]) -> None:
        with self._pool.connection() as conn:
            conn.execute(
                "UPDATE outbox SET published_at = clock_timestamp()"
                " WHERE event_id = ANY(%s) AND published_at IS NULL",
                (list(event_ids),),
            )

    def claim_unpublished(self, older_than_s: float, limit: int = 100) -> list[Event]:
        """Outbox records not yet published (a crash between commit and publish)."""
        with self._pool.connection() as conn:
            rows = conn.execute(
                "SELECT event FROM outbox WHERE published_at IS NULL"
                " AND created_at < clock_timestamp() - make_interval(secs => %s)"
                " ORDER BY seq LIMIT %s",
                (older_than_s, limit),
            ).fetchall()
        return events_json.load([row[0] for row in rows])
