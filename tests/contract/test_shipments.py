"""The shipment store (``ShipmentStore``): one suite, on the fake and on the Mongo-compatible
server. ``prepare_once`` is one atomic upsert keyed by order id; two deliveries racing to
insert it must end with one document, and both must answer it."""

from __future__ import annotations

from typing import Protocol

import pytest
from pymongo import MongoClient

from minimart.adapters.mongo import MongoShipments, shipments_collection
from minimart.bootstrap import Container
from minimart.catalog import Event, EventType
from minimart.domain.rules import label_id
from minimart.handlers import shipping
from minimart.handlers.ports import Shipment, ShipmentStore
from minimart.settings import Settings
from tests.contract.support import concurrently, delivered, new_id
from tests.fakes import FakeShipments


class Shipments(Protocol):
    def store(self) -> ShipmentStore:
        """A store on a client of its own (another process's connection)."""

    def documents(self, order_id: str) -> int: ...


class FakeShipmentsBackend:
    def __init__(self) -> None:
        self.fake = FakeShipments()

    def store(self) -> ShipmentStore:
        return self.fake

    def documents(self, order_id: str) -> int:
        return int(order_id in self.fake.shipments)


class MongoShipmentsBackend:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.stores: list[MongoShipments] = []
        self.clients: list[MongoClient[dict[str, object]]] = []

    def store(self) -> ShipmentStore:
        collection = shipments_collection(self.settings.mongo_url)
        self.clients.append(collection.database.client)
        return MongoShipments(collection)

    def documents(self, order_id: str) -> int:
        collection = shipments_collection(self.settings.mongo_url)
        self.clients.append(collection.database.client)
        return collection.count_documents({"_id": order_id})

    def close(self) -> None:
        for client in self.clients:
            client.close()


def a_shipment(order_id: str, status: str = "PREPARED", reason: str = "") -> Shipment:
    kind = EventType.SHIPPING_PREPARED if status == "PREPARED" else EventType.SHIPPING_FAILED
    label = label_id(order_id) if status == "PREPARED" else ""
    emitted = Event(kind, new_id(), order_id,
                    {"orderId": order_id, "labelId": label, "reason": reason})  # fmt: skip
    return Shipment(order_id, label, status, reason, (emitted,))


def payment_captured(order_id: str, country: str = "US") -> Event:
    return Event(EventType.PAYMENT_CAPTURED, new_id(), order_id,
                 {"orderId": order_id, "customerId": 7, "totalCents": 100, "paymentId": "p",
                  "items": [{"sku": "SKU-1001", "quantity": 1, "unitPriceCents": 100}],
                  "shippingAddress": {"country": country, "postalCode": "12345"}})  # fmt: skip


def race(shipments: Shipments, candidates: list[Shipment]) -> list[Shipment]:
    stores = [shipments.store() for _ in candidates]
    return concurrently(len(candidates), lambda i: stores[i].prepare_once(candidates[i]))


class ShipmentContract:
    @pytest.fixture
    def shipments(self) -> Shipments:
        raise NotImplementedError

    def test_the_first_shipment_is_stored_and_answered(self, shipments: Shipments) -> None:
        shipment = a_shipment(new_id())
        assert shipments.store().prepare_once(shipment) == shipment
        assert shipments.documents(shipment.order_id) == 1

    def test_a_later_shipment_of_the_order_gets_the_stored_one(self, shipments: Shipments) -> None:
        order_id = new_id()
        first = a_shipment(order_id)
        shipments.store().prepare_once(first)
        assert shipments.store().prepare_once(a_shipment(order_id, "FAILED", "late")) == first
        assert shipments.documents(order_id) == 1

    def test_racing_upserts_of_one_order_store_one_shipment(self, shipments: Shipments) -> None:
        """Different shipments (as if decided differently) of one order, each on its own
        client, released together: one wins, and every caller answers the winner."""
        for _ in range(20):
            order_id = new_id()
            candidates = [a_shipment(order_id, "FAILED", f"try {i}") for i in range(8)]

            answers = race(shipments, candidates)

            assert answers[0] in candidates
            assert all(a == answers[0] for a in answers)
            assert shipments.documents(order_id) == 1

    def test_concurrent_duplicate_deliveries_answer_the_same_events(
        self, shipments: Shipments
    ) -> None:
        captured = payment_captured(new_id(), country="ZZ")  # shipping_failed
        stores = [shipments.store() for _ in range(6)]

        deliveries = concurrently(
            6, lambda i: delivered(lambda: shipping.prepare(captured, stores[i], 0.0))
        )

        assert all(d.result == deliveries[0].result for d in deliveries)
        assert [e.type for e in deliveries[0].result] == [EventType.SHIPPING_FAILED]
        assert all(d.errors == [] for d in deliveries)  # a race is no error here
        assert shipments.documents(captured.order_id) == 1


class TestFakeShipments(ShipmentContract):
    @pytest.fixture
    def shipments(self) -> Shipments:
        return FakeShipmentsBackend()


@pytest.mark.integration
class TestMongoShipments(ShipmentContract):
    @pytest.fixture
    def shipments(self, mongo: Settings, container: Container):  # type: ignore[no-untyped-def]
        backend = MongoShipmentsBackend(mongo)
        yield backend
        backend.close()
