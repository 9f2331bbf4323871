"""MongoDB (wire protocol) store of shipments: one document per order, written atomically."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from pymongo import MongoClient, ReturnDocument, WriteConcern
from pymongo.collection import Collection
from pymongo.errors import DuplicateKeyError

from minimart.adapters import events_json
from minimart.handlers.ports import Shipment

DATABASE = "minimart"  # unless the URL names one
SHIPMENTS = "shipments"


def shipments_collection(url: str) -> Collection[dict[str, Any]]:
    client: MongoClient[dict[str, Any]] = MongoClient(
        url, tz_aware=True, serverSelectionTimeoutMS=10_000, connect=False
    )
    database = client.get_default_database(default=DATABASE)
    # A shipment is acknowledged only once it is in the server's journal (j=True): the step
    # answers 2xx, and publishes shipping.prepared, only after its work is durable. With the
    # default (j=False) a crash of the server just after the write lost a shipment whose
    # order was CONFIRMED (the chaos soak of 2026-12-07, a SIGKILL of the store).
    return database.get_collection(SHIPMENTS, write_concern=WriteConcern(w=1, j=True))


class ShipmentNotStored(RuntimeError):
    """The upsert answered no document and none could be read (the delivery is retried)."""


class MongoShipments:
    def __init__(self, collection: Collection[dict[str, Any]]) -> None:
        self._collection = collection

    def prepare_once(self, shipment: Shipment) -> Shipment:
        document = {
            "_id": shipment.order_id,
            "orderId": shipment.order_id,
            "labelId": shipment.label_id,
            "shippingStatus": shipment.status,
            "reason": shipment.reason,
            "emitted": events_json.dump(shipment.emitted),
            "createdAt": datetime.now(UTC),
        }
        try:
            stored = self._collection.find_one_and_update(
                {"_id": shipment.order_id},
                {"$setOnInsert": document},
                upsert=True,
                return_document=ReturnDocument.AFTER,
            )
        except DuplicateKeyError:  # two concurrent upserts: the other one inserted
            stored = None
        if stored is None:
            # Lost a race to a concurrent upsert: MongoDB raises DuplicateKeyError, secantusdb
            # may answer no document at all (tests/contract/test_shipments.py). Either way the
            # other one's insert is there to read.
            stored = self._collection.find_one({"_id": shipment.order_id})
        if stored is None:
            raise ShipmentNotStored(
                f"shipment of order {shipment.order_id} neither stored nor found"
            )
        return Shipment(
            order_id=stored["orderId"],
            label_id=stored["labelId"],
            status=stored["shippingStatus"],
            reason=stored["reason"],
            emitted=tuple(events_json.load(stored["emitted"])),
        )
