"""Read models over the PostgreSQL tables that ``adapters/postgres.py`` owns: the queries of
the ops console (the books the checker audits, one order's effects), as typed rows.

They write nothing. Each takes an open connection (``connect(dsn)`` opens a short one, in
autocommit, the way the console reads); the schema they read is ``postgres.py``'s, and no other
module outside ``adapters/`` spells its tables.
"""

from __future__ import annotations

from collections.abc import Collection, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import psycopg
from psycopg.rows import dict_row

from minimart.domain.orders import OrderStatus

Connection = psycopg.Connection[Any]


@dataclass(frozen=True)
class Line:
    sku: str
    quantity: int


@dataclass(frozen=True)
class OrderRow:
    order_id: str
    status: OrderStatus
    total_cents: int
    lines: tuple[Line, ...]
    created_at: datetime
    updated_at: datetime


@dataclass(frozen=True)
class PaymentRow:
    order_id: str
    status: str  # CAPTURED | DECLINED | REFUNDED
    amount_cents: int


@dataclass(frozen=True)
class ReservationRow:
    order_id: str
    sku: str
    quantity: int
    state: str  # RESERVED | RELEASED | SHIPPED


@dataclass(frozen=True)
class StockRow:
    """A SKU's stock columns, and what its reservations add up to."""

    sku: str
    initial: int
    available: int
    reserved: int
    shipped: int
    reservations_held: int  # sum of RESERVED reservations
    reservations_shipped: int  # sum of SHIPPED reservations


@contextmanager
def connect(dsn: str) -> Iterator[Connection]:
    """A short autocommit connection for reading (closed on exit)."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        yield conn


def _rows(conn: Connection, query: str, params: Mapping[str, Any]) -> list[dict[str, Any]]:
    with conn.cursor(row_factory=dict_row) as cursor:
        return cursor.execute(query.encode(), params).fetchall()


def _ids(order_ids: Collection[str] | None) -> list[str] | None:
    return None if order_ids is None else sorted(order_ids)


_BY_ORDER = "WHERE %(ids)s::uuid[] IS NULL OR order_id = ANY(%(ids)s::uuid[])"


def orders(
    conn: Connection, order_ids: Collection[str] | None = None, since: datetime | None = None
) -> list[OrderRow]:
    """The orders (of the orders database) with these ids and created since ``since``; every
    one when both are None."""
    rows = _rows(
        conn,
        "SELECT id::text AS order_id, status, total_cents, items, created_at, updated_at"
        " FROM orders WHERE (%(ids)s::uuid[] IS NULL OR id = ANY(%(ids)s::uuid[]))"
        " AND (%(since)s::timestamptz IS NULL OR created_at >= %(since)s::timestamptz)",
        {"ids": _ids(order_ids), "since": since},
    )
    return [
        OrderRow(
            order_id=row["order_id"],
            status=OrderStatus(row["status"]),
            total_cents=int(row["total_cents"]),
            lines=tuple(Line(str(i["sku"]), int(i["quantity"])) for i in row["items"]),
            created_at=row["created_at"],
            updated_at=row["updated_at"],
        )
        for row in rows
    ]


def payments(conn: Connection, order_ids: Collection[str] | None = None) -> list[PaymentRow]:
    """The payments (of the payments database) of these orders; every one when None."""
    rows = _rows(
        conn,
        "SELECT order_id::text AS order_id, status, amount_cents FROM payments " + _BY_ORDER,
        {"ids": _ids(order_ids)},
    )
    return [PaymentRow(r["order_id"], r["status"], int(r["amount_cents"])) for r in rows]


def reservations(
    conn: Connection, order_ids: Collection[str] | None = None
) -> list[ReservationRow]:
    """The reservations (of the inventory database) of these orders; every one when None."""
    rows = _rows(
        conn,
        "SELECT order_id::text AS order_id, sku, quantity, state FROM reservations " + _BY_ORDER,
        {"ids": _ids(order_ids)},
    )
    return [ReservationRow(r["order_id"], r["sku"], int(r["quantity"]), r["state"]) for r in rows]


def stock(conn: Connection, skus: Collection[str] | None = None) -> list[StockRow]:
    """These SKUs' stock (of the inventory database) with the sums of their reservations;
    every SKU when None."""
    rows = _rows(
        conn,
        "SELECT s.sku, s.initial, s.available, s.reserved, s.shipped,"
        " COALESCE(SUM(r.quantity) FILTER (WHERE r.state = 'RESERVED'), 0) AS held,"
        " COALESCE(SUM(r.quantity) FILTER (WHERE r.state = 'SHIPPED'), 0) AS sent"
        " FROM stock s LEFT JOIN reservations r ON r.sku = s.sku"
        " WHERE %(skus)s::text[] IS NULL OR s.sku = ANY(%(skus)s::text[])"
        " GROUP BY s.sku ORDER BY s.sku",
        {"skus": None if skus is None else sorted(skus)},
    )
    return [
        StockRow(
            sku=r["sku"],
            initial=int(r["initial"]),
            available=int(r["available"]),
            reserved=int(r["reserved"]),
            shipped=int(r["shipped"]),
            reservations_held=int(r["held"]),
            reservations_shipped=int(r["sent"]),
        )
        for r in rows
    ]


def order_reservations(conn: Connection, order_id: str) -> list[dict[str, Any]]:
    """One order's reservations as the effects view shows them (by SKU)."""
    return _rows(
        conn,
        "SELECT sku, quantity, state FROM reservations WHERE order_id = %(id)s ORDER BY sku",
        {"id": order_id},
    )


def order_payments(conn: Connection, order_id: str) -> list[dict[str, Any]]:
    """One order's payments as the effects view shows them."""
    return _rows(
        conn,
        "SELECT payment_id, amount_cents, status, reason, refund_reason FROM payments"
        " WHERE order_id = %(id)s",
        {"id": order_id},
    )


# -- the benchmark's reads (bench/): times as epoch seconds ---------------------------------


def orders_between(conn: Connection, started: float, ended: float) -> tuple[int, int, float | None]:
    """Of the orders created between two moments: how many, how many are final, and when the
    last of those became final (None: none)."""
    row = conn.execute(
        b"SELECT count(*),"
        b" count(*) FILTER (WHERE status IN ('CONFIRMED', 'CANCELLED')),"
        b" extract(epoch FROM max(updated_at)"
        b"  FILTER (WHERE status IN ('CONFIRMED', 'CANCELLED')))::float8"
        b" FROM orders WHERE created_at >= to_timestamp(%s) AND created_at <= to_timestamp(%s)",
        (started, ended),
    ).fetchone()
    accepted, final, last = row or (0, 0, None)
    return int(accepted), int(final), None if last is None else float(last)


def timeline_moments(conn: Connection, order_ids: Sequence[str]) -> list[tuple[str, str, float]]:
    """(order id, step, when) of every timeline step of these orders."""
    rows = conn.execute(
        b"SELECT order_id::text, step, extract(epoch FROM at)::float8"
        b" FROM order_timeline WHERE order_id = ANY(%s::uuid[])",
        (list(order_ids),),
    ).fetchall()
    return [(str(r[0]), str(r[1]), float(r[2])) for r in rows]


def order_progress(
    conn: Connection, order_ids: Sequence[str]
) -> list[tuple[str, str, float, float | None, float | None]]:
    """(order id, status, status changed at, created at, notified at) of these orders: when
    the timeline recorded ``order.created`` and ``notification.sent`` (None: not yet)."""
    rows = conn.execute(
        b"SELECT o.id::text, o.status, extract(epoch FROM o.updated_at)::float8,"
        b" extract(epoch FROM min(t.at) FILTER (WHERE t.step = 'order.created'))::float8,"
        b" extract(epoch FROM max(t.at) FILTER (WHERE t.step = 'notification.sent'))::float8"
        b" FROM orders o JOIN order_timeline t ON t.order_id = o.id"
        b" WHERE o.id = ANY(%s::uuid[]) GROUP BY o.id",
        (list(order_ids),),
    ).fetchall()
    return [(str(r[0]), str(r[1]), float(r[2]), r[3], r[4]) for r in rows]
