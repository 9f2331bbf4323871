"""Open-loop load on POST /orders and the orders' completion times read from the order store.

Requests are sent at fixed times (``start + i / rate``) by a pool of threads, whatever the
answers' latency (open loop). An order's end-to-end time is read afterwards from its
timeline in the orders database: ``at`` of its last step (``notification.sent``, recorded by
order-status) minus ``at`` of ``order.created`` (the moment the order was accepted) — both
``clock_timestamp()`` of the same server, so no clock skew.
"""

from __future__ import annotations

import http.client
import json
import queue
import random
import threading
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

from minimart.adapters import postgres_views
from minimart.local_stores import local_store_settings
from minimart.settings import Settings

ADDRESS = {"name": "Ada", "line1": "1 Loop Rd", "city": "Springfield", "country": "US"}
HAPPY_SKUS = ("SKU-1001", "SKU-1002", "SKU-1003", "SKU-1004")
# Share of orders that fail on purpose by the seed's rules (see minimart/seed.py).
FAILING_SHARE = {"insufficient_stock": 0.04, "payment_declined": 0.03, "shipping_failed": 0.03}


def cart(rng: random.Random) -> tuple[str, dict[str, Any]]:
    """A realistic order: 1-4 distinct SKUs, quantities 1-3; ~10% fail on purpose."""
    lines = [
        {"sku": sku, "quantity": rng.randint(1, 3)}
        for sku in rng.sample(HAPPY_SKUS, rng.randint(1, 4))
    ]
    customer, postal = rng.randint(1, 10_000), "12345"
    if customer == 402:
        customer = 403
    roll, kind = rng.random(), "confirmed"
    for name, share in FAILING_SHARE.items():
        if roll < share:
            kind = name
            break
        roll -= share
    if kind == "insufficient_stock":
        lines.append({"sku": "SKU-OUT", "quantity": 1})
    elif kind == "payment_declined":
        customer = 402
    elif kind == "shipping_failed":
        postal = "00000"
    body = {
        "customerId": customer,
        "items": lines,
        "shippingAddress": {**ADDRESS, "postalCode": postal},
    }
    return kind, body


@dataclass
class Posted:
    kind: str
    sent_at: float  # wall clock, when the request was written
    latency_ms: float
    status: int
    order_id: str | None


@dataclass
class LoadResult:
    rate: float
    seconds: float
    started_at: float
    posted: list[Posted] = field(default_factory=list)


def run_open_loop(
    base_host: str, port: int, rate: float, seconds: float, seed: int = 7, workers: int = 48
) -> LoadResult:
    rng = random.Random(seed)  # noqa: S311 (load, not secrets)
    total = round(rate * seconds)
    bodies = [cart(rng) for _ in range(total)]
    jobs: queue.SimpleQueue[tuple[str, bytes] | None] = queue.SimpleQueue()
    result = LoadResult(rate, seconds, time.time())
    lock = threading.Lock()

    def worker() -> None:
        conn = http.client.HTTPConnection(base_host, port, timeout=30)
        while (job := jobs.get()) is not None:
            kind, payload = job
            headers = {"Content-Type": "application/json", "Idempotency-Key": str(uuid.uuid4())}
            sent_at, started = time.time(), time.perf_counter()
            status, body = 0, b""
            # A kept-alive connection the server closed meanwhile fails at once: retry on a
            # fresh one (same Idempotency-Key, so a retry never places a second order).
            for _ in range(2):
                try:
                    conn.request("POST", "/orders", body=payload, headers=headers)
                    response = conn.getresponse()
                    body = response.read()
                    status = response.status
                    break
                except (OSError, http.client.HTTPException):
                    conn.close()
                    conn = http.client.HTTPConnection(base_host, port, timeout=30)
            latency = (time.perf_counter() - started) * 1000
            order_id = json.loads(body).get("orderId") if status == 202 else None
            with lock:
                result.posted.append(Posted(kind, sent_at, latency, status, order_id))
        conn.close()

    threads = [threading.Thread(target=worker, daemon=True) for _ in range(workers)]
    for thread in threads:
        thread.start()
    start = time.monotonic()
    for i, (kind, body) in enumerate(bodies):
        delay = start + i / rate - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        jobs.put((kind, json.dumps(body).encode()))
    for _ in threads:
        jobs.put(None)
    for thread in threads:
        thread.join()
    return result


@dataclass(frozen=True)
class Completion:
    order_id: str
    status: str
    created_at: float  # epoch seconds, order accepted (timeline order.created)
    final_at: float | None  # last step recorded (notification.sent), None if not yet
    status_at: float  # orders.updated_at: the status became what it is


def completions(settings: Settings, order_ids: list[str]) -> dict[str, Completion]:
    with postgres_views.connect(local_store_settings(settings).orders_dsn) as conn:
        rows = postgres_views.order_progress(conn, order_ids)
    return {
        row[0]: Completion(row[0], row[1], row[3], row[4], row[2])
        for row in rows
        if row[3] is not None
    }


def wait_complete(
    settings: Settings, order_ids: list[str], timeout: float
) -> dict[str, Completion]:
    """Poll until every order's last step is recorded or ``timeout``; what is known then."""
    deadline = time.monotonic() + timeout
    while True:
        found = completions(settings, order_ids)
        done = sum(1 for c in found.values() if c.final_at is not None)
        if done == len(order_ids) or time.monotonic() > deadline:
            return found
        time.sleep(0.5)


def warm_up(settings: Settings, rate: float = 15.0, seconds: float = 20.0) -> int:
    """Orders down every path until every process has served many (the broker's JIT, the
    functions' lazy imports and pools, the consumers' fetch sessions), then let them finish.
    A cold stack completes far fewer orders per second than a warm one. Returns how many."""
    result = run_open_loop(settings.host, settings.ingress_port, rate, seconds, seed=99)
    ids = [p.order_id for p in result.posted if p.status == 202 and p.order_id]
    wait_complete(settings, ids, 120)
    return len(ids)
