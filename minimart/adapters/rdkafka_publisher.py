"""The same publisher port as ``KafkaPublisher``, on librdkafka (``confluent-kafka``): an option a
user chooses (``MINIMART_KAFKA_CLIENT=librdkafka``), not the default; the design's client is
kafka-python.

Why offer it: an acked send costs kafka-python ~1 ms of Python (its sender thread, the
futures, the request encoding, all under the GIL a function's request threads want too);
librdkafka does the same work in C threads outside the GIL (bench/publisher_cpu.py measures
both side by side on the stack's broker).

The guarantees are the default's:

* publish before ack: ``publish`` returns only when the broker acknowledged every record with
  ``acks=all``, and raises ``PublishFailed`` otherwise (the step then answers 500);
* ordering per order: records of one key go to one partition, the one kafka-python and the
  Java client pick (``partitioner=murmur2_random``; librdkafka's default hashes otherwise), and the
  idempotent producer (``enable.idempotence``) keeps a partition's records in order across
  retries with several requests in flight;
* tracing: each record carries the CloudEvents ``ce_traceparent`` extension and the
  ``traceparent`` header of a PRODUCER span, as kafka-python's instrumentation writes them.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from typing import Any

from cloudevents.kafka import to_binary
from confluent_kafka import KafkaException, Producer

from minimart.adapters.kafka_publisher import PUBLISH_SECONDS, HeaderInjector, PublishFailed
from minimart.catalog import Event, build
from minimart.kafka_clients import KafkaCredentials, librdkafka_auth

# (topic, the record's headers) -> a context around its hand-off that may add to the headers.
RecordTracer = Callable[[str, list[tuple[str, bytes]]], AbstractContextManager[None]]

# librdkafka gives up on a record after this (its delivery report then carries the error).
DELIVERY_TIMEOUT_MS = 15_000
# How long ``publish`` waits for the delivery reports beyond that (they always come).
REPORT_GRACE_S = 5.0
# The acknowledgement thread's wait for a report (a report wakes it at once).
POLL_S = 0.5


def make_rdkafka_producer(
    bootstrap: str, client_id: str, credentials: KafkaCredentials | None
) -> Any:
    """The step's producer, presenting ``credentials`` (its function's principal)."""
    return Producer(
        {
            "bootstrap.servers": bootstrap,
            "client.id": client_id,
            "acks": "all",
            # The partition of a key as kafka-python and the Java client pick it (murmur2):
            # librdkafka's default (consistent_random, CRC32) would put an order's records on
            # another partition than the default client and the re-drive do.
            "partitioner": "murmur2_random",
            # Retries keep each partition's order with requests in flight (at most 5).
            "enable.idempotence": True,
            # A step waits for its ack: send at once.
            "linger.ms": 0,
            "message.timeout.ms": DELIVERY_TIMEOUT_MS,
            "logger": logging.getLogger("librdkafka"),
            "log.connection.close": False,
            **librdkafka_auth(credentials),
        }
    )


class _Acks:
    """The delivery reports of one ``publish`` call (written by the acknowledgement thread)."""

    def __init__(self, expected: int) -> None:
        self._missing = expected
        self.error: Any = None
        self.done = threading.Event()
        if expected == 0:
            self.done.set()

    def report(self, error: Any, message: Any) -> None:
        if error is not None and self.error is None:
            self.error = error
        self._missing -= 1
        if self._missing <= 0:
            self.done.set()


class RdkafkaPublisher:
    """``Publisher`` and ``RecordPublisher`` on a librdkafka ``Producer`` (see the module)."""

    def __init__(
        self,
        producer: Any,
        inject_headers: HeaderInjector | None = None,
        trace_record: RecordTracer | None = None,
    ) -> None:
        self._producer = producer
        self._inject = inject_headers
        # Around each record's hand-off: a PRODUCER span whose context it adds to the headers
        # (the observability room's ``tracing.traced_record``; None: records go untraced).
        self._trace_record = trace_record
        self._closed = threading.Event()
        # librdkafka runs delivery reports inside poll(): one thread serves them all.
        self._acker = threading.Thread(target=self._serve_reports, name="rdkafka-acks", daemon=True)
        self._acker.start()

    def _serve_reports(self) -> None:
        while not self._closed.is_set():
            self._producer.poll(POLL_S)

    def _produce(
        self, topic: str, value: bytes | None, key: bytes | None,
        headers: list[tuple[str, bytes]], acks: _Acks,
    ) -> None:  # fmt: skip
        try:
            self._producer.produce(
                topic, value=value, key=key, headers=headers, on_delivery=acks.report
            )
        except (BufferError, KafkaException, ValueError, TypeError) as exc:  # queue full, ...
            raise PublishFailed(f"librdkafka did not take the record: {exc}") from exc

    @staticmethod
    def _wait(acks: _Acks) -> None:
        if not acks.done.wait(DELIVERY_TIMEOUT_MS / 1000 + REPORT_GRACE_S):
            raise PublishFailed("Kafka did not acknowledge in time")
        if acks.error is not None:
            raise PublishFailed(f"Kafka did not acknowledge: {acks.error}")

    def publish(self, events: Sequence[Event], source: str) -> None:
        started = time.perf_counter()
        acks = _Acks(len(events))
        for event in events:
            message = to_binary(build(event, source))
            key = message.key
            topic = event.type.topic
            headers = list(message.headers.items())
            if self._inject is not None:
                self._inject(headers)  # ce_traceparent: the step's span
            value = message.value.encode() if isinstance(message.value, str) else message.value
            raw_key = key.encode() if isinstance(key, str) else key
            if self._trace_record is None:
                self._produce(topic, value, raw_key, headers, acks)
                continue
            with self._trace_record(topic, headers):
                self._produce(topic, value, raw_key, headers, acks)
        self._wait(acks)
        if events:
            PUBLISH_SECONDS.labels(source).observe(time.perf_counter() - started)

    def publish_record(
        self, topic: str, key: bytes | None, value: bytes | None,
        headers: Sequence[tuple[str, bytes]],
    ) -> None:  # fmt: skip
        """Publish one record as it is (a dead letter going back to its topic)."""
        acks = _Acks(1)
        self._produce(topic, value, key, list(headers), acks)
        self._wait(acks)

    def close(self) -> None:
        self._producer.flush(5)
        self._closed.set()
        self._acker.join(POLL_S + 1)
