"""The order HTTP API: POST /orders, GET /orders/{id}; errors as RFC 9457 problem+json."""

from __future__ import annotations

import json
import re
import uuid
from datetime import datetime
from typing import Any

import flask
from prometheus_client import Counter, Histogram

from minimart.bootstrap import Container
from minimart.domain.orders import InvalidOrder
from minimart.handlers.orders import IdempotencyConflict, place_order
from minimart.limits import clip, unsafe_text
from minimart.observability import tracing
from minimart.problems import problem

_IDEMPOTENCY_KEY = re.compile(r"^[\x21-\x7e]{1,200}$")

HTTP_REQUESTS = Counter(
    "minimart_http_requests_total", "Order API requests", ["method", "route", "status"]
)
HTTP_SECONDS = Histogram(
    "minimart_http_request_duration_seconds",
    "Order API latency",
    ["method", "route"],
    buckets=(0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5),
)


def _json_default(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat()
    raise TypeError(type(value).__name__)


def _json(body: Any, status: int, **headers: str) -> flask.Response:
    response = flask.Response(json.dumps(body, default=_json_default), status=status)
    response.headers["Content-Type"] = "application/json"
    response.headers.update(headers)
    return response


def create_order(request: flask.Request, c: Container) -> flask.Response:
    if request.mimetype != "application/json":
        return problem(
            415,
            "unsupported-media-type",
            "Unsupported Media Type",
            "send the order as Content-Type: application/json",
        )
    # At most Settings.max_request_bytes, nested at most MAX_JSON_DEPTH (minimart.bounds).
    raw = request.get_data()
    try:
        body = json.loads(raw)
    except ValueError as exc:  # and UnicodeDecodeError; an integer of over 4,300 digits
        detail = clip(f"the body is not JSON: {exc}")
        return problem(400, "malformed-json", "Malformed JSON", detail)
    unsafe = unsafe_text(body)
    if unsafe is not None:
        return problem(400, "unsupported-json", "Unsupported JSON", unsafe)
    key = request.headers.get("Idempotency-Key")
    if key is not None and not _IDEMPOTENCY_KEY.match(key):
        return problem(
            400,
            "invalid-idempotency-key",
            "Invalid Idempotency-Key",
            "1 to 200 visible ASCII characters",
        )
    try:
        accepted = place_order(body, key, c.intake, c.order_limits)
    except InvalidOrder as exc:
        return problem(
            422,
            "invalid-order",
            "Invalid order",
            str(exc),
            errors=[{"pointer": e.pointer, "detail": e.detail} for e in exc.errors],
        )
    except IdempotencyConflict as exc:
        return problem(422, "idempotency-key-reused", "Idempotency-Key reused", str(exc))
    tracing.annotate({tracing.ORDER_ID: accepted.order_id, tracing.SERVICE: "order"})
    if accepted.event is not None:
        c.relay.publish(accepted.event)
    location = f"/orders/{accepted.order_id}"
    headers = {"Location": location}
    if not accepted.created:
        headers["Idempotent-Replayed"] = "true"
    return _json({"orderId": accepted.order_id, "status": accepted.status.value}, 202, **headers)


def _timeline_entry(step: dict[str, Any]) -> dict[str, Any]:
    return {
        "step": step["step"],
        "status": step["status"],
        "at": step["at"],
        "eventId": step["event_id"],
        **step["detail"],
    }


def read_order(order_id: str, c: Container) -> flask.Response:
    try:
        uuid.UUID(order_id)
    except ValueError:
        return problem(404, "order-not-found", "Order not found", f"no order {order_id!r}")
    order = c.intake.view(order_id)
    if order is None:
        return problem(404, "order-not-found", "Order not found", f"no order {order_id!r}")
    body = {
        "orderId": order["order_id"],
        "customerId": order["customer_id"],
        "status": order["status"],
        "reason": order["reason"],
        "items": order["items"],
        "totalCents": order["total_cents"],
        "shippingAddress": order["shipping_address"],
        "createdAt": order["created_at"],
        "updatedAt": order["updated_at"],
        "timeline": [_timeline_entry(step) for step in order["timeline"]],
    }
    return _json(body, 200)


def _method_not_allowed(allowed: tuple[str, ...]) -> flask.Response:
    """405 with the ``Allow`` header RFC 9110 (15.5.6) requires."""
    response = problem(
        405, "method-not-allowed", "Method Not Allowed", f"use {' or '.join(allowed)}"
    )
    response.headers["Allow"] = ", ".join(allowed)
    return response


def route(request: flask.Request, c: Container) -> tuple[str, flask.Response]:
    """Dispatch one request of the order API; the route name (for metrics) and the answer."""
    path = request.path.rstrip("/") or "/"
    if path == "/orders":
        if request.method != "POST":
            return "/orders", _method_not_allowed(("POST",))
        return "/orders", create_order(request, c)
    if path.startswith("/orders/") and path.count("/") == 2:
        if request.method not in ("GET", "HEAD"):  # HEAD: the same answer without its body
            return "/orders/{id}", _method_not_allowed(("GET", "HEAD"))
        return "/orders/{id}", read_order(path.removeprefix("/orders/"), c)
    return "other", problem(404, "not-found", "Not Found", f"no resource at {request.path}")
