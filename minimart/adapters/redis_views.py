"""Read models over the notification stream that ``adapters/redis_streams.py`` appends to:
the console's queries (every notification, one order's)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import redis

from minimart.adapters.redis_streams import STREAM

PAGE = 5_000


@dataclass(frozen=True)
class NotificationRow:
    order_id: str
    template: str
    customer_id: str = ""
    entry_id: str = ""


@contextmanager
def connect(url: str) -> Iterator[redis.Redis]:
    """A short-lived client that answers strings (closed on exit)."""
    client = redis.Redis.from_url(url, decode_responses=True, socket_timeout=10)
    try:
        yield client
    finally:
        client.close()


def entries(client: redis.Redis) -> Iterator[tuple[str, dict[str, str]]]:
    """Every entry of the notification stream, oldest first, read a page at a time."""
    last = "-"
    while True:
        page: Any = client.xrange(STREAM, min=last, count=PAGE)
        fresh = [(i, f) for i, f in page if i != last]
        if not fresh:
            return
        yield from fresh
        last = fresh[-1][0]


def notifications(client: redis.Redis) -> list[NotificationRow]:
    """Every notification of the stream."""
    return [
        NotificationRow(
            order_id=fields.get("orderId", ""),
            template=fields.get("template", ""),
            customer_id=fields.get("customerId", ""),
            entry_id=entry_id,
        )
        for entry_id, fields in entries(client)
    ]


def order_notifications(client: redis.Redis, order_id: str) -> list[dict[str, str]]:
    """One order's notifications: each entry's fields and its id."""
    return [
        {"id": entry_id, **fields}
        for entry_id, fields in entries(client)
        if fields.get("orderId") == order_id
    ]
