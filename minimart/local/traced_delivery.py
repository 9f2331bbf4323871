"""Tracing of the local KafkaSource dispatcher, around a ``Deliverer`` (delivery.py).

Per record, a CONSUMER span ``<topic> process`` whose parent is the record's trace context
(its ``traceparent`` header, else the CloudEvent's ``ce_traceparent`` extension); under it a
CLIENT span per HTTP attempt (so every retry shows, with the status the sink answered), whose
context the request carries; and a PRODUCER span when the event is dead-lettered, whose
context the dead letter's ``traceparent`` header carries. The record span's outcome and
attempt count are read from the ``DeliveryResult`` the delivery returns.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping
from dataclasses import replace

from opentelemetry.trace import SpanKind

from minimart.binding import OutgoingEvent, Record
from minimart.local.delivery import (
    Attempt,
    DeadLetterSink,
    Deliverer,
    DeliveryResult,
    Outcome,
    SinkConnection,
)
from minimart.local.delivery_spans import DeliverySpan, DeliverySpans
from minimart.manifests import KafkaSourceSpec
from minimart.observability import tracing


def _record_carriers(record: Record) -> tuple[dict[str, str], dict[str, str], dict[str, str]]:
    """(transport, CloudEvent extension) trace carriers of a record, and its ``ce_`` ids."""
    transport: dict[str, str] = {}
    extension: dict[str, str] = {}
    ids: dict[str, str] = {}
    for name, raw in record.headers or ():
        lowered = name.lower()
        if lowered in tracing.TRACE_HEADERS:
            transport.setdefault(lowered, (raw or b"").decode("utf-8", errors="replace"))
        elif lowered.startswith("ce_"):
            short = lowered[3:]
            if short in tracing.TRACE_HEADERS:
                extension.setdefault(short, (raw or b"").decode("utf-8", errors="replace"))
            elif short in ("subject", "id", "type"):
                ids.setdefault(short, (raw or b"").decode("utf-8", errors="replace"))
    return transport, extension, ids


class _Current(threading.local):
    """The record span a partition worker's thread is delivering under (the dead letter's
    parent)."""

    span: DeliverySpan | None = None


class TracedDeadLetterSink:
    """A ``DeadLetterSink`` whose publish is a PRODUCER span carried by the dead letter."""

    def __init__(self, inner: DeadLetterSink, spans: DeliverySpans, current: _Current) -> None:
        self._inner = inner
        self._spans = spans
        self._current = current

    def publish(self, topic: str, event: OutgoingEvent, extensions: Mapping[str, str]) -> None:
        span = self._spans.start(
            f"{topic} publish",
            SpanKind.PRODUCER,
            self._current.span,
            {
                "messaging.system": "kafka",
                "messaging.operation.type": "send",
                "messaging.destination.name": topic,
                "minimart.dead_letter.code": extensions.get("knativeerrorcode", ""),
            },
        )
        try:
            event = replace(event, trace={**event.trace, **span.headers()})
            self._inner.publish(topic, event, extensions)
        finally:
            span.end()

    def close(self) -> None:
        close = getattr(self._inner, "close", None)
        if close is not None:
            close()


class TracedDeliverer:
    """Delivers through ``inner``, tracing each record, each attempt and each dead letter
    (``traced_deliverer`` builds it with the dead letters traced too)."""

    def __init__(self, inner: Deliverer, spans: DeliverySpans, current: _Current) -> None:
        self.inner = inner
        self.spec = inner.spec
        self.sink_url = inner.sink_url
        self._spans = spans
        self._current = current

    def new_connection(self) -> SinkConnection:
        return self.inner.new_connection()

    def deliver(
        self, record: Record, conn: SinkConnection, stop: threading.Event
    ) -> DeliveryResult:
        transport, extension, ids = _record_carriers(record)
        span = self._spans.start(
            f"{record.topic} process",
            SpanKind.CONSUMER,
            # transport, then extension
            transport if "traceparent" in transport else extension,
            {
                "messaging.system": "kafka",
                "messaging.operation.type": "process",
                "messaging.destination.name": record.topic,
                "messaging.consumer.group.name": self.spec.consumer_group,
                "messaging.destination.partition.id": str(record.partition),
                "messaging.kafka.offset": record.offset,
                tracing.SERVICE: self.spec.name,
                tracing.ORDER_ID: ids.get("subject", ""),
                tracing.EVENT_ID: ids.get("id", ""),
                tracing.EVENT_TYPE: ids.get("type", ""),
            },
        )
        self._current.span = span

        def attempt(conn: SinkConnection, event: OutgoingEvent, number: int) -> Attempt:
            return self._attempt(span, conn, event, number)

        try:
            result = self.inner.deliver(record, conn, stop, attempt=attempt)
            span.set(tracing.OUTCOME, result.outcome.value)
            span.set("minimart.delivery.attempts", result.attempts)
            if result.outcome is not Outcome.DELIVERED:
                span.fail(result.outcome.value)
            return result
        except BaseException as exc:
            span.record_exception(exc)
            span.fail(f"{type(exc).__name__}: {exc}")
            raise
        finally:
            self._current.span = None
            span.end()

    def _attempt(
        self, parent: DeliverySpan, conn: SinkConnection, event: OutgoingEvent, number: int
    ) -> Attempt:
        span = self._spans.start(
            f"deliver {self.spec.name}",
            SpanKind.CLIENT,
            parent,
            {
                "http.request.method": "POST",
                "url.full": self.sink_url,
                "minimart.delivery.attempt": number,
            },
        )
        try:
            event = replace(event, trace={**event.trace, **span.headers()})
            result = self.inner.attempt(conn, event, number)
            span.set("http.response.status_code", result.status)
            if not result.ok:
                span.set("minimart.delivery.retryable", result.retryable)
                span.fail(result.error or f"HTTP {result.status}")
            return result
        finally:
            span.end()


def traced_deliverer(
    spec: KafkaSourceSpec, sink_url: str, dead_letters: DeadLetterSink | None,
    spans: DeliverySpans, authorization: Callable[[], str] | None = None,
) -> TracedDeliverer:  # fmt: skip
    """A ``Deliverer`` of ``spec`` to ``sink_url`` whose records, attempts and dead letters
    (if it has a dead-letter sink) are spans of ``spans``."""
    current = _Current()
    sink = None if dead_letters is None else TracedDeadLetterSink(dead_letters, spans, current)
    deliverer = Deliverer(spec, sink_url, sink, authorization=authorization)
    return TracedDeliverer(deliverer, spans, current)
