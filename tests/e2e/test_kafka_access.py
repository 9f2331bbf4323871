"""The local broker enforces who may write and read which topic (minimart/kafka_access.py).

On the running stack, with the principals the runner made from the manifests: a client
without credentials, or with a wrong password, gets nothing from the broker; every function's
principal is refused (Kafka error 29, TopicAuthorizationFailed: authenticated, then denied)
on every topic its manifest does not let it write; a source's principal may write nothing and
read only its own topics, as its own group. The saga itself (tests/e2e/test_saga.py) shows the
same principals write and read what they are granted.
"""

from __future__ import annotations

import uuid

import pytest
from kafka import KafkaConsumer, TopicPartition
from kafka.errors import (
    GroupAuthorizationFailedError,
    KafkaError,
    NoBrokersAvailable,
    TopicAuthorizationFailedError,
)

from minimart import kafka_clients, local_secrets
from minimart.kafka_access import CONSOLE, READ, TOPIC, WRITE, access_of, principal_of
from minimart.kafka_clients import KafkaCredentials
from minimart.manifests import Topology, load_topology
from minimart.settings import PROJECT_ROOT, Settings

TIMEOUTS = {"request_timeout_ms": 5_000, "max_block_ms": 5_000}


@pytest.fixture(scope="module")
def topology() -> Topology:
    return load_topology(PROJECT_ROOT)


def _credentials(settings: Settings, principal: str) -> KafkaCredentials:
    return local_secrets.kafka_credentials(local_secrets.of(settings), principal)


def _write(settings: Settings, credentials: KafkaCredentials | None, topic: str) -> str:
    """What the broker answers a write to ``topic`` that should be refused: "denied"
    (authenticated, refused by an ACL), "no access" (no session with the broker at all) or,
    if the broker took it, "WRITTEN" (one bad record, which its readers dead-letter)."""
    try:
        producer = kafka_clients.producer(
            settings.kafka_bootstrap, credentials, "access-test", **TIMEOUTS
        )
    except NoBrokersAvailable:
        return "no access"
    try:
        producer.send(topic, key=b"access-test", value=b"").get(timeout=10)
        return "WRITTEN"
    except TopicAuthorizationFailedError:
        return "denied"
    except KafkaError:
        return "no access"
    finally:
        producer.close(timeout=1)


def _sees(settings: Settings, credentials: KafkaCredentials, topic: str) -> bool:
    """Whether ``credentials`` authenticate and may see ``topic`` (its partitions); nothing
    is written."""
    producer = kafka_clients.producer(
        settings.kafka_bootstrap, credentials, "access-test", **TIMEOUTS
    )
    try:
        return bool(producer.partitions_for(topic))
    finally:
        producer.close(timeout=1)


def test_a_client_without_credentials_or_with_a_wrong_password_gets_nothing(
    running_stack: Settings,
) -> None:
    topic = "minimart.shipping.failed"
    assert _write(running_stack, None, topic) == "no access"
    wrong = KafkaCredentials("fn-shipping", "not-its-password")
    assert _write(running_stack, wrong, topic) == "no access"
    # The same client with the right password is authenticated (and sees the topic it owns).
    assert _sees(running_stack, _credentials(running_stack, "fn-shipping"), topic)


def test_each_function_may_write_only_the_topics_it_produces(
    running_stack: Settings, topology: Topology
) -> None:
    access = access_of(topology)
    refused = 0
    for service in sorted(topology.services.values(), key=lambda s: s.name):
        assert service.kafka_secret is not None, service.name
        principal = principal_of(service.kafka_secret, service.name)
        credentials = _credentials(running_stack, principal)
        for topic in sorted(topology.topics):
            allowed = access.allows(principal, WRITE, TOPIC, topic)
            assert allowed == (topic in service.produces), (principal, topic)
            if allowed:  # the saga's own writes (tests/e2e/test_saga.py) show these
                assert _sees(running_stack, credentials, topic), (principal, topic)
            else:
                assert _write(running_stack, credentials, topic) == "denied", (principal, topic)
                refused += 1
    assert refused > len(topology.services)


def test_a_source_writes_nothing_and_reads_only_its_topics_as_its_group(
    running_stack: Settings, topology: Topology
) -> None:
    source = topology.source("payment-source")
    credentials = _credentials(running_stack, source.name)
    assert _write(running_stack, credentials, source.topics[0]) == "denied"
    foreign = next(t for t in sorted(topology.topics) if t not in source.topics)

    def offsets(topic: str, group: str) -> str:
        """Ask, as the source and as ``group``, for ``topic``'s committed offset (without
        joining the group: the running dispatcher is not disturbed): "answered", or "denied"
        when the broker refuses the group or the topic. Its reads themselves are the saga's
        (tests/e2e/test_saga.py)."""
        consumer = KafkaConsumer(
            bootstrap_servers=running_stack.kafka_bootstrap,
            group_id=group,
            enable_auto_commit=False,
            request_timeout_ms=15_000,
            **credentials.kafka_python(),
        )
        try:
            consumer.committed(TopicPartition(topic, 0))
            return "answered"
        except (TopicAuthorizationFailedError, GroupAuthorizationFailedError):
            return "denied"
        finally:
            consumer.close()

    other_group = f"not-{source.consumer_group}-{uuid.uuid4().hex[:6]}"
    assert offsets(source.topics[0], source.consumer_group) == "answered"
    assert offsets(foreign, source.consumer_group) == "denied"
    assert offsets(source.topics[0], other_group) == "denied"


def test_the_console_reads_every_topic_but_writes_only_what_a_function_writes(
    running_stack: Settings, topology: Topology
) -> None:
    access = access_of(topology)
    console = _credentials(running_stack, CONSOLE)
    dead_letters = sorted(set(topology.dead_letter_sinks.values()))
    for topic in dead_letters:
        assert access.allows(CONSOLE, READ, TOPIC, topic)
        assert not access.allows(CONSOLE, WRITE, TOPIC, topic)
        assert _write(running_stack, console, topic) == "denied"
