"""The saga's decisions: reproducible from data, and deterministic per order id."""

from __future__ import annotations

import uuid

import pytest

from minimart.domain.orders import OrderLine
from minimart.domain.rules import (
    SHIPPABLE_COUNTRIES,
    Decision,
    StockLevel,
    chance,
    decide_payment,
    decide_reservation,
    decide_shipping,
    label_id,
    payment_id,
)


def new_order_id() -> str:
    return str(uuid.uuid4())


def stock(**levels: int) -> dict[str, StockLevel]:
    return {
        sku.replace("_", "-"): StockLevel(sku.replace("_", "-"), n) for sku, n in levels.items()
    }


# -- reservation ---------------------------------------------------------------------------


def test_reservation_accepts_when_every_line_is_in_stock() -> None:
    lines = (OrderLine("SKU-1", 2), OrderLine("SKU-2", 5))

    assert decide_reservation(lines, stock(SKU_1=2, SKU_2=10)) == Decision.accept()


def test_reservation_refuses_an_unknown_sku() -> None:
    lines = (OrderLine("SKU-1", 1), OrderLine("SKU-RETIRED", 1))

    decision = decide_reservation(lines, stock(SKU_1=5))

    assert not decision.accepted
    assert decision.reason == "unknown_sku: SKU-RETIRED is not stocked"


def test_reservation_refuses_insufficient_stock() -> None:
    lines = (OrderLine("SKU-1", 1), OrderLine("SKU-2", 4))

    decision = decide_reservation(lines, stock(SKU_1=5, SKU_2=3))

    assert not decision.accepted
    assert decision.reason == "insufficient_stock: SKU-2: requested 4, available 3"


def test_reservation_is_all_or_nothing_one_short_line_refuses_the_order() -> None:
    lines = (OrderLine("SKU-1", 1), OrderLine("SKU-2", 1), OrderLine("SKU-3", 1))

    decision = decide_reservation(lines, stock(SKU_1=9, SKU_2=0, SKU_3=9))

    assert decision.reason.startswith("insufficient_stock: SKU-2")


def test_reservation_names_the_first_failing_line() -> None:
    lines = (OrderLine("SKU-NOPE", 1), OrderLine("SKU-1", 9))

    assert decide_reservation(lines, stock(SKU_1=0)).reason.startswith("unknown_sku")


# -- payment -------------------------------------------------------------------------------


def test_payment_within_the_limit_is_accepted() -> None:
    assert decide_payment(new_order_id(), 7, 1_000, 1_000, 0.0).accepted


def test_payment_over_the_limit_is_declined() -> None:
    decision = decide_payment(new_order_id(), 402, 2_500, 0, 0.0)

    assert not decision.accepted
    assert decision.reason == (
        "payment_declined: amount 2500 cents exceeds the credit limit 0 of customer 402"
    )


def test_payment_decline_rate_follows_chance_of_the_order() -> None:
    order_ids = [new_order_id() for _ in range(200)]

    for order_id in order_ids:
        decision = decide_payment(order_id, 7, 1, 1_000, 0.5)
        assert decision.accepted == (chance(order_id, "payment") >= 0.5)
        assert decide_payment(order_id, 7, 1, 1_000, 0.5) == decision
        if not decision.accepted:
            assert decision.reason == "payment_declined: declined by the card issuer (simulated)"


def test_payment_decline_rate_extremes() -> None:
    order_id = new_order_id()

    assert decide_payment(order_id, 7, 1, 1_000, 0.0).accepted
    assert not decide_payment(order_id, 7, 1, 1_000, 1.0).accepted


# -- shipping ------------------------------------------------------------------------------


@pytest.mark.parametrize("country", sorted(SHIPPABLE_COUNTRIES))
def test_shipping_to_a_carrier_country_is_accepted(country: str) -> None:
    address = {"country": country, "postalCode": "12345"}

    assert decide_shipping(new_order_id(), address, 0.0).accepted


@pytest.mark.parametrize("address", [{"country": "AQ"}, {"country": "us"}, {}])
def test_shipping_outside_the_carriers_countries_fails(address: dict[str, str]) -> None:
    decision = decide_shipping(new_order_id(), address, 0.0)

    assert not decision.accepted
    assert decision.reason.startswith("shipping_failed: no carrier delivers to")


def test_shipping_to_postal_code_00000_fails() -> None:
    decision = decide_shipping(new_order_id(), {"country": "US", "postalCode": "00000"}, 0.0)

    assert decision.reason == "shipping_failed: address undeliverable (postal code 00000)"


def test_shipping_failure_rate_follows_chance_of_the_order() -> None:
    address = {"country": "US"}
    for order_id in (new_order_id() for _ in range(200)):
        decision = decide_shipping(order_id, address, 0.3)
        assert decision.accepted == (chance(order_id, "shipping") >= 0.3)
        assert decide_shipping(order_id, address, 0.3) == decision

    assert not decide_shipping(new_order_id(), address, 1.0).accepted


# -- chance and ids ------------------------------------------------------------------------


def test_chance_is_in_the_unit_interval_and_deterministic() -> None:
    values = []
    for order_id in (new_order_id() for _ in range(500)):
        value = chance(order_id, "payment")
        assert 0.0 <= value < 1.0
        assert chance(order_id, "payment") == value
        values.append(value)

    assert 0.3 < sum(values) / len(values) < 0.7  # spread out, not constant


def test_chance_depends_on_the_salt() -> None:
    order_id = new_order_id()

    assert chance(order_id, "payment") != chance(order_id, "shipping")


def test_label_and_payment_ids_are_fixed_by_the_order() -> None:
    order_id, other = new_order_id(), new_order_id()

    assert label_id(order_id) == label_id(order_id) != label_id(other)
    assert payment_id(order_id) == payment_id(order_id) != payment_id(other)
    assert label_id(order_id).startswith("LBL-")
    assert payment_id(order_id).startswith("PAY-")
