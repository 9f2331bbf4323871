"""A small client of the order API: place an order and follow it to its final state."""

from __future__ import annotations

import time
from datetime import datetime
from typing import Any

import requests

FINAL = ("CONFIRMED", "CANCELLED")


class OrderClient:
    def __init__(self, base_url: str, session: requests.Session | None = None) -> None:
        self.base_url = base_url.rstrip("/")
        self._session = session or requests.Session()

    def place(
        self,
        customer_id: int,
        items: list[dict[str, Any]],
        address: dict[str, str],
        idempotency_key: str | None = None,
    ) -> requests.Response:
        headers = {"Idempotency-Key": idempotency_key} if idempotency_key else {}
        return self._session.post(
            f"{self.base_url}/orders",
            json={"customerId": customer_id, "items": items, "shippingAddress": address},
            headers=headers,
            timeout=10,
        )

    def get(self, order_id: str) -> dict[str, Any]:
        response = self._session.get(f"{self.base_url}/orders/{order_id}", timeout=10)
        response.raise_for_status()
        body: dict[str, Any] = response.json()
        return body

    def wait_final(self, order_id: str, timeout: float = 30.0) -> dict[str, Any]:
        """The order once CONFIRMED or CANCELLED (and its saga's last step recorded)."""
        deadline = time.monotonic() + timeout
        while True:
            order = self.get(order_id)
            steps = {step["step"] for step in order["timeline"]}
            if order["status"] in FINAL and "notification.sent" in steps:
                return order
            if time.monotonic() > deadline:
                raise TimeoutError(f"order {order_id} still {order['status']} after {timeout}s")
            time.sleep(0.05)


def format_timeline(order: dict[str, Any]) -> str:
    lines = [
        f"order {order['orderId']}: {order['status']}"
        + (f" ({order['reason']})" if order.get("reason") else ""),
    ]
    start: datetime | None = None
    for step in order["timeline"]:
        moment = datetime.fromisoformat(step["at"])
        start = moment if start is None else start
        extra = {k: v for k, v in step.items() if k not in ("step", "status", "at", "eventId")}
        detail = " ".join(f"{k}={v}" for k, v in extra.items())
        lines.append(
            f"  +{(moment - start).total_seconds() * 1000:7.1f} ms  {step['step']:<20}"
            f" -> {step['status']:<10} {detail}"
        )
    return "\n".join(lines)
