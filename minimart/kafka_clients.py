"""Kafka clients as minimart's tools build them (the console, the runner's consumers), and
the fetch size limits every consumer shares.

kafka-python 2.3 refuses a response frame larger than ``receive_message_max_bytes`` (1 MB by
default) while letting a fetch ask for up to ``fetch_max_bytes`` (50 MB by default), so a
consumer far behind on many partitions would fail the same fetch forever. A fetch answer is at
most ``fetch_max_bytes`` plus one record batch (``max_partition_fetch_bytes``).
"""

from __future__ import annotations

from typing import Any

from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer

FETCH_MAX_BYTES = 8 * 1024 * 1024
MAX_PARTITION_FETCH_BYTES = 1024 * 1024
FETCH_LIMITS = {
    "fetch_max_bytes": FETCH_MAX_BYTES,
    "max_partition_fetch_bytes": MAX_PARTITION_FETCH_BYTES,
    "receive_message_max_bytes": FETCH_MAX_BYTES + 2 * MAX_PARTITION_FETCH_BYTES,
}


def consumer(bootstrap: str, **config: Any) -> KafkaConsumer:
    """A consumer with the fetch limits; ``config`` adds to (or overrides) kafka-python's."""
    return KafkaConsumer(bootstrap_servers=bootstrap, **{**FETCH_LIMITS, **config})


def producer(bootstrap: str, client_id: str, **config: Any) -> KafkaProducer:
    """A producer that returns from a send only once every replica has it (acks=all)."""
    return KafkaProducer(
        bootstrap_servers=bootstrap, client_id=client_id, **{"acks": "all", **config}
    )


def admin(bootstrap: str, client_id: str) -> KafkaAdminClient:
    return KafkaAdminClient(bootstrap_servers=bootstrap, client_id=client_id)
