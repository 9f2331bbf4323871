"""Order status: follow the saga's events, keep the timeline, and close the order."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any

from minimart.catalog import Event, EventType, next_event
from minimart.domain.orders import OrderStatus
from minimart.handlers.ports import OrderUnitOfWork

# What each observed event says about the order's status.
STATUS_AFTER = {
    EventType.INVENTORY_RESERVED: OrderStatus.RESERVED,
    EventType.PAYMENT_CAPTURED: OrderStatus.PAID,
    EventType.PAYMENT_DECLINED: OrderStatus.CANCELLING,
    EventType.SHIPPING_FAILED: OrderStatus.CANCELLING,
    EventType.PAYMENT_REFUNDED: OrderStatus.CANCELLING,
    EventType.SHIPPING_PREPARED: OrderStatus.CONFIRMED,
    EventType.INVENTORY_REJECTED: OrderStatus.CANCELLED,
    EventType.INVENTORY_RELEASED: OrderStatus.CANCELLED,
}


def _detail(event: Event) -> dict[str, Any]:
    keep = ("reason", "labelId", "paymentId", "amountCents", "template", "streamId")
    return {key: event.data[key] for key in keep if key in event.data}


# Told once when an order reaches a final state: (status, reason, when the order was accepted).
OnFinal = Callable[[OrderStatus, str | None, datetime | None], None]


class UnknownOrder(LookupError):
    """An event names an order this service never accepted (retried, then dead-lettered)."""


def track(event: Event, uow: OrderUnitOfWork, on_final: OnFinal | None = None) -> list[Event]:
    """Record ``event`` on its order; ``on_final`` hears of the order's closing once, after
    the commit (a replayed event does not tell it again)."""
    final: tuple[OrderStatus, str | None, datetime | None] | None = None
    with uow:
        done, order = uow.outcome_and_order(event.id, event.order_id)
        if done is not None:
            return done
        if order is None:
            raise UnknownOrder(f"order {event.order_id} does not exist")
        observed = STATUS_AFTER.get(event.type, order.status)
        status = order.status.advanced_to(observed)
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
