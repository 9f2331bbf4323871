"""Faults injected while orders flow; every scenario ends with the books checked green.

Real processes and servers on 127.0.0.1. The quick ones run in CI (`pytest -m "not slow"`);
`make reliability` runs them all. Each test owns its SKU and its orders, so the checker is
scoped to them and other tests sharing the stack do not interfere.
"""

from __future__ import annotations

import concurrent.futures
import threading
import time
from collections.abc import Callable

import psycopg
import pytest

from minimart.bootstrap import Container
from minimart.console.client import OrderClient
from minimart.handlers.orders import place_order
from minimart.local import servers, stack
from minimart.settings import Settings
from tests.reliability.saga import US, assert_books, heal, place_batch, wait_final
from tests.stack import eventually, new_sku, stock_of

pytestmark = pytest.mark.e2e


def run_with_fault(
    settings: Settings,
    client: OrderClient,
    fault: Callable[[], None],
    count: int = 30,
    delay_s: float = 0.5,
) -> tuple[list[str], str]:
    """Place ``count`` orders; ``delay_s`` into the batch, inject ``fault``; then heal the stack
    and check the books of those orders."""
    sku = new_sku(settings, stock=10_000, price_cents=1_100)
    with concurrent.futures.ThreadPoolExecutor(1) as background:
        placing = background.submit(place_batch, client, sku, count, threads=4)
        time.sleep(delay_s)
        fault()
        order_ids = placing.result(timeout=180)
    heal(settings, client, sku)
    finals = wait_final(client, order_ids, timeout=180)
    assert {o["status"] for o in finals} == {"CONFIRMED"}
    assert_books(settings, order_ids, [sku])
    assert stock_of(settings, sku)["shipped"] == count + 1  # the batch and heal()'s order
    return order_ids, sku


# -- quick: in the default CI run -------------------------------------------------------


def crash(settings: Settings, name: str) -> Callable[[], None]:
    """A fault: SIGKILL program ``name`` with its process group and descendants, and nothing
    else: supervisord brings it back by itself (heal() only waits for it to answer)."""

    def fault() -> None:
        assert stack.kill(settings, name) is not None, f"{name} is not running"

    return fault


def test_function_killed_mid_flight_heals_by_itself(running_stack: Settings, client: OrderClient
                                                    ) -> None:  # fmt: skip
    name = stack.plan_stack(running_stack).function("payment").process_name
    before = servers.supervised(running_stack, name)
    assert before is not None
    run_with_fault(running_stack, client, crash(running_stack, name), count=20)
    after = servers.supervised(running_stack, name)
    assert after is not None and after.restarts == before.restarts + 1, (before, after)


def test_committed_but_unpublished_order_is_published_by_the_relay(
    running_stack: Settings, client: OrderClient
) -> None:
    """The ingress's dual write: the order and its outbox row are committed, the process dies
    before publishing. Deterministically: accept through the intake without publishing."""
    sku = new_sku(running_stack, stock=5)
    container = Container(running_stack)
    body = {"customerId": 31, "items": [{"sku": sku, "quantity": 2}], "shippingAddress": US}
    accepted = place_order(body, None, container.intake, container.order_limits)
    assert accepted.created and accepted.event is not None
    with psycopg.connect(running_stack.orders_dsn, autocommit=True) as conn:
        row = conn.execute(
            "SELECT published_at FROM outbox WHERE event_id = %s", (accepted.event.id,)
        ).fetchone()
    assert row == (None,)
    order = client.wait_final(accepted.order_id, timeout=60)  # only the relay can publish it
    assert order["status"] == "CONFIRMED"
    assert_books(running_stack, [accepted.order_id], [sku])

    def published() -> bool:
        with psycopg.connect(running_stack.orders_dsn, autocommit=True) as conn:
            row = conn.execute(
                "SELECT published_at IS NOT NULL FROM outbox WHERE event_id = %s",
                (accepted.event.id,),  # type: ignore[union-attr]
            ).fetchone()
        return bool(row and row[0])

    eventually(published, timeout=10, what="outbox row marked published")


# -- slow: `make reliability` -------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("server", ["postgres", "kafka", "mongo", "redis"])
def test_server_restarted_mid_flight(running_stack: Settings, client: OrderClient, server: str
                                     ) -> None:  # fmt: skip
    run_with_fault(running_stack, client, lambda: servers.restart(running_stack, server))


@pytest.mark.slow
@pytest.mark.parametrize("service", ["inventory", "order-status", "notification", "shipping"])
def test_other_functions_killed_mid_flight(running_stack: Settings, client: OrderClient,
                                           service: str) -> None:  # fmt: skip
    name = stack.plan_stack(running_stack).function(service).process_name
    run_with_fault(running_stack, client, crash(running_stack, name), count=20)


@pytest.mark.slow
@pytest.mark.parametrize("source", ["inventory-source", "order-status-source", "payment-source"])
def test_dispatcher_killed_after_delivery_before_commit(
    running_stack: Settings, client: OrderClient, source: str
) -> None:
    """SIGKILL a dispatcher while it delivers: offsets it delivered but did not commit yet are
    delivered again by its successor (at-least-once), and the duplicates change nothing."""
    name = f"dispatch-{source}"
    stop = threading.Event()

    def crash_repeatedly() -> None:
        for _ in range(2):
            crash(running_stack, name)()
            stack.wait_ready(running_stack)  # supervisord restarted it
            if stop.wait(1.0):
                return

    try:
        run_with_fault(running_stack, client, crash_repeatedly, count=40, delay_s=0.3)
    finally:
        stop.set()


@pytest.mark.slow
def test_two_hundred_orders_race_for_scarce_stock(running_stack: Settings, client: OrderClient
                                                  ) -> None:  # fmt: skip
    sku = new_sku(running_stack, stock=20, price_cents=900)
    order_ids = place_batch(client, sku, 200, threads=32)
    finals = wait_final(client, order_ids, timeout=240)
    confirmed = [o for o in finals if o["status"] == "CONFIRMED"]
    cancelled = [o for o in finals if o["status"] == "CANCELLED"]
    assert len(confirmed) == 20
    assert len(cancelled) == 180
    assert all(o["reason"].startswith("insufficient_stock") for o in cancelled)
    assert_books(running_stack, order_ids, [sku], timeout=120)
    assert stock_of(running_stack, sku) == {
        "initial": 20, "available": 0, "reserved": 0, "shipped": 20,
    }  # fmt: skip
