"""Orders: the request a customer sends, validated, priced, and the saga status it goes through."""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

_SKU = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
_COUNTRY = re.compile(r"^[A-Z]{2}$")
_ADDRESS_FIELDS = ("name", "line1", "city", "postalCode", "country")


class OrderStatus(StrEnum):
    PENDING = "PENDING"
    RESERVED = "RESERVED"
    PAID = "PAID"
    CANCELLING = "CANCELLING"
    CONFIRMED = "CONFIRMED"
    CANCELLED = "CANCELLED"

    @property
    def final(self) -> bool:
        return self in (OrderStatus.CONFIRMED, OrderStatus.CANCELLED)

    @property
    def rank(self) -> int:
        return _RANK[self]

    def advanced_to(self, candidate: OrderStatus) -> OrderStatus:
        """The status after ``candidate`` is observed: never backwards, never out of a final one.

        Events of one order travel on different topics, so they can arrive out of causal order.
        """
        if self.final or candidate.rank <= self.rank:
            return self
        if self is OrderStatus.CANCELLING and candidate is not OrderStatus.CANCELLED:
            return self  # a compensating saga only ends cancelled
        return candidate


_RANK = {
    OrderStatus.PENDING: 0,
    OrderStatus.RESERVED: 1,
    OrderStatus.PAID: 2,
    OrderStatus.CANCELLING: 3,
    OrderStatus.CONFIRMED: 9,
    OrderStatus.CANCELLED: 9,
}


@dataclass(frozen=True)
class FieldError:
    """One invalid field, as an RFC 9457 problem lists it (JSON pointer + message)."""

    pointer: str
    detail: str


class InvalidOrder(ValueError):
    def __init__(self, errors: list[FieldError]) -> None:
        super().__init__("; ".join(f"{e.pointer}: {e.detail}" for e in errors))
        self.errors = errors


@dataclass(frozen=True)
class OrderLine:
    sku: str
    quantity: int
    unit_price_cents: int = 0

    @property
    def total_cents(self) -> int:
        return self.quantity * self.unit_price_cents

    def as_event_data(self) -> dict[str, Any]:
        return {"sku": self.sku, "quantity": self.quantity, "unitPriceCents": self.unit_price_cents}


@dataclass(frozen=True)
class OrderRequest:
    """A validated `POST /orders` body, before pricing."""

    customer_id: int
    lines: tuple[OrderLine, ...]
    shipping_address: Mapping[str, str]
    fingerprint: str = field(default="")


@dataclass(frozen=True)
class OrderLimits:
    max_items: int
    max_quantity_per_line: int


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _validate_lines(raw: Any, limits: OrderLimits, errors: list[FieldError]) -> list[OrderLine]:
    if not isinstance(raw, list) or not raw:
        errors.append(FieldError("/items", "must be a non-empty array of {sku, quantity}"))
        return []
    if len(raw) > limits.max_items:
        errors.append(FieldError("/items", f"at most {limits.max_items} lines per order"))
        return []
    lines: dict[str, int] = {}
    for index, item in enumerate(raw):
        where = f"/items/{index}"
        if not isinstance(item, dict):
            errors.append(FieldError(where, "must be an object {sku, quantity}"))
            continue
        unknown = sorted(set(item) - {"sku", "quantity"})
        if unknown:
            errors.append(FieldError(f"{where}/{unknown[0]}", "unknown field"))
        sku: Any = item.get("sku")
        quantity: Any = item.get("quantity")
        if not isinstance(sku, str) or not _SKU.fullmatch(sku):
            errors.append(FieldError(f"{where}/sku", "must be a SKU such as 'SKU-42'"))
            continue
        if not _is_int(quantity) or not 1 <= quantity <= limits.max_quantity_per_line:
            errors.append(
                FieldError(
                    f"{where}/quantity",
                    f"must be an integer from 1 to {limits.max_quantity_per_line}",
                )
            )
            continue
        lines[sku] = lines.get(sku, 0) + quantity
    too_many = [sku for sku, qty in lines.items() if qty > limits.max_quantity_per_line]
    for sku in too_many:
        errors.append(FieldError("/items", f"{sku}: more than {limits.max_quantity_per_line}"))
    return [OrderLine(sku, qty) for sku, qty in sorted(lines.items())]


def _validate_address(raw: Any, errors: list[FieldError]) -> dict[str, str]:
    if not isinstance(raw, dict):
        errors.append(FieldError("/shippingAddress", "must be an object with a country"))
        return {}
    address: dict[str, str] = {}
    for key, value in raw.items():
        if key not in _ADDRESS_FIELDS:
            errors.append(FieldError(f"/shippingAddress/{key}", "unknown field"))
        elif not isinstance(value, str) or len(value) > 200:
            errors.append(FieldError(f"/shippingAddress/{key}", "must be a string (<= 200)"))
        else:
            address[key] = value
    if not _COUNTRY.fullmatch(address.get("country", "")):
        errors.append(FieldError("/shippingAddress/country", "must be an ISO 3166 code, e.g. US"))
    return address


def parse_order_request(body: Any, limits: OrderLimits) -> OrderRequest:
    """Validate a decoded JSON body; raise ``InvalidOrder`` naming every bad field."""
    if not isinstance(body, dict):
        raise InvalidOrder([FieldError("", "the body must be a JSON object")])
    errors: list[FieldError] = []
    unknown = sorted(set(body) - {"customerId", "items", "shippingAddress"})
    for key in unknown:
        errors.append(FieldError(f"/{key}", "unknown field"))
    customer_id: Any = body.get("customerId")
    if not _is_int(customer_id) or not 1 <= customer_id <= 2**53:
        errors.append(FieldError("/customerId", "must be a positive integer"))
    lines = _validate_lines(body.get("items"), limits, errors)
    address = _validate_address(body.get("shippingAddress"), errors)
    if errors:
        raise InvalidOrder(errors)
    canonical = json.dumps(
        {"customerId": customer_id, "items": [[x.sku, x.quantity] for x in lines], "to": address},
        sort_keys=True,
    )
    return OrderRequest(
        customer_id=customer_id,
        lines=tuple(lines),
        shipping_address=address,
        fingerprint=hashlib.sha256(canonical.encode()).hexdigest(),
    )


def price_lines(lines: tuple[OrderLine, ...], prices: Mapping[str, int]) -> tuple[OrderLine, ...]:
    """Lines with their unit prices from the product catalog; unknown SKUs are a field error."""
    unknown = [line.sku for line in lines if line.sku not in prices]
    if unknown:
        raise InvalidOrder([FieldError("/items", f"unknown SKU {sku!r}") for sku in unknown])
    return tuple(OrderLine(x.sku, x.quantity, prices[x.sku]) for x in lines)
