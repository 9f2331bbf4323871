"""`make dev`: with the stack up in reload mode, an edited function serves the next order.

The test edits functions/shipping/main.py for a while (restored in every case): the edit adds a
route that names the edit, and wraps the CloudEvent handler so that it notes each order it
handles in a file. Once the route answers, the next order's shipping step must be noted.
(The reload runner itself, fast and without the stack: tests/unit/test_reload.py.)"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from minimart.console.client import OrderClient
from minimart.local import stack
from minimart.local_stores import without_store_logins
from minimart.settings import PROJECT_ROOT, Settings
from tests.stack import eventually

# Three restarts of every function (reload mode, the edit, back): `make reliability` runs it.
pytestmark = [pytest.mark.e2e, pytest.mark.slow]

SHIPPING = PROJECT_ROOT / "functions" / "shipping" / "main.py"
RELOAD_TIMEOUT_S = 180.0  # a restart of every function; slow on a loaded 2-core machine

EDIT = """

# -- added by tests/e2e/test_dev_reload.py (removed when it ends) --
import pathlib as _probe_pathlib  # noqa: E402

flask.current_app.add_url_rule("/dev-probe", "dev_probe", lambda: "{token}")
_probe_handle = handle


@functions_framework.cloud_event
def handle(cloud_event: CloudEvent) -> None:  # type: ignore[no-redef]
    with _probe_pathlib.Path("{notes}").open("a") as notes:
        notes.write(str(cloud_event["subject"]) + "\\n")
    _probe_handle(cloud_event)
"""


def probe(port: int) -> str:
    try:
        response = requests.get(f"http://127.0.0.1:{port}/dev-probe", timeout=2)
    except requests.RequestException:
        return "down"
    return response.text if response.status_code == 200 else f"HTTP {response.status_code}"


@pytest.fixture
def reloading_stack(running_stack: Settings) -> Iterator[Settings]:
    runner = without_store_logins(running_stack)  # as tests.stack.bring_up hands it
    stack.up(runner, reload=True)
    yield running_stack
    stack.up(runner)  # the functions as `make up` runs them


def test_an_edited_function_serves_the_next_order(
    reloading_stack: Settings, client: OrderClient, tmp_path: Path
) -> None:
    port = stack.plan_stack(reloading_stack).function("shipping").port
    token, notes = f"edit-{uuid.uuid4()}", tmp_path / "handled.txt"
    original = SHIPPING.read_text()
    try:
        SHIPPING.write_text(original + EDIT.format(token=token, notes=notes))
        began = time.monotonic()
        eventually(lambda: probe(port) == token, RELOAD_TIMEOUT_S, "the edited shipping served")
        print(f"reloaded in {time.monotonic() - began:.1f}s")
        address = {"country": "US", "postalCode": "12345"}
        placed = client.place(7, [{"sku": "SKU-1003", "quantity": 1}], address)
        order_id = placed.json()["orderId"]

        assert client.wait_final(order_id, timeout=60)["status"] == "CONFIRMED"
        assert order_id in notes.read_text().split()
    finally:
        SHIPPING.write_text(original)
    eventually(lambda: probe(port) not in (token, "down"), RELOAD_TIMEOUT_S, "the edit undone")
