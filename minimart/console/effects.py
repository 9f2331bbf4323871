"""Reads an order's effects from every store (for the demo, the tests, the checker), through
the read models beside the adapters that own the stores."""

from __future__ import annotations

from typing import Any

from minimart.adapters import mongo_views, postgres_views, redis_views
from minimart.settings import Settings


def order_effects(order_id: str, settings: Settings) -> dict[str, Any]:
    """Where one order's effects landed: reservations, payment, shipment, notifications."""
    with mongo_views.connect(settings.mongo_url, timeout_s=5.0) as shipments:
        shipment = mongo_views.shipment_document(shipments, order_id)
    with redis_views.connect(settings.redis_url) as client:
        notifications = redis_views.order_notifications(client, order_id)
    with postgres_views.connect(settings.inventory_dsn) as conn:
        reservations = postgres_views.order_reservations(conn, order_id)
    with postgres_views.connect(settings.payments_dsn) as conn:
        payments = postgres_views.order_payments(conn, order_id)
    return {
        "reservations": reservations,
        "payments": payments,
        "shipment": shipment,
        "notifications": notifications,
    }
