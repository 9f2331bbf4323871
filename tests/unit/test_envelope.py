"""The CloudEvents envelope, refused with a 400 and a reason when broken: the invalid events
of the CloudEvents conformance cases (structured and binary mode), through a real function
app in-process, before any store is touched."""

from __future__ import annotations

import json
import uuid
from typing import Any

import flask
import functions_framework
import pytest

from minimart.bootstrap import bootstrap
from minimart.catalog import envelope_problem
from minimart.entrypoints import use_container
from minimart.settings import PROJECT_ROOT, Settings
from tests import tokens
from tests.fakes import FakeInventory, FakePublisher


def _data(order_id: str) -> dict[str, Any]:
    return {"orderId": order_id, "customerId": 5, "totalCents": 100,
            "items": [{"sku": "SKU-1001", "quantity": 1, "unitPriceCents": 100}],
            "shippingAddress": {"country": "US", "postalCode": "94107"}}  # fmt: skip


def _base(order_id: str) -> dict[str, Any]:
    return {"specversion": "1.0", "id": str(uuid.uuid4()), "source": "/tests",
            "type": "com.minimart.order.created", "datacontenttype": "application/json",
            "subject": order_id, "data": _data(order_id)}  # fmt: skip


def _without(doc: dict[str, Any], name: str) -> dict[str, Any]:
    return {k: v for k, v in doc.items() if k != name}


BROKEN = {
    "no id": lambda d: _without(d, "id"),
    "empty id": lambda d: {**d, "id": ""},
    "number id": lambda d: {**d, "id": 7},
    "empty source": lambda d: {**d, "source": ""},
    "unknown specversion": lambda d: {**d, "specversion": "0.9"},
    "data and data_base64": lambda d: {**d, "data_base64": "e30="},
    "garbage time": lambda d: {**d, "time": "yesterday-ish"},
    "time without offset": lambda d: {**d, "time": "2026-12-06T20:00:00"},
    "NUL in an attribute": lambda d: {**d, "subject": d["subject"] + "\u0000"},
    "subject of another order": lambda d: {**d, "subject": str(uuid.uuid4())},
    "oversized attribute": lambda d: {**d, "comexample": "x" * 5_000},
}


@pytest.fixture(scope="module")
def app() -> flask.Flask:
    source = PROJECT_ROOT / "functions" / "inventory" / "main.py"
    built: flask.Flask = functions_framework.create_app(  # type: ignore[no-untyped-call]
        "handle", str(source), "cloudevent"
    )
    return built


@pytest.mark.parametrize("case", sorted(BROKEN))
def test_a_broken_envelope_is_a_400_with_its_reason_and_changes_nothing(
    app: flask.Flask, case: str
) -> None:
    publisher, inventory = FakePublisher(), FakeInventory({"SKU-1001": 5})
    use_container(app, bootstrap(Settings(), tracing=False, publisher=publisher,
                                 inventory_uow=lambda: inventory,
                                 verifier=tokens.verifier()))  # fmt: skip
    doc = BROKEN[case](_base(str(uuid.uuid4())))

    response = app.test_client().post(
        "/", data=json.dumps(doc), headers={"Content-Type": "application/cloudevents+json",
                                            "Authorization": tokens.bearer("inventory")},
    )  # fmt: skip

    assert response.status_code == 400, response.data
    assert response.mimetype == "application/problem+json"
    assert response.json and response.json["detail"]
    assert publisher.published == [] and inventory.committed.reservations == {}


def test_the_same_event_with_its_envelope_whole_is_taken(app: flask.Flask) -> None:
    """The control: every case above differs from this one by its break alone."""
    publisher, inventory = FakePublisher(), FakeInventory({"SKU-1001": 5})
    use_container(app, bootstrap(Settings(), tracing=False, publisher=publisher,
                                 inventory_uow=lambda: inventory,
                                 verifier=tokens.verifier()))  # fmt: skip
    doc = {**_base(str(uuid.uuid4())), "time": "2026-12-06T20:00:00.123Z"}

    response = app.test_client().post(
        "/", data=json.dumps(doc), headers={"Content-Type": "application/cloudevents+json",
                                            "Authorization": tokens.bearer("inventory")},
    )  # fmt: skip

    assert response.status_code == 200, response.data
    assert len(publisher.published) == 1


@pytest.mark.parametrize(
    ("attributes", "ok"),
    [({"id": "a", "source": "/s", "type": "t", "specversion": "1.0"}, True),
     ({"id": "a", "source": "/s", "type": "t", "specversion": "1.0",
       "time": "2026-12-06T20:00:00+01:00"}, True),
     ({"id": "a", "source": "/s", "type": "t", "specversion": "1.0", "time": "2026-12-06"},
      False),
     ({"id": "a", "source": "/s", "type": "", "specversion": "1.0"}, False)],
)  # fmt: skip
def test_envelope_rules(attributes: dict[str, Any], ok: bool) -> None:
    assert (envelope_problem(attributes) is None) is ok
