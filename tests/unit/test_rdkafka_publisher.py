"""The librdkafka publisher (the option, MINIMART_KAFKA_CLIENT=librdkafka) against a fake
``confluent_kafka.Producer``: publish returns only once every record is acknowledged, and a
refused or failed record is ``PublishFailed`` (the step answers 500 and is retried)."""

from __future__ import annotations

import queue
import threading
import uuid
from collections.abc import Callable
from typing import Any

import pytest

from minimart.adapters.kafka_publisher import PublishFailed
from minimart.adapters.rdkafka_publisher import RdkafkaPublisher
from minimart.bootstrap import bootstrap
from minimart.catalog import Event, EventType
from minimart.settings import Settings, SettingsError


class FakeProducer:
    """Takes records; ``poll`` runs their delivery reports as ``answer`` decides."""

    def __init__(self, answer: Callable[[str], Any] = lambda topic: None) -> None:
        self.records: list[dict[str, Any]] = []
        self._reports: queue.SimpleQueue[Callable[[], None]] = queue.SimpleQueue()
        self._answer = answer
        self.hold = threading.Event()
        self.hold.set()
        self.flushed = False

    def produce(self, topic: str, **record: Any) -> None:
        if topic == "full":
            raise BufferError("Local: Queue full")
        self.records.append({"topic": topic, **record})
        report = record["on_delivery"]
        self._reports.put(lambda: report(self._answer(topic), None))

    def poll(self, timeout: float) -> int:
        try:
            report = self._reports.get(timeout=timeout)
        except queue.Empty:
            return 0
        self.hold.wait()
        report()
        return 1

    def flush(self, timeout: float) -> int:
        self.flushed = True
        return 0


def event(event_type: EventType = EventType.INVENTORY_RESERVED) -> Event:
    order_id = str(uuid.uuid4())
    return Event(event_type, str(uuid.uuid4()), order_id, {"orderId": order_id})


def test_publish_returns_once_every_record_is_acknowledged() -> None:
    producer = FakeProducer()
    producer.hold.clear()
    publisher = RdkafkaPublisher(producer)
    done = threading.Event()
    events = [event(), event(EventType.PAYMENT_CAPTURED)]

    worker = threading.Thread(target=lambda: (publisher.publish(events, "inventory"), done.set()))
    worker.start()

    assert not done.wait(0.3)  # the acks are held back
    producer.hold.set()
    assert done.wait(5)
    worker.join()
    publisher.close()
    assert [r["topic"] for r in producer.records] == [e.type.topic for e in events]
    first = producer.records[0]
    assert first["key"] == events[0].order_id.encode()  # the partition key: the order
    assert (b"inventory.reserved" in dict(first["headers"])["ce_type"]) is True
    assert producer.flushed


def test_a_record_kafka_does_not_acknowledge_fails_the_publish() -> None:
    publisher = RdkafkaPublisher(FakeProducer(lambda topic: "broker down"))

    with pytest.raises(PublishFailed, match="broker down"):
        publisher.publish([event()], "inventory")
    publisher.close()


def test_a_record_librdkafka_cannot_take_fails_the_publish() -> None:
    publisher = RdkafkaPublisher(FakeProducer())

    with pytest.raises(PublishFailed, match="Queue full"):
        publisher.publish_record("full", b"k", b"v", [])
    publisher.close()


def test_a_traced_record_carries_its_producer_span_and_the_step_s_context() -> None:
    producer = FakeProducer()
    publisher = RdkafkaPublisher(producer, inject_headers=lambda h: h.append(("ce_x", b"1")))

    publisher.publish([event()], "inventory")
    publisher.close()

    names = [name for name, _ in producer.records[0]["headers"]]
    assert "ce_x" in names  # what the injector adds (ce_traceparent in a traced process)


def test_the_kafka_client_is_a_setting_with_kafka_python_the_default() -> None:
    assert Settings().kafka_client == "kafka-python"
    assert Settings.from_env({"MINIMART_KAFKA_CLIENT": "librdkafka"}).kafka_client == "librdkafka"
    with pytest.raises(SettingsError, match="MINIMART_KAFKA_CLIENT"):
        Settings.from_env({"MINIMART_KAFKA_CLIENT": "java"})


def test_the_container_builds_the_chosen_client() -> None:
    chosen = bootstrap(Settings(kafka_client="librdkafka", kafka_bootstrap="127.0.0.1:1"),
                       tracing=False)  # fmt: skip
    publisher = chosen.publisher
    assert isinstance(publisher, RdkafkaPublisher)
    publisher.close()
