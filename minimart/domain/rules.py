"""The saga's decisions: reserve stock, capture a payment, prepare a shipment.

Every failure is reproducible from data (documented in the README): stock levels, a
per-customer credit limit, an undeliverable address. Optional random failure rates (for load
tests) are drawn from a hash of the order id, so a replayed event takes the same decision.
"""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Mapping
from dataclasses import dataclass

from minimart.domain.orders import OrderLine

SHIPPABLE_COUNTRIES = frozenset({"US", "CA", "GB", "IE", "DE", "FR", "NL", "BE", "ES", "IT", "SE"})
UNDELIVERABLE_POSTAL_CODE = "00000"


@dataclass(frozen=True)
class Decision:
    """The outcome of a step: accepted, or refused with a reason a customer can read."""

    accepted: bool
    reason: str = ""

    @classmethod
    def accept(cls) -> Decision:
        return cls(True)

    @classmethod
    def refuse(cls, code: str, detail: str) -> Decision:
        return cls(False, f"{code}: {detail}")


def chance(order_id: str, salt: str) -> float:
    """A number in [0, 1) fixed by the order id: deterministic "randomness" for failure rates."""
    digest = hashlib.sha256(f"{salt}/{order_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


@dataclass(frozen=True)
class StockLevel:
    sku: str
    available: int


def decide_reservation(lines: tuple[OrderLine, ...], stock: Mapping[str, StockLevel]) -> Decision:
    """Every line is reserved or none is: the first unknown or short SKU refuses the order."""
    for line in lines:
        level = stock.get(line.sku)
        if level is None:
            return Decision.refuse("unknown_sku", f"{line.sku} is not stocked")
        if level.available < line.quantity:
            return Decision.refuse(
                "insufficient_stock",
                f"{line.sku}: requested {line.quantity}, available {level.available}",
            )
    return Decision.accept()


def decide_payment(
    order_id: str, customer_id: int, amount_cents: int, limit_cents: int, decline_rate: float
) -> Decision:
    if amount_cents > limit_cents:
        return Decision.refuse(
            "payment_declined",
            f"amount {amount_cents} cents exceeds the credit limit {limit_cents} "
            f"of customer {customer_id}",
        )
    if decline_rate and chance(order_id, "payment") < decline_rate:
        return Decision.refuse("payment_declined", "declined by the card issuer (simulated)")
    return Decision.accept()


def decide_shipping(order_id: str, address: Mapping[str, str], failure_rate: float) -> Decision:
    country = address.get("country", "")
    if country not in SHIPPABLE_COUNTRIES:
        return Decision.refuse("shipping_failed", f"no carrier delivers to {country!r}")
    if address.get("postalCode") == UNDELIVERABLE_POSTAL_CODE:
        return Decision.refuse("shipping_failed", "address undeliverable (postal code 00000)")
    if failure_rate and chance(order_id, "shipping") < failure_rate:
        return Decision.refuse("shipping_failed", "carrier rejected the parcel (simulated)")
    return Decision.accept()


def label_id(order_id: str) -> str:
    """The shipping label of an order: the same on every replay."""
    return "LBL-" + uuid.uuid5(uuid.NAMESPACE_URL, f"minimart/label/{order_id}").hex[:12].upper()


def payment_id(order_id: str) -> str:
    return "PAY-" + uuid.uuid5(uuid.NAMESPACE_URL, f"minimart/payment/{order_id}").hex[:12].upper()
