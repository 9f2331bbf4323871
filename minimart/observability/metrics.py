"""Saga-level Prometheus metrics: how orders end, and how long they take to get there.

Labels stay bounded: the status is CONFIRMED or CANCELLED and the reason is the code before
the first ``:`` of the reason (``payment_declined``), or ``other`` when it does not look like
a code.
"""

from __future__ import annotations

import re
import time
from datetime import datetime

from prometheus_client import Counter, Histogram

_REASON_CODE = re.compile(r"^[a-z][a-z0-9_]{0,39}$")
NO_REASON = "none"
OTHER_REASON = "other"

SAGA_OUTCOMES = Counter(
    "minimart_saga_outcomes_total",
    "Orders that reached a final state, by status and reason code",
    ["status", "reason"],
)
ORDER_LATENCY = Histogram(
    "minimart_order_end_to_end_seconds",
    "Time from an order's acceptance (its created_at) to its final state",
    ["status"],
    buckets=(0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300),
)


def reason_code(reason: str | None) -> str:
    """The bounded label of a reason: ``"payment_declined: amount ..."`` -> ``payment_declined``."""
    if not reason:
        return NO_REASON
    code = reason.split(":", 1)[0].strip().lower().replace(" ", "_").replace("-", "_")
    return code if _REASON_CODE.fullmatch(code) else OTHER_REASON


def record_saga_outcome(status: str, reason: str | None, created_at: datetime | None) -> None:
    """Count an order reaching ``status``; observe its end-to-end latency when known."""
    SAGA_OUTCOMES.labels(status, reason_code(reason)).inc()
    if created_at is not None:
        ORDER_LATENCY.labels(status).observe(max(0.0, time.time() - created_at.timestamp()))
