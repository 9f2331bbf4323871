"""The saga end to end on the real local stack: every path, with its effects in every store."""

from __future__ import annotations

import concurrent.futures
import uuid
from typing import Any

import pytest

from minimart.console.client import OrderClient
from minimart.console.effects import order_effects
from minimart.settings import Settings
from tests.stack import eventually, new_sku, stock_of

pytestmark = pytest.mark.e2e

HOME = {"name": "Ada", "line1": "1 Loop Rd", "city": "Springfield", "postalCode": "12345"}
US = {**HOME, "country": "US"}


def place(client: OrderClient, customer: int, items: list[dict[str, Any]], address: dict[str, str]
          ) -> str:  # fmt: skip
    response = client.place(customer, items, address)
    assert response.status_code == 202, response.text
    body = response.json()
    assert body["status"] == "PENDING"
    assert response.headers["Location"] == f"/orders/{body['orderId']}"
    return str(body["orderId"])


def steps(order: dict[str, Any]) -> list[str]:
    return [step["step"] for step in order["timeline"]]


def settled_effects(settings: Settings, order_id: str, reservation_state: str | None
                    ) -> dict[str, Any]:  # fmt: skip
    """Effects once the last asynchronous step (stock shipped or released) has landed."""

    def check() -> dict[str, Any] | None:
        effects = order_effects(order_id, settings)
        states = {r["state"] for r in effects["reservations"]}
        if reservation_state is None or states == {reservation_state}:
            return effects
        return None

    return eventually(check, what=f"reservations of {order_id} {reservation_state}")


def test_confirmed_order_lands_in_every_store(running_stack: Settings, client: OrderClient
                                              ) -> None:  # fmt: skip
    sku = new_sku(running_stack, stock=5, price_cents=1_250)
    order_id = place(client, 11, [{"sku": sku, "quantity": 2}], US)
    order = client.wait_final(order_id)

    assert order["status"] == "CONFIRMED"
    assert order["reason"] is None
    assert order["totalCents"] == 2_500
    assert steps(order)[0] == "order.created"
    assert {
        "inventory.reserved",
        "payment.captured",
        "shipping.prepared",
        "notification.sent",
    } <= set(steps(order))
    effects = settled_effects(running_stack, order_id, "SHIPPED")
    assert effects["reservations"] == [{"sku": sku, "quantity": 2, "state": "SHIPPED"}]
    assert [(p["status"], p["amount_cents"]) for p in effects["payments"]] == [("CAPTURED", 2_500)]
    assert effects["shipment"]["shippingStatus"] == "PREPARED"
    assert effects["shipment"]["labelId"].startswith("LBL-")
    assert [n["template"] for n in effects["notifications"]] == ["OrderConfirmed"]
    assert stock_of(running_stack, sku) == {
        "initial": 5,
        "available": 3,
        "reserved": 0,
        "shipped": 2,
    }


@pytest.mark.parametrize(
    ("items", "reason_code"),
    [
        ([{"sku": "SKU-OUT", "quantity": 1}], "insufficient_stock"),
        ([{"sku": "SKU-RETIRED", "quantity": 1}], "unknown_sku"),
    ],
)
def test_stock_refusal_cancels_without_side_effects(
    running_stack: Settings, client: OrderClient, items: list[dict[str, Any]], reason_code: str
) -> None:
    sku = new_sku(running_stack, stock=5)
    order_id = place(client, 12, [*items, {"sku": sku, "quantity": 1}], US)
    order = client.wait_final(order_id)

    assert order["status"] == "CANCELLED"
    assert order["reason"].startswith(reason_code)
    effects = order_effects(order_id, running_stack)
    assert effects["reservations"] == []  # all or nothing: the good line was not reserved
    assert effects["payments"] == []
    assert effects["shipment"] is None
    assert [n["template"] for n in effects["notifications"]] == ["OrderCancelled"]
    assert stock_of(running_stack, sku)["available"] == 5


def test_payment_declined_releases_stock(running_stack: Settings, client: OrderClient) -> None:
    sku = new_sku(running_stack, stock=4)
    order_id = place(client, 402, [{"sku": sku, "quantity": 3}], US)
    order = client.wait_final(order_id)

    assert order["status"] == "CANCELLED"
    assert order["reason"].startswith("payment_declined")
    assert {"inventory.reserved", "payment.declined", "inventory.released"} <= set(steps(order))
    effects = settled_effects(running_stack, order_id, "RELEASED")
    assert [p["status"] for p in effects["payments"]] == ["DECLINED"]
    assert effects["shipment"] is None
    assert [n["template"] for n in effects["notifications"]] == ["OrderCancelled"]
    assert stock_of(running_stack, sku) == {
        "initial": 4,
        "available": 4,
        "reserved": 0,
        "shipped": 0,
    }


def test_shipping_failure_refunds_and_releases(running_stack: Settings, client: OrderClient
                                               ) -> None:  # fmt: skip
    sku = new_sku(running_stack, stock=4, price_cents=700)
    order_id = place(client, 13, [{"sku": sku, "quantity": 1}], {**US, "postalCode": "00000"})
    order = client.wait_final(order_id)

    assert order["status"] == "CANCELLED"
    assert order["reason"].startswith("shipping_failed")
    assert {"payment.captured", "shipping.failed", "payment.refunded", "inventory.released"} <= set(
        steps(order)
    )
    effects = settled_effects(running_stack, order_id, "RELEASED")
    payment = effects["payments"][0]
    assert (payment["status"], payment["amount_cents"]) == ("REFUNDED", 700)
    assert payment["refund_reason"].startswith("shipping_failed")
    assert effects["shipment"]["shippingStatus"] == "FAILED"
    assert [n["template"] for n in effects["notifications"]] == ["OrderCancelled"]
    assert stock_of(running_stack, sku)["available"] == 4


def test_idempotency_key_returns_the_same_order(running_stack: Settings, client: OrderClient
                                                ) -> None:  # fmt: skip
    sku = new_sku(running_stack, stock=5)
    key = str(uuid.uuid4())
    items = [{"sku": sku, "quantity": 1}]
    first = client.place(14, items, US, idempotency_key=key)
    again = client.place(14, items, US, idempotency_key=key)
    assert first.status_code == again.status_code == 202
    assert first.json()["orderId"] == again.json()["orderId"]
    assert again.headers.get("Idempotent-Replayed") == "true"
    conflict = client.place(14, [{"sku": sku, "quantity": 2}], US, idempotency_key=key)
    assert conflict.status_code == 422
    assert conflict.headers["Content-Type"] == "application/problem+json"
    client.wait_final(first.json()["orderId"])
    assert stock_of(running_stack, sku)["shipped"] == 1


def test_concurrent_orders_never_oversell(running_stack: Settings, client: OrderClient) -> None:
    sku = new_sku(running_stack, stock=10)

    def one(customer: int) -> str:
        return place(OrderClient(client.base_url), customer, [{"sku": sku, "quantity": 1}], US)

    with concurrent.futures.ThreadPoolExecutor(16) as pool:
        order_ids = list(pool.map(one, range(100, 150)))
    finals = [client.wait_final(order_id, timeout=60) for order_id in order_ids]

    confirmed = [o for o in finals if o["status"] == "CONFIRMED"]
    cancelled = [o for o in finals if o["status"] == "CANCELLED"]
    assert len(confirmed) == 10
    assert len(cancelled) == 40
    assert all(o["reason"].startswith("insufficient_stock") for o in cancelled)
    eventually(lambda: stock_of(running_stack, sku)["shipped"] == 10, what="10 shipped")
    assert stock_of(running_stack, sku) == {
        "initial": 10,
        "available": 0,
        "reserved": 0,
        "shipped": 10,
    }


def test_unknown_order_is_404_problem(running_stack: Settings, client: OrderClient) -> None:
    response = client._session.get(f"{client.base_url}/orders/{uuid.uuid4()}", timeout=5)
    assert response.status_code == 404
    assert response.headers["Content-Type"] == "application/problem+json"
    assert response.json()["status"] == 404
