"""Order status: follow the saga's events, keep the timeline, and close the order."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any

from minimart.catalog import Event, EventType, next_event
from minimart.domain.orders import OrderStatus
from minimart.domain.saga import FACTS, Contradiction, check_order_facts, recorded, status_of
from minimart.handlers.ports import OrderUnitOfWork

# The events order-status records: the saga's facts (minimart.domain.saga.PATHS).
TRACKED: frozenset[EventType] = FACTS


def _detail(event: Event) -> dict[str, Any]:
    keep = ("reason", "labelId", "paymentId", "amountCents", "template", "streamId")
    return {key: event.data[key] for key in keep if key in event.data}


# Told once when an order reaches a final state: (status, reason, when the order was accepted).
OnFinal = Callable[[OrderStatus, str | None, datetime | None], None]


class UnknownOrder(Contradiction):
    """An event names an order this service never accepted: refused as poison (400). The
    ingress commits an order before any event of it can exist (the outbox), in this very
    database, so no event can arrive early; one that names no order is forged or broken, and
    retrying it would only hold its partition (and redrive it back) for nothing."""

    def __init__(self, order_id: str) -> None:
        super().__init__("unknown-order", f"order {order_id} does not exist")


def track(event: Event, uow: OrderUnitOfWork, on_final: OnFinal | None = None) -> list[Event]:
    """Record ``event`` on its order; ``on_final`` hears of the order's closing once, after
    the commit (a replayed event does not tell it again).

    The status follows from the set of facts recorded, whatever order they arrived in: the
    order is confirmed once reserved, captured and prepared are all recorded. An event that
    contradicts the order (another customer or amount, a fact already recorded by another
    event, a set no saga path holds) is a ``Contradiction``: nothing recorded."""
    final: tuple[OrderStatus, str | None, datetime | None] | None = None
    with uow:
        done, order = uow.outcome_and_order(event.id, event.order_id)
        if done is not None:
            return done
        if order is None:
            raise UnknownOrder(event.order_id)
        try:
            check_order_facts(order.customer_id, order.total_cents, event.data)
            facts = recorded(order.facts, event.type)
        except Contradiction:
            # Read again: a concurrent duplicate may have committed while this one waited
            # for the order's lock (its fact is then recorded, and so is its outcome).
            done = uow.outcome_of(event.id)
            if done is not None:
                return done
            raise
        status = order.status.advanced_to(status_of(facts))
        uow.add_timeline(event.order_id, event, status, _detail(event))
        emitted: list[Event] = []
        if status != order.status:
            reason = event.data.get("reason") if status == OrderStatus.CANCELLED else None
            uow.set_status(event.order_id, status, reason)
            if status.final:
                final = (status, reason, order.created_at)
            if status == OrderStatus.CONFIRMED:
                emitted.append(
                    next_event(
                        event,
                        EventType.ORDER_CONFIRMED,
                        {
                            "orderId": order.order_id,
                            "customerId": order.customer_id,
                            "totalCents": order.total_cents,
                        },
                    )
                )
            elif status == OrderStatus.CANCELLED:
                emitted.append(
                    next_event(
                        event,
                        EventType.ORDER_CANCELLED,
                        {
                            "orderId": order.order_id,
                            "customerId": order.customer_id,
                            "reason": reason or "cancelled",
                        },
                    )
                )
        uow.record_outcome(event.id, emitted)
        uow.commit()
    if final is not None and on_final is not None:
        on_final(*final)
    return emitted
