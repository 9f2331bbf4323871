"""The outbox relay (``OutboxRelay``, an adapter) over the outbox of the order intake and a
publisher: one suite, on the fakes and on PostgreSQL with Kafka.

On the real side every record the relay publishes is read back from the topic, so "published
once" means one record on ``minimart.order.created`` with the event's id. A publisher that
refuses is the real one behind a switch (the broker stays up; what is tested is what the
relay and the outbox do when publishing fails)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from typing import Protocol

import pytest

from minimart.adapters.outbox_relay import OutboxRelay
from minimart.bootstrap import Container
from minimart.catalog import Event, EventType
from minimart.console import replay
from minimart.handlers.ports import Publisher
from minimart.settings import Settings
from tests.contract.orders_db import (
    FakeOrdersDatabase,
    OrdersDatabase,
    PostgresOrdersDatabase,
    placed,
)
from tests.fakes import FakePublisher, PublishFailed

EVERYTHING = 100_000


class Switched:
    """A publisher that refuses while ``fail`` is set, and otherwise passes on."""

    def __init__(self, publisher: Publisher) -> None:
        self.publisher = publisher
        self.fail = False

    def publish(self, events: Sequence[Event], source: str) -> None:
        if self.fail:
            raise PublishFailed("the broker refused (switched off by the test)")
        self.publisher.publish(events, source)


class RelayBackend(Protocol):
    db: OrdersDatabase
    publisher: Switched

    def published(self, events: Sequence[Event]) -> Counter[str]:
        """How many times each of ``events`` reached the broker (ids never seen: absent)."""


class FakeRelayBackend:
    def __init__(self) -> None:
        self.db: OrdersDatabase = FakeOrdersDatabase()
        self.fake = FakePublisher()
        self.publisher = Switched(self.fake)

    def published(self, events: Sequence[Event]) -> Counter[str]:
        ids = {e.id for e in events}
        return Counter(e.id for e in self.fake.events if e.id in ids)


class KafkaRelayBackend:
    def __init__(self, container: Container) -> None:
        self.settings = container.settings
        self.db: OrdersDatabase = PostgresOrdersDatabase(container)
        self.publisher = Switched(container.publisher)
        # Other suites leave unpublished records in the shared database; a pass claims the
        # oldest first, so they are published (to the private broker) before each test.
        leftovers = OutboxRelay(container.intake, container.publisher, stale_after_s=0)
        while leftovers.relay_once():
            pass

    def published(self, events: Sequence[Event]) -> Counter[str]:
        ids = {e.id for e in events}
        records = replay.read_topics(self.settings, [EventType.ORDER_CREATED.topic])
        return Counter(r.event_id for r in records if r.event_id in ids)


def accepted(backend: RelayBackend, count: int = 1) -> list[Event]:
    events = [placed(backend.db).event for _ in range(count)]
    return [e for e in events if e is not None]


def unpublished(backend: RelayBackend, events: Sequence[Event]) -> list[str]:
    ids = {e.id for e in events}
    return [e.id for e in backend.db.intake.claim_unpublished(0, EVERYTHING) if e.id in ids]


class OutboxRelayContract:
    @pytest.fixture
    def backend(self) -> RelayBackend:
        raise NotImplementedError

    def relay(self, backend: RelayBackend) -> OutboxRelay:
        return OutboxRelay(backend.db.intake, backend.publisher, stale_after_s=0)

    def test_a_published_order_is_marked_by_the_next_pass(self, backend: RelayBackend) -> None:
        relay = self.relay(backend)
        [event] = accepted(backend)
        assert relay.publish(event)
        assert unpublished(backend, [event]) == [event.id]  # the mark is the relay's
        assert relay.mark_published() >= 1
        assert unpublished(backend, [event]) == []
        assert backend.published([event]) == {event.id: 1}

    def test_an_order_whose_publish_failed_is_published_by_a_later_pass_once(
        self, backend: RelayBackend
    ) -> None:
        relay = self.relay(backend)
        [event] = accepted(backend)
        backend.publisher.fail = True
        assert not relay.publish(event)
        assert unpublished(backend, [event]) == [event.id]
        with pytest.raises(PublishFailed):
            relay.relay_once()  # still refused: the record stays in the outbox
        assert unpublished(backend, [event]) == [event.id]
        backend.publisher.fail = False
        assert relay.relay_once() >= 1
        assert unpublished(backend, [event]) == []
        relay.relay_once()
        assert backend.published([event]) == {event.id: 1}

    def test_a_record_awaiting_its_mark_is_not_published_again(self, backend: RelayBackend) -> None:
        relay = self.relay(backend)
        [waiting, stranded] = accepted(backend, 2)
        assert relay.publish(waiting)
        relay.relay_once(older_than_s=0)
        assert unpublished(backend, [waiting, stranded]) == []
        assert backend.published([waiting, stranded]) == {waiting.id: 1, stranded.id: 1}

    def test_a_fresh_record_is_left_to_its_request(self, backend: RelayBackend) -> None:
        relay = OutboxRelay(backend.db.intake, backend.publisher, stale_after_s=60)
        [event] = accepted(backend)
        relay.relay_once()
        assert unpublished(backend, [event]) == [event.id]
        assert backend.published([event]) == {}


class TestFakeOutboxRelay(OutboxRelayContract):
    @pytest.fixture
    def backend(self) -> RelayBackend:
        return FakeRelayBackend()


@pytest.mark.integration
class TestKafkaOutboxRelay(OutboxRelayContract):
    @pytest.fixture
    def backend(self, postgres: Settings, kafka: Settings, container: Container) -> RelayBackend:
        return KafkaRelayBackend(container)
