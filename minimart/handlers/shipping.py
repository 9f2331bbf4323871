"""Shipping: prepare the shipment of a paid order, or fail it (undeliverable address)."""

from __future__ import annotations

from minimart.catalog import Event, EventType, next_event
from minimart.domain.rules import decide_shipping, label_id
from minimart.handlers.ports import Shipment, ShipmentStore


def prepare(event: Event, store: ShipmentStore, failure_rate: float) -> list[Event]:
    """One shipment per order: the first delivery decides, a duplicate re-emits its outcome."""
    decision = decide_shipping(event.order_id, event.data["shippingAddress"], failure_rate)
    label = label_id(event.order_id) if decision.accepted else ""
    if decision.accepted:
        emitted = next_event(
            event, EventType.SHIPPING_PREPARED, {"orderId": event.order_id, "labelId": label}
        )
    else:
        emitted = next_event(
            event, EventType.SHIPPING_FAILED, {"orderId": event.order_id, "reason": decision.reason}
        )
    stored = store.prepare_once(
        Shipment(
            order_id=event.order_id,
            label_id=label,
            status="PREPARED" if decision.accepted else "FAILED",
            reason=decision.reason,
            emitted=(emitted,),
        )
    )
    return list(stored.emitted)
