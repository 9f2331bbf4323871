"""The payment port (``PaymentUnitOfWork``): one suite, run on the fake and on PostgreSQL."""

from __future__ import annotations

import random
from typing import Protocol

import psycopg
import pytest

from minimart.bootstrap import Container
from minimart.catalog import Event, EventType
from minimart.domain.rules import payment_id
from minimart.domain.saga import Contradiction
from minimart.handlers import payment
from minimart.handlers.payment import PaymentPolicy
from minimart.handlers.ports import Payment, PaymentUnitOfWork
from tests.contract.support import blocked, concurrently, delivered, new_id
from tests.fakes import FakePayments, IntegrityViolation

POLICY = PaymentPolicy(default_credit_limit_cents=100_000, decline_rate=0.0)


class PaymentStore(Protocol):
    integrity_error: type[Exception]

    def uow(self) -> PaymentUnitOfWork: ...
    def set_limit(self, customer_id: int, limit_cents: int) -> None: ...
    def refund_reason(self, order_id: str) -> str | None: ...


class FakePaymentStore:
    integrity_error: type[Exception] = IntegrityViolation

    def __init__(self) -> None:
        self.fake = FakePayments({})

    def uow(self) -> PaymentUnitOfWork:
        return self.fake.another()

    def set_limit(self, customer_id: int, limit_cents: int) -> None:
        self.fake.committed.limits[customer_id] = limit_cents

    def refund_reason(self, order_id: str) -> str | None:
        return self.fake.committed.refund_reasons.get(order_id)


class PostgresPaymentStore:
    integrity_error: type[Exception] = psycopg.IntegrityError

    def __init__(self, container: Container) -> None:
        self.container = container
        self.pool = container.payments_pool

    def uow(self) -> PaymentUnitOfWork:
        return self.container.payments_uow()

    def set_limit(self, customer_id: int, limit_cents: int) -> None:
        with self.pool.connection() as conn:
            conn.execute(
                "INSERT INTO customer_limits (customer_id, limit_cents) VALUES (%s, %s)",
                (customer_id, limit_cents),
            )

    def refund_reason(self, order_id: str) -> str | None:
        with self.pool.connection() as conn:
            row = conn.execute(
                "SELECT refund_reason FROM payments WHERE order_id = %s", (order_id,)
            ).fetchone()
        return None if row is None else row[0]


def new_customer() -> int:
    return random.randint(10**9, 10**12)


def a_payment(order_id: str, status: str = "CAPTURED", reason: str = "") -> Payment:
    return Payment(order_id, payment_id(order_id), new_customer(), 2_500, status, reason)


def saved(store: PaymentStore, *payments: Payment) -> None:
    with store.uow() as uow:
        for p in payments:
            uow.save_payment(p)
        uow.commit()


def payment_of(store: PaymentStore, order_id: str) -> Payment | None:
    with store.uow() as uow:
        return uow.payment_of(order_id)


def inventory_reserved(order_id: str, customer_id: int, total_cents: int = 2_500) -> Event:
    return Event(
        EventType.INVENTORY_RESERVED,
        new_id(),
        order_id,
        {"orderId": order_id, "customerId": customer_id, "totalCents": total_cents,
         "items": [{"sku": "SKU-1001", "quantity": 1, "unitPriceCents": total_cents}],
         "shippingAddress": {"country": "US"}},
    )  # fmt: skip


def shipping_failed(order_id: str) -> Event:
    return Event(EventType.SHIPPING_FAILED, new_id(), order_id,
                 {"orderId": order_id, "reason": "shipping_failed: 00000"})  # fmt: skip


class PaymentContract:
    @pytest.fixture
    def store(self) -> PaymentStore:
        raise NotImplementedError

    def test_a_saved_payment_reads_back(self, store: PaymentStore) -> None:
        captured, declined = a_payment(new_id()), a_payment(new_id(), "DECLINED", "limit")
        saved(store, captured, declined)
        assert payment_of(store, captured.order_id) == captured
        assert payment_of(store, declined.order_id) == declined
        assert payment_of(store, new_id()) is None

    def test_an_order_has_one_payment(self, store: PaymentStore) -> None:
        first = a_payment(new_id())
        saved(store, first)
        with pytest.raises(store.integrity_error), store.uow() as uow:  # PRIMARY KEY (order_id)
            uow.save_payment(a_payment(first.order_id, "DECLINED", "again"))
            uow.commit()
        assert payment_of(store, first.order_id) == first

    def test_a_refund_keeps_the_payments_reason_and_stores_its_own(
        self, store: PaymentStore
    ) -> None:
        captured = a_payment(new_id())
        saved(store, captured)
        with store.uow() as uow:
            uow.mark_refunded(captured.order_id, "shipping_failed: 00000")
            uow.commit()
        refunded = payment_of(store, captured.order_id)
        assert refunded is not None
        assert (refunded.status, refunded.reason) == ("REFUNDED", "")
        assert store.refund_reason(captured.order_id) == "shipping_failed: 00000"

    def test_only_a_captured_payment_is_refunded(self, store: PaymentStore) -> None:
        declined = a_payment(new_id(), "DECLINED", "payment_declined: limit")
        saved(store, declined)
        with store.uow() as uow:
            uow.mark_refunded(declined.order_id, "shipping_failed")
            uow.mark_refunded(new_id(), "shipping_failed")  # no payment: nothing happens
            uow.commit()
        assert payment_of(store, declined.order_id) == declined
        assert store.refund_reason(declined.order_id) is None

    def test_the_credit_limit_of_a_customer_or_none(self, store: PaymentStore) -> None:
        customer = new_customer()
        store.set_limit(customer, 0)
        with store.uow() as uow:
            assert uow.credit_limit(customer) == 0
            assert uow.outcome_and_limit(new_id(), customer) == (None, 0)
            assert uow.credit_limit(new_customer()) is None

    def test_leaving_without_commit_keeps_nothing(self, store: PaymentStore) -> None:
        p, event_id = a_payment(new_id()), new_id()
        with store.uow() as uow:
            uow.save_payment(p)
            uow.record_outcome(event_id, [])
        with store.uow() as uow:
            assert uow.payment_of(p.order_id) is None
            assert uow.outcome_of(event_id) is None

    def test_a_replayed_capture_changes_nothing(self, store: PaymentStore) -> None:
        event = inventory_reserved(new_id(), new_customer())
        first = payment.capture(event, store.uow(), POLICY)
        stored = payment_of(store, event.order_id)
        assert payment.capture(event, store.uow(), POLICY) == first
        assert payment_of(store, event.order_id) == stored
        assert [e.type for e in first] == [EventType.PAYMENT_CAPTURED]

    def test_a_replayed_refund_changes_nothing(self, store: PaymentStore) -> None:
        reserved = inventory_reserved(new_id(), new_customer())
        payment.capture(reserved, store.uow(), POLICY)
        failed = shipping_failed(reserved.order_id)
        first = payment.refund(failed, store.uow(), POLICY)
        assert payment.refund(failed, store.uow(), POLICY) == first
        refunded = payment_of(store, reserved.order_id)
        assert refunded is not None and refunded.status == "REFUNDED"
        assert [e.data["amountCents"] for e in first] == [2_500]

    def test_concurrent_duplicate_captures_charge_once(self, store: PaymentStore) -> None:
        customer = new_customer()
        store.set_limit(customer, 3_000)
        event = inventory_reserved(new_id(), customer)

        deliveries = concurrently(
            6, lambda _: delivered(lambda: payment.capture(event, store.uow(), POLICY))
        )

        assert all(d.result == deliveries[0].result for d in deliveries)
        assert [e.type for e in deliveries[0].result] == [EventType.PAYMENT_CAPTURED]
        stored = payment_of(store, event.order_id)
        assert stored is not None and (stored.status, stored.amount_cents) == ("CAPTURED", 2_500)
        errors = [e for d in deliveries for e in d.errors]
        assert all(isinstance(e, store.integrity_error) for e in errors), errors

    def test_a_refund_answers_the_refunded_payment_and_only_once(self, store: PaymentStore) -> None:
        captured = a_payment(new_id())
        saved(store, captured)
        with store.uow() as uow:
            refunded = uow.mark_refunded(captured.order_id, "shipping_failed: 00000")
            again = uow.mark_refunded(captured.order_id, "shipping_failed: again")
            missing = uow.mark_refunded(new_id(), "shipping_failed")
            uow.commit()
        assert refunded == Payment(captured.order_id, captured.payment_id,
                                   captured.customer_id, 2_500, "REFUNDED", "")  # fmt: skip
        assert (again, missing) == (None, None)
        assert store.refund_reason(captured.order_id) == "shipping_failed: 00000"

    def test_the_payment_of_an_order_is_read_with_the_outcome_and_limit(
        self, store: PaymentStore
    ) -> None:
        paid, customer = a_payment(new_id()), new_customer()
        saved(store, paid)
        store.set_limit(customer, 7)
        with store.uow() as uow:
            assert uow.outcome_limit_and_payment(new_id(), customer, paid.order_id) == (
                None, 7, paid,
            )  # fmt: skip
            assert uow.outcome_limit_and_payment(new_id(), customer, new_id())[2] is None

    def test_a_second_refund_is_refused_and_changes_nothing(self, store: PaymentStore) -> None:
        reserved = inventory_reserved(new_id(), new_customer())
        payment.capture(reserved, store.uow(), POLICY)
        failed = shipping_failed(reserved.order_id)
        first = payment.refund(failed, store.uow(), POLICY)
        forged = shipping_failed(reserved.order_id)

        with pytest.raises(Contradiction, match="its payment is REFUNDED"):
            payment.refund(forged, store.uow(), POLICY)

        assert store.refund_reason(reserved.order_id) == "shipping_failed: 00000"
        with store.uow() as uow:
            assert uow.outcome_of(forged.id) is None
        assert payment.refund(failed, store.uow(), POLICY) == first

    def test_a_refund_of_an_order_never_charged_is_refused(self, store: PaymentStore) -> None:
        declined = a_payment(new_id(), "DECLINED", "payment_declined: limit")
        saved(store, declined)
        for order_id, found in ((declined.order_id, "DECLINED"), (new_id(), "no payment")):
            with pytest.raises(Contradiction, match=found):
                payment.refund(shipping_failed(order_id), store.uow(), POLICY)
        assert payment_of(store, declined.order_id) == declined

    def test_a_second_capture_is_refused_and_changes_nothing(self, store: PaymentStore) -> None:
        reserved = inventory_reserved(new_id(), new_customer())
        first = payment.capture(reserved, store.uow(), POLICY)
        stored = payment_of(store, reserved.order_id)
        again = inventory_reserved(reserved.order_id, new_customer(), total_cents=10)

        with pytest.raises(Contradiction, match="already has a payment"):
            payment.capture(again, store.uow(), POLICY)

        assert payment_of(store, reserved.order_id) == stored
        with store.uow() as uow:
            assert uow.outcome_of(again.id) is None
        assert payment.capture(reserved, store.uow(), POLICY) == first

    def test_concurrent_duplicate_refunds_refund_once_and_refuse_none(
        self, store: PaymentStore
    ) -> None:
        """A duplicate that waited for its twin's row lock finds the payment REFUNDED: it is
        answered from the twin's outcome (or retried), never refused as a contradiction."""
        reserved = inventory_reserved(new_id(), new_customer())
        payment.capture(reserved, store.uow(), POLICY)
        failed = shipping_failed(reserved.order_id)

        deliveries = concurrently(
            6, lambda _: delivered(lambda: payment.refund(failed, store.uow(), POLICY))
        )

        assert all(d.result == deliveries[0].result for d in deliveries)
        assert [e.type for e in deliveries[0].result] == [EventType.PAYMENT_REFUNDED]
        errors = [e for d in deliveries for e in d.errors]
        assert all(isinstance(e, store.integrity_error) for e in errors), errors

    def test_a_refund_that_waited_for_its_twin_is_answered_not_refused(
        self, store: PaymentStore
    ) -> None:
        """The twin refunds and records its outcome while the duplicate waits for the row: the
        duplicate's conditional update then refunds nothing, and it answers the twin's
        outcome instead of refusing a refunded payment."""
        reserved = inventory_reserved(new_id(), new_customer())
        payment.capture(reserved, store.uow(), POLICY)
        failed = shipping_failed(reserved.order_id)
        twin = store.uow()
        with twin:
            twin.mark_refunded(reserved.order_id, "shipping_failed: 00000")
            twin.record_outcome(failed.id, [])

            emitted = blocked(lambda: payment.refund(failed, store.uow(), POLICY), twin.commit)

        assert emitted == []


class TestFakePayments(PaymentContract):
    @pytest.fixture
    def store(self) -> PaymentStore:
        return FakePaymentStore()


@pytest.mark.integration
class TestPostgresPayments(PaymentContract):
    @pytest.fixture
    def store(self, postgres: object, container: Container) -> PaymentStore:
        return PostgresPaymentStore(container)
