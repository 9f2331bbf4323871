"""Orders: validating a request body, pricing it, and the saga status it goes through."""

from __future__ import annotations

import random
from typing import Any

import pytest

from minimart.domain.orders import (
    InvalidOrder,
    OrderLimits,
    OrderLine,
    OrderStatus,
    parse_order_request,
    price_lines,
)

LIMITS = OrderLimits(max_items=5, max_quantity_per_line=100)


def order_body(**overrides: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "customerId": random.randint(1, 10_000),
        "items": [{"sku": "SKU-1001", "quantity": 2}, {"sku": "SKU-42", "quantity": 1}],
        "shippingAddress": {
            "name": "Ada",
            "line1": "1 Main St",
            "city": "Springfield",
            "postalCode": "12345",
            "country": "US",
        },
    }
    body.update(overrides)
    return body


def pointers(body: Any) -> list[str]:
    with pytest.raises(InvalidOrder) as raised:
        parse_order_request(body, LIMITS)
    return [error.pointer for error in raised.value.errors]


def test_a_valid_body_parses() -> None:
    body = order_body()

    request = parse_order_request(body, LIMITS)

    assert request.customer_id == body["customerId"]
    assert request.lines == (OrderLine("SKU-1001", 2), OrderLine("SKU-42", 1))
    assert request.shipping_address == body["shippingAddress"]
    assert len(request.fingerprint) == 64


def test_the_address_needs_only_a_country() -> None:
    request = parse_order_request(order_body(shippingAddress={"country": "DE"}), LIMITS)

    assert request.shipping_address == {"country": "DE"}


@pytest.mark.parametrize(
    ("changes", "pointer"),
    [
        ({"customerId": None}, "/customerId"),
        ({"customerId": True}, "/customerId"),
        ({"customerId": "7"}, "/customerId"),
        ({"customerId": -7}, "/customerId"),
        ({"customerId": 0}, "/customerId"),
        ({"customerId": 2**53 + 1}, "/customerId"),
        ({"customerId": 7.0}, "/customerId"),
        ({"items": []}, "/items"),
        ({"items": {"sku": "SKU-42", "quantity": 1}}, "/items"),
        ({"items": [{"sku": f"SKU-{n}", "quantity": 1} for n in range(6)]}, "/items"),
        ({"items": ["SKU-42"]}, "/items/0"),
        ({"items": [{"sku": "", "quantity": 1}]}, "/items/0/sku"),
        ({"items": [{"sku": "-SKU", "quantity": 1}]}, "/items/0/sku"),
        ({"items": [{"sku": "SKU 42", "quantity": 1}]}, "/items/0/sku"),
        ({"items": [{"sku": "S" * 65, "quantity": 1}]}, "/items/0/sku"),
        ({"items": [{"sku": 42, "quantity": 1}]}, "/items/0/sku"),
        ({"items": [{"quantity": 1}]}, "/items/0/sku"),
        ({"items": [{"sku": "SKU-42", "quantity": 0}]}, "/items/0/quantity"),
        ({"items": [{"sku": "SKU-42", "quantity": -1}]}, "/items/0/quantity"),
        ({"items": [{"sku": "SKU-42", "quantity": 10**12}]}, "/items/0/quantity"),
        ({"items": [{"sku": "SKU-42", "quantity": 1.5}]}, "/items/0/quantity"),
        ({"items": [{"sku": "SKU-42", "quantity": 1.0}]}, "/items/0/quantity"),
        ({"items": [{"sku": "SKU-42", "quantity": "1"}]}, "/items/0/quantity"),
        ({"items": [{"sku": "SKU-42", "quantity": True}]}, "/items/0/quantity"),
        ({"items": [{"sku": "SKU-42"}]}, "/items/0/quantity"),
        ({"items": [{"sku": "SKU-42", "quantity": 1, "price": 1}]}, "/items/0/price"),
        ({"coupon": "FREE"}, "/coupon"),
        ({"shippingAddress": None}, "/shippingAddress"),
        ({"shippingAddress": "Main St"}, "/shippingAddress"),
        ({"shippingAddress": {"city": "Paris"}}, "/shippingAddress/country"),
        ({"shippingAddress": {"country": "us"}}, "/shippingAddress/country"),
        ({"shippingAddress": {"country": "USA"}}, "/shippingAddress/country"),
        ({"shippingAddress": {"country": 1}}, "/shippingAddress/country"),
        ({"shippingAddress": {"country": "US", "zip": "1"}}, "/shippingAddress/zip"),
        ({"shippingAddress": {"country": "US", "city": "x" * 201}}, "/shippingAddress/city"),
    ],
)
def test_a_bad_field_is_named_by_its_json_pointer(changes: dict[str, Any], pointer: str) -> None:
    assert pointer in pointers(order_body(**changes))


def test_a_missing_customer_id_is_named() -> None:
    body = order_body()
    del body["customerId"]

    assert pointers(body) == ["/customerId"]


def test_missing_items_and_address_are_named() -> None:
    assert pointers({"customerId": 7}) == ["/items", "/shippingAddress"]


def test_every_bad_field_is_reported_at_once() -> None:
    body = order_body(
        customerId=-1,
        items=[{"sku": "SKU-42", "quantity": 0}, {"sku": "!", "quantity": 1}],
        shippingAddress={"country": "xx"},
        extra=1,
    )

    assert pointers(body) == [
        "/extra",
        "/customerId",
        "/items/0/quantity",
        "/items/1/sku",
        "/shippingAddress/country",
    ]


@pytest.mark.parametrize("body", [None, [], "order", 42])
def test_a_body_that_is_not_an_object_is_refused(body: Any) -> None:
    assert pointers(body) == [""]


def test_invalid_order_message_lists_pointer_and_detail() -> None:
    with pytest.raises(InvalidOrder, match="/customerId: must be a positive integer"):
        parse_order_request(order_body(customerId=0), LIMITS)


def test_duplicated_skus_merge_into_one_line() -> None:
    body = order_body(
        items=[
            {"sku": "SKU-42", "quantity": 1},
            {"sku": "SKU-1001", "quantity": 3},
            {"sku": "SKU-42", "quantity": 2},
        ]
    )

    request = parse_order_request(body, LIMITS)

    assert request.lines == (OrderLine("SKU-1001", 3), OrderLine("SKU-42", 3))


def test_merged_lines_over_the_quantity_limit_are_refused() -> None:
    body = order_body(items=[{"sku": "SKU-42", "quantity": 60}, {"sku": "SKU-42", "quantity": 41}])

    with pytest.raises(InvalidOrder) as raised:
        parse_order_request(body, LIMITS)

    assert [(e.pointer, e.detail) for e in raised.value.errors] == [
        ("/items", "SKU-42: more than 100")
    ]


def test_fingerprint_is_equal_for_equal_requests() -> None:
    body = order_body()
    reordered = order_body(
        customerId=body["customerId"],
        items=list(reversed(body["items"])),
        shippingAddress=dict(reversed(list(body["shippingAddress"].items()))),
    )

    first = parse_order_request(body, LIMITS)

    assert parse_order_request(order_body(**body), LIMITS).fingerprint == first.fingerprint
    assert parse_order_request(reordered, LIMITS).fingerprint == first.fingerprint


@pytest.mark.parametrize(
    "changes",
    [
        {"customerId": 99_999},
        {"items": [{"sku": "SKU-1001", "quantity": 3}, {"sku": "SKU-42", "quantity": 1}]},
        {"items": [{"sku": "SKU-1001", "quantity": 2}]},
        {"shippingAddress": {"country": "DE"}},
    ],
)
def test_fingerprint_differs_for_different_requests(changes: dict[str, Any]) -> None:
    body = order_body(customerId=7)

    assert (
        parse_order_request(body, LIMITS).fingerprint
        != parse_order_request({**body, **changes}, LIMITS).fingerprint
    )


def test_price_lines_sets_unit_prices() -> None:
    lines = (OrderLine("SKU-1001", 2), OrderLine("SKU-42", 1))

    priced = price_lines(lines, {"SKU-1001": 4_999, "SKU-42": 2_500, "SKU-OTHER": 1})

    assert priced == (OrderLine("SKU-1001", 2, 4_999), OrderLine("SKU-42", 1, 2_500))
    assert sum(line.total_cents for line in priced) == 12_498


def test_price_lines_refuses_unknown_skus() -> None:
    lines = (OrderLine("SKU-NOPE", 1), OrderLine("SKU-42", 1), OrderLine("SKU-GONE", 1))

    with pytest.raises(InvalidOrder) as raised:
        price_lines(lines, {"SKU-42": 2_500})

    assert [(e.pointer, e.detail) for e in raised.value.errors] == [
        ("/items", "unknown SKU 'SKU-NOPE'"),
        ("/items", "unknown SKU 'SKU-GONE'"),
    ]


def test_order_line_as_event_data() -> None:
    assert OrderLine("SKU-42", 3, 2_500).as_event_data() == {
        "sku": "SKU-42",
        "quantity": 3,
        "unitPriceCents": 2_500,
    }


# -- the saga status ---------------------------------------------------------------------


@pytest.mark.parametrize("current", list(OrderStatus))
@pytest.mark.parametrize("candidate", list(OrderStatus))
def test_status_never_goes_backwards_nor_leaves_a_final_one(
    current: OrderStatus, candidate: OrderStatus
) -> None:
    after = current.advanced_to(candidate)

    assert after in (current, candidate)
    assert after.rank >= current.rank
    if current.final:
        assert after is current
    elif current is OrderStatus.CANCELLING and candidate is not OrderStatus.CANCELLED:
        assert after is current  # a compensating saga only ends cancelled
    elif candidate.rank > current.rank:
        assert after is candidate
    else:
        assert after is current


def test_the_happy_path_advances_step_by_step() -> None:
    status = OrderStatus.PENDING
    for candidate in (OrderStatus.RESERVED, OrderStatus.PAID, OrderStatus.CONFIRMED):
        status = status.advanced_to(candidate)
        assert status is candidate


def test_a_late_event_does_not_undo_a_cancellation() -> None:
    status = OrderStatus.PENDING.advanced_to(OrderStatus.CANCELLED)

    assert status.advanced_to(OrderStatus.RESERVED) is OrderStatus.CANCELLED
    assert status.advanced_to(OrderStatus.CANCELLING) is OrderStatus.CANCELLED
    assert status.advanced_to(OrderStatus.CONFIRMED) is OrderStatus.CANCELLED


def test_only_confirmed_and_cancelled_are_final() -> None:
    assert {s for s in OrderStatus if s.final} == {OrderStatus.CONFIRMED, OrderStatus.CANCELLED}
