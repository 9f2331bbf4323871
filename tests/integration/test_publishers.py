"""Both publishers (kafka-python, the default; librdkafka, the option) on the stack's broker:
a record is on the topic when ``publish_record`` returns (acks=all, publish before ack), and
one key's records keep their order, also when many are in flight from several threads."""

from __future__ import annotations

import concurrent.futures
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from kafka import KafkaAdminClient, KafkaConsumer, TopicPartition
from kafka.admin import NewTopic

from minimart.adapters.kafka_publisher import KafkaPublisher, make_producer
from minimart.adapters.rdkafka_publisher import RdkafkaPublisher, make_rdkafka_producer
from minimart.kafka_clients import credentials_of
from minimart.settings import Settings
from tests.stack import as_kafka_admin, sasl

PARTITIONS = 4

# The tests' topics are their own: they write as the broker's super user.
PUBLISHERS: dict[str, Callable[[Settings], Any]] = {
    "kafka-python": lambda s: KafkaPublisher(
        make_producer(s.kafka_bootstrap, "test-kp", credentials_of(s))
    ),
    "librdkafka": lambda s: RdkafkaPublisher(
        make_rdkafka_producer(s.kafka_bootstrap, "test-rd", credentials_of(s))
    ),
}


@pytest.fixture
def topic(running_stack: Settings) -> Iterator[str]:
    name = f"test.publishers.{uuid.uuid4().hex[:8]}"
    admin = KafkaAdminClient(
        bootstrap_servers=running_stack.kafka_bootstrap, **sasl(as_kafka_admin(running_stack))
    )
    admin.create_topics([NewTopic(name, PARTITIONS, 1)])
    yield name
    admin.delete_topics([name])
    admin.close()


def records(settings: Settings, topic: str, expected: int) -> list[Any]:
    consumer = KafkaConsumer(
        bootstrap_servers=settings.kafka_bootstrap,
        enable_auto_commit=False,
        group_id=None,
        **sasl(as_kafka_admin(settings)),
    )
    partitions = [TopicPartition(topic, p) for p in range(PARTITIONS)]
    consumer.assign(partitions)
    consumer.seek_to_beginning(*partitions)
    found: list[Any] = []
    for _ in range(50):
        for batch in consumer.poll(timeout_ms=200).values():
            found += batch
        if len(found) >= expected:
            break
    consumer.close()
    return found


@pytest.mark.parametrize("client", sorted(PUBLISHERS))
def test_a_record_is_on_its_topic_when_publish_returns(
    running_stack: Settings, topic: str, client: str
) -> None:
    publisher = PUBLISHERS[client](as_kafka_admin(running_stack))
    try:
        publisher.publish_record(topic, b"order-1", b"v1", [("ce_id", b"1")])
        found = records(running_stack, topic, 1)  # published: readable at once
    finally:
        publisher.close()

    assert [(r.key, r.value, r.headers) for r in found] == [(b"order-1", b"v1", [("ce_id", b"1")])]


@pytest.mark.parametrize("client", sorted(PUBLISHERS))
def test_each_key_keeps_its_order_with_many_records_in_flight(
    running_stack: Settings, topic: str, client: str
) -> None:
    keys = [f"order-{n}".encode() for n in range(8)]
    per_key = 40
    publisher = PUBLISHERS[client](as_kafka_admin(running_stack))

    def one_key(key: bytes) -> None:  # a key's records one after the other, as the saga does
        for n in range(per_key):
            publisher.publish_record(topic, key, str(n).encode(), [])

    try:
        with concurrent.futures.ThreadPoolExecutor(len(keys)) as pool:
            list(pool.map(one_key, keys))
        found = records(running_stack, topic, len(keys) * per_key)
    finally:
        publisher.close()

    assert len(found) == len(keys) * per_key
    for key in keys:
        mine = [r for r in found if r.key == key]
        assert len({r.partition for r in mine}) == 1  # one key, one partition
        assert [int(r.value) for r in mine] == list(range(per_key))


def test_both_clients_put_a_key_on_the_same_partition(running_stack: Settings, topic: str) -> None:
    keys = [str(uuid.uuid4()).encode() for _ in range(32)]
    for client in sorted(PUBLISHERS):
        publisher = PUBLISHERS[client](as_kafka_admin(running_stack))
        try:
            for key in keys:
                publisher.publish_record(topic, key, client.encode(), [])
        finally:
            publisher.close()

    found = records(running_stack, topic, 2 * len(keys))

    partition_of = {(r.key, r.value.decode()): r.partition for r in found}
    assert all(
        partition_of[(key, "kafka-python")] == partition_of[(key, "librdkafka")] for key in keys
    )
