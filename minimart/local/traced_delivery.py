"""Tracing of the local KafkaSource dispatcher, around ``Deliverer`` (delivery.py).

Per record, a CONSUMER span ``<topic> process`` whose parent is the record's trace context
(its ``traceparent`` header, else the CloudEvent's ``ce_traceparent`` extension); under it a
CLIENT span per HTTP attempt (so every retry shows, with the status the sink answered), whose
context the request carries; and a PRODUCER span when the event is dead-lettered, whose
context the dead letter's ``traceparent`` header carries.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping
from dataclasses import replace

from opentelemetry.trace import SpanKind

from minimart.local.delivery import (
    Attempt,
    DeadLetterSink,
    Deliverer,
    Outcome,
    OutgoingEvent,
    Pool,
    Record,
)
from minimart.manifests import KafkaSourceSpec
from minimart.observability import tracing


def _record_carriers(record: Record) -> tuple[dict[str, str], dict[str, str]]:
    """(transport headers, CloudEvent extension) trace carriers of a record."""
    transport: dict[str, str] = {}
    extension: dict[str, str] = {}
    for name, raw in record.headers or ():
        lowered = name.lower()
        value = (raw or b"").decode("utf-8", errors="replace")
        if lowered in tracing.TRACE_HEADERS:
            transport.setdefault(lowered, value)
        elif lowered.startswith("ce_") and lowered[3:] in tracing.TRACE_HEADERS:
            extension.setdefault(lowered[3:], value)
    return transport, extension


def _header(record: Record, name: str) -> str:
    for key, raw in record.headers or ():
        if key.lower() == name:
            return (raw or b"").decode("utf-8", errors="replace")
    return ""


class _State(threading.local):
    attempts = 0
    dead_lettered = False
    last_status = 0


class TracedDeadLetterSink:
    """A ``DeadLetterSink`` whose publish is a PRODUCER span carried by the dead letter."""

    def __init__(self, inner: DeadLetterSink, state: _State | None = None) -> None:
        self._inner = inner
        self._state = state or _State()

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
            self._state.dead_lettered = True

    def close(self) -> None:
        close = getattr(self._inner, "close", None)
        if close is not None:
            close()


class TracedDeliverer(Deliverer):
    """A ``Deliverer`` that traces each record, each attempt and each dead letter."""

    def __init__(
        self,
        spec: KafkaSourceSpec,
        sink_url: str,
        dead_letters: DeadLetterSink | None,
        sleep: Callable[[threading.Event, float], bool] | None = None,
    ) -> None:
        self._state = _State()
        traced = None if dead_letters is None else TracedDeadLetterSink(dead_letters, self._state)
        super().__init__(spec, sink_url, traced, sleep)

    def deliver(self, record: Record, pool: Pool, stop: threading.Event) -> bool:
        transport, extension = _record_carriers(record)
        state = self._state
        state.attempts, state.dead_lettered, state.last_status = 0, False, 0
        with tracing.tracer().start_as_current_span(
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
                tracing.ORDER_ID: _header(record, "ce_subject"),
                tracing.EVENT_ID: _header(record, "ce_id"),
                tracing.EVENT_TYPE: _header(record, "ce_type"),
            },
        ) as span:
            done = super().deliver(record, pool, stop)
            if not done:
                outcome = "interrupted"
            elif state.dead_lettered:
                outcome = Outcome.DEAD_LETTERED.value
            elif 200 <= state.last_status < 300:
                outcome = Outcome.DELIVERED.value
            else:
                outcome = Outcome.DROPPED.value
            span.set_attribute(tracing.OUTCOME, outcome)
            span.set_attribute("minimart.delivery.attempts", state.attempts)
            if outcome != Outcome.DELIVERED.value:
                tracing.fail(span, outcome)
            return done

    def attempt(self, pool: Pool, event: OutgoingEvent) -> Attempt:
        state = self._state
        state.attempts += 1
        with tracing.tracer().start_as_current_span(
            f"deliver {self.spec.name}",
            kind=SpanKind.CLIENT,
            attributes={
                "http.request.method": "POST",
                "url.full": self.sink_url,
                "minimart.delivery.attempt": state.attempts,
            },
        ) as span:
            carrier = tracing.current_headers()
            if carrier:
                event = replace(event, trace={**event.trace, **carrier})
            result = super().attempt(pool, event)
            state.last_status = result.status
            span.set_attribute("http.response.status_code", result.status)
            if not result.ok:
                span.set_attribute("minimart.delivery.retryable", result.retryable)
                tracing.fail(span, result.error or f"HTTP {result.status}")
            return result
