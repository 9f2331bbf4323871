"""The books of the whole system, checked after a run: nothing lost, nothing done twice.

``check_books(settings)`` fetches the books once (``books.fetch_books``) and runs the rules
below over them; each rule is a pure function of the ``Books``:

* every accepted order is final, or still in flight and younger than ``in_flight_deadline_s``;
* stock is conserved per SKU: initial = available + reserved + shipped, and the reserved and
  shipped columns equal the sum of the SKU's reservations in that state;
* money balances: captured - refunded = the total of the confirmed orders (and per order:
  a confirmed order has one CAPTURED payment of its total, a cancelled one none);
* exactly one PREPARED shipment per confirmed order, none for a cancelled order;
* exactly one notification per final order, with the template of its outcome;
* no RESERVED reservation left for a final order (cancelled: released, confirmed: shipped);
* nothing in the dead-letter topic unless expected (``expected_dead_letters``) or re-driven.

Tests share one stack, so a check can be scoped to a set of order ids (and the SKUs they own)
or to the orders created since a moment; unscoped, it checks everything. Something that is
not final yet and younger than the deadline is reported as pending, not as a violation:
``wait_for_books`` polls until there is nothing pending (or the time is up).
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Collection, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from minimart.catalog import EventType
from minimart.console.books import (
    Books,
    DeadLetterFilter,
    OrderRow,
    Scope,
    StockRow,
    fetch_books,
)
from minimart.domain.orders import OrderStatus
from minimart.handlers.notification import TEMPLATES
from minimart.settings import Settings

DEFAULT_IN_FLIGHT_DEADLINE_S = 60.0
# The event order-status emits when an order closes (its notification's template follows).
CLOSING_EVENT = {
    OrderStatus.CONFIRMED: EventType.ORDER_CONFIRMED,
    OrderStatus.CANCELLED: EventType.ORDER_CANCELLED,
}
CAPTURED, REFUNDED = "CAPTURED", "REFUNDED"
PREPARED = "PREPARED"
HELD, SHIPPED = "RESERVED", "SHIPPED"


@dataclass(frozen=True)
class Violation:
    rule: str
    subject: str
    detail: str

    def __str__(self) -> str:
        return f"[{self.rule}] {self.subject}: {self.detail}"


@dataclass(frozen=True)
class Finding:
    """A broken rule of one order; ``settles``: may still mend while the order is recent."""

    violation: Violation
    settles: bool = True


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


def _finding(order: OrderRow, rule: str, detail: str, settles: bool = True) -> Finding:
    return Finding(Violation(rule, order.order_id, detail), settles)


# -- the rules of one final order: the order, and its rows (``Books.of_order``) ------------


def money_of_order(order: OrderRow, o: Books) -> Iterator[Finding]:
    captured = [p for p in o.payments if p.status == CAPTURED]
    confirmed = order.status == OrderStatus.CONFIRMED
    if len(o.payments) > 1:
        yield _finding(order, "money", f"{len(o.payments)} payments", settles=False)
    if confirmed and [p.amount_cents for p in captured] != [order.total_cents]:
        yield _finding(
            order, "money", f"confirmed for {order.total_cents} but payments are {o.payments}"
        )
    if not confirmed and captured:
        yield _finding(order, "money", f"cancelled but a payment is still captured: {captured}")


def shipment_of_order(order: OrderRow, o: Books) -> Iterator[Finding]:
    prepared = [s for s in o.shipments if s.status == PREPARED]
    confirmed = order.status == OrderStatus.CONFIRMED
    if len(o.shipments) > 1:
        yield _finding(order, "shipment", f"{len(o.shipments)} shipment documents", False)
    if confirmed and len(prepared) != 1:
        yield _finding(order, "shipment", f"confirmed with {len(prepared)} PREPARED shipments")
    if not confirmed and prepared:
        yield _finding(order, "shipment", "cancelled but a shipment is PREPARED", False)


def reservations_of_order(order: OrderRow, o: Books) -> Iterator[Finding]:
    held = [r for r in o.reservations if r.state == HELD]
    if held:
        yield _finding(order, "reservation", f"{order.status} but still holds {held}")
    if order.status == OrderStatus.CONFIRMED and not held:
        ordered = sorted((line.sku, line.quantity) for line in order.lines)
        shipped = sorted((r.sku, r.quantity) for r in o.reservations if r.state == SHIPPED)
        if shipped != ordered:
            yield _finding(order, "reservation", f"shipped {shipped} but the order has {ordered}")


def notification_of_order(order: OrderRow, o: Books) -> Iterator[Finding]:
    templates = [n.template for n in o.notifications]
    if len(templates) > 1:
        yield _finding(order, "notification", f"{len(templates)} notifications: {templates}", False)
    elif templates != [TEMPLATES[CLOSING_EVENT[order.status]]]:
        yield _finding(order, "notification", f"{order.status} with notifications {templates}")


ORDER_RULES = (money_of_order, shipment_of_order, reservations_of_order, notification_of_order)


# -- the rules of the books as a whole -----------------------------------------------------


def money_balances(books: Books) -> Iterator[Violation]:
    """Captured minus refunded money of the final orders is the confirmed orders' total."""
    in_flight = {o.order_id for o in books.orders if not o.status.final}
    settled = [p for p in books.payments if p.order_id not in in_flight]
    captured = sum(p.amount_cents for p in settled if p.status in (CAPTURED, REFUNDED))
    refunded = sum(p.amount_cents for p in settled if p.status == REFUNDED)
    confirmed = sum(o.total_cents for o in books.orders if o.status == OrderStatus.CONFIRMED)
    if captured - refunded != confirmed:
        yield Violation(
            "money",
            "(all orders in scope)",
            f"captured {captured} - refunded {refunded} != confirmed total {confirmed}",
        )


def no_orphans(books: Books) -> Iterator[Violation]:
    """Unscoped, every payment, reservation and shipment belongs to a known order."""
    if not books.scope.everything:
        return
    known = {o.order_id for o in books.orders}
    rows: Iterable[tuple[str, Iterable[Any]]] = (
        ("payments", books.payments),
        ("reservations", books.reservations),
    )
    for where, table in rows:
        for order_id in sorted({row.order_id for row in table} - known):
            yield Violation("orphan", order_id, f"{where} of an unknown order")
    for order_id in sorted({s.order_id for s in books.shipments} - known):
        yield Violation("orphan", order_id, "shipment of an unknown order")


def stock_conserved(row: StockRow) -> Iterator[Violation]:
    if row.initial != row.available + row.reserved + row.shipped:
        yield Violation(
            "stock",
            row.sku,
            f"initial {row.initial} != available {row.available} + reserved {row.reserved}"
            f" + shipped {row.shipped}",
        )
    if (row.reserved, row.shipped) != (row.reservations_held, row.reservations_shipped):
        yield Violation(
            "stock",
            row.sku,
            f"reserved/shipped columns {row.reserved}/{row.shipped} but reservations say"
            f" {row.reservations_held}/{row.reservations_shipped}",
        )


def dead_letters_resolved(books: Books, expected: DeadLetterFilter) -> Iterator[Violation]:
    """Every dead letter in scope is expected or was re-driven."""
    for letter in books.dead_letters:
        if not expected(letter) and letter.event_id not in books.redriven:
            yield Violation(
                "dead-letter",
                letter.event_id,
                f"{letter.event_type} in {letter.record.topic}: {letter.reason}",
            )


# -- all of them ---------------------------------------------------------------------------


def audit(
    books: Books,
    now: datetime,
    in_flight_deadline_s: float = DEFAULT_IN_FLIGHT_DEADLINE_S,
    expected_dead_letters: DeadLetterFilter = lambda letter: False,
) -> Report:
    """Every rule over ``books`` as of ``now``."""
    deadline = timedelta(seconds=in_flight_deadline_s)
    report = Report(
        orders=len(books.orders), skus=len(books.stock), dead_letters=len(books.dead_letters)
    )
    for order in books.orders:
        if not order.status.final:
            if now - order.created_at >= deadline:
                detail = f"still {order.status} after {deadline.total_seconds()}s"
                report.violations.append(Violation("final", order.order_id, detail))
            else:
                detail = f"in flight ({order.status})"
                report.pending.append(Violation("final", order.order_id, detail))
            continue
        report.final[order.status] += 1
        young = now - order.updated_at < deadline  # its last change is recent: may settle
        of_order = books.of_order(order)
        for rule in ORDER_RULES:
            for found in rule(order, of_order):
                target = report.pending if found.settles and young else report.violations
                target.append(found.violation)
    report.violations.extend(money_balances(books))
    report.violations.extend(no_orphans(books))
    for row in books.stock:
        report.violations.extend(stock_conserved(row))
    report.violations.extend(dead_letters_resolved(books, expected_dead_letters))
    return report


def _expected(expected: Collection[str] | DeadLetterFilter) -> DeadLetterFilter:
    if callable(expected):
        return expected
    ids = frozenset(expected)
    return lambda letter: letter.event_id in ids


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
    expected = _expected(expected_dead_letters)
    books = fetch_books(settings, scope, expected_dead_letters=expected, dead_letters=dead_letters)
    return audit(books, datetime.now(UTC), in_flight_deadline_s, expected)


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
