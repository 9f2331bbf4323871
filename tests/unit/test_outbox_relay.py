"""The outbox relay over the fake intake and publisher: publish, mark in batches, recover."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Sequence

import pytest

from minimart.adapters.outbox_relay import OutboxRelay
from minimart.catalog import Event, EventType, derived_event_id
from tests.fakes import FakeIntake, FakePublisher


class FlakyIntake(FakeIntake):
    """The fake intake whose marking fails while ``fail_marks`` is set."""

    def __init__(self) -> None:
        super().__init__()
        self.fail_marks = False
        self.mark_calls: list[list[str]] = []

    def mark_published(self, event_ids: Sequence[str]) -> None:
        self.mark_calls.append(list(event_ids))
        if self.fail_marks:
            raise ConnectionError("database unavailable (fake)")
        super().mark_published(event_ids)


def accepted(intake: FakeIntake) -> Event:
    """An order accepted into the intake's outbox, not yet published."""
    order_id = str(uuid.uuid4())
    event = Event(
        EventType.ORDER_CREATED,
        derived_event_id(order_id, EventType.ORDER_CREATED),
        order_id,
        {
            "orderId": order_id,
            "customerId": 7,
            "items": [{"sku": "SKU-1001", "quantity": 1, "unitPriceCents": 4_999}],
            "totalCents": 4_999,
            "shippingAddress": {"country": "US", "postalCode": "12345"},
        },
    )
    intake.accept(event, None, fingerprint=order_id)
    return event


def eventually(check: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "not within the deadline"
        time.sleep(0.01)


def test_a_published_order_is_marked_by_the_next_pass_not_by_the_request() -> None:
    intake, publisher = FlakyIntake(), FakePublisher()
    relay = OutboxRelay(intake, publisher)
    first, second = accepted(intake), accepted(intake)

    assert relay.publish(first) and relay.publish(second)

    assert publisher.events == [first, second]
    assert intake.published == set()
    assert relay.mark_published() == 2
    assert intake.mark_calls == [[first.id, second.id]]  # one statement for both
    assert relay.mark_published() == 0


def test_an_order_whose_publish_failed_is_published_by_the_relay() -> None:
    intake, publisher = FlakyIntake(), FakePublisher()
    relay = OutboxRelay(intake, publisher)
    event = accepted(intake)
    publisher.fail = True

    assert not relay.publish(event)  # the request still succeeds: the outbox has it

    publisher.fail = False
    assert relay.relay_once(older_than_s=0) == 1
    assert publisher.events == [event]
    assert intake.published == {event.id}
    assert relay.relay_once(older_than_s=0) == 0


def test_the_relay_does_not_publish_again_what_awaits_its_mark() -> None:
    intake, publisher = FlakyIntake(), FakePublisher()
    relay = OutboxRelay(intake, publisher)
    event = accepted(intake)
    relay.publish(event)
    intake.fail_marks = True

    with pytest.raises(ConnectionError):
        relay.relay_once(older_than_s=0)

    assert publisher.events == [event]  # still unmarked, yet not published twice
    intake.fail_marks = False
    assert relay.mark_published() == 1  # the failed mark was kept for the next pass
    assert intake.published == {event.id}


def test_passes_mark_and_every_nth_relays() -> None:
    intake, publisher = FlakyIntake(), FakePublisher()
    relay = OutboxRelay(intake, publisher, relay_every=3, stale_after_s=0)
    left_behind = accepted(intake)

    relay.run_pass(1)
    relay.run_pass(2)
    assert publisher.events == []  # passes 1 and 2 only mark
    relay.run_pass(3)
    assert publisher.events == [left_behind]


def test_the_thread_marks_and_relays_until_stopped_and_survives_a_failing_pass() -> None:
    intake, publisher = FlakyIntake(), FakePublisher()
    relay = OutboxRelay(intake, publisher, mark_interval_s=0.01, relay_every=2, stale_after_s=0)
    published = accepted(intake)
    relay.publish(published)
    intake.fail_marks = True
    relay.start()
    relay.start()  # once
    try:
        eventually(lambda: len(intake.mark_calls) >= 2)  # failing passes, the thread goes on
        assert relay.running
        left_behind = accepted(intake)
        intake.fail_marks = False
        eventually(lambda: intake.published == {published.id, left_behind.id})
    finally:
        relay.stop()
    assert not relay.running
    assert publisher.events == [published, left_behind]
