"""The ops console as a user runs it: `minimart COMMAND` in a process of its own, against the
running stack, given its addresses as flags only (as against a cluster through
`kubectl port-forward`), with no MINIMART_* variable in its environment."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from minimart.console.client import OrderClient
from minimart.console.commands import ADDRESSES
from minimart.settings import PROJECT_ROOT, Settings

pytestmark = pytest.mark.e2e


def minimart(*argv: str, settings: Settings | None = None) -> subprocess.CompletedProcess[str]:
    """Run the console command; ``settings``' addresses become flags, the environment has
    nothing of minimart's."""
    flags = []
    for name in ADDRESSES if settings is not None else ():
        flags += [f"--{name.replace('_', '-')}", str(getattr(settings, name))]
    env = {k: v for k, v in os.environ.items() if not k.startswith("MINIMART_")}
    return subprocess.run(
        [sys.executable, "-m", "minimart", *argv, *flags],
        cwd=PROJECT_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_check_record_deadletters_and_redrive_with_addresses_from_flags(
    running_stack: Settings, client: OrderClient, tmp_path: Path
) -> None:
    address = {"country": "US", "postalCode": "12345"}
    placed = client.place(7, [{"sku": "SKU-1001", "quantity": 1}], address)
    order_id = placed.json()["orderId"]
    client.wait_final(order_id)

    check = minimart("check", "--order-id", order_id, "--wait", "30", settings=running_stack)
    assert check.returncode == 0, check.stdout + check.stderr
    assert check.stdout.startswith("1 orders (CONFIRMED 1)"), check.stdout

    recording = tmp_path / "order.jsonl"
    record = minimart("record", str(recording), "--order-id", order_id, settings=running_stack)
    assert record.returncode == 0, record.stderr
    lines = [json.loads(line) for line in recording.read_text().splitlines()]
    types = [dict(doc["headers"])["ce_type"].removeprefix("com.minimart.") for doc in lines]
    assert types[0] == "order.created" and "notification.sent" in types, types

    listed = minimart("deadletters", "--json", settings=running_stack)
    assert listed.returncode == 0, listed.stderr
    letters = [json.loads(line) for line in listed.stdout.splitlines()]
    assert listed.stderr.strip().endswith(f"{len(letters)} dead letters")

    nothing = minimart("redrive", "--id", "no-such-event", settings=running_stack)
    assert (nothing.returncode, nothing.stdout) == (0, "")


def test_trace_prints_the_orders_span_tree(running_stack: Settings, client: OrderClient) -> None:
    address = {"country": "US", "postalCode": "12345"}
    order_id = client.place(7, [{"sku": "SKU-1002", "quantity": 1}], address).json()["orderId"]
    client.wait_final(order_id)

    result = minimart(
        "trace", order_id, "--wait", "10", "--state-dir", str(running_stack.state_dir)
    )

    assert result.returncode == 0, result.stdout + result.stderr
    assert "POST /orders [order server]" in result.stdout
