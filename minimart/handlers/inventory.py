"""Inventory: reserve every line of an order atomically, release it, or ship it."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from minimart.catalog import Event, EventType, next_event
from minimart.domain.orders import OrderLine
from minimart.domain.rules import decide_reservation
from minimart.handlers.ports import InventoryUnitOfWork


def lines_of(data: Mapping[str, Any]) -> tuple[OrderLine, ...]:
    return tuple(
        OrderLine(item["sku"], item["quantity"], item["unitPriceCents"]) for item in data["items"]
    )


def reserve(event: Event, uow: InventoryUnitOfWork) -> list[Event]:
    lines = lines_of(event.data)
    with uow:
        done, stock = uow.outcome_and_stock(event.id, [line.sku for line in lines])
        if done is not None:
            return done
        decision = decide_reservation(lines, stock)
        if decision.accepted:
            uow.reserve(event.order_id, lines)
            emitted = next_event(event, EventType.INVENTORY_RESERVED, dict(event.data))
        else:
            emitted = next_event(
                event,
                EventType.INVENTORY_REJECTED,
                {"orderId": event.order_id, "reason": decision.reason},
            )
        uow.record_outcome(event.id, [emitted])
        uow.commit()
    return [emitted]


def release(event: Event, uow: InventoryUnitOfWork) -> list[Event]:
    """Compensation: the payment was declined or refunded, so the stock goes back."""
    with uow:
        done = uow.outcome_of(event.id)
        if done is not None:
            return done
        released = uow.release(event.order_id)
        emitted = next_event(
            event,
            EventType.INVENTORY_RELEASED,
            {
                "orderId": event.order_id,
                "reason": event.data["reason"],
                "items": [{"sku": line.sku, "quantity": line.quantity} for line in released],
            },
        )
        uow.record_outcome(event.id, [emitted])
        uow.commit()
    return [emitted]


def ship(event: Event, uow: InventoryUnitOfWork) -> list[Event]:
    """The order is confirmed: its reserved stock leaves the warehouse (reserved -> shipped)."""
    with uow:
        if uow.outcome_of(event.id) is not None:
            return []
        uow.ship(event.order_id)
        uow.record_outcome(event.id, [])
        uow.commit()
    return []


HANDLERS: Mapping[EventType, Callable[[Event, InventoryUnitOfWork], list[Event]]] = {
    EventType.ORDER_CREATED: reserve,
    EventType.PAYMENT_DECLINED: release,
    EventType.PAYMENT_REFUNDED: release,
    EventType.ORDER_CONFIRMED: ship,
}
