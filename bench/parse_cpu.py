"""CPU of ``catalog.parse`` per event: with the body scan (the functions' path) and without it
(the NUL/lone-surrogate walk over every value), interleaved rounds.

    python -m bench.parse_cpu
"""

from __future__ import annotations

import json
import statistics
import time
import uuid
from pathlib import Path

from cloudevents.conversion import to_binary
from cloudevents.http import from_http

from minimart.catalog import Event, EventType, build, parse

N = 20_000
ROUNDS = 7


def main() -> int:
    order_id = str(uuid.uuid4())
    data = {
        "orderId": order_id,
        "customerId": 4242,
        "totalCents": 7_499,
        "paymentId": f"pay-{order_id}",
        "items": [
            {"sku": "SKU-1001", "quantity": 1, "unitPriceCents": 4_999},
            {"sku": "SKU-1002", "quantity": 2, "unitPriceCents": 1_250},
        ],
        "shippingAddress": {"country": "US", "postalCode": "94107"},
    }
    headers, body = to_binary(
        build(Event(EventType.PAYMENT_CAPTURED, str(uuid.uuid4()), order_id, data), "bench")
    )
    event = from_http(headers, body)
    rounds: dict[str, list[float]] = {"walk": [], "scan": []}
    for number in range(ROUNDS):
        for case in ("walk", "scan") if number % 2 == 0 else ("scan", "walk"):
            raw = None if case == "walk" else body
            started = time.process_time()
            for _ in range(N):
                parse(event, raw)
            rounds[case].append(round((time.process_time() - started) / N * 1e6, 2))
    medians = {case: statistics.median(values) for case, values in rounds.items()}
    result = {
        "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "event": "payment.captured, 2 lines",
        "parse_us": medians,
        "scan_over_walk": round(medians["scan"] / medians["walk"], 3),
        "rounds": rounds,
    }
    print(json.dumps(result))
    Path("bench/parse_cpu.json").write_text(json.dumps(result, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
