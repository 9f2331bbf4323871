"""The saga's shape, and what a step refuses because it contradicts what it stores.

A step checks the state it changes, against a bug upstream as much as a forger: an event that
contradicts the stored state is refused with a ``Contradiction`` (the function answers 400:
the source dead-letters it at once, as poison, with the reason) and nothing is changed.

Order-status hears of an order's events in any order (they travel on different topics), so it
keeps the set of facts it recorded and derives the status from the whole set: a fact that
arrives early is kept until the facts it needs have come, and the set must stay on one of
the saga's paths.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from minimart.catalog import EventType
from minimart.domain.orders import OrderStatus

_T = EventType


class Contradiction(ValueError):
    """An event contradicts the state its step stores: refused as poison, nothing changed.

    ``rule`` names the rule (a metric label); the message is the reason a human reads in the
    dead letter."""

    def __init__(self, rule: str, detail: str) -> None:
        super().__init__(f"{rule}: {detail}")
        self.rule = rule
        self.detail = detail


# -- payment -------------------------------------------------------------------------------


def check_capture(order_id: str, data: Mapping[str, Any], existing_status: str | None) -> None:
    """Capture only an order not yet paid (no payment of any outcome stored for it), for the
    amount its lines hold (``totalCents`` = the sum of quantity x unit price: the lines are
    what inventory reserved, priced by the ingress)."""
    if existing_status is not None:
        raise Contradiction(
            "capture-once",
            f"order {order_id} already has a payment ({existing_status}): a second capture",
        )
    lines_total = sum(item["quantity"] * item["unitPriceCents"] for item in data["items"])
    if data["totalCents"] != lines_total:
        raise Contradiction(
            "capture-amount",
            f"order {order_id}: totalCents {data['totalCents']} is not what its lines hold "
            f"({lines_total})",
        )


def check_refund(order_id: str, status: str | None) -> None:
    """Refund only a CAPTURED payment of the order, once (a duplicate of the refunding event
    is answered from its recorded outcome before this is asked)."""
    if status != "CAPTURED":
        found = "no payment" if status is None else f"its payment is {status}"
        raise Contradiction("refund-captured", f"order {order_id}: {found}, nothing to refund")


# -- order status --------------------------------------------------------------------------

# Every way an order's saga can run, as the set of facts order-status records.
PATHS: tuple[frozenset[EventType], ...] = (
    frozenset({_T.INVENTORY_RESERVED, _T.PAYMENT_CAPTURED, _T.SHIPPING_PREPARED,
               _T.NOTIFICATION_SENT}),  # confirmed
    frozenset({_T.INVENTORY_REJECTED, _T.NOTIFICATION_SENT}),  # stock refused
    frozenset({_T.INVENTORY_RESERVED, _T.PAYMENT_DECLINED, _T.INVENTORY_RELEASED,
               _T.NOTIFICATION_SENT}),  # payment declined, stock released
    frozenset({_T.INVENTORY_RESERVED, _T.PAYMENT_CAPTURED, _T.SHIPPING_FAILED,
               _T.PAYMENT_REFUNDED, _T.INVENTORY_RELEASED,
               _T.NOTIFICATION_SENT}),  # shipping failed, refunded, released
)  # fmt: skip
FACTS = frozenset().union(*PATHS)
# An order is confirmed once all of these are recorded, whatever order they arrived in.
CONFIRMED_BY = frozenset({_T.INVENTORY_RESERVED, _T.PAYMENT_CAPTURED, _T.SHIPPING_PREPARED})
_CANCELLED_BY = frozenset({_T.INVENTORY_REJECTED, _T.INVENTORY_RELEASED})
_CANCELLING_BY = frozenset({_T.PAYMENT_DECLINED, _T.SHIPPING_FAILED, _T.PAYMENT_REFUNDED})

# The saga's step order (causal, not arrival): how an order's timeline is shown.
CAUSAL_ORDER: tuple[EventType, ...] = (
    _T.ORDER_CREATED,
    _T.INVENTORY_RESERVED,
    _T.INVENTORY_REJECTED,
    _T.PAYMENT_CAPTURED,
    _T.PAYMENT_DECLINED,
    _T.SHIPPING_PREPARED,
    _T.SHIPPING_FAILED,
    _T.PAYMENT_REFUNDED,
    _T.INVENTORY_RELEASED,
    _T.ORDER_CONFIRMED,
    _T.ORDER_CANCELLED,
    _T.NOTIFICATION_SENT,
)
CAUSAL_STEPS: tuple[str, ...] = tuple(t.short for t in CAUSAL_ORDER)


def causal_rank(step: str) -> int:
    """The position of a timeline step (``inventory.reserved``) in the saga; unknown last."""
    return CAUSAL_STEPS.index(step) if step in CAUSAL_STEPS else len(CAUSAL_STEPS)


def _shorts(facts: Iterable[EventType]) -> str:
    return ", ".join(sorted(f.short for f in facts)) or "nothing"


def recorded(facts: frozenset[EventType], event: EventType) -> frozenset[EventType]:
    """The order's facts once ``event`` is recorded; ``Contradiction`` if it was already
    recorded (by another event: a duplicate is answered from its outcome before this is
    asked) or if no path of the saga holds them all (``shipping.failed`` for a shipped order,
    ``payment.captured`` after ``payment.declined``...)."""
    known = facts & FACTS
    if event in known:
        raise Contradiction("once", f"{event.short} was already recorded by another event")
    after = known | {event}
    if not any(after <= path for path in PATHS):
        raise Contradiction(
            "saga-path", f"{event.short} contradicts what is recorded ({_shorts(known)})"
        )
    return after


def status_of(facts: frozenset[EventType]) -> OrderStatus:
    """The status a consistent set of facts gives an order. CONFIRMED only once reserved,
    captured and prepared are all recorded."""
    if facts & _CANCELLED_BY:
        return OrderStatus.CANCELLED
    if facts >= CONFIRMED_BY:
        return OrderStatus.CONFIRMED
    if facts & _CANCELLING_BY:
        return OrderStatus.CANCELLING
    if _T.PAYMENT_CAPTURED in facts:
        return OrderStatus.PAID
    if _T.INVENTORY_RESERVED in facts:
        return OrderStatus.RESERVED
    return OrderStatus.PENDING


def check_order_facts(customer_id: int, total_cents: int, data: Mapping[str, Any]) -> None:
    """An event that states the order's customer or amount states the order's own (the
    orders row is the source of truth: a capture of another amount is not this order's)."""
    if "customerId" in data and data["customerId"] != customer_id:
        raise Contradiction(
            "order-facts", f"customerId {data['customerId']} is not the order's ({customer_id})"
        )
    for key in ("totalCents", "amountCents"):
        if key in data and data[key] != total_cents:
            raise Contradiction(
                "order-facts", f"{key} {data[key]} is not the order's total ({total_cents})"
            )
