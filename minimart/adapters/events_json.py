"""Events stored inside our own databases (outcome records, outbox rows) as JSON."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from minimart.catalog import Event, EventType


def dump(events: Sequence[Event]) -> list[dict[str, Any]]:
    return [
        {"type": e.type.value, "id": e.id, "orderId": e.order_id, "data": dict(e.data)}
        for e in events
    ]


def load(rows: Sequence[dict[str, Any]]) -> list[Event]:
    return [
        Event(type=EventType(r["type"]), id=r["id"], order_id=r["orderId"], data=r["data"])
        for r in rows
    ]
