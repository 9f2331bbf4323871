"""Payment: capture the order's amount, or decline it; refund it when shipping fails."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

from minimart.catalog import Event, EventType, next_event
from minimart.domain.rules import decide_payment, payment_id
from minimart.handlers.ports import Payment, PaymentUnitOfWork


@dataclass(frozen=True)
class PaymentPolicy:
    default_credit_limit_cents: int
    decline_rate: float


def capture(event: Event, uow: PaymentUnitOfWork, policy: PaymentPolicy) -> list[Event]:
    data = event.data
    with uow:
        done, limit = uow.outcome_and_limit(event.id, data["customerId"])
        if done is not None:
            return done
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
    """Compensation: shipping failed, so the captured amount goes back to the customer."""
    with uow:
        done = uow.outcome_of(event.id)
        if done is not None:
            return done
        payment = uow.payment_of(event.order_id)
        if payment is None or payment.status == "DECLINED":
            raise LookupError(f"no captured payment for order {event.order_id} to refund")
        reason = event.data["reason"]
        uow.mark_refunded(event.order_id, reason)
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
