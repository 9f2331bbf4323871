"""Payment: capture the order's amount, or decline it; refund it when shipping fails."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

from minimart.catalog import Event, EventType, next_event
from minimart.domain.rules import decide_payment, payment_id
from minimart.domain.saga import check_capture, check_refund
from minimart.handlers.ports import Payment, PaymentUnitOfWork


@dataclass(frozen=True)
class PaymentPolicy:
    default_credit_limit_cents: int
    decline_rate: float


def capture(event: Event, uow: PaymentUnitOfWork, policy: PaymentPolicy) -> list[Event]:
    """Capture the order's amount once; a second capture or an amount its lines do not hold
    is a ``Contradiction`` (nothing stored)."""
    data = event.data
    with uow:
        done, limit, existing = uow.outcome_limit_and_payment(
            event.id, data["customerId"], event.order_id
        )
        if done is not None:
            return done
        check_capture(event.order_id, data, None if existing is None else existing.status)
        decision = decide_payment(
            event.order_id,
            data["customerId"],
            data["totalCents"],
            policy.default_credit_limit_cents if limit is None else limit,
            policy.decline_rate,
        )
        payment = Payment(
            order_id=event.order_id,
            payment_id=payment_id(event.order_id),
            customer_id=data["customerId"],
            amount_cents=data["totalCents"],
            status="CAPTURED" if decision.accepted else "DECLINED",
            reason=decision.reason,
        )
        uow.save_payment(payment)
        if decision.accepted:
            emitted = next_event(
                event, EventType.PAYMENT_CAPTURED, {**data, "paymentId": payment.payment_id}
            )
        else:
            emitted = next_event(
                event,
                EventType.PAYMENT_DECLINED,
                {
                    "orderId": event.order_id,
                    "reason": decision.reason,
                    "amountCents": data["totalCents"],
                },
            )
        uow.record_outcome(event.id, [emitted])
        uow.commit()
    return [emitted]


def refund(event: Event, uow: PaymentUnitOfWork, policy: PaymentPolicy) -> list[Event]:
    """Compensation: shipping failed, so the captured amount goes back to the customer.

    Only a CAPTURED payment, once: one conditional update refunds it. When it refunds
    nothing, the event is a duplicate that waited for its twin (answered from the twin's
    outcome) or a ``Contradiction`` (no payment, declined, or refunded by another event)."""
    reason = event.data["reason"]
    with uow:
        done, payment = uow.outcome_and_refund(event.id, event.order_id, reason)
        if done is not None:
            return done
        if payment is None:
            # Read again: a concurrent duplicate may have committed while this one waited.
            done = uow.outcome_of(event.id)
            if done is not None:
                return done
            stored = uow.payment_of(event.order_id)
            check_refund(event.order_id, None if stored is None else stored.status)
            raise RuntimeError(f"payment of {event.order_id} CAPTURED yet not refunded")
        emitted = next_event(
            event,
            EventType.PAYMENT_REFUNDED,
            {"orderId": event.order_id, "reason": reason, "amountCents": payment.amount_cents},
        )
        uow.record_outcome(event.id, [emitted])
        uow.commit()
    return [emitted]


HANDLERS: Mapping[EventType, Callable[[Event, PaymentUnitOfWork, PaymentPolicy], list[Event]]] = {
    EventType.INVENTORY_RESERVED: capture,
    EventType.SHIPPING_FAILED: refund,
}
