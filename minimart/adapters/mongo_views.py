"""Read models over the shipments collection that ``adapters/mongo.py`` owns: the console's
queries (the shipments the checker audits, one order's shipment document)."""

from __future__ import annotations

from collections.abc import Collection, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from pymongo import MongoClient
from pymongo.collection import Collection as MongoCollection

from minimart.adapters.mongo import DATABASE, SHIPMENTS

Shipments = MongoCollection[dict[str, Any]]


@dataclass(frozen=True)
class ShipmentRow:
    order_id: str
    status: str  # PREPARED | FAILED


@contextmanager
def connect(url: str, timeout_s: float = 10.0) -> Iterator[Shipments]:
    """The shipments collection over a short-lived client (closed on exit)."""
    client: MongoClient[dict[str, Any]] = MongoClient(
        url, serverSelectionTimeoutMS=int(timeout_s * 1000)
    )
    try:
        yield client.get_default_database(default=DATABASE)[SHIPMENTS]
    finally:
        client.close()


def shipments(collection: Shipments, order_ids: Collection[str] | None = None) -> list[ShipmentRow]:
    """The shipments of these orders; every one when None."""
    query: dict[str, Any] = {} if order_ids is None else {"orderId": {"$in": list(order_ids)}}
    return [
        ShipmentRow(str(doc["orderId"]), str(doc.get("shippingStatus", "")))
        for doc in collection.find(query, {"orderId": 1, "shippingStatus": 1})
    ]


def shipment_document(collection: Shipments, order_id: str) -> dict[str, Any] | None:
    """One order's shipment as stored (without the events it emitted), or None."""
    return collection.find_one({"_id": order_id}, {"emitted": 0})
