"""CPU per event of the functions' own path, in-process: no servers, side by side.

    python -m bench.function_cpu --events 2000 --rounds 5

Each saga function (inventory, shipping, notification) and the transport floor's no-op
function (bench/noop/main.py) is built by functions-framework (``create_app``) and sent
binary-mode CloudEvents with its source's token through a Flask test client. The functions run
with the real wiring (``bootstrap``: identity verification, envelope and bound checks,
parsing, tracing to a span file, the ``KafkaPublisher`` building and encoding every record),
the stores and the Kafka producer replaced by in-memory fakes, so what is measured is the
request path a function adds to the libraries, not the servers' round trips. Rounds alternate
between the cases; the figure per case is the median of its rounds' CPU per event
(``time.process_time``: every thread of the process, the span exporter's included).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import functions_framework
from cloudevents.conversion import to_binary
from cloudevents.http import CloudEvent

from bench import labelled_results
from minimart.adapters.kafka_publisher import KafkaPublisher
from minimart.bootstrap import bootstrap
from minimart.catalog import Event, EventType, build
from minimart.entrypoints import use_container
from minimart.observability import tracing
from minimart.settings import PROJECT_ROOT, Settings

sys.path.insert(0, str(PROJECT_ROOT))
from tests import tokens
from tests.fakes import FakeInventory, FakeNotifications, FakeShipments


class _Done:
    def get(self, timeout: float | None = None) -> None:
        return None


class NullProducer:
    """A KafkaProducer that acknowledges at once (what is measured is the path up to it)."""

    sent = 0

    def send(self, topic: str, **kwargs: Any) -> _Done:
        self.sent += 1
        return _Done()


def _order_facts(order_id: str) -> dict[str, Any]:
    return {
        "orderId": order_id,
        "customerId": 4242,
        "items": [
            {"sku": "SKU-1001", "quantity": 1, "unitPriceCents": 4_999},
            {"sku": "SKU-1002", "quantity": 2, "unitPriceCents": 1_250},
        ],
        "totalCents": 7_499,
        "shippingAddress": {"country": "US", "postalCode": "94107"},
    }


def _events(name: str) -> Callable[[], CloudEvent]:
    def event(event_type: EventType, data: dict[str, Any]) -> CloudEvent:
        cloud_event = build(Event(event_type, str(uuid.uuid4()), data["orderId"], data), "bench")
        cloud_event["traceparent"] = f"00-{uuid.uuid4().hex}-{uuid.uuid4().hex[:16]}-01"
        return cloud_event

    def inventory() -> CloudEvent:
        return event(EventType.ORDER_CREATED, _order_facts(str(uuid.uuid4())))

    def shipping() -> CloudEvent:
        order_id = str(uuid.uuid4())
        return event(
            EventType.PAYMENT_CAPTURED, {**_order_facts(order_id), "paymentId": f"pay-{order_id}"}
        )

    def notification() -> CloudEvent:
        data = {"orderId": str(uuid.uuid4()), "customerId": 7, "totalCents": 7_499}
        return event(EventType.ORDER_CONFIRMED, data)

    def noop() -> CloudEvent:
        chain = str(uuid.uuid4())
        data = {"chain": chain, "hops": 6, "prefix": "bench.floor.x", "sentAt": 0.0}
        return CloudEvent(
            {
                "type": "bench.floor.h0",
                "source": "/bench/floor",
                "id": str(uuid.uuid4()),
                "datacontenttype": "application/json",
                "partitionkey": chain,
            },
            data,
        )

    return {
        "inventory": inventory,
        "shipping": shipping,
        "notification": notification,
        "noop": noop,
    }[name]


def _client(name: str, settings: Settings) -> Any:
    if name == "noop":
        source = PROJECT_ROOT / "bench" / "noop" / "main.py"
        app = functions_framework.create_app("handle", str(source), "cloudevent")  # type: ignore[no-untyped-call]
        module = sys.modules.get("main")
        if module is not None and hasattr(module, "_producer"):
            setattr(module, "_producer", NullProducer())  # noqa: B010 (the no-op's own global)
        return app.test_client()
    source = PROJECT_ROOT / "functions" / name / "main.py"
    app = functions_framework.create_app("handle", str(source), "cloudevent")  # type: ignore[no-untyped-call]
    container = bootstrap(
        settings,
        publisher=KafkaPublisher(NullProducer(), inject_headers=tracing.kafka_header_injector()),  # type: ignore[arg-type]
        inventory_uow=lambda: FakeInventory({"SKU-1001": 10**9, "SKU-1002": 10**9}),
        shipments=FakeShipments(),
        notifications=FakeNotifications(),
        verifier=tokens.verifier(),
    )
    use_container(app, container)
    client = app.test_client()
    client.environ_base["HTTP_AUTHORIZATION"] = tokens.bearer(name)
    return client


def measure(client: Any, make: Callable[[], CloudEvent], events: int) -> float:
    """CPU microseconds per event over ``events`` POSTs (bodies built beforehand)."""
    requests = [to_binary(make()) for _ in range(events)]
    started = time.process_time()
    for headers, body in requests:
        response = client.post("/", headers=headers, data=body)
        if response.status_code != 200:
            raise SystemExit(f"{response.status_code}: {response.data[:300]!r}")
    return (time.process_time() - started) / events * 1e6


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.function_cpu", description=__doc__)
    parser.add_argument("--events", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--cases", default="noop,inventory,shipping,notification")
    parser.add_argument("--label", default="")
    parser.add_argument("--out", type=Path, default=Path("bench/function_cpu.json"))
    args = parser.parse_args(argv)
    spans = Path(tempfile.mkdtemp(prefix="function-cpu-")) / "spans.jsonl"
    settings = Settings(trace_file=str(spans))
    tracing.configure(settings)
    cases = args.cases.split(",")
    clients = {name: _client(name, settings) for name in cases}
    for name in cases:  # warm: imports, caches, the verifier's key cache
        measure(clients[name], _events(name), 50)
    rounds: dict[str, list[float]] = {name: [] for name in cases}
    for number in range(args.rounds):
        order = cases if number % 2 == 0 else cases[::-1]
        for name in order:
            rounds[name].append(round(measure(clients[name], _events(name), args.events), 1))
    result = {
        "label": args.label,
        "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "loadavg_at_end": os.getloadavg()[0],
        "events_per_round": args.events,
        "cpu_us_per_event": {name: statistics.median(r) for name, r in rounds.items()},
        "rounds": rounds,
    }
    labelled_results.append(args.out, result)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
