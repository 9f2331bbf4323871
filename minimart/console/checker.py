"""The books of the whole system, checked after a run: nothing lost, nothing done twice.

``check_books(settings)`` reads every store (orders, inventory and payments databases, the
shipments collection, the notification stream, the dead-letter topic) and lists the
violations of minimart's invariants:

* every accepted order is final (CONFIRMED or CANCELLED), or still in flight and younger than
  ``in_flight_deadline_s``;
* stock is conserved per SKU: initial = available + reserved + shipped, and the reserved and
  shipped columns equal the sum of the SKU's reservations in that state;
* money balances: captured - refunded = the total of the confirmed orders (and per order:
  a confirmed order has one CAPTURED payment of its total, a cancelled one none);
* exactly one PREPARED shipment per confirmed order, none for a cancelled order;
* exactly one notification per final order, with the template of its outcome;
* no RESERVED reservation left for a final order (cancelled: released, confirmed: shipped);
* nothing in the dead-letter topic unless expected (``expected_dead_letters``).

Tests share one stack, so a check can be scoped to a set of order ids (and the SKUs they own)
or to the orders created since a moment; unscoped, it checks everything. Something that is
not final yet and younger than the deadline is reported as pending, not as a violation:
``wait_for_books`` polls until there is nothing pending (or the time is up).
"""

from __future__ import annotations

import time
from collections import Counter, defaultdict
from collections.abc import Callable, Collection, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

import psycopg
import redis
from pymongo import MongoClient

from minimart.adapters.redis_streams import STREAM
from minimart.catalog import DEAD_LETTER_TOPIC
from minimart.settings import Settings

if TYPE_CHECKING:
    from minimart.console.replay import DeadLetter

FINAL = ("CONFIRMED", "CANCELLED")
TEMPLATE = {"CONFIRMED": "OrderConfirmed", "CANCELLED": "OrderCancelled"}
DEFAULT_IN_FLIGHT_DEADLINE_S = 60.0


@dataclass(frozen=True)
class Violation:
    rule: str
    subject: str
    detail: str

    def __str__(self) -> str:
        return f"[{self.rule}] {self.subject}: {self.detail}"


@dataclass
class Report:
    """What a check found. ``ok``: no violation; ``settled``: ok and nothing still in flight."""

    orders: int = 0
    final: Counter[str] = field(default_factory=Counter)
    skus: int = 0
    dead_letters: int = 0
    violations: list[Violation] = field(default_factory=list)
    pending: list[Violation] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.violations

    @property
    def settled(self) -> bool:
        return self.ok and not self.pending

    def summary(self) -> str:
        finals = ", ".join(f"{k} {v}" for k, v in sorted(self.final.items()))
        head = (
            f"{self.orders} orders ({finals}),"
            f" {self.skus} SKUs, {self.dead_letters} dead letters in scope:"
            f" {len(self.violations)} violations, {len(self.pending)} in flight"
        )
        lines = [head]
        lines += [f"  VIOLATION {v}" for v in self.violations]
        lines += [f"  pending   {v}" for v in self.pending]
        return "\n".join(lines)


@dataclass(frozen=True)
class _Order:
    order_id: str
    status: str
    total_cents: int
    items: list[dict[str, Any]]
    created_at: datetime
    updated_at: datetime


@dataclass(frozen=True)
class Scope:
    """Which orders (and SKUs) a check looks at; everything when both are None."""

    order_ids: frozenset[str] | None = None
    since: datetime | None = None
    skus: frozenset[str] | None = None

    @property
    def everything(self) -> bool:
        return self.order_ids is None and self.since is None


def _orders(settings: Settings, scope: Scope) -> list[_Order]:
    query = (
        "SELECT id::text, status, total_cents, items, created_at, updated_at FROM orders"
        " WHERE (%(ids)s::uuid[] IS NULL OR id = ANY(%(ids)s::uuid[]))"
        " AND (%(since)s::timestamptz IS NULL OR created_at >= %(since)s::timestamptz)"
    )
    params = {
        "ids": None if scope.order_ids is None else sorted(scope.order_ids),
        "since": scope.since,
    }
    with psycopg.connect(settings.orders_dsn, autocommit=True) as conn:
        rows = conn.execute(query.encode(), params).fetchall()
    return [_Order(r[0], r[1], int(r[2]), list(r[3]), r[4], r[5]) for r in rows]


def _by_order(dsn: str, query: str, ids: Sequence[str] | None) -> dict[str, list[tuple[Any, ...]]]:
    """Rows whose first column is an order id, grouped by it (all rows when ``ids`` is None)."""
    grouped: dict[str, list[tuple[Any, ...]]] = defaultdict(list)
    with psycopg.connect(dsn, autocommit=True) as conn:
        rows = conn.execute(query.encode(), {"ids": None if ids is None else list(ids)}).fetchall()
    for row in rows:
        grouped[row[0]].append(tuple(row[1:]))
    return grouped


def _stock(settings: Settings, skus: Collection[str] | None) -> list[tuple[Any, ...]]:
    with psycopg.connect(settings.inventory_dsn, autocommit=True) as conn:
        return conn.execute(
            b"SELECT s.sku, s.initial, s.available, s.reserved, s.shipped,"
            b" COALESCE(SUM(r.quantity) FILTER (WHERE r.state = 'RESERVED'), 0),"
            b" COALESCE(SUM(r.quantity) FILTER (WHERE r.state = 'SHIPPED'), 0)"
            b" FROM stock s LEFT JOIN reservations r ON r.sku = s.sku"
            b" WHERE %(skus)s::text[] IS NULL OR s.sku = ANY(%(skus)s::text[])"
            b" GROUP BY s.sku ORDER BY s.sku",
            {"skus": None if skus is None else sorted(skus)},
        ).fetchall()


def _shipments(settings: Settings, ids: Sequence[str] | None) -> dict[str, list[dict[str, Any]]]:
    client: MongoClient[dict[str, Any]] = MongoClient(
        settings.mongo_url, serverSelectionTimeoutMS=10_000
    )
    try:
        collection = client.get_default_database(default="minimart")["shipments"]
        query: dict[str, Any] = {} if ids is None else {"orderId": {"$in": list(ids)}}
        grouped: dict[str, list[dict[str, Any]]] = defaultdict(list)
        for doc in collection.find(query, {"emitted": 0}):
            grouped[str(doc["orderId"])].append(doc)
        return grouped
    finally:
        client.close()


def notifications(settings: Settings) -> dict[str, list[dict[str, str]]]:
    """Every entry of the notification stream, grouped by order id."""
    client = redis.Redis.from_url(settings.redis_url, decode_responses=True, socket_timeout=10)
    grouped: dict[str, list[dict[str, str]]] = defaultdict(list)
    try:
        last = "-"
        while True:
            entries: Any = client.xrange(STREAM, min=last, count=5_000)
            fresh = [(i, f) for i, f in entries if i != last]
            if not fresh:
                break
            for entry_id, fields in fresh:
                grouped[fields.get("orderId", "")].append({"id": entry_id, **fields})
            last = fresh[-1][0]
    finally:
        client.close()
    return grouped


DeadLetterFilter = Callable[[Any], bool]


def _check_order(
    order: _Order,
    report: Report,
    now: datetime,
    deadline: timedelta,
    payments: list[tuple[Any, ...]],
    reservations: list[tuple[Any, ...]],
    shipments: list[dict[str, Any]],
    notes: list[dict[str, str]],
) -> None:
    oid = order.order_id
    young = now - order.updated_at < deadline

    def bad(rule: str, detail: str, settling: bool = True) -> None:
        """A violation, or pending while the order (or its last change) is recent."""
        target = report.pending if settling and young else report.violations
        target.append(Violation(rule, oid, detail))

    if order.status not in FINAL:
        if now - order.created_at >= deadline:
            report.violations.append(
                Violation("final", oid, f"still {order.status} after {deadline.total_seconds()}s")
            )
        else:
            report.pending.append(Violation("final", oid, f"in flight ({order.status})"))
        return
    report.final[order.status] += 1
    confirmed = order.status == "CONFIRMED"
    # money
    captured = [p for p in payments if p[0] == "CAPTURED"]
    if len(payments) > 1:
        bad("money", f"{len(payments)} payments", settling=False)
    if confirmed and [p[1] for p in captured] != [order.total_cents]:
        bad("money", f"confirmed for {order.total_cents} but payments are {payments}")
    if not confirmed and captured:
        bad("money", f"cancelled but a payment is still captured: {captured}")
    # shipments
    prepared = [s for s in shipments if s.get("shippingStatus") == "PREPARED"]
    if len(shipments) > 1:
        bad("shipment", f"{len(shipments)} shipment documents", settling=False)
    if confirmed and len(prepared) != 1:
        bad("shipment", f"confirmed with {len(prepared)} PREPARED shipments")
    if not confirmed and prepared:
        bad("shipment", "cancelled but a shipment is PREPARED", settling=False)
    # reservations
    held = [r for r in reservations if r[2] == "RESERVED"]
    if held:
        bad("reservation", f"{order.status} but still holds {held}")
    if confirmed:
        ordered = sorted((i["sku"], int(i["quantity"])) for i in order.items)
        shipped = sorted((r[0], int(r[1])) for r in reservations if r[2] == "SHIPPED")
        if shipped != ordered and not held:
            bad("reservation", f"shipped {shipped} but the order has {ordered}")
    # notifications
    templates = [n.get("template") for n in notes]
    if len(notes) > 1:
        bad("notification", f"{len(notes)} notifications: {templates}", settling=False)
    elif templates != [TEMPLATE[order.status]]:
        bad("notification", f"{order.status} with notifications {templates}")


def check_books(
    settings: Settings,
    *,
    order_ids: Iterable[str] | None = None,
    since: datetime | None = None,
    skus: Iterable[str] | None = None,
    in_flight_deadline_s: float = DEFAULT_IN_FLIGHT_DEADLINE_S,
    expected_dead_letters: Collection[str] | DeadLetterFilter = (),
    dead_letters: bool = True,
) -> Report:
    """Check the invariants over the orders in scope (see the module's docstring).

    ``order_ids``/``since`` limit the orders (and the dead letters: those naming an order in
    scope, or newer than ``since``); ``skus`` limits the stock check (default: every SKU when
    unscoped, the SKUs of the orders in scope otherwise). ``expected_dead_letters``: event ids
    (or a predicate on a ``replay.DeadLetter``) that are allowed in the dead-letter topic.
    """
    scope = Scope(
        order_ids=None if order_ids is None else frozenset(order_ids),
        since=since,
        skus=None if skus is None else frozenset(skus),
    )
    report = Report()
    orders = _orders(settings, scope)
    report.orders = len(orders)
    ids = None if scope.everything else [o.order_id for o in orders]
    payments = _by_order(
        settings.payments_dsn,
        "SELECT order_id::text, status, amount_cents FROM payments"
        " WHERE %(ids)s::uuid[] IS NULL OR order_id = ANY(%(ids)s::uuid[])",
        ids,
    )
    reservations = _by_order(
        settings.inventory_dsn,
        "SELECT order_id::text, sku, quantity, state FROM reservations"
        " WHERE %(ids)s::uuid[] IS NULL OR order_id = ANY(%(ids)s::uuid[])",
        ids,
    )
    shipments = _shipments(settings, ids)
    notes = notifications(settings)
    now = datetime.now(UTC)
    deadline = timedelta(seconds=in_flight_deadline_s)
    known = set()
    for order in orders:
        known.add(order.order_id)
        _check_order(
            order,
            report,
            now,
            deadline,
            payments.get(order.order_id, []),
            reservations.get(order.order_id, []),
            shipments.get(order.order_id, []),
            notes.get(order.order_id, []),
        )
    confirmed_total = sum(o.total_cents for o in orders if o.status == "CONFIRMED")
    in_flight = {o.order_id for o in orders if o.status not in FINAL}
    captured = sum(
        p[1]
        for oid, rows in payments.items()
        if oid not in in_flight
        for p in rows
        if p[0] in ("CAPTURED", "REFUNDED")
    )
    refunded = sum(
        p[1]
        for oid, rows in payments.items()
        if oid not in in_flight
        for p in rows
        if p[0] == "REFUNDED"
    )
    if captured - refunded != confirmed_total:
        report.violations.append(
            Violation(
                "money",
                "(all orders in scope)",
                f"captured {captured} - refunded {refunded} != confirmed total {confirmed_total}",
            )
        )
    if scope.everything:
        for where, rows in (("payments", payments), ("reservations", reservations)):
            for oid in set(rows) - known:
                report.violations.append(Violation("orphan", oid, f"{where} of an unknown order"))
        for oid in set(shipments) - known:
            report.violations.append(Violation("orphan", oid, "shipment of an unknown order"))
    # stock
    stock_skus: Collection[str] | None = scope.skus
    if stock_skus is None and not scope.everything:
        stock_skus = {str(i["sku"]) for o in orders for i in o.items}
    stock = _stock(settings, stock_skus)
    report.skus = len(stock)
    for sku, initial, available, reserved, shipped, held, sent in stock:
        if initial != available + reserved + shipped:
            report.violations.append(
                Violation(
                    "stock",
                    sku,
                    f"initial {initial} != available {available} + reserved {reserved}"
                    f" + shipped {shipped}",
                )
            )
        if (reserved, shipped) != (held, sent):
            report.violations.append(
                Violation(
                    "stock",
                    sku,
                    f"reserved/shipped columns {reserved}/{shipped} but reservations say"
                    f" {held}/{sent}",
                )
            )
    if dead_letters:
        _check_dead_letters(settings, scope, report, expected_dead_letters)
    return report


def _check_dead_letters(
    settings: Settings,
    scope: Scope,
    report: Report,
    expected: Collection[str] | DeadLetterFilter,
) -> None:
    from minimart.console.replay import read_dead_letters  # replay imports this module

    allowed: DeadLetterFilter = (
        expected if callable(expected) else (lambda letter: letter.event_id in expected)
    )
    letters = []
    for letter in read_dead_letters(settings):
        if scope.order_ids is not None and not (
            letter.order_id in scope.order_ids or allowed(letter)
        ):
            continue
        if scope.since is not None and letter.timestamp < scope.since:
            continue
        letters.append(letter)
    report.dead_letters += len(letters)
    redriven = _redriven(settings, letters)
    for letter in letters:
        if not allowed(letter) and letter.event_id not in redriven:
            report.violations.append(
                Violation(
                    "dead-letter",
                    letter.event_id,
                    f"{letter.event_type} in {DEAD_LETTER_TOPIC}: {letter.reason}",
                )
            )


def _redriven(settings: Settings, letters: Sequence[DeadLetter]) -> set[str]:
    """Event ids of dead letters published again to their original topic after they died
    (``replay.redrive``): those are resolved, not lost."""
    from minimart.console.replay import read_topics

    topics = sorted({t for t in (letter.original_topic for letter in letters) if t})
    if not topics:
        return set()
    latest: dict[tuple[str, str | None], int] = {}
    for record in read_topics(settings, topics):
        key = (record.topic, record.event_id)
        latest[key] = max(latest.get(key, -1), record.timestamp)
    return {
        letter.event_id
        for letter in letters
        if letter.original_topic
        and latest.get((letter.original_topic, letter.event_id), -1) > letter.record.timestamp
    }


def wait_for_books(
    settings: Settings, timeout: float = 60.0, poll_s: float = 0.5, **kwargs: Any
) -> Report:
    """Check until nothing is pending (or ``timeout``); the last report."""
    deadline = time.monotonic() + timeout
    while True:
        report = check_books(settings, **kwargs)
        if report.settled or time.monotonic() >= deadline:
            return report
        time.sleep(poll_s)
