"""The catalog seeded at start: products with prices, stock levels, customer credit limits.

The failure paths are reproducible from this data (see README "Failure rules"):
- SKU-OUT has no stock                     -> insufficient_stock
- SKU-RETIRED is sold but not stocked       -> unknown_sku
- customer 402 has a credit limit of 0      -> payment_declined
- a postal code 00000 or a country outside the carriers' list -> shipping_failed
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Product:
    sku: str
    name: str
    price_cents: int
    stock: int | None  # None: sold by the shop but not stocked by the warehouse


PRODUCTS: tuple[Product, ...] = (
    Product("SKU-42", "The Answer mug", 2_500, 3),
    Product("SKU-1001", "Kettle", 4_999, 1_000_000),
    Product("SKU-1002", "Teapot", 1_999, 1_000_000),
    Product("SKU-1003", "Tea sampler", 899, 1_000_000),
    Product("SKU-1004", "Cup set", 3_450, 1_000_000),
    Product("SKU-OUT", "Sold-out grinder", 12_000, 0),
    Product("SKU-RETIRED", "Retired infuser", 700, None),
)

CREDIT_LIMITS: dict[int, int] = {402: 0}
