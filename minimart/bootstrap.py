"""The composition root: wires adapters into handlers, lazily, once per process.

``bootstrap()`` builds a process's ``Container`` from ``Settings.from_env()``. Every
collaborator (the order intake, the units of work, the publisher, the stores, the outbox
relay, what happens when a saga closes) can be handed in; the real one is the default, built
on first use from the settings, so nothing connects at import time or before it is needed.
Tests hand fakes in: ``bootstrap(Settings(), tracing=False, publisher=FakePublisher(), ...)``.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from functools import cached_property
from typing import Any, Protocol

from minimart import identity, kafka_clients
from minimart.adapters import postgres
from minimart.adapters.kafka_publisher import KafkaPublisher, make_producer
from minimart.adapters.mongo import MongoShipments, shipments_collection
from minimart.adapters.outbox_relay import Outbox, OutboxRelay
from minimart.adapters.rdkafka_publisher import RdkafkaPublisher, make_rdkafka_producer
from minimart.adapters.redis_streams import RedisNotifications, make_client
from minimart.catalog import Event, EventType
from minimart.domain.orders import OrderLimits, OrderStatus
from minimart.handlers import (
    inventory,
    notification,
    order_status,
    payment,
    redrive,
    shipping,
)
from minimart.handlers.orders import OrderIntake
from minimart.handlers.payment import PaymentPolicy
from minimart.handlers.ports import (
    InventoryUnitOfWork,
    NotificationOutbox,
    OrderUnitOfWork,
    PaymentUnitOfWork,
    Publisher,
    RecordPublisher,
    ShipmentStore,
)
from minimart.observability import metrics
from minimart.observability import tracing as otel
from minimart.settings import Settings

# Called when order-status records a final state: (status, reason, the order's creation time).
SagaClosed = Callable[[OrderStatus, str | None, datetime | None], None]


class Intake(OrderIntake, Outbox, Protocol):
    """The order intake together with its outbox (what the relay reads and marks)."""


def _saga_closed(status: OrderStatus, reason: str | None, created_at: datetime | None) -> None:
    metrics.record_saga_outcome(status.value, reason, created_at)


class Container:
    """The adapters of one process. Each is the one handed in, or the real one built on first
    use; only what a function uses is ever built."""

    def __init__(
        self,
        settings: Settings,
        *,
        intake: Intake | None = None,
        inventory_uow: Callable[[], InventoryUnitOfWork] | None = None,
        payments_uow: Callable[[], PaymentUnitOfWork] | None = None,
        orders_uow: Callable[[], OrderUnitOfWork] | None = None,
        publisher: Publisher | None = None,
        shipments: ShipmentStore | None = None,
        notifications: NotificationOutbox | None = None,
        relay: OutboxRelay | None = None,
        records: RecordPublisher | None = None,
        verifier: identity.Verifier | None = None,
        on_saga_closed: SagaClosed = _saga_closed,
    ) -> None:
        self.settings = settings
        self.on_saga_closed = on_saga_closed
        self._lock = threading.Lock()
        # A collaborator handed in replaces its real default (a cached_property below).
        given = {
            "intake": intake,
            "publisher": publisher,
            "shipments": shipments,
            "notifications": notifications,
            "relay": relay,
            "records": records,
            "verifier": verifier,
        }
        self.__dict__.update({name: value for name, value in given.items() if value is not None})
        self.inventory_uow = inventory_uow or self._postgres_inventory
        self.payments_uow = payments_uow or self._postgres_payments
        self.orders_uow = orders_uow or self._postgres_orders

    def _pool(self, dsn: str, name: str, schema: str, seed: Callable[[Any], None]) -> Any:
        pool = postgres.open_pool(dsn, name)
        postgres.migrate(pool, schema)
        seed(pool)
        return pool

    @cached_property
    def orders_pool(self) -> Any:
        return self._pool(
            self.settings.orders_dsn, "orders", postgres.ORDERS_SCHEMA, postgres.seed_orders
        )

    @cached_property
    def inventory_pool(self) -> Any:
        return self._pool(
            self.settings.inventory_dsn,
            "inventory",
            postgres.INVENTORY_SCHEMA,
            postgres.seed_inventory,
        )

    @cached_property
    def payments_pool(self) -> Any:
        return self._pool(
            self.settings.payments_dsn,
            "payments",
            postgres.PAYMENTS_SCHEMA,
            postgres.seed_payments,
        )

    @cached_property
    def publisher(self) -> Publisher:
        if self.settings.kafka_client == "librdkafka":
            return _rdkafka_publisher(self.settings, self.settings.service_name)
        producer = make_producer(
            self.settings.kafka_bootstrap,
            self.settings.service_name,
            kafka_clients.credentials_of(self.settings),
        )
        return KafkaPublisher(producer, inject_headers=otel.kafka_header_injector())

    @cached_property
    def records(self) -> RecordPublisher:
        """Records published as they are: the redrive function's dead letters."""
        if self.settings.kafka_client == "librdkafka":
            return _rdkafka_publisher(self.settings, "redrive", traced=False)
        return KafkaPublisher(
            make_producer(
                self.settings.kafka_bootstrap,
                "redrive",
                kafka_clients.credentials_of(self.settings),
            )
        )

    @cached_property
    def redrive_sinks(self) -> redrive.DeclaredSinks:
        """The sinks a dead letter may go back through (the manifests', by the settings),
        with the event types each one's step accepts: read once, like every setting."""
        urls = self.settings.redrive_sink_urls
        accepts = {name: STEPS[name].accepts for name in urls if name in STEPS}
        return redrive.DeclaredSinks(urls, accepts)

    @cached_property
    def verifier(self) -> identity.Verifier:
        """Checks who delivers to this function: the issuer's keys (fetched on first use,
        then cached), this function's audience and the subjects its settings allow."""
        s = self.settings
        keys = identity.JwksKeys(identity.jwks_fetcher(s.oidc_jwks, s.oidc_jwks_bearer_file,
                                                       s.oidc_ca_file))  # fmt: skip
        subjects = {s.service_name: identity.parse_subjects(s.oidc_subjects)}
        return identity.Verifier(keys, identity.Policy(s.oidc_issuer, subjects))

    @cached_property
    def shipments(self) -> ShipmentStore:
        return MongoShipments(shipments_collection(self.settings.mongo_url))

    @cached_property
    def notifications(self) -> NotificationOutbox:
        return RedisNotifications(make_client(self.settings.redis_url))

    @cached_property
    def intake(self) -> Intake:
        return postgres.PostgresOrderIntake(self.orders_pool)

    @cached_property
    def relay(self) -> OutboxRelay:
        return OutboxRelay(self.intake, self.publisher)

    def _postgres_inventory(self) -> InventoryUnitOfWork:
        return postgres.PostgresInventory(self.inventory_pool, consumer="inventory")

    def _postgres_payments(self) -> PaymentUnitOfWork:
        return postgres.PostgresPayments(self.payments_pool, consumer="payment")

    def _postgres_orders(self) -> OrderUnitOfWork:
        return postgres.PostgresOrders(self.orders_pool, consumer="order-status")

    @property
    def order_limits(self) -> OrderLimits:
        return OrderLimits(self.settings.max_items_per_order, self.settings.max_quantity_per_line)

    @property
    def payment_policy(self) -> PaymentPolicy:
        return PaymentPolicy(
            self.settings.default_credit_limit_cents, self.settings.payment_decline_rate
        )

    def warm_up(self, service: str) -> None:
        """Build what ``service`` needs now (readiness), instead of on its first event."""
        with self._lock:
            for attribute in WARM_UP[service]:
                getattr(self, attribute)
            if service == "order":
                self.relay.start()
            else:  # fed by KafkaSources: the issuer's keys before the first delivery
                self.verifier.warm_up()


WARM_UP: Mapping[str, tuple[str, ...]] = {
    "order": ("orders_pool", "intake", "publisher"),
    "order-status": ("orders_pool", "publisher"),
    # it publishes dead letters again (minimart.entrypoints), through the sinks declared
    "redrive": ("records", "redrive_sinks"),
    "inventory": ("inventory_pool", "publisher"),
    "payment": ("payments_pool", "publisher"),
    "shipping": ("shipments", "publisher"),
    "notification": ("notifications", "publisher"),
}


def _rdkafka_publisher(settings: Settings, client_id: str, traced: bool = True) -> RdkafkaPublisher:
    """The publisher on librdkafka (``MINIMART_KAFKA_CLIENT=librdkafka``)."""
    producer = make_rdkafka_producer(
        settings.kafka_bootstrap, client_id, kafka_clients.credentials_of(settings)
    )
    inject = otel.kafka_header_injector(transport=False) if traced else None
    return RdkafkaPublisher(
        producer, inject_headers=inject, trace_record=otel.traced_record if traced else None
    )


def bootstrap(settings: Settings | None = None, *, tracing: bool = True, **given: Any) -> Container:
    """The container of a process: ``settings`` (default: from the environment) and the
    collaborators in ``given`` (see ``Container``), the real ones for the rest. ``tracing``
    sets OpenTelemetry up first, so every client built later is instrumented."""
    settings = Settings.from_env() if settings is None else settings
    if tracing:
        otel.configure(settings)
    return Container(settings, **given)


@dataclass(frozen=True)
class Step:
    """A saga function: the event types it accepts and how it handles one."""

    service: str
    accepts: frozenset[EventType]
    run: Callable[[Event, Container], list[Event]]


def _inventory(event: Event, c: Container) -> list[Event]:
    return inventory.HANDLERS[event.type](event, c.inventory_uow())


def _payment(event: Event, c: Container) -> list[Event]:
    return payment.HANDLERS[event.type](event, c.payments_uow(), c.payment_policy)


def _shipping(event: Event, c: Container) -> list[Event]:
    return shipping.prepare(event, c.shipments, c.settings.shipping_failure_rate)


def _order_status(event: Event, c: Container) -> list[Event]:
    return order_status.track(event, c.orders_uow(), on_final=c.on_saga_closed)


def _notification(event: Event, c: Container) -> list[Event]:
    return notification.notify(event, c.notifications)


STEPS: Mapping[str, Step] = {
    "inventory": Step("inventory", frozenset(inventory.HANDLERS), _inventory),
    "payment": Step("payment", frozenset(payment.HANDLERS), _payment),
    "shipping": Step("shipping", frozenset({EventType.PAYMENT_CAPTURED}), _shipping),
    "order-status": Step(
        "order-status",
        order_status.TRACKED,
        _order_status,
    ),
    "notification": Step("notification", frozenset(notification.TEMPLATES), _notification),
}
