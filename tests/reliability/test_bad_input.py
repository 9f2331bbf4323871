"""Bad input at the ingress: a clear 4xx problem+json, and no trace in any store.

Each request uses a customer id and a SKU of its own, so "no trace" is counted for them alone
(other tests share the stack). Schemathesis then throws generated requests at the live API:
no 5xx, and every answer matches api/openapi.yaml.
"""

from __future__ import annotations

import json
import random
import re
import subprocess
import uuid
from typing import Any

import hypothesis
import psycopg
import pytest
import requests
import schemathesis
from pymongo import MongoClient
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from minimart.console.books import notifications
from minimart.settings import PROJECT_ROOT, Settings
from tests.reliability.saga import US
from tests.stack import new_sku, stock_of

pytestmark = pytest.mark.e2e

SCHEMA = schemathesis.openapi.from_path(PROJECT_ROOT / "api" / "openapi.yaml")


def traces(settings: Settings, customer: int, sku: str) -> dict[str, Any]:
    """What the stores hold for this customer and SKU."""
    with psycopg.connect(settings.orders_dsn, autocommit=True) as conn:
        orders = conn.execute(
            "SELECT count(*) FROM orders WHERE customer_id = %s", (customer,)
        ).fetchone()
        outbox = conn.execute(
            "SELECT count(*) FROM outbox WHERE (event -> 'data' ->> 'customerId') = %s",
            (str(customer),),
        ).fetchone()
        rows = conn.execute("SELECT id::text FROM orders WHERE customer_id = %s", (customer,))
        ids = [r[0] for r in rows.fetchall()]
        timeline = conn.execute(
            "SELECT count(*) FROM order_timeline WHERE order_id::text = ANY(%s)", (ids,)
        ).fetchone()
    with psycopg.connect(settings.inventory_dsn, autocommit=True) as conn:
        reservations = conn.execute(
            "SELECT count(*) FROM reservations WHERE sku = %s", (sku,)
        ).fetchone()
    with psycopg.connect(settings.payments_dsn, autocommit=True) as conn:
        payments = conn.execute(
            "SELECT count(*) FROM payments WHERE customer_id = %s", (customer,)
        ).fetchone()
    mongo: MongoClient[dict[str, Any]] = MongoClient(settings.mongo_url)
    try:
        shipments = mongo.get_default_database(default="minimart")["shipments"].count_documents(
            {"orderId": {"$in": ids}}
        )
    finally:
        mongo.close()
    notes = sum(1 for n in notifications(settings) if n.customer_id == str(customer))
    return {
        "orders": orders, "outbox": outbox, "timeline": timeline, "reservations": reservations,
        "payments": payments, "shipments": shipments, "notifications": notes,
        "stock": stock_of(settings, sku),
    }  # fmt: skip


def _cases(customer: int, sku: str) -> list[tuple[str, bytes, str, int, dict[str, str]]]:
    def body(**changes: Any) -> bytes:
        doc: dict[str, Any] = {"customerId": customer, "items": [{"sku": sku, "quantity": 1}],
                               "shippingAddress": US}  # fmt: skip
        doc.update(changes)
        return json.dumps({k: v for k, v in doc.items() if v is not None}).encode()

    def line(quantity: Any) -> bytes:
        return body(items=[{"sku": sku, "quantity": quantity}])

    js = "application/json"
    return [
        ("invalid JSON", b'{"customerId": 1, "items": [', js, 400, {}),
        ("not an object", b"[1, 2]", js, 422, {}),
        ("customerId a string", body(customerId=str(customer)), js, 422, {}),
        ("items an object", body(items={"sku": sku}), js, 422, {}),
        ("quantity a string", line("1"), js, 422, {}),
        ("quantity a float", line(1.5), js, 422, {}),
        ("missing items", body(items=None), js, 422, {}),
        ("missing address", body(shippingAddress=None), js, 422, {}),
        ("empty items", body(items=[]), js, 422, {}),
        ("zero quantity", line(0), js, 422, {}),
        ("negative quantity", line(-3), js, 422, {}),
        ("huge quantity", line(10**12), js, 422, {}),
        ("beyond 64-bit quantity", line(10**30), js, 422, {}),
        (
            "unknown SKU",
            body(items=[{"sku": f"NOPE-{uuid.uuid4().hex[:8]}", "quantity": 1}]),
            js,
            422,
            {},
        ),
        (
            "malformed SKU",
            body(items=[{"sku": "'; DROP TABLE orders; --", "quantity": 1}]),
            js,
            422,
            {},
        ),
        (
            "too many items",
            body(items=[{"sku": f"{sku}-{i}", "quantity": 1} for i in range(51)]),
            js,
            422,
            {},
        ),
        ("unknown field", body(coupon="FREE"), js, 422, {}),
        ("bad country", body(shippingAddress={**US, "country": "Narnia"}), js, 422, {}),
        ("oversized body", body(shippingAddress={**US, "name": "x" * 70_000}), js, 413, {}),
        ("text/plain", body(), "text/plain", 415, {}),
        ("form encoded", b"customerId=1", "application/x-www-form-urlencoded", 415, {}),
        ("bad Idempotency-Key", body(), js, 400, {"Idempotency-Key": "has spaces in it"}),
    ]


def test_bad_requests_get_a_problem_and_leave_no_trace(running_stack: Settings) -> None:
    customer = random.randint(10**9, 10**12)
    sku = new_sku(running_stack, stock=5)
    before = traces(running_stack, customer, sku)
    url = f"http://127.0.0.1:{running_stack.ingress_port}/orders"
    failures = []
    for name, payload, content_type, status, headers in _cases(customer, sku):
        response = requests.post(
            url, data=payload, headers={"Content-Type": content_type, **headers}, timeout=10
        )
        problem = response.json() if response.headers.get("Content-Type") == (
            "application/problem+json") else None  # fmt: skip
        if response.status_code != status or problem is None or problem["status"] != status:
            failures.append((name, response.status_code, response.text[:200]))
        elif not problem.get("detail") or not problem.get("type"):
            failures.append((name, "problem without type/detail", problem))
    assert failures == []
    assert traces(running_stack, customer, sku) == before


def test_idempotency_key_reused_for_another_order_is_refused_without_trace(
    running_stack: Settings,
) -> None:
    customer = random.randint(10**9, 10**12)
    sku = new_sku(running_stack, stock=5)
    url = f"http://127.0.0.1:{running_stack.ingress_port}/orders"
    key = str(uuid.uuid4())
    first = requests.post(url, json={"customerId": customer, "items": [{"sku": sku, "quantity": 1}],
                                     "shippingAddress": US}, headers={"Idempotency-Key": key},
                          timeout=10)  # fmt: skip
    assert first.status_code == 202, first.text
    after_first = traces(running_stack, customer, sku)
    assert after_first["orders"] == (1,)
    for changed in ({"quantity": 2}, {"sku": new_sku(running_stack, stock=1)}):
        conflict = requests.post(
            url,
            json={"customerId": customer, "items": [{"sku": sku, "quantity": 1, **changed}],
                  "shippingAddress": US},
            headers={"Idempotency-Key": key},
            timeout=10,
        )  # fmt: skip
        assert conflict.status_code == 422, conflict.text
        assert conflict.headers["Content-Type"] == "application/problem+json"
        assert conflict.json()["type"].endswith("idempotency-key-reused")
    assert traces(running_stack, customer, sku)["orders"] == (1,)
    assert traces(running_stack, customer, sku)["outbox"] == (1,)


@pytest.fixture(scope="module")
def api_base_url(running_stack: Settings) -> str:
    return f"http://127.0.0.1:{running_stack.ingress_port}"


@SCHEMA.parametrize()
@hypothesis.settings(
    max_examples=50,
    deadline=None,
    suppress_health_check=list(hypothesis.HealthCheck),
    database=None,
)
def test_api_conforms_to_openapi_and_never_answers_5xx(case: Any, api_base_url: str) -> None:
    case.call_and_validate(
        base_url=api_base_url,
        checks=[
            not_a_server_error,
            status_code_conformance,
            content_type_conformance,
            response_headers_conformance,
            response_schema_conformance,
        ],
    )


def test_sql_is_parameterised_everywhere() -> None:
    """No SQL is built from values: queries are literals and values go as parameters.

    A SQL string built with an f-string, ``.format()`` or ``%`` is a finding, except the one
    known case: ``PostgresInventory._move`` interpolates a column name, and every call passes
    it as a literal from a fixed set ("available", "shipped") - checked here too."""
    sql = re.compile(r"\b(SELECT|INSERT|UPDATE|DELETE|CREATE|ALTER|DROP)\b")
    fstring = re.compile(r"""(?<![A-Za-z0-9_])[rb]?f[rb]?["']""")
    findings = []
    for path in sorted((PROJECT_ROOT / "minimart").rglob("*.py")):
        source = path.read_text()
        where = path.relative_to(PROJECT_ROOT)
        for number, text in enumerate(source.splitlines(), 1):
            if not sql.search(text):
                continue
            if fstring.search(text):
                holes = set(re.findall(r"\{([^}]*)\}", text))
                if holes == {"column"} and path.name == "postgres.py":
                    calls = re.findall(r"self\._move\(order_id, ([^)]*)\)", source)
                    literal = all(
                        re.fullmatch(r'"[A-Z]+", "(available|shipped)"', c) for c in calls
                    )
                    if calls and literal:
                        continue
                findings.append(f"{where}:{number}: {text.strip()}")
            elif (".format(" in text and "sql.SQL(" not in text) or re.search(
                r"""["']\s*%\s*[(\w]""", text
            ):
                findings.append(f"{where}:{number}: {text.strip()}")
    assert findings == []


SECRET_PATTERNS = {
    "private key": re.compile(r"-----BEGIN [A-Z ]*PRIVATE KEY-----"),
    "AWS access key": re.compile(r"\bAKIA[0-9A-Z]{16}\b"),
    "GitHub token": re.compile(r"\bgh[pousr]_[A-Za-z0-9]{36,}\b"),
    "Slack token": re.compile(r"\bxox[baprs]-[A-Za-z0-9-]{10,}"),
    "password in a URL": re.compile(r"[a-z]+://[^/\s:@]+:[^/\s@]{3,}@"),
    "password assignment": re.compile(
        r"""(?i)\b(password|passwd|secret|api_?key|token)\b\s*[:=]\s*["'][^"'\s]{8,}["']"""
    ),
}


# Throwaway credentials of the local kind cluster, declared as such in the file itself
# (docs/deploy.md); any other finding fails.
DEV_ONLY = {"k8s/config/dev-secrets.env"}


def test_no_secret_is_committed() -> None:
    """Scan every tracked file for private keys, tokens and passwords."""
    tracked = (
        subprocess.run(["git", "ls-files", "-z"], cwd=PROJECT_ROOT, capture_output=True, check=True)
        .stdout.decode()
        .split("\0")
    )
    findings = []
    for name in filter(None, tracked):
        path = PROJECT_ROOT / name
        if name in DEV_ONLY or not path.is_file() or path.stat().st_size > 2_000_000:
            continue
        try:
            text = path.read_text()
        except UnicodeDecodeError:
            continue
        for kind, pattern in SECRET_PATTERNS.items():
            for match in pattern.finditer(text):
                if name == "tests/reliability/test_bad_input.py":
                    continue  # the patterns themselves
                findings.append(f"{name}: {kind}: {match.group(0)[:40]}")
    assert findings == []
