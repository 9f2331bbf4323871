"""CPU of the Kafka client (kafka-python) per consumed record and per acknowledged send.

What a dispatcher and a function pay per hop for the client alone, on the running broker of
the local stack (``Settings.from_env()``), with the settings minimart uses:

* consumer: a group member subscribed to ``--topics`` topics of ``--partitions`` partitions
  (the order-status source reads 9 x 8), fed ``--rate`` records/s by a producer in another
  process; CPU seconds of the consuming process per record. At such rates most fetches bring
  one record, so this is the client's cost per fetch.
* producer: ``send().get()`` of one ~600-byte record every 5 ms, as a step publishes and waits
  for acks=all, with ``linger_ms`` 0 and 1.

    python -m bench.kafka_clients [--label NAME]

Prints the figures and adds them, under the label (default: the kafka-python version), to
bench/kafka_clients.json. Throwaway topics ``bench.client.<run>.*`` are deleted afterwards.
"""

from __future__ import annotations

import argparse
import multiprocessing
import time
import uuid
from pathlib import Path
from typing import Any

import kafka
from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer
from kafka.admin import NewTopic

from bench import labelled_results
from minimart import kafka_clients, local_secrets
from minimart.settings import Settings

OUT = Path(__file__).with_name("kafka_clients.json")
VALUE = b"x" * 600  # the size of a typical minimart event body (no compression)
SEND_GAP_S = 0.005


def _consume(config: dict[str, Any], topics: list[str], seconds: float, out: Any) -> None:
    consumer = KafkaConsumer(
        **config,
        group_id=f"bench-client-{uuid.uuid4().hex}",
        enable_auto_commit=False,
        auto_offset_reset="latest",
        fetch_max_wait_ms=500,
        max_poll_records=100,
        metrics_enabled=False,
    )
    consumer.subscribe(topics)
    while not consumer.assignment():
        consumer.poll(timeout_ms=100)
    out.put("ready")
    records, began, end = 0, time.process_time(), time.monotonic() + seconds
    while time.monotonic() < end:
        for batch in consumer.poll(timeout_ms=100).values():
            records += len(batch)
    out.put((records, time.process_time() - began))
    consumer.close()


def consumer_cpu(
    config: dict[str, Any], topics: list[str], rate: float, seconds: float
) -> dict[str, float]:
    results: Any = multiprocessing.Queue()
    child = multiprocessing.Process(
        target=_consume, args=(config, topics, seconds + 3.0, results), daemon=True
    )
    child.start()
    results.get(timeout=60)
    producer = KafkaProducer(**config, acks="all", linger_ms=0)
    began = time.monotonic()
    sent = 0
    while (now := time.monotonic()) - began < seconds:
        due = began + sent / rate
        if due > now:
            time.sleep(due - now)
        producer.send(topics[sent % len(topics)], key=uuid.uuid4().bytes, value=VALUE)
        sent += 1
    producer.flush()
    producer.close()
    records, cpu_s = results.get(timeout=60)
    child.join(10)
    return {
        "records": records,
        "sent": sent,
        "cpu_us_per_record": round(1e6 * cpu_s / max(records, 1), 1),
    }


def producer_cpu(config: dict[str, Any], topic: str, linger_ms: int, sends: int) -> float:
    producer = KafkaProducer(**config, acks="all", linger_ms=linger_ms, metrics_enabled=False)
    for _ in range(50):
        producer.send(topic, key=uuid.uuid4().bytes, value=VALUE).get(10)
    began = time.process_time()
    for _ in range(sends):
        producer.send(topic, key=uuid.uuid4().bytes, value=VALUE).get(10)
        time.sleep(SEND_GAP_S)
    spent = time.process_time() - began
    producer.close()
    return round(1e6 * spent / sends, 1)


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.kafka_clients")
    parser.add_argument("--topics", type=int, default=9)
    parser.add_argument("--partitions", type=int, default=8)
    parser.add_argument("--rate", type=float, default=60.0, help="records/s to the consumer")
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--sends", type=int, default=1000)
    parser.add_argument("--label", default=f"kafka-python {kafka.__version__}")
    args = parser.parse_args()

    # Throwaway topics and groups: the broker's super user's.
    settings = local_secrets.with_admin_credentials(Settings.from_env())
    config = {
        "bootstrap_servers": settings.kafka_bootstrap,
        **kafka_clients.auth(kafka_clients.credentials_of(settings)),
    }
    run = uuid.uuid4().hex[:8]
    topics = [f"bench.client.{run}.{i}" for i in range(args.topics)]
    admin = KafkaAdminClient(**config)
    try:
        admin.create_topics([NewTopic(t, args.partitions, 1) for t in topics])
        time.sleep(1.0)
        result = {
            "label": args.label,
            "kafka_python": kafka.__version__,
            "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "consumer": {
                "topics": args.topics,
                "partitions": args.partitions,
                "rate": args.rate,
                **consumer_cpu(config, topics, args.rate, args.seconds),
            },
            "producer_cpu_us_per_acked_send": {
                f"linger_ms={linger}": producer_cpu(config, topics[0], linger, args.sends)
                for linger in (0, 1)
            },
        }
    finally:
        admin.delete_topics(topics)
        admin.close()
    labelled_results.record(OUT, args.label, result)


if __name__ == "__main__":
    main()
