"""`python -m minimart.local COMMAND`: run the embedded stack and orders through it."""

from __future__ import annotations

import argparse
import json
import logging
import sys
import uuid
from typing import Any

from minimart.console import commands as ops
from minimart.console.client import OrderClient, format_timeline
from minimart.console.effects import order_effects
from minimart.local import observe, stack
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


def _print_effects(order_id: str, settings: Settings) -> None:
    effects = order_effects(order_id, settings)
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
    response = client.place(customer, items, address, idempotency_key=str(uuid.uuid4()))
    if response.status_code != 202:
        raise SystemExit(f"POST /orders answered {response.status_code}: {response.text}")
    order = client.wait_final(response.json()["orderId"])
    print(format_timeline(order))
    _print_effects(order["orderId"], settings)
    return order


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m minimart.local")
    sub = parser.add_subparsers(dest="command", required=True)
    up = sub.add_parser("up", help="start servers, functions and dispatchers (reuses what runs)")
    up.add_argument("--with-prometheus", action="store_true", help="and Prometheus scraping them")
    sub.add_parser("down", help="stop everything the stack started")
    sub.add_parser("status", help="what runs")
    order = sub.add_parser("order", help="place one order and follow it to its final state")
    order.add_argument("--customer", type=int, default=7)
    order.add_argument("--sku", default="SKU-1001")
    order.add_argument("--quantity", type=int, default=1)
    order.add_argument("--country", default="US")
    order.add_argument("--postal-code", default="12345")
    sub.add_parser("demo", help="one order down each saga path, with timelines and effects")
    ops.add_commands(sub)
    observe.add_commands(sub)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    logging.getLogger("kafka").setLevel(logging.WARNING)
    settings = Settings.from_env()
    client = OrderClient(f"http://127.0.0.1:{settings.ingress_port}")

    if args.command == "up":
        started = stack.up(settings)
        print(f"minimart is up: http://127.0.0.1:{settings.ingress_port}/orders")
        print("started: " + (", ".join(started) or "nothing (all already running)"))
        if args.with_prometheus:
            observe.run(argparse.Namespace(command="prometheus"), settings)
    elif args.command == "down":
        print("stopped: " + (", ".join(stack.down(settings)) or "nothing"))
    elif args.command == "status":
        for name, running in stack.status(settings).items():
            print(f"  {'up  ' if running else 'down'}  {name}")
    elif args.command == "order":
        address = {**ADDRESS, "country": args.country, "postalCode": args.postal_code}
        items = [{"sku": args.sku, "quantity": args.quantity}]
        run_order(client, settings, args.customer, items, address)
    elif args.command in ops.COMMANDS:
        return ops.run(args, settings)
    elif args.command in observe.COMMANDS:
        return observe.run(args, settings)
    elif args.command == "demo":
        stack.up(settings)
        for title, customer, items, address in DEMO_ORDERS:
            print(f"\n== {title}")
            run_order(client, settings, customer, items, address)
    return 0


if __name__ == "__main__":
    sys.exit(main())
