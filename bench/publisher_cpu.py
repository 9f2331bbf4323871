"""CPU and wall time per acked publish: kafka-python (the default) against librdkafka (the
option), side by side on the stack's broker.

    python -m bench.publisher_cpu --events 1000 --rounds 4 --threads 4

Each round publishes ``--events`` saga events (an ``inventory.reserved`` each, random order
ids) through each publisher in turn (alternating which goes first), from ``--threads`` threads
at once as a function's request threads do, each ``publish`` waiting for its ``acks=all``.
CPU is the process's (every thread: the clients' own included), per publish; the figure per
client is the median of its rounds. Topics are the saga's (the stack must be up).
"""

from __future__ import annotations

import argparse
import concurrent.futures
import os
import statistics
import time
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from bench import labelled_results
from minimart import local_secrets
from minimart.adapters.kafka_publisher import KafkaPublisher, make_producer
from minimart.adapters.rdkafka_publisher import RdkafkaPublisher, make_rdkafka_producer
from minimart.catalog import Event, EventType
from minimart.settings import Settings


def _event() -> Event:
    order_id = str(uuid.uuid4())
    data = {
        "orderId": order_id,
        "customerId": 4242,
        "totalCents": 7_499,
        "items": [{"sku": "SKU-1001", "quantity": 1, "unitPriceCents": 4_999}],
        "shippingAddress": {"country": "US", "postalCode": "94107"},
    }
    return Event(EventType.INVENTORY_RESERVED, str(uuid.uuid4()), order_id, data)


def measure(publisher: Any, events: int, threads: int) -> tuple[float, float]:
    """(CPU µs, wall ms) per publish."""
    batch = [_event() for _ in range(events)]
    cpu, wall = time.process_time(), time.perf_counter()
    latencies: list[float] = []

    def one(event: Event) -> None:
        started = time.perf_counter()
        publisher.publish([event], source="bench")
        latencies.append(time.perf_counter() - started)

    with concurrent.futures.ThreadPoolExecutor(threads) as pool:
        list(pool.map(one, batch))
    cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
    return cpu / events * 1e6, statistics.median(latencies) * 1000


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.publisher_cpu", description=__doc__)
    parser.add_argument("--events", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--threads", type=int, default=4)
    parser.add_argument("--out", type=Path, default=Path("bench/publisher_cpu.json"))
    args = parser.parse_args(argv)
    settings = Settings.from_env()
    # It writes inventory.reserved events, as the inventory function (their one writer) does.
    writer = local_secrets.kafka_credentials(local_secrets.of(settings), "fn-inventory")
    publishers = {
        "kafka-python": KafkaPublisher(make_producer(settings.kafka_bootstrap, "bench-kp", writer)),
        "librdkafka": RdkafkaPublisher(
            make_rdkafka_producer(settings.kafka_bootstrap, "bench-rd", writer)
        ),
    }
    for publisher in publishers.values():
        measure(publisher, 50, args.threads)  # connect, metadata, warm
    cpu: dict[str, list[float]] = {name: [] for name in publishers}
    p50: dict[str, list[float]] = {name: [] for name in publishers}
    names = list(publishers)
    for number in range(args.rounds):
        for name in names if number % 2 == 0 else names[::-1]:
            us, ms = measure(publishers[name], args.events, args.threads)
            cpu[name].append(round(us, 1))
            p50[name].append(round(ms, 2))
    for publisher in publishers.values():
        publisher.close()
    result = {
        "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "loadavg_at_end": os.getloadavg()[0],
        "events_per_round": args.events,
        "threads": args.threads,
        "cpu_us_per_publish": {k: statistics.median(v) for k, v in cpu.items()},
        "wall_p50_ms": {k: statistics.median(v) for k, v in p50.items()},
        "rounds_cpu_us": cpu,
        "rounds_p50_ms": p50,
    }
    labelled_results.append(args.out, result)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
