"""The books of a running minimart, fetched once as typed rows: what the checker's rules read.

``fetch_books(settings, scope)`` reads the orders, payments and inventory databases, the
shipments collection, the notification stream and the dead-letter topic (and, for the dead
letters, whether each was re-published to its original topic since). It is the checker's only
I/O; the rules (``checker``) are pure functions of the ``Books`` it returns.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, TypeVar

import psycopg
import redis
from psycopg.rows import dict_row
from pymongo import MongoClient

from minimart.adapters.redis_streams import STREAM
from minimart.console.replay import DeadLetter, read_dead_letters, read_topics
from minimart.domain.orders import OrderStatus
from minimart.settings import Settings


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
class ShipmentRow:
    order_id: str
    status: str  # PREPARED | FAILED


@dataclass(frozen=True)
class NotificationRow:
    order_id: str
    template: str
    customer_id: str = ""
    entry_id: str = ""


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


DeadLetterFilter = Callable[[DeadLetter], bool]


@dataclass(frozen=True)
class Scope:
    """Which orders (and SKUs) a check looks at; everything when both are None."""

    order_ids: frozenset[str] | None = None
    since: datetime | None = None
    skus: frozenset[str] | None = None

    @property
    def everything(self) -> bool:
        return self.order_ids is None and self.since is None

    def covers(self, letter: DeadLetter, expected: DeadLetterFilter) -> bool:
        """A dead letter is in scope when it names an order in scope (or is expected) and is
        not older than ``since``."""
        if self.order_ids is not None and not (
            letter.order_id in self.order_ids or expected(letter)
        ):
            return False
        return self.since is None or letter.timestamp >= self.since


R = TypeVar("R", PaymentRow, ReservationRow, ShipmentRow, NotificationRow)


def by_order(rows: Iterable[R]) -> dict[str, list[R]]:
    grouped: dict[str, list[R]] = defaultdict(list)
    for row in rows:
        grouped[row.order_id].append(row)
    return grouped


@dataclass(frozen=True)
class Books:
    """Everything in scope, read once."""

    scope: Scope
    orders: Sequence[OrderRow] = ()
    payments: Sequence[PaymentRow] = ()
    reservations: Sequence[ReservationRow] = ()
    shipments: Sequence[ShipmentRow] = ()
    notifications: Sequence[NotificationRow] = ()
    stock: Sequence[StockRow] = ()
    dead_letters: Sequence[DeadLetter] = ()
    # Ids of dead letters published again to their original topic after they died.
    redriven: frozenset[str] = field(default_factory=frozenset)


# -- fetching ------------------------------------------------------------------------------


def _rows(dsn: str, query: str, params: Mapping[str, Any]) -> list[dict[str, Any]]:
    with (
        psycopg.connect(dsn, autocommit=True) as conn,
        conn.cursor(row_factory=dict_row) as cursor,
    ):
        return cursor.execute(query.encode(), params).fetchall()


_BY_ORDER = "WHERE %(ids)s::uuid[] IS NULL OR order_id = ANY(%(ids)s::uuid[])"


def _orders(settings: Settings, scope: Scope) -> list[OrderRow]:
    rows = _rows(
        settings.orders_dsn,
        "SELECT id::text AS order_id, status, total_cents, items, created_at, updated_at"
        " FROM orders WHERE (%(ids)s::uuid[] IS NULL OR id = ANY(%(ids)s::uuid[]))"
        " AND (%(since)s::timestamptz IS NULL OR created_at >= %(since)s::timestamptz)",
        {
            "ids": None if scope.order_ids is None else sorted(scope.order_ids),
            "since": scope.since,
        },
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


def _payments(settings: Settings, ids: Sequence[str] | None) -> list[PaymentRow]:
    rows = _rows(
        settings.payments_dsn,
        "SELECT order_id::text AS order_id, status, amount_cents FROM payments " + _BY_ORDER,
        {"ids": ids},
    )
    return [PaymentRow(r["order_id"], r["status"], int(r["amount_cents"])) for r in rows]


def _reservations(settings: Settings, ids: Sequence[str] | None) -> list[ReservationRow]:
    rows = _rows(
        settings.inventory_dsn,
        "SELECT order_id::text AS order_id, sku, quantity, state FROM reservations " + _BY_ORDER,
        {"ids": ids},
    )
    return [ReservationRow(r["order_id"], r["sku"], int(r["quantity"]), r["state"]) for r in rows]


def _stock(settings: Settings, skus: Collection[str] | None) -> list[StockRow]:
    rows = _rows(
        settings.inventory_dsn,
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


def _shipments(settings: Settings, ids: Sequence[str] | None) -> list[ShipmentRow]:
    client: MongoClient[dict[str, Any]] = MongoClient(
        settings.mongo_url, serverSelectionTimeoutMS=10_000
    )
    try:
        collection = client.get_default_database(default="minimart")["shipments"]
        query: dict[str, Any] = {} if ids is None else {"orderId": {"$in": list(ids)}}
        return [
            ShipmentRow(str(doc["orderId"]), str(doc.get("shippingStatus", "")))
            for doc in collection.find(query, {"orderId": 1, "shippingStatus": 1})
        ]
    finally:
        client.close()


def notifications(settings: Settings) -> list[NotificationRow]:
    """Every entry of the notification stream."""
    client = redis.Redis.from_url(settings.redis_url, decode_responses=True, socket_timeout=10)
    rows: list[NotificationRow] = []
    try:
        last = "-"
        while True:
            entries: Any = client.xrange(STREAM, min=last, count=5_000)
            fresh = [(i, f) for i, f in entries if i != last]
            if not fresh:
                break
            for entry_id, fields in fresh:
                rows.append(
                    NotificationRow(
                        order_id=fields.get("orderId", ""),
                        template=fields.get("template", ""),
                        customer_id=fields.get("customerId", ""),
                        entry_id=entry_id,
                    )
                )
            last = fresh[-1][0]
    finally:
        client.close()
    return rows


def _redriven(settings: Settings, letters: Sequence[DeadLetter]) -> frozenset[str]:
    """Ids of the dead letters published again to their original topic after they died
    (``replay.redrive``): those are resolved, not lost."""
    topics = sorted({t for t in (letter.original_topic for letter in letters) if t})
    if not topics:
        return frozenset()
    latest: dict[tuple[str, str | None], int] = {}
    for record in read_topics(settings, topics):
        key = (record.topic, record.event_id)
        latest[key] = max(latest.get(key, -1), record.timestamp)
    return frozenset(
        letter.event_id
        for letter in letters
        if letter.original_topic
        and latest.get((letter.original_topic, letter.event_id), -1) > letter.record.timestamp
    )


def fetch_books(
    settings: Settings,
    scope: Scope,
    *,
    expected_dead_letters: DeadLetterFilter = lambda letter: False,
    dead_letters: bool = True,
) -> Books:
    """Read everything ``scope`` covers (see ``Scope``); the SKUs are ``scope.skus``, else
    every SKU when unscoped, else the SKUs of the orders in scope."""
    orders = _orders(settings, scope)
    ids = None if scope.everything else [o.order_id for o in orders]
    skus: Collection[str] | None = scope.skus
    if skus is None and not scope.everything:
        skus = {line.sku for order in orders for line in order.lines}
    letters: list[DeadLetter] = []
    if dead_letters:
        letters = [
            letter
            for letter in read_dead_letters(settings)
            if scope.covers(letter, expected_dead_letters)
        ]
    return Books(
        scope=scope,
        orders=orders,
        payments=_payments(settings, ids),
        reservations=_reservations(settings, ids),
        shipments=_shipments(settings, ids),
        notifications=notifications(settings),
        stock=_stock(settings, skus),
        dead_letters=letters,
        redriven=_redriven(settings, letters),
    )
