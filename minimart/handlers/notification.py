"""Notification: enqueue the customer's mail for a final order, exactly once."""

from __future__ import annotations

from minimart.catalog import Event, EventType, next_event
from minimart.handlers.ports import Notification, NotificationOutbox

TEMPLATES = {
    EventType.ORDER_CONFIRMED: "OrderConfirmed",
    EventType.ORDER_CANCELLED: "OrderCancelled",
}


def notify(event: Event, outbox: NotificationOutbox) -> list[Event]:
    template = TEMPLATES[event.type]
    entry_id = outbox.enqueue_once(
        f"{event.order_id}/{template}",
        Notification(
            order_id=event.order_id,
            customer_id=event.data["customerId"],
            template=template,
            reason=event.data.get("reason", ""),
        ),
    )
    return [
        next_event(
            event,
            EventType.NOTIFICATION_SENT,
            {"orderId": event.order_id, "template": template, "streamId": entry_id},
        )
    ]
