"""The ingress's outbox: one suite, run on the fake and on PostgreSQL.

Other tests share the real database, so each test looks only at the records of its own
orders (``claim_unpublished`` answers everyone's)."""

from __future__ import annotations

import pytest

from minimart.bootstrap import Container
from minimart.catalog import Event
from tests.contract.orders_db import (
    FakeOrdersDatabase,
    OrdersDatabase,
    PostgresOrdersDatabase,
    new_key,
    order_body,
    placed,
)

EVERYTHING = 100_000


def created(db: OrdersDatabase, count: int = 1) -> list[Event]:
    events = [placed(db).event for _ in range(count)]
    assert all(e is not None for e in events)
    return [e for e in events if e is not None]


def unpublished(db: OrdersDatabase, mine: list[Event], older_than_s: float = 0) -> list[str]:
    ids = {e.id for e in mine}
    return [e.id for e in db.intake.claim_unpublished(older_than_s, EVERYTHING) if e.id in ids]


class OutboxContract:
    @pytest.fixture
    def db(self) -> OrdersDatabase:
        raise NotImplementedError

    def test_an_accepted_order_is_in_the_outbox_until_marked_published(
        self, db: OrdersDatabase
    ) -> None:
        mine = created(db, 2)
        [claimed] = [e for e in db.intake.claim_unpublished(0, EVERYTHING) if e.id == mine[0].id]
        assert claimed == mine[0]  # the whole event, as accepted
        db.intake.mark_published([mine[0].id])
        assert unpublished(db, mine) == [mine[1].id]

    def test_a_record_is_claimed_only_once_it_is_old_enough(self, db: OrdersDatabase) -> None:
        mine = created(db)
        assert unpublished(db, mine, older_than_s=60) == []  # a request may still publish it
        assert unpublished(db, mine, older_than_s=0) == [mine[0].id]

    def test_records_are_claimed_oldest_first_and_up_to_the_limit(self, db: OrdersDatabase) -> None:
        mine = created(db, 3)
        assert unpublished(db, mine) == [e.id for e in mine]
        assert len(db.intake.claim_unpublished(0, limit=2)) == 2

    def test_marking_again_or_marking_unknown_ids_changes_nothing(self, db: OrdersDatabase) -> None:
        mine = created(db, 2)
        db.intake.mark_published([mine[0].id, "no-such-event"])
        db.intake.mark_published([mine[0].id])
        db.intake.mark_published([])
        assert unpublished(db, mine) == [mine[1].id]

    def test_a_replayed_request_adds_no_record(self, db: OrdersDatabase) -> None:
        body, key = order_body(), new_key()
        first = placed(db, body, key)
        again = placed(db, body, key)
        assert again.event is None and first.event is not None
        pending = db.intake.claim_unpublished(0, EVERYTHING)
        assert [e.id for e in pending if e.data["customerId"] == body["customerId"]] == [
            first.event.id
        ]


class TestFakeOutbox(OutboxContract):
    @pytest.fixture
    def db(self) -> OrdersDatabase:
        return FakeOrdersDatabase()


@pytest.mark.integration
class TestPostgresOutbox(OutboxContract):
    @pytest.fixture
    def db(self, postgres: object, container: Container) -> OrdersDatabase:
        return PostgresOrdersDatabase(container)
