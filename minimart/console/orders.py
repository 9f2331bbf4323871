"""Orders through the ingress, followed to their final state, with what they left in every
store: the ``order`` command, and the demo's one order down each saga path."""

from __future__ import annotations

import json
import uuid
from typing import Any

from minimart.console.client import OrderClient, format_timeline
from minimart.console.effects import order_effects
from minimart.local_stores import local_store_settings
from minimart.settings import Settings

ADDRESS = {"name": "Ada", "line1": "1 Loop Rd", "city": "Springfield", "postalCode": "12345"}

# One order down each path of the saga (see README "Failure rules").
DEMO_ORDERS: tuple[tuple[str, int, list[dict[str, Any]], dict[str, str]], ...] = (
    ("confirmed", 7, [{"sku": "SKU-1001", "quantity": 1}, {"sku": "SKU-1003", "quantity": 2}],
     {**ADDRESS, "country": "US"}),
    ("cancelled: stock insufficient", 7, [{"sku": "SKU-OUT", "quantity": 1}],
     {**ADDRESS, "country": "US"}),
    ("cancelled: payment declined", 402, [{"sku": "SKU-1002", "quantity": 1}],
     {**ADDRESS, "country": "US"}),
    ("cancelled: shipping failed", 7, [{"sku": "SKU-1004", "quantity": 1}],
     {**ADDRESS, "country": "US", "postalCode": "00000"}),
)  # fmt: skip


def ingress_url(settings: Settings) -> str:
    return f"http://{settings.host}:{settings.ingress_port}"


def _print_effects(order_id: str, settings: Settings) -> None:
    effects = order_effects(order_id, local_store_settings(settings))
    print("  effects:")
    for store, value in effects.items():
        print(f"    {store:<14} {json.dumps(value, default=str)}")


def run_order(
    client: OrderClient,
    settings: Settings,
    customer: int,
    items: list[dict[str, Any]],
    address: dict[str, str],
) -> dict[str, Any]:
    """Place one order, wait for its final state, print its timeline and effects."""
    response = client.place(customer, items, address, idempotency_key=str(uuid.uuid4()))
    if response.status_code != 202:
        raise SystemExit(f"POST /orders answered {response.status_code}: {response.text}")
    order = client.wait_final(response.json()["orderId"])
    print(format_timeline(order))
    _print_effects(order["orderId"], settings)
    return order


def run_demo(client: OrderClient, settings: Settings) -> None:
    for title, customer, items, address in DEMO_ORDERS:
        print(f"\n== {title}")
        run_order(client, settings, customer, items, address)
