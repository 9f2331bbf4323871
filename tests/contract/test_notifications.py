"""The notification outbox (``NotificationOutbox``): one suite, on the fake and on Redis.

Redis dedupes in one Lua script (GET the key, else XADD and SET): concurrent deliveries on
separate connections must append one entry, and the dedupe must survive a flushed script
cache (a restarted Redis loses it; redis-py reloads the script)."""

from __future__ import annotations

from typing import Any, Protocol

import pytest
import redis

from minimart.adapters.redis_streams import STREAM, RedisNotifications, make_client
from minimart.bootstrap import Container
from minimart.catalog import Event, EventType
from minimart.handlers import notification
from minimart.handlers.ports import Notification, NotificationOutbox
from minimart.settings import Settings
from tests.contract.support import concurrently, delivered, new_id
from tests.fakes import FakeNotifications

Entry = tuple[str, dict[str, str]]  # (entry id, fields)


class Notifications(Protocol):
    def outbox(self) -> NotificationOutbox:
        """An outbox on a connection of its own (another process's)."""

    def entries(self, order_id: str) -> list[Entry]: ...


class FakeNotificationsBackend:
    def __init__(self) -> None:
        self.fake = FakeNotifications()

    def outbox(self) -> NotificationOutbox:
        return self.fake

    def entries(self, order_id: str) -> list[Entry]:
        return [
            (entry_id, {"template": n.template, "orderId": n.order_id,
                        "customerId": str(n.customer_id), "reason": n.reason})
            for entry_id, n in self.fake.stream
            if n.order_id == order_id
        ]  # fmt: skip


class RedisNotificationsBackend:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.clients: list[redis.Redis] = []

    def client(self) -> redis.Redis:
        client = make_client(self.settings.redis_url)
        self.clients.append(client)
        return client

    def outbox(self) -> NotificationOutbox:
        return RedisNotifications(self.client())

    def entries(self, order_id: str) -> list[Entry]:
        found = []
        rows: Any = self.client().xrange(STREAM)
        for entry_id, fields in rows:
            decoded = {k.decode(): v.decode() for k, v in fields.items()}
            if decoded["orderId"] == order_id:
                found.append((entry_id.decode(), decoded))
        return found

    def close(self) -> None:
        for client in self.clients:
            client.close()


def a_notification(order_id: str, template: str = "OrderConfirmed") -> Notification:
    return Notification(order_id, 7, template, "" if template == "OrderConfirmed" else "no stock")


def order_cancelled(order_id: str) -> Event:
    data = {"orderId": order_id, "customerId": 9, "reason": "insufficient_stock: X"}
    return Event(EventType.ORDER_CANCELLED, new_id(), order_id, data)


class NotificationContract:
    @pytest.fixture
    def notes(self) -> Notifications:
        raise NotImplementedError

    def test_a_notification_is_appended_with_its_fields(self, notes: Notifications) -> None:
        order_id = new_id()
        cancelled = a_notification(order_id, "OrderCancelled")
        entry_id = notes.outbox().enqueue_once(f"{order_id}/OrderCancelled", cancelled)
        assert notes.entries(order_id) == [
            (entry_id, {"template": "OrderCancelled", "orderId": order_id, "customerId": "7",
                        "reason": "no stock"})
        ]  # fmt: skip

    def test_a_seen_key_answers_its_entry_and_appends_nothing(self, notes: Notifications) -> None:
        order_id = new_id()
        outbox = notes.outbox()
        first = outbox.enqueue_once(f"{order_id}/OrderConfirmed", a_notification(order_id))
        again = notes.outbox().enqueue_once(f"{order_id}/OrderConfirmed", a_notification(order_id))
        assert again == first
        assert [entry_id for entry_id, _ in notes.entries(order_id)] == [first]

    def test_other_keys_are_other_entries_in_order(self, notes: Notifications) -> None:
        order_id = new_id()
        outbox = notes.outbox()
        ids = [outbox.enqueue_once(f"{order_id}/{t}", a_notification(order_id, t))
               for t in ("OrderConfirmed", "OrderCancelled")]  # fmt: skip
        assert len(set(ids)) == 2
        assert [entry_id for entry_id, _ in notes.entries(order_id)] == ids

    def test_concurrent_enqueues_of_one_key_append_once(self, notes: Notifications) -> None:
        order_id = new_id()
        outboxes = [notes.outbox() for _ in range(12)]
        ids = concurrently(12, lambda i: outboxes[i].enqueue_once(
            f"{order_id}/OrderConfirmed", a_notification(order_id)))  # fmt: skip
        assert len(set(ids)) == 1
        assert [entry_id for entry_id, _ in notes.entries(order_id)] == ids[:1]

    def test_concurrent_duplicate_deliveries_notify_once(self, notes: Notifications) -> None:
        order_id = new_id()
        cancelled = order_cancelled(order_id)
        outboxes = [notes.outbox() for _ in range(6)]

        deliveries = concurrently(
            6, lambda i: delivered(lambda: notification.notify(cancelled, outboxes[i]))
        )

        assert all(d.result == deliveries[0].result for d in deliveries)
        [sent] = deliveries[0].result
        [(entry_id, fields)] = notes.entries(order_id)
        assert sent.type is EventType.NOTIFICATION_SENT and sent.data["streamId"] == entry_id
        assert (fields["template"], fields["reason"]) == ("OrderCancelled", "insufficient_stock: X")


class TestFakeNotifications(NotificationContract):
    @pytest.fixture
    def notes(self) -> Notifications:
        return FakeNotificationsBackend()


@pytest.mark.integration
class TestRedisNotifications(NotificationContract):
    @pytest.fixture
    def notes(self, redis_server: Settings, container: Container):  # type: ignore[no-untyped-def]
        backend = RedisNotificationsBackend(redis_server)
        yield backend
        backend.close()

    def test_the_dedupe_survives_a_flushed_script_cache(
        self, notes: RedisNotificationsBackend
    ) -> None:
        order_id = new_id()
        outbox = notes.outbox()
        first = outbox.enqueue_once(f"{order_id}/OrderConfirmed", a_notification(order_id))
        notes.client().script_flush()  # as after a restart of Redis
        assert outbox.enqueue_once(f"{order_id}/OrderConfirmed", a_notification(order_id)) == first
        assert [entry_id for entry_id, _ in notes.entries(order_id)] == [first]
