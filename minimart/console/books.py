"""The books of a running minimart, fetched once as typed rows: what the checker's rules read.

``fetch_books(settings, scope)`` reads the orders, payments and inventory databases, the
shipments collection, the notification stream and the dead-letter topic (and, for the dead
letters, whether each was re-published to its original topic since) through the read models
that sit beside the adapters owning those stores (``adapters/postgres_views.py``,
``mongo_views.py``, ``redis_views.py``; their row types are re-exported here). It is the
checker's only I/O; the rules (``checker``) are pure functions of the ``Books`` it returns.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Collection, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from functools import cached_property
from typing import TypeVar

from minimart.adapters import mongo_views, postgres_views, redis_views
from minimart.adapters.mongo_views import ShipmentRow
from minimart.adapters.postgres_views import Line, OrderRow, PaymentRow, ReservationRow, StockRow
from minimart.adapters.redis_views import NotificationRow
from minimart.console.replay import DeadLetter, read_dead_letters, read_topics
from minimart.settings import Settings

__all__ = [
    "Books",
    "DeadLetterFilter",
    "Line",
    "NotificationRow",
    "OrderRow",
    "PaymentRow",
    "ReservationRow",
    "Scope",
    "ShipmentRow",
    "StockRow",
    "by_order",
    "fetch_books",
    "notifications",
]

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
    """Rows read once: everything in scope, or (``of_order``) one order and the rows that
    name it."""

    scope: Scope = field(default_factory=lambda: Scope())
    orders: Sequence[OrderRow] = ()
    payments: Sequence[PaymentRow] = ()
    reservations: Sequence[ReservationRow] = ()
    shipments: Sequence[ShipmentRow] = ()
    notifications: Sequence[NotificationRow] = ()
    stock: Sequence[StockRow] = ()
    dead_letters: Sequence[DeadLetter] = ()
    # Ids of dead letters published again to their original topic after they died.
    redriven: frozenset[str] = field(default_factory=frozenset)

    @cached_property
    def _by_order(
        self,
    ) -> tuple[
        dict[str, list[PaymentRow]],
        dict[str, list[ReservationRow]],
        dict[str, list[ShipmentRow]],
        dict[str, list[NotificationRow]],
    ]:
        return (
            by_order(self.payments),
            by_order(self.reservations),
            by_order(self.shipments),
            by_order(self.notifications),
        )

    def of_order(self, order: OrderRow) -> Books:
        """``order`` and its payments, reservations, shipments and notifications."""
        payments, reservations, shipments, notes = self._by_order
        key = order.order_id
        return Books(
            scope=Scope(order_ids=frozenset({key})),
            orders=(order,),
            payments=payments.get(key, ()),
            reservations=reservations.get(key, ()),
            shipments=shipments.get(key, ()),
            notifications=notes.get(key, ()),
        )


# -- fetching ------------------------------------------------------------------------------


def notifications(settings: Settings) -> list[NotificationRow]:
    """Every entry of the notification stream."""
    with redis_views.connect(settings.redis_url) as client:
        return redis_views.notifications(client)


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
    with postgres_views.connect(settings.orders_dsn) as conn:
        orders = postgres_views.orders(conn, scope.order_ids, scope.since)
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
    with postgres_views.connect(settings.payments_dsn) as conn:
        payments = postgres_views.payments(conn, ids)
    with postgres_views.connect(settings.inventory_dsn) as conn:
        reservations = postgres_views.reservations(conn, ids)
        stock = postgres_views.stock(conn, skus)
    with mongo_views.connect(settings.mongo_url) as shipments:
        shipment_rows = mongo_views.shipments(shipments, ids)
    return Books(
        scope=scope,
        orders=orders,
        payments=payments,
        reservations=reservations,
        shipments=shipment_rows,
        notifications=notifications(settings),
        stock=stock,
        dead_letters=letters,
        redriven=_redriven(settings, letters),
    )
