"""The saga's facts (minimart.domain.saga): every real run is accepted in any arrival order."""

from __future__ import annotations

import itertools

import pytest

from minimart.catalog import EventType
from minimart.domain.orders import OrderStatus
from minimart.domain.saga import PATHS, Contradiction, recorded, status_of

ENDS = {
    "confirmed": OrderStatus.CONFIRMED,
    "stock refused": OrderStatus.CANCELLED,
    "payment declined": OrderStatus.CANCELLED,
    "shipping failed": OrderStatus.CANCELLED,
}


@pytest.mark.parametrize(
    ("path", "end"), list(zip(PATHS, ENDS.values(), strict=True)), ids=list(ENDS)
)
def test_every_arrival_order_of_a_real_run_is_accepted_and_ends_where_the_run_does(
    path: frozenset[EventType], end: OrderStatus
) -> None:
    """Compensations are never refused: each path's facts, in every order they can arrive,
    are recorded one by one without a contradiction, the status the facts give never goes
    back, and the order ends as the run does."""
    for arrival in itertools.permutations(sorted(path)):
        facts: frozenset[EventType] = frozenset()
        status = OrderStatus.PENDING
        for event in arrival:
            facts = recorded(facts, event)
            after = status_of(facts)
            assert status.advanced_to(after) is after, (arrival, event)  # never back
            status = after
        assert status is end, arrival


def test_confirmed_only_with_reservation_capture_and_shipment() -> None:
    confirming = {EventType.INVENTORY_RESERVED, EventType.PAYMENT_CAPTURED,
                  EventType.SHIPPING_PREPARED}  # fmt: skip
    for size in range(len(confirming)):
        for subset in itertools.combinations(sorted(confirming), size):
            assert status_of(frozenset(subset)) is not OrderStatus.CONFIRMED
    assert status_of(frozenset(confirming)) is OrderStatus.CONFIRMED


def test_a_fact_of_no_path_is_refused() -> None:
    with pytest.raises(Contradiction) as raised:
        recorded(frozenset({EventType.SHIPPING_PREPARED}), EventType.SHIPPING_FAILED)

    assert raised.value.rule == "saga-path"
    assert str(raised.value) == (
        "saga-path: shipping.failed contradicts what is recorded (shipping.prepared)"
    )
