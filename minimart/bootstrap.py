"""The composition root: wires adapters into handlers, lazily, once per process.

Nothing here connects at import time. ``container()`` builds the process's ``Container`` on
first use from ``Settings.from_env()``; each client is created on first use and cached.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from functools import cached_property
from typing import Any

from minimart.adapters import postgres
from minimart.adapters.kafka_publisher import KafkaPublisher, make_producer
from minimart.adapters.mongo import MongoShipments, shipments_collection
from minimart.adapters.redis_streams import RedisNotifications, make_client
from minimart.catalog import Event, EventType
from minimart.domain.orders import OrderLimits, OrderStatus
from minimart.handlers import inventory, notification, order_status, payment, shipping
from minimart.handlers.payment import PaymentPolicy
from minimart.observability import metrics, tracing
from minimart.settings import Settings

log = logging.getLogger(__name__)


class Container:
    """The adapters of one process. Only what a function uses is ever built."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._lock = threading.Lock()
        self._relay: threading.Thread | None = None
        self._stop = threading.Event()
        # Outbox records published but not yet marked so: marked in batches by the relay.
        self._published: list[str] = []
        self._published_lock = threading.Lock()

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
    def publisher(self) -> KafkaPublisher:
        producer = make_producer(self.settings.kafka_bootstrap, self.settings.service_name)
        return KafkaPublisher(producer, inject_headers=tracing.kafka_header_injector())

    @cached_property
    def shipments(self) -> MongoShipments:
        return MongoShipments(shipments_collection(self.settings.mongo_url))

    @cached_property
    def notifications(self) -> RedisNotifications:
        return RedisNotifications(make_client(self.settings.redis_url))

    @cached_property
    def intake(self) -> postgres.PostgresOrderIntake:
        return postgres.PostgresOrderIntake(self.orders_pool)

    def inventory_uow(self) -> postgres.PostgresInventory:
        return postgres.PostgresInventory(self.inventory_pool, consumer="inventory")

    def payments_uow(self) -> postgres.PostgresPayments:
        return postgres.PostgresPayments(self.payments_pool, consumer="payment")

    def orders_uow(self) -> postgres.PostgresOrders:
        return postgres.PostgresOrders(self.orders_pool, consumer="order-status")

    @property
    def order_limits(self) -> OrderLimits:
        return OrderLimits(self.settings.max_items_per_order, self.settings.max_quantity_per_line)

    def warm_up(self, service: str) -> None:
        """Build what ``service`` needs now (readiness), instead of on its first event."""
        with self._lock:
            for attribute in WARM_UP[service]:
                getattr(self, attribute)
            if service == "order" and self._relay is None:
                self._relay = threading.Thread(
                    target=self._relay_outbox, name="outbox-relay", daemon=True
                )
                self._relay.start()

    def publish_accepted(self, event: Event) -> None:
        """Publish a freshly accepted order; the outbox relay retries if this fails.

        Marking the outbox record published is not part of the request: the relay marks the
        published records in one statement every ``MARK_INTERVAL_S`` (one commit for many
        orders instead of one more per order). A record whose mark is lost (a crash) is
        published again by the relay with the same event id: consumers treat it as a replay.
        """
        try:
            self.publisher.publish([event], source="order")
        except Exception:  # the order is durable in the outbox: the relay will publish it
            log.exception("publishing %s failed; left to the outbox relay", event.id)
            return
        with self._published_lock:
            self._published.append(event.id)

    def mark_published(self) -> int:
        """Mark the records published since the last call; how many."""
        with self._published_lock:
            ids, self._published = self._published, []
        if ids:
            try:
                self.intake.mark_published(ids)
            except Exception:
                with self._published_lock:  # next pass
                    self._published[:0] = ids
                raise
        return len(ids)

    def relay_once(self, older_than_s: float = 2.0) -> int:
        """Publish outbox records a crashed or failed request left behind; how many."""
        self.mark_published()
        pending = self.intake.claim_unpublished(older_than_s)
        with self._published_lock:  # published meanwhile, mark not yet written
            marking = set(self._published)
        pending = [event for event in pending if event.id not in marking]
        if pending:
            self.publisher.publish(pending, source="order")
            self.intake.mark_published([event.id for event in pending])
        return len(pending)

    def _relay_outbox(self) -> None:
        passes = 0
        while not self._stop.wait(MARK_INTERVAL_S):
            passes += 1
            try:
                if passes % RELAY_EVERY == 0:
                    self.relay_once()
                else:
                    self.mark_published()
            except Exception:
                log.exception("outbox relay pass failed; retrying")


# The relay thread marks published outbox records every MARK_INTERVAL_S and looks for
# unpublished ones (older than 2 s) every RELAY_EVERY passes.
MARK_INTERVAL_S = 0.2
RELAY_EVERY = 5

WARM_UP: Mapping[str, tuple[str, ...]] = {
    "order": ("orders_pool", "intake", "publisher"),
    "order-status": ("orders_pool", "publisher"),
    "redrive": ("publisher",),  # it publishes dead letters again (minimart.entrypoints)
    "inventory": ("inventory_pool", "publisher"),
    "payment": ("payments_pool", "publisher"),
    "shipping": ("shipments", "publisher"),
    "notification": ("notifications", "publisher"),
}


@dataclass(frozen=True)
class Step:
    """A saga function: the event types it accepts and how it handles one."""

    service: str
    accepts: frozenset[EventType]
    run: Callable[[Event, Container], list[Event]]


def _inventory(event: Event, c: Container) -> list[Event]:
    return inventory.HANDLERS[event.type](event, c.inventory_uow())


def _payment(event: Event, c: Container) -> list[Event]:
    policy = PaymentPolicy(c.settings.default_credit_limit_cents, c.settings.payment_decline_rate)
    return payment.HANDLERS[event.type](event, c.payments_uow(), policy)


def _shipping(event: Event, c: Container) -> list[Event]:
    return shipping.prepare(event, c.shipments, c.settings.shipping_failure_rate)


def _order_status(event: Event, c: Container) -> list[Event]:
    return order_status.track(event, c.orders_uow(), on_final=_saga_closed)


def _saga_closed(status: OrderStatus, reason: str | None, created_at: datetime | None) -> None:
    metrics.record_saga_outcome(status.value, reason, created_at)


def _notification(event: Event, c: Container) -> list[Event]:
    return notification.notify(event, c.notifications)


STEPS: Mapping[str, Step] = {
    "inventory": Step("inventory", frozenset(inventory.HANDLERS), _inventory),
    "payment": Step("payment", frozenset(payment.HANDLERS), _payment),
    "shipping": Step("shipping", frozenset({EventType.PAYMENT_CAPTURED}), _shipping),
    "order-status": Step(
        "order-status",
        frozenset(order_status.STATUS_AFTER) | {EventType.NOTIFICATION_SENT},
        _order_status,
    ),
    "notification": Step("notification", frozenset(notification.TEMPLATES), _notification),
}


_container: Container | None = None
_container_lock = threading.Lock()


def container() -> Container:
    global _container
    with _container_lock:
        if _container is None:
            settings = Settings.from_env()
            tracing.configure(settings)  # before any client is built: they get instrumented
            _container = Container(settings)
        return _container
