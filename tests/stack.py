"""Shared by the integration and end-to-end suites: the local stack, once per test session."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from typing import TypeVar

import psycopg

from minimart.local import stack
from minimart.settings import Settings

T = TypeVar("T")


def bring_up(settings: Settings) -> list[str]:
    """Start whatever of the stack is not running yet; the names started (to stop later)."""
    return stack.up(settings)


def tear_down(settings: Settings, started: list[str]) -> None:
    if started:
        stack.down(settings)


def eventually(check: Callable[[], T], timeout: float = 30.0, what: str = "condition") -> T:
    """Poll ``check`` until it returns something truthy; its value. Fails after ``timeout``."""
    deadline = time.monotonic() + timeout
    last: T | None = None
    while time.monotonic() < deadline:
        last = check()
        if last:
            return last
        time.sleep(0.05)
    raise AssertionError(f"{what} not reached within {timeout}s (last: {last!r})")


def new_sku(settings: Settings, stock: int, price_cents: int = 1_000) -> str:
    """A product of the test's own, sold by the shop and stocked by the warehouse."""
    sku = f"T-{uuid.uuid4().hex[:12].upper()}"
    with psycopg.connect(settings.orders_dsn, autocommit=True) as conn:
        conn.execute(
            "INSERT INTO products (sku, name, price_cents) VALUES (%s, %s, %s)",
            (sku, "test product", price_cents),
        )
    with psycopg.connect(settings.inventory_dsn, autocommit=True) as conn:
        conn.execute(
            "INSERT INTO stock (sku, initial, available) VALUES (%s, %s, %s)", (sku, stock, stock)
        )
    return sku


def stock_of(settings: Settings, sku: str) -> dict[str, int]:
    with psycopg.connect(settings.inventory_dsn, autocommit=True) as conn:
        row = conn.execute(
            "SELECT initial, available, reserved, shipped FROM stock WHERE sku = %s", (sku,)
        ).fetchone()
    assert row is not None, sku
    return dict(zip(("initial", "available", "reserved", "shipped"), row, strict=True))
