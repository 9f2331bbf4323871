"""The inventory port (``InventoryUnitOfWork``): one suite, run on the fake and on PostgreSQL."""

from __future__ import annotations

from typing import Protocol

import psycopg
import pytest

from minimart.bootstrap import Container
from minimart.catalog import Event, EventType
from minimart.domain.orders import OrderLine
from minimart.handlers import inventory
from minimart.handlers.ports import InventoryUnitOfWork
from tests.contract.support import blocked, concurrently, delivered, new_id, new_sku
from tests.fakes import FakeInventory, IntegrityViolation

Stock = tuple[int, int, int]  # available, reserved, shipped
Held = list[tuple[str, int, str]]  # (sku, quantity, state) of an order's reservations


class InventoryStore(Protocol):
    integrity_error: type[Exception]

    def uow(self) -> InventoryUnitOfWork: ...
    def stock_new_sku(self, quantity: int) -> str: ...
    def stock(self, sku: str) -> Stock: ...
    def held(self, order_id: str) -> Held: ...


class FakeInventoryStore:
    integrity_error: type[Exception] = IntegrityViolation

    def __init__(self) -> None:
        self.fake = FakeInventory({})

    def uow(self) -> InventoryUnitOfWork:
        return self.fake.another()

    def stock_new_sku(self, quantity: int) -> str:
        sku = new_sku()
        self.fake.stock_sku(sku, quantity)
        return sku

    def stock(self, sku: str) -> Stock:
        state = self.fake.committed
        return state.available[sku], state.reserved[sku], state.shipped[sku]

    def held(self, order_id: str) -> Held:
        held = self.fake.committed.reservations.get(order_id, [])
        return sorted((r.sku, r.quantity, r.state) for r in held)


class PostgresInventoryStore:
    integrity_error: type[Exception] = psycopg.IntegrityError

    def __init__(self, container: Container) -> None:
        self.container = container
        self.pool = container.inventory_pool

    def uow(self) -> InventoryUnitOfWork:
        return self.container.inventory_uow()

    def stock_new_sku(self, quantity: int) -> str:
        sku = new_sku()
        with self.pool.connection() as conn:
            conn.execute(
                "INSERT INTO stock (sku, initial, available) VALUES (%s, %s, %s)",
                (sku, quantity, quantity),
            )
        return sku

    def stock(self, sku: str) -> Stock:
        with self.pool.connection() as conn:
            row = conn.execute(
                "SELECT available, reserved, shipped FROM stock WHERE sku = %s", (sku,)
            ).fetchone()
        assert row is not None
        return int(row[0]), int(row[1]), int(row[2])

    def held(self, order_id: str) -> Held:
        with self.pool.connection() as conn:
            rows = conn.execute(
                "SELECT sku, quantity, state FROM reservations WHERE order_id = %s ORDER BY sku",
                (order_id,),
            ).fetchall()
        return [(sku, int(quantity), state) for sku, quantity, state in rows]


def order_created(order_id: str, *lines: tuple[str, int]) -> Event:
    items = [{"sku": sku, "quantity": q, "unitPriceCents": 100} for sku, q in lines]
    return Event(
        EventType.ORDER_CREATED,
        new_id(),
        order_id,
        {"orderId": order_id, "customerId": 7, "items": items,
         "totalCents": 100 * sum(q for _, q in lines), "shippingAddress": {"country": "US"}},
    )  # fmt: skip


def reserved(store: InventoryStore, order_id: str, *lines: tuple[str, int]) -> None:
    with store.uow() as uow:
        uow.reserve(order_id, [OrderLine(sku, q) for sku, q in lines])
        uow.commit()


class InventoryContract:
    @pytest.fixture
    def store(self) -> InventoryStore:
        raise NotImplementedError

    # -- the unit of work ------------------------------------------------------------------

    def test_reserve_moves_stock_to_reserved_and_holds_each_line(
        self, store: InventoryStore
    ) -> None:
        a, b = store.stock_new_sku(5), store.stock_new_sku(2)
        order_id = new_id()

        reserved(store, order_id, (a, 3), (b, 2))

        assert (store.stock(a), store.stock(b)) == ((2, 3, 0), (0, 2, 0))
        assert store.held(order_id) == sorted([(a, 3, "RESERVED"), (b, 2, "RESERVED")])

    def test_lock_stock_answers_the_stocked_skus_only(self, store: InventoryStore) -> None:
        a, b = store.stock_new_sku(4), store.stock_new_sku(0)
        with store.uow() as uow:
            levels = uow.lock_stock([b, "NOT-STOCKED", a, a])
            outcome, again = uow.outcome_and_stock(new_id(), [a])
        assert {sku: level.available for sku, level in levels.items()} == {a: 4, b: 0}
        assert outcome is None and again[a].available == 4

    def test_stock_never_goes_below_zero(self, store: InventoryStore) -> None:
        sku = store.stock_new_sku(2)
        order_id = new_id()
        with pytest.raises(store.integrity_error), store.uow() as uow:  # CHECK (available >= 0)
            uow.reserve(order_id, [OrderLine(sku, 3)])
            uow.commit()
        assert store.stock(sku) == (2, 0, 0)
        assert store.held(order_id) == []

    def test_an_order_holds_each_sku_once(self, store: InventoryStore) -> None:
        sku = store.stock_new_sku(10)
        order_id = new_id()
        reserved(store, order_id, (sku, 1))
        with pytest.raises(store.integrity_error), store.uow() as uow:  # key (order_id, sku)
            uow.reserve(order_id, [OrderLine(sku, 2)])
            uow.commit()
        assert store.stock(sku) == (9, 1, 0)
        assert store.held(order_id) == [(sku, 1, "RESERVED")]

    def test_a_sku_not_stocked_cannot_be_reserved(self, store: InventoryStore) -> None:
        order_id = new_id()
        with pytest.raises(store.integrity_error), store.uow() as uow:
            uow.reserve(order_id, [OrderLine(new_sku(), 1)])
            uow.commit()
        assert store.held(order_id) == []

    def test_leaving_without_commit_keeps_neither_change_nor_outcome(
        self, store: InventoryStore
    ) -> None:
        sku, order_id, event_id = store.stock_new_sku(3), new_id(), new_id()
        with store.uow() as uow:
            uow.reserve(order_id, [OrderLine(sku, 1)])
            uow.record_outcome(event_id, [])
        with pytest.raises(RuntimeError, match="boom"), store.uow() as uow:
            uow.reserve(order_id, [OrderLine(sku, 1)])
            uow.record_outcome(event_id, [])
            raise RuntimeError("boom")
        assert store.stock(sku) == (3, 0, 0)
        assert store.held(order_id) == []
        with store.uow() as uow:
            assert uow.outcome_of(event_id) is None

    def test_an_outcome_is_recorded_once_and_read_back(self, store: InventoryStore) -> None:
        event_id, order_id = new_id(), new_id()
        emitted = Event(EventType.INVENTORY_REJECTED, new_id(), order_id,
                        {"orderId": order_id, "reason": "unknown_sku: X"})  # fmt: skip
        with store.uow() as uow:
            uow.record_outcome(event_id, [emitted])
            uow.commit()
        with pytest.raises(store.integrity_error), store.uow() as uow:
            uow.record_outcome(event_id, [])
            uow.commit()
        with store.uow() as uow:
            assert uow.outcome_of(event_id) == [emitted]

    def test_release_and_ship_move_only_reserved_lines(self, store: InventoryStore) -> None:
        sku = store.stock_new_sku(10)
        kept, gone = new_id(), new_id()
        reserved(store, kept, (sku, 2))
        reserved(store, gone, (sku, 3))
        with store.uow() as uow:
            assert uow.ship(kept) == [OrderLine(sku, 2)]
            assert uow.release(gone) == [OrderLine(sku, 3)]
            uow.commit()
        with store.uow() as uow:
            assert (uow.ship(kept), uow.release(kept), uow.release(gone)) == ([], [], [])
            assert uow.release(new_id()) == []
            uow.commit()
        assert store.stock(sku) == (8, 0, 2)
        assert (store.held(kept), store.held(gone)) == (
            [(sku, 2, "SHIPPED")], [(sku, 3, "RELEASED")]
        )  # fmt: skip

    def test_lock_stock_holds_the_rows_until_commit(self, store: InventoryStore) -> None:
        sku = store.stock_new_sku(5)

        def second_reads() -> int:
            with store.uow() as second:
                return second.lock_stock([sku])[sku].available

        with store.uow() as first:
            assert first.lock_stock([sku])[sku].available == 5

            def first_reserves() -> None:
                first.reserve(new_id(), [OrderLine(sku, 4)])
                first.commit()

            assert blocked(second_reads, while_held=first_reserves) == 1

    # -- the handlers on this store ----------------------------------------------------------

    def test_a_replayed_order_created_changes_nothing(self, store: InventoryStore) -> None:
        sku, order_id = store.stock_new_sku(3), new_id()
        event = order_created(order_id, (sku, 2))
        first = inventory.reserve(event, store.uow())
        after = store.stock(sku), store.held(order_id)
        assert inventory.reserve(event, store.uow()) == first
        assert (store.stock(sku), store.held(order_id)) == after
        assert after == ((1, 2, 0), [(sku, 2, "RESERVED")])
        assert [e.type for e in first] == [EventType.INVENTORY_RESERVED]

    def test_concurrent_duplicate_deliveries_reserve_once(self, store: InventoryStore) -> None:
        sku, order_id = store.stock_new_sku(3), new_id()
        event = order_created(order_id, (sku, 2))

        deliveries = concurrently(
            6, lambda _: delivered(lambda: inventory.reserve(event, store.uow()))
        )

        assert all(d.result == deliveries[0].result for d in deliveries)
        assert [e.type for e in deliveries[0].result] == [EventType.INVENTORY_RESERVED]
        assert store.stock(sku) == (1, 2, 0)
        assert store.held(order_id) == [(sku, 2, "RESERVED")]
        errors = [e for d in deliveries for e in d.errors]
        assert all(isinstance(e, store.integrity_error) for e in errors), errors

    def test_concurrent_orders_never_oversell(self, store: InventoryStore) -> None:
        sku = store.stock_new_sku(3)
        events = [order_created(new_id(), (sku, 1)) for _ in range(8)]

        deliveries = concurrently(
            8, lambda i: delivered(lambda: inventory.reserve(events[i], store.uow()))
        )

        outcomes = [d.result[0].type for d in deliveries]
        assert outcomes.count(EventType.INVENTORY_RESERVED) == 3
        assert outcomes.count(EventType.INVENTORY_REJECTED) == 5
        assert store.stock(sku) == (0, 3, 0)


class TestFakeInventory(InventoryContract):
    @pytest.fixture
    def store(self) -> InventoryStore:
        return FakeInventoryStore()


@pytest.mark.integration
class TestPostgresInventory(InventoryContract):
    @pytest.fixture
    def store(self, postgres: object, container: Container) -> InventoryStore:
        return PostgresInventoryStore(container)
