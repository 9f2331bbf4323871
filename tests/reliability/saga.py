"""Helpers of the fault-injection suite: batches of orders, the books, the stack's health."""

from __future__ import annotations

import concurrent.futures
import time
import uuid
from collections.abc import Collection, Iterable
from typing import Any

import requests

from minimart.console import checker
from minimart.console.client import OrderClient
from minimart.local import stack
from minimart.settings import Settings

HOME = {"name": "Ada", "line1": "1 Loop Rd", "city": "Springfield", "postalCode": "12345"}
US = {**HOME, "country": "US"}


def place_batch(
    client: OrderClient,
    sku: str,
    count: int,
    *,
    customer: int = 21,
    quantity: int = 1,
    threads: int = 8,
    address: dict[str, str] | None = None,
) -> list[str]:
    """Place ``count`` one-line orders concurrently; their ids (each got a 202)."""

    def one(index: int) -> str:
        # A careful client: on a 5xx or no answer it retries with the same Idempotency-Key.
        session = OrderClient(client.base_url)
        key = str(uuid.uuid4())
        deadline = time.monotonic() + 120
        while True:
            try:
                response = session.place(
                    customer, [{"sku": sku, "quantity": quantity}], address or US, key
                )
            except requests.RequestException:
                response = None
            if response is not None and response.status_code < 500:
                assert response.status_code == 202, response.text
                return str(response.json()["orderId"])
            assert time.monotonic() < deadline, "the ingress never accepted the order"
            time.sleep(0.5)

    with concurrent.futures.ThreadPoolExecutor(threads) as pool:
        return list(pool.map(one, range(count)))


def wait_final(client: OrderClient, order_ids: Iterable[str], timeout: float = 120.0
               ) -> list[dict[str, Any]]:  # fmt: skip
    deadline = time.monotonic() + timeout
    return [
        client.wait_final(oid, timeout=max(1.0, deadline - time.monotonic())) for oid in order_ids
    ]


def assert_books(
    settings: Settings,
    order_ids: Collection[str],
    skus: Collection[str],
    *,
    expected_dead_letters: Collection[str] = (),
    timeout: float = 90.0,
) -> checker.Report:
    """The invariants hold for these orders and SKUs (waiting for what is still in flight)."""
    report = checker.wait_for_books(
        settings,
        timeout=timeout,
        order_ids=order_ids,
        skus=skus,
        expected_dead_letters=expected_dead_letters,
    )
    assert report.settled, report.summary()
    assert report.orders == len(set(order_ids)), report.summary()
    return report


def heal(settings: Settings, client: OrderClient, sku: str) -> None:
    """Wait until supervisord has brought back whatever died (nothing here starts anything)
    and prove the stack works: one order to its final state."""
    stack.wait_ready(settings)
    (order_id,) = place_batch(client, sku, 1)
    client.wait_final(order_id, timeout=90)
