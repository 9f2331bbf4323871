"""CPU and wall time per acked publish: kafka-python (the default) against librdkafka (the
option), side by side on the stack's broker.

    python -m bench.publisher_cpu --events 1000 --rounds 4 --threads 4

Each round publishes ``--events`` saga events (an ``inventory.reserved`` each, random order
ids) through each publisher in turn (alternating which goes first), from ``--threads`` threads
at once as a function's request threads do, each ``publish`` waiting for its ``acks=all``.
CPU is the process's (every thread: the clients' own included), per publish; the figure per
client is the median of its rounds. The stack's broker must be up; the events go to a
throwaway topic (the saga topic's partitions) made for the run and deleted after it, by the
broker's administrator, as whom they are written (bench/floor.py's ``throwaway_topics``):
the running saga never sees them.
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
from typing import Any, cast

from kafka import KafkaProducer

from bench import labelled_results
from bench.floor import throwaway_topics
from minimart import kafka_clients
from minimart.adapters.kafka_publisher import KafkaPublisher, make_producer
from minimart.adapters.rdkafka_publisher import RdkafkaPublisher, make_rdkafka_producer
from minimart.catalog import Event, EventType
from minimart.manifests import load_topology
from minimart.settings import PROJECT_ROOT, Settings


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


class Redirected:
    """A producer whose every record goes to ``topic``, whatever the publisher asks
    (kafka-python's ``send``, librdkafka's ``produce``); the rest is the producer's."""

    def __init__(self, producer: Any, topic: str) -> None:
        self._producer = producer
        self._topic = topic

    def send(self, _topic: str, *args: Any, **kwargs: Any) -> Any:
        return self._producer.send(self._topic, *args, **kwargs)

    def produce(self, _topic: str, *args: Any, **kwargs: Any) -> Any:
        return self._producer.produce(self._topic, *args, **kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._producer, name)


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


def compare(admin: Settings, topic: str, events: int, rounds: int, threads: int) -> dict[str, Any]:
    """Both publishers, ``rounds`` times each (alternating), onto ``topic`` as ``admin``."""
    writer = kafka_clients.credentials_of(admin)
    bootstrap = admin.kafka_bootstrap
    publishers: dict[str, Any] = {
        "kafka-python": KafkaPublisher(
            cast(KafkaProducer, Redirected(make_producer(bootstrap, "bench-kp", writer), topic))
        ),
        "librdkafka": RdkafkaPublisher(
            Redirected(make_rdkafka_producer(bootstrap, "bench-rd", writer), topic)
        ),
    }
    for publisher in publishers.values():
        measure(publisher, 50, threads)  # connect, metadata, warm
    cpu: dict[str, list[float]] = {name: [] for name in publishers}
    p50: dict[str, list[float]] = {name: [] for name in publishers}
    names = list(publishers)
    for number in range(rounds):
        for name in names if number % 2 == 0 else names[::-1]:
            us, ms = measure(publishers[name], events, threads)
            cpu[name].append(round(us, 1))
            p50[name].append(round(ms, 2))
    for publisher in publishers.values():
        publisher.close()
    return {
        "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "loadavg_at_end": os.getloadavg()[0],
        "events_per_round": events,
        "threads": threads,
        "topic": topic,
        "cpu_us_per_publish": {k: statistics.median(v) for k, v in cpu.items()},
        "wall_p50_ms": {k: statistics.median(v) for k, v in p50.items()},
        "rounds_cpu_us": cpu,
        "rounds_p50_ms": p50,
    }


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.publisher_cpu", description=__doc__)
    parser.add_argument("--events", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--threads", type=int, default=4)
    parser.add_argument("--out", type=Path, default=Path("bench/publisher_cpu.json"))
    args = parser.parse_args(argv)
    settings = Settings.from_env()
    saga_topic = EventType.INVENTORY_RESERVED.topic
    partitions = dict(load_topology(PROJECT_ROOT).topics).get(saga_topic, 4)
    topic = f"bench.publisher-cpu.{uuid.uuid4().hex[:8]}"
    with throwaway_topics(settings, [topic], partitions) as admin:
        result = compare(admin, topic, args.events, args.rounds, args.threads)
    labelled_results.append(args.out, result)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
