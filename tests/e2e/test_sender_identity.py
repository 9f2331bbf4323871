"""Sender identity on the running local stack (docs/security.md): every function refuses a
delivery that is not its KafkaSource's, while the dispatchers' own deliveries (their tokens
from the local issuer ``up`` made) carry every order to its end."""

from __future__ import annotations

import uuid

import pytest
import requests

from minimart import identity
from minimart.catalog import EventType
from minimart.console.client import OrderClient
from minimart.local import stack
from minimart.settings import Settings

pytestmark = pytest.mark.e2e

US = {"name": "Ada", "line1": "1 Loop Rd", "city": "Springfield", "postalCode": "12345",
      "country": "US"}  # fmt: skip


def forged(order_id: str) -> dict[str, str]:
    return {"ce-specversion": "1.0", "ce-id": str(uuid.uuid4()), "ce-source": "/forger",
            "ce-type": EventType.SHIPPING_FAILED.value, "ce-subject": order_id,
            "Content-Type": "application/json"}  # fmt: skip


def test_a_post_without_a_token_is_refused_and_orders_still_complete(
    running_stack: Settings, client: OrderClient
) -> None:
    plan = stack.plan_stack(running_stack)
    response = client.place(11, [{"sku": "SKU-1001", "quantity": 1}], US)
    assert response.status_code == 202, response.text  # the ingress stays public
    order_id = response.json()["orderId"]

    refused = {}
    for fn in plan.functions:
        if fn.service == stack.INGRESS:
            continue
        answer = requests.post(fn.url + "/", headers=forged(order_id),
                               data=b"{}", timeout=10)  # fmt: skip
        refused[fn.service] = (answer.status_code, answer.headers.get("Content-Type"))

    assert refused == {
        fn.service: (401, "application/problem+json")
        for fn in plan.functions
        if fn.service != stack.INGRESS
    }
    order = client.wait_final(order_id)
    assert order["status"] == "CONFIRMED", order
    assert "shipping.failed" not in [step["step"] for step in order["timeline"]]


def test_a_token_of_the_console_for_another_function_is_forbidden(
    running_stack: Settings,
) -> None:
    payment = stack.plan_stack(running_stack).function("payment").url + "/"
    issuer = identity.LocalIssuer(running_stack.identity_dir, running_stack.oidc_issuer)
    for_shipping = identity.TokenMinter(
        issuer.signing_key(), identity.CONSOLE_SUBJECT, identity.audience_of("shipping")
    )

    answer = requests.post(payment, headers={**forged(str(uuid.uuid4())),
                                             "Authorization": for_shipping()},
                           data=b"{}", timeout=10)  # fmt: skip

    assert answer.status_code == 403, answer.text
