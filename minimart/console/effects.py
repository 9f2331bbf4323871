"""Reads an order's effects straight from every store (for the demo, the tests, the checker)."""

from __future__ import annotations

from typing import Any

import psycopg
import redis
from pymongo import MongoClient

from minimart.adapters.redis_streams import STREAM
from minimart.settings import Settings


def _rows(dsn: str, query: str, order_id: str) -> list[dict[str, Any]]:
    with psycopg.connect(dsn, autocommit=True) as conn, conn.cursor() as cur:
        cur.execute(query.encode(), (order_id,))
        columns = [c.name for c in cur.description or ()]
        return [dict(zip(columns, row, strict=True)) for row in cur.fetchall()]


def order_effects(order_id: str, settings: Settings) -> dict[str, Any]:
    """Where one order's effects landed: reservations, payment, shipment, notifications."""
    mongo: MongoClient[dict[str, Any]] = MongoClient(
        settings.mongo_url, serverSelectionTimeoutMS=5_000
    )
    try:
        shipment = mongo.get_default_database(default="minimart")["shipments"].find_one(
            {"_id": order_id}, {"emitted": 0}
        )
    finally:
        mongo.close()
    client = redis.Redis.from_url(settings.redis_url, decode_responses=True)
    try:
        entries: list[tuple[str, dict[str, str]]] = client.xrange(STREAM)  # type: ignore[assignment]
        notifications = [
            {"id": entry_id, **fields}
            for entry_id, fields in entries
            if fields.get("orderId") == order_id
        ]
    finally:
        client.close()
    return {
        "reservations": _rows(
            settings.inventory_dsn,
            "SELECT sku, quantity, state FROM reservations WHERE order_id = %s ORDER BY sku",
            order_id,
        ),
        "payments": _rows(
            settings.payments_dsn,
            "SELECT payment_id, amount_cents, status, reason, refund_reason FROM payments"
            " WHERE order_id = %s",
            order_id,
        ),
        "shipment": shipment,
        "notifications": notifications,
    }
