"""The checker's rules over books made of rows: no stores, no servers."""

from __future__ import annotations

import uuid
from dataclasses import replace
from datetime import UTC, datetime, timedelta

from minimart.catalog import DEAD_LETTER_TOPIC
from minimart.console.books import (
    Books,
    Line,
    NotificationRow,
    OrderRow,
    PaymentRow,
    ReservationRow,
    Scope,
    ShipmentRow,
    StockRow,
)
from minimart.console.checker import audit
from minimart.console.replay import DeadLetter, RecordedEvent, dead_letter
from minimart.domain.orders import OrderStatus

NOW = datetime(2026, 12, 1, 10, 0, tzinfo=UTC)
LONG_AGO = NOW - timedelta(hours=1)
JUST_NOW = NOW - timedelta(seconds=1)


def order(
    status: OrderStatus, total: int = 5_000, at: datetime = LONG_AGO, sku: str = "SKU-1"
) -> OrderRow:
    return OrderRow(str(uuid.uuid4()), status, total, (Line(sku, 2),), at, at)


def confirmed_books(o: OrderRow) -> Books:
    """A confirmed order with exactly what the saga leaves behind."""
    return Books(
        scope=Scope(),
        orders=[o],
        payments=[PaymentRow(o.order_id, "CAPTURED", o.total_cents)],
        reservations=[ReservationRow(o.order_id, "SKU-1", 2, "SHIPPED")],
        shipments=[ShipmentRow(o.order_id, "PREPARED")],
        notifications=[NotificationRow(o.order_id, "OrderConfirmed")],
        stock=[StockRow("SKU-1", 10, 8, 0, 2, 0, 2)],
    )


def cancelled_books(o: OrderRow) -> Books:
    """An order cancelled after payment: refunded, stock released, one notification."""
    return Books(
        scope=Scope(),
        orders=[o],
        payments=[PaymentRow(o.order_id, "REFUNDED", o.total_cents)],
        reservations=[ReservationRow(o.order_id, "SKU-1", 2, "RELEASED")],
        shipments=[ShipmentRow(o.order_id, "FAILED")],
        notifications=[NotificationRow(o.order_id, "OrderCancelled")],
        stock=[StockRow("SKU-1", 10, 10, 0, 0, 0, 0)],
    )


def rules_broken(books: Books, **kwargs: object) -> list[tuple[str, str]]:
    report = audit(books, NOW, **kwargs)  # type: ignore[arg-type]
    return [(v.rule, v.detail) for v in report.violations]


def test_the_books_of_a_confirmed_and_a_cancelled_order_balance() -> None:
    for books in (confirmed_books(order(OrderStatus.CONFIRMED)),
                  cancelled_books(order(OrderStatus.CANCELLED))):  # fmt: skip
        report = audit(books, NOW)

        assert report.settled, report.summary()
        assert sum(report.final.values()) == 1


def test_an_order_in_flight_is_pending_until_its_deadline() -> None:
    young = order(OrderStatus.PAID, at=JUST_NOW)
    old = order(OrderStatus.PAID, at=LONG_AGO)

    report = audit(Books(Scope(), orders=[young, old]), NOW, in_flight_deadline_s=60)

    assert [v.subject for v in report.pending] == [young.order_id]
    assert [(v.rule, v.subject) for v in report.violations] == [("final", old.order_id)]


def test_a_missing_notification_is_pending_while_recent_then_a_violation() -> None:
    for at, pending in ((JUST_NOW, True), (LONG_AGO, False)):
        books = replace(confirmed_books(order(OrderStatus.CONFIRMED, at=at)), notifications=[])

        report = audit(books, NOW)

        found = report.pending if pending else report.violations
        assert [v.rule for v in found] == ["notification"]
        assert "with notifications []" in found[0].detail


def test_the_notification_template_must_be_the_outcomes() -> None:
    o = order(OrderStatus.CANCELLED)
    books = replace(
        cancelled_books(o), notifications=[NotificationRow(o.order_id, "OrderConfirmed")]
    )

    assert [rule for rule, _ in rules_broken(books)] == ["notification"]


def test_a_second_payment_is_a_violation_at_once() -> None:
    o = order(OrderStatus.CONFIRMED, at=JUST_NOW)
    books = confirmed_books(o)
    books = replace(books, payments=[*books.payments, PaymentRow(o.order_id, "CAPTURED", 1)])

    broken = rules_broken(books)

    assert ("money", "2 payments") in broken  # does not settle: never pending
    assert any(rule == "money" and "captured" in detail for rule, detail in broken)


def test_a_confirmed_order_is_captured_for_its_own_total() -> None:
    big, small = order(OrderStatus.CONFIRMED, 5_000), order(OrderStatus.CONFIRMED, 3_000)
    a, b = confirmed_books(big), confirmed_books(small)
    books = replace(
        a,
        orders=[big, small],
        payments=[*a.payments, *b.payments],
        reservations=[*a.reservations, *b.reservations],
        shipments=[*a.shipments, *b.shipments],
        notifications=[*a.notifications, *b.notifications],
        stock=[StockRow("SKU-1", 10, 6, 0, 4, 0, 4)],
    )
    assert rules_broken(books) == []  # each captured for its own total

    # the two captures swapped: one each, and the balance still holds (8000 = 8000)
    swapped = replace(
        books,
        payments=[
            PaymentRow(big.order_id, "CAPTURED", 3_000),
            PaymentRow(small.order_id, "CAPTURED", 5_000),
        ],
    )

    report = audit(swapped, NOW)
    assert [(v.rule, v.subject) for v in report.violations] == [
        ("money", big.order_id),
        ("money", small.order_id),
    ]
    assert all(v.detail.startswith("confirmed for ") for v in report.violations)


def test_a_cancelled_order_keeps_no_money_shipment_or_stock() -> None:
    o = order(OrderStatus.CANCELLED)
    books = replace(
        cancelled_books(o),
        payments=[PaymentRow(o.order_id, "CAPTURED", o.total_cents)],
        reservations=[ReservationRow(o.order_id, "SKU-1", 2, "RESERVED")],
        shipments=[ShipmentRow(o.order_id, "PREPARED")],
        stock=[StockRow("SKU-1", 10, 8, 2, 0, 2, 0)],
    )

    rules = sorted(rule for rule, _ in rules_broken(books))

    # the payment itself, and the balance: captured 5000 but nothing confirmed
    assert rules == ["money", "money", "reservation", "shipment"]


def test_a_confirmed_order_ships_what_it_ordered() -> None:
    o = order(OrderStatus.CONFIRMED)
    books = replace(
        confirmed_books(o), reservations=[ReservationRow(o.order_id, "SKU-1", 1, "SHIPPED")]
    )

    assert rules_broken(books) == [
        ("reservation", "shipped [('SKU-1', 1)] but the order has [('SKU-1', 2)]")
    ]


def test_stock_is_conserved_and_matches_its_reservations() -> None:
    books = Books(Scope(), stock=[StockRow("SKU-9", 10, 7, 2, 0, 3, 0)])

    assert [rule for rule, _ in rules_broken(books)] == ["stock", "stock"]


def test_rows_of_unknown_orders_are_orphans_only_when_everything_is_checked() -> None:
    stranger = str(uuid.uuid4())
    books = Books(
        Scope(),
        payments=[PaymentRow(stranger, "DECLINED", 0)],
        shipments=[ShipmentRow(stranger, "FAILED")],
    )

    assert rules_broken(books) == [
        ("orphan", "payments of an unknown order"),
        ("orphan", "shipment of an unknown order"),
    ]
    assert rules_broken(replace(books, scope=Scope(order_ids=frozenset()))) == []


def letter(event_id: str) -> DeadLetter:
    headers = [
        ("ce_specversion", b"1.0"),
        ("ce_id", event_id.encode()),
        ("ce_type", b"com.minimart.inventory.rejected"),
        ("ce_knativeerrorcode", b"500"),
    ]
    return dead_letter(RecordedEvent(DEAD_LETTER_TOPIC, 0, 1, 0, b"k", b"{}", headers))


def test_a_dead_letter_is_a_violation_unless_expected_or_redriven() -> None:
    lost, expected, redriven = letter("lost"), letter("expected"), letter("redriven")
    books = Books(
        Scope(), dead_letters=[lost, expected, redriven], redriven=frozenset({"redriven"})
    )

    report = audit(books, NOW, expected_dead_letters=lambda d: d.event_id == "expected")

    assert [(v.rule, v.subject) for v in report.violations] == [("dead-letter", "lost")]
    assert report.dead_letters == 3
