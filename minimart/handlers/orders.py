"""The order ingress: accept a new order (once per Idempotency-Key) and show an order."""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from minimart.catalog import Event, EventType, derived_event_id
from minimart.domain.orders import (
    OrderLimits,
    OrderStatus,
    parse_order_request,
    price_lines,
)


@dataclass(frozen=True)
class Accepted:
    order_id: str
    status: OrderStatus
    created: bool
    event: Event | None


class IdempotencyConflict(ValueError):
    """An Idempotency-Key was reused with a different request body."""


class OrderIntake(Protocol):
    def prices(self, skus: Sequence[str]) -> dict[str, int]: ...

    def accept(self, event: Event, idempotency_key: str | None, fingerprint: str) -> Accepted:
        """Store the order, its first timeline step and its outbox record in one transaction;
        when the key was used before, store nothing and return the earlier order."""

    def view(self, order_id: str) -> Mapping[str, Any] | None: ...


def place_order(
    body: Any, idempotency_key: str | None, intake: OrderIntake, limits: OrderLimits
) -> Accepted:
    """Validate, price and accept an order; raise InvalidOrder or IdempotencyConflict."""
    request = parse_order_request(body, limits)
    lines = price_lines(request.lines, intake.prices([line.sku for line in request.lines]))
    order_id = str(uuid.uuid4())
    created = Event(
        type=EventType.ORDER_CREATED,
        id=derived_event_id(order_id, EventType.ORDER_CREATED),
        order_id=order_id,
        data={
            "orderId": order_id,
            "customerId": request.customer_id,
            "items": [line.as_event_data() for line in lines],
            "totalCents": sum(line.total_cents for line in lines),
            "shippingAddress": dict(request.shipping_address),
        },
    )
    return intake.accept(created, idempotency_key, request.fingerprint)
