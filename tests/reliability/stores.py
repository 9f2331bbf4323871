"""Everything a set of orders left in every store, for "nothing changed" checks.

Whole rows (every column, timestamps too), whole Mongo documents, every Redis entry and
dedupe key of the orders: a replay that rewrote a row with the same values, moved a
timestamp or appended a second notification shows up as a difference.
"""

from __future__ import annotations

from collections.abc import Collection
from typing import Any

import psycopg
import redis
from psycopg.rows import dict_row
from pymongo import MongoClient

from minimart.adapters.redis_streams import STREAM
from minimart.console import replay
from minimart.settings import Settings
from tests import replaying

Rows = list[dict[str, Any]]


def _rows(dsn: str, query: str, *params: Any) -> Rows:
    with psycopg.connect(dsn, autocommit=True, row_factory=dict_row) as conn:
        return conn.execute(query.encode(), params).fetchall()


def _processed(dsn: str, event_ids: list[str]) -> Rows:
    return _rows(
        dsn,
        "SELECT * FROM processed_events WHERE event_id = ANY(%s) ORDER BY consumer, event_id",
        event_ids,
    )


def snapshot(
    settings: Settings,
    order_ids: Collection[str],
    skus: Collection[str],
    recorded: Collection[replay.RecordedEvent] | None = None,
) -> dict[str, Any]:
    """The stores' rows of these orders and SKUs, and the ids of every event the topics hold
    for the orders (a duplicate has its original's id), from ``recorded`` if given."""
    ids, skus = sorted(order_ids), sorted(skus)
    if recorded is None:
        recorded = replay.record(settings, order_ids=ids)
    events = sorted({r.event_id for r in recorded if r.event_id})
    mongo: MongoClient[dict[str, Any]] = MongoClient(settings.mongo_url, tz_aware=True)
    try:
        shipments = list(
            mongo.get_default_database(default="minimart")["shipments"]
            .find({"_id": {"$in": ids}})
            .sort("_id")
        )
    finally:
        mongo.close()
    client = redis.Redis.from_url(settings.redis_url, decode_responses=True)
    try:
        entries: Any = client.xrange(STREAM)
        notifications = [(i, f) for i, f in entries if f.get("orderId") in set(ids)]
        dedupe = {key: client.get(key) for oid in ids
                  for key in sorted(client.scan_iter(f"minimart:notified:{oid}/*"))}  # fmt: skip
    finally:
        client.close()
    return {
        "orders": _rows(settings.orders_dsn,
                        "SELECT * FROM orders WHERE id::text = ANY(%s) ORDER BY id", ids),
        "timeline": _rows(settings.orders_dsn, "SELECT * FROM order_timeline"
                          " WHERE order_id::text = ANY(%s) ORDER BY order_id, event_id", ids),
        "outbox": _rows(settings.orders_dsn, "SELECT * FROM outbox"
                        " WHERE event ->> 'orderId' = ANY(%s) ORDER BY seq", ids),
        "order_status_processed": _processed(settings.orders_dsn, events),
        "stock": _rows(settings.inventory_dsn,
                       "SELECT * FROM stock WHERE sku = ANY(%s) ORDER BY sku", skus),
        "reservations": _rows(settings.inventory_dsn, "SELECT * FROM reservations"
                              " WHERE order_id::text = ANY(%s) ORDER BY order_id, sku", ids),
        "inventory_processed": _processed(settings.inventory_dsn, events),
        "payments": _rows(settings.payments_dsn,
                          "SELECT * FROM payments WHERE order_id::text = ANY(%s) ORDER BY 1", ids),
        "payment_processed": _processed(settings.payments_dsn, events),
        "shipments": shipments,
        "notifications": notifications,
        "dedupe_keys": dedupe,
        "event_ids": events,
    }  # fmt: skip


def settle(settings: Settings, timeout: float = 120.0) -> None:
    """Wait until every KafkaSource has committed its topics' end, twice: a delivery that
    committed between two sources' checks may have published to a source checked before."""
    replaying.wait_drained(settings, timeout=timeout)
    replaying.wait_drained(settings, timeout=timeout)
