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
from collections.abc import Mapping
from dataclasses import replace

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.trace import SpanKind

from minimart.local.delivery import (
    Attempt,
    DeadLetterSink,
    Deliverer,
    DeliveryResult,
    Outcome,
    OutgoingEvent,
    Record,
    SinkConnection,
)
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


class TracedDeadLetterSink:
    """A ``DeadLetterSink`` whose publish is a PRODUCER span carried by the dead letter."""

    def __init__(self, inner: DeadLetterSink) -> None:
        self._inner = inner

    def publish(self, topic: str, event: OutgoingEvent, extensions: Mapping[str, str]) -> None:
        with tracing.tracer().start_as_current_span(
            f"{topic} publish",
            kind=SpanKind.PRODUCER,
            attributes={
                "messaging.system": "kafka",
                "messaging.operation.type": "send",
                "messaging.destination.name": topic,
                "minimart.dead_letter.code": extensions.get("knativeerrorcode", ""),
            },
        ):
            carrier = tracing.current_headers()
            if carrier:
                event = replace(event, trace={**event.trace, **carrier})
            self._inner.publish(topic, event, extensions)

    def close(self) -> None:
        close = getattr(self._inner, "close", None)
        if close is not None:
            close()


class TracedDeliverer:
    """Delivers through ``inner``, tracing each record, each attempt and each dead letter
    (give ``inner`` a ``TracedDeadLetterSink`` for the last)."""

    def __init__(self, inner: Deliverer) -> None:
        self.inner = inner
        self.spec = inner.spec
        self.sink_url = inner.sink_url

    def new_connection(self) -> SinkConnection:
        return self.inner.new_connection()

    def deliver(
        self, record: Record, conn: SinkConnection, stop: threading.Event
    ) -> DeliveryResult:
        transport, extension, ids = _record_carriers(record)
        tracer = tracing.tracer()
        span = tracer.start_span(
            f"{record.topic} process",
            context=tracing.extract(transport, extension),
            kind=SpanKind.CONSUMER,
            attributes={
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
        # Current while the record is handled (the dead-letter span is its child); the attempt
        # spans get it explicitly (cheaper than making each current in turn).
        parent = trace.set_span_in_context(span)
        token = otel_context.attach(parent)

        def attempt(conn: SinkConnection, event: OutgoingEvent, number: int) -> Attempt:
            return self._attempt(tracer, parent, conn, event, number)

        try:
            result = self.inner.deliver(record, conn, stop, attempt=attempt)
            span.set_attribute(tracing.OUTCOME, result.outcome.value)
            span.set_attribute("minimart.delivery.attempts", result.attempts)
            if result.outcome is not Outcome.DELIVERED:
                tracing.fail(span, result.outcome.value)
            return result
        except BaseException as exc:
            span.record_exception(exc)
            tracing.fail(span, f"{type(exc).__name__}: {exc}")
            raise
        finally:
            otel_context.detach(token)
            span.end()

    def _attempt(
        self,
        tracer: trace.Tracer,
        parent: otel_context.Context,
        conn: SinkConnection,
        event: OutgoingEvent,
        number: int,
    ) -> Attempt:
        span = tracer.start_span(
            f"deliver {self.spec.name}",
            context=parent,
            kind=SpanKind.CLIENT,
            attributes={
                "http.request.method": "POST",
                "url.full": self.sink_url,
                "minimart.delivery.attempt": number,
            },
        )
        try:
            carrier = tracing.headers_of(span)
            if carrier:
                event = replace(event, trace={**event.trace, **carrier})
            result = self.inner.attempt(conn, event, number)
            span.set_attribute("http.response.status_code", result.status)
            if not result.ok:
                span.set_attribute("minimart.delivery.retryable", result.retryable)
                tracing.fail(span, result.error or f"HTTP {result.status}")
            return result
        finally:
            span.end()
