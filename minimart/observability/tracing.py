"""OpenTelemetry tracing: SDK setup from ``Settings``, context propagation, the spans we open.

One order is one trace. The W3C trace context travels:

* in every CloudEvent as the distributed-tracing extension (``ce_traceparent``/``ce_tracestate``:
  the context of the function that created the event),
* in the Kafka record headers (``traceparent``/``tracestate``: the producer span's context),
* in the HTTP request a dispatcher (KafkaSource) makes (``traceparent``: its delivery attempt).

``configure()`` is idempotent and lazy: it is called when a process builds its container or
in the dispatcher's ``main``. Without an exporter configured (no OTLP endpoint, no trace file)
the SDK is not installed and every span here is a no-op.
"""

from __future__ import annotations

import json
import logging
import os
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Protocol

from opentelemetry import context as otel_context
from opentelemetry import propagate, trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult
from opentelemetry.sdk.trace.sampling import (
    ALWAYS_ON,
    Decision,
    ParentBased,
    Sampler,
    SamplingResult,
    TraceIdRatioBased,
)
from opentelemetry.trace import Span, SpanKind, Status, StatusCode
from opentelemetry.util.types import Attributes

from minimart.settings import Settings

log = logging.getLogger(__name__)

TRACER_NAME = "minimart"
# Span attributes every saga span carries (the trace CLI finds an order's trace by ORDER_ID).
ORDER_ID = "minimart.order.id"
SERVICE = "minimart.service"
OUTCOME = "minimart.outcome"
EVENT_ID = "cloudevents.event_id"
EVENT_TYPE = "cloudevents.event_type"
EVENT_SOURCE = "cloudevents.event_source"
TRACE_HEADERS = ("traceparent", "tracestate")
FILE_EXPORT_DELAY_MS = 200
# Client libraries traced: PostgreSQL by db_tracing (a span per unit of work), the others with
# their OpenTelemetry instrumentation packages.
CLIENT_LIBRARIES = ("psycopg", "pymongo", "redis", "kafka")

_lock = threading.Lock()
_provider: TracerProvider | None = None
_instrumented: set[str] = set()


class _EntryPointRoots(Sampler):
    """Root spans only where work enters the system (HTTP servers, consumers, producers).

    A database or Redis call outside any request (migrations, the outbox relay's polling)
    would otherwise be a trace of its own every second. Of the entry points, ``ratio`` of the
    traces are kept (by trace id); every later hop follows the root's decision (``ParentBased``
    and the sampled flag of ``traceparent``), so an order is traced whole or not at all.
    """

    def __init__(self, ratio: float = 1.0) -> None:
        self._roots: Sampler = ALWAYS_ON if ratio >= 1.0 else TraceIdRatioBased(ratio)

    def should_sample(
        self,
        parent_context: otel_context.Context | None,
        trace_id: int,
        name: str,
        kind: SpanKind | None = None,
        attributes: Attributes = None,
        links: Sequence[trace.Link] | None = None,
        trace_state: trace.TraceState | None = None,
    ) -> SamplingResult:
        if kind in (SpanKind.SERVER, SpanKind.CONSUMER, SpanKind.PRODUCER):
            return self._roots.should_sample(
                parent_context, trace_id, name, kind, attributes, links
            )
        return SamplingResult(Decision.DROP)

    def get_description(self) -> str:
        return "EntryPointRoots"


def _hex(value: int, width: int) -> str:
    return f"{value:0{width}x}"


_PLAIN_TYPES = (str, int, float, bool, type(None))


def _attributes(attributes: Mapping[str, Any] | None) -> dict[str, Any]:
    if not attributes:
        return {}
    # The SDK's BoundedAttributes iterates in Python, taking a lock per key; its plain dict
    # (when it has one) reads the same items at C speed.
    items = getattr(attributes, "_dict", attributes)
    return {k: v if type(v) in _PLAIN_TYPES else _plain(v) for k, v in items.items()}


def span_to_json(span: ReadableSpan, with_resource: bool = True) -> dict[str, Any]:
    """One span as a flat, OTLP-JSON-like document (ids in hex, times in Unix nanoseconds)."""
    ctx = span.get_span_context()
    parent = span.parent
    resource = span.resource.attributes if span.resource else {}
    status = span.status
    document = {
        "traceId": format(ctx.trace_id, "032x") if ctx else "",
        "spanId": format(ctx.span_id, "016x") if ctx else "",
        "parentSpanId": format(parent.span_id, "016x") if parent else "",
        "name": span.name,
        "kind": span.kind.name,
        "startTimeUnixNano": span.start_time,
        "endTimeUnixNano": span.end_time,
        "service": resource.get("service.name", ""),
        "attributes": _attributes(span.attributes),
        "status": {"code": status.status_code.name, "message": status.description or ""},
        "events": [
            {
                "name": event.name,
                "timeUnixNano": event.timestamp,
                "attributes": _attributes(event.attributes),
            }
            for event in span.events
        ]
        if span.events
        else [],
    }
    if with_resource:
        document["resource"] = _attributes(resource)
    return document


def _plain(value: Any) -> Any:
    if isinstance(value, str | int | float | bool) or value is None:
        return value
    if isinstance(value, Sequence):
        return [_plain(v) for v in value]
    return str(value)


_encode = json.JSONEncoder(separators=(",", ":")).encode


def resource_attributes(service: str) -> dict[str, Any]:
    """What a minimart process says about itself on every span it writes."""
    return {"service.name": service, "service.namespace": "minimart", "process.pid": os.getpid()}


def span_line(document: Mapping[str, Any], resource_json: str) -> str:
    """One line of a span file: ``document`` (``span_to_json``'s, without the resource) with
    the resource spliced in pre-encoded (it is the same for every span of a process)."""
    body = _encode(document)
    return f'{body[:-1]},"resource":{resource_json}}}\n'


class AppendOnlyFile:
    """A file several processes append to: opened ``O_APPEND`` on the first write (not at
    construction), each payload one ``write`` call, so one process's lines stay whole."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._fd: int | None = None
        self._lock = threading.Lock()

    def write(self, payload: bytes) -> bool:
        """Append ``payload``; False (and logged) when the file cannot be written."""
        try:
            with self._lock:
                if self._fd is None:
                    self.path.parent.mkdir(parents=True, exist_ok=True)
                    self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
                os.write(self._fd, payload)
        except OSError:
            log.exception("cannot write spans to %s", self.path)
            return False
        return True

    def close(self) -> None:
        with self._lock:
            if self._fd is not None:
                os.close(self._fd)
                self._fd = None


class JsonLinesSpanExporter(SpanExporter):
    """Appends spans to a file, one JSON document per line (``python -m minimart.local trace``).

    Each export is one ``write`` on an ``O_APPEND`` descriptor, so several worker processes
    may share a file. The file is opened on the first export, not at construction.
    """

    def __init__(self, path: str | Path) -> None:
        self.file = AppendOnlyFile(path)
        self._resources: dict[int, tuple[Any, str]] = {}  # id -> (resource, its JSON)

    def _resource_json(self, span: ReadableSpan) -> str:
        """The span's resource as JSON, serialised once per resource (one per process)."""
        cached = self._resources.get(id(span.resource))
        if cached is None or cached[0] is not span.resource:
            attributes = dict(span.resource.attributes) if span.resource else {}
            text = _encode({k: _plain(v) for k, v in attributes.items()})
            cached = self._resources[id(span.resource)] = (span.resource, text)
        return cached[1]

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        payload = "".join(
            span_line(span_to_json(s, with_resource=False), self._resource_json(s)) for s in spans
        )
        ok = self.file.write(payload.encode())
        return SpanExportResult.SUCCESS if ok else SpanExportResult.FAILURE

    def shutdown(self) -> None:
        self.file.close()

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return True


def configure(settings: Settings, instrument: Sequence[str] = CLIENT_LIBRARIES) -> bool:
    """Install the SDK once per process, from ``settings``; whether tracing is on.

    ``instrument`` names the client libraries whose OpenTelemetry instrumentation to enable;
    one that fails to load is logged and skipped (the function still runs, untraced there).
    """
    global _provider
    with _lock:
        if _provider is None:
            if not settings.otlp_endpoint and not settings.trace_file:
                return False
            _provider = _new_provider(settings)
            trace.set_tracer_provider(_provider)
            _forget_tracer()
        for library in instrument:
            if library not in _instrumented:
                _instrument(library, _provider)
    return True


def _forget_tracer() -> None:
    global _tracer
    _tracer = None


def _new_provider(settings: Settings) -> TracerProvider:
    resource = Resource.create(resource_attributes(settings.service_name))
    sampler = ParentBased(root=_EntryPointRoots(settings.trace_sample_ratio))
    provider = TracerProvider(resource=resource, sampler=sampler)
    if settings.otlp_endpoint:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        endpoint = settings.otlp_endpoint.rstrip("/") + "/v1/traces"
        provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(endpoint=endpoint)))
    if settings.trace_file:
        provider.add_span_processor(
            BatchSpanProcessor(
                JsonLinesSpanExporter(settings.trace_file),
                schedule_delay_millis=FILE_EXPORT_DELAY_MS,
            )
        )
    return provider


def _instrument(library: str, provider: TracerProvider) -> None:
    try:
        if library == "psycopg":
            from minimart.observability import db_tracing

            db_tracing.instrument(provider.get_tracer(TRACER_NAME))
        elif library == "pymongo":
            from opentelemetry.instrumentation.pymongo import PymongoInstrumentor

            PymongoInstrumentor().instrument(tracer_provider=provider)
        elif library == "redis":
            from opentelemetry.instrumentation.redis import RedisInstrumentor

            RedisInstrumentor().instrument(tracer_provider=provider)
        elif library == "kafka":
            from opentelemetry.instrumentation.kafka import KafkaInstrumentor

            KafkaInstrumentor().instrument(tracer_provider=provider)
        else:
            raise ValueError(f"no instrumentation for {library!r}")
    except Exception:  # tracing must never stop a function from serving
        log.exception("OpenTelemetry instrumentation of %s failed; not traced", library)
        return
    _instrumented.add(library)


def enabled() -> bool:
    return _provider is not None


def flush(timeout_s: float = 5.0) -> None:
    if _provider is not None:
        _provider.force_flush(int(timeout_s * 1000))


_tracer: trace.Tracer | None = None


def tracer() -> trace.Tracer:
    """minimart's tracer (looked up once: ``get_tracer`` cost ~5% of a dispatcher's CPU)."""
    global _tracer
    if _tracer is None:
        _tracer = trace.get_tracer(TRACER_NAME)
    return _tracer


# -- propagation -------------------------------------------------------------------------


class Carrier(Protocol):
    """HTTP headers, CloudEvent attributes, a dict: anything with string items."""

    def items(self) -> Iterable[tuple[str, Any]]: ...


def extract(*carriers: Carrier) -> otel_context.Context:
    """The context of the first carrier that has a ``traceparent`` (an empty one otherwise)."""
    for carrier in carriers:
        lowered = {k.lower(): str(v) for k, v in carrier.items() if k.lower() in TRACE_HEADERS}
        if "traceparent" in lowered:
            return propagate.extract(lowered)
    return otel_context.Context()


def transport_headers(headers: Any) -> dict[str, str]:
    """The trace headers of an HTTP request (``headers.get`` by name: a WSGI request's
    headers are built from its environ on every iteration)."""
    return {name: value for name in TRACE_HEADERS if (value := headers.get(name))}


def current_headers() -> dict[str, str]:
    """``traceparent``/``tracestate`` of the current span ({} when there is none)."""
    carrier: dict[str, str] = {}
    propagate.inject(carrier)
    return {k: v for k, v in carrier.items() if k in TRACE_HEADERS}


def headers_of(span: Span) -> dict[str, str]:
    """``traceparent``/``tracestate`` of ``span`` (W3C trace context), written directly: what
    ``propagate.inject`` writes for it, without a context to attach first."""
    ctx = span.get_span_context()
    if not ctx.is_valid:
        return {}
    headers = {"traceparent": f"00-{ctx.trace_id:032x}-{ctx.span_id:016x}-{ctx.trace_flags:02x}"}
    if ctx.trace_state:
        headers["tracestate"] = ctx.trace_state.to_header()
    return headers


def kafka_header_injector(transport: bool = True) -> Callable[[list[tuple[str, bytes]]], None]:
    """For ``KafkaPublisher``: the CloudEvents distributed-tracing extension on each record
    (``ce_traceparent``), plus the ``traceparent`` header when the kafka-python
    instrumentation (which writes that header from its producer span) is not active and
    ``transport`` (a publisher that writes it from its own producer span passes False)."""

    def inject(headers: list[tuple[str, bytes]]) -> None:
        carrier = current_headers()
        present = {name for name, _ in headers}
        for name, value in carrier.items():
            if f"ce_{name}" not in present:
                headers.append((f"ce_{name}", value.encode()))
            if transport and "kafka" not in _instrumented and name not in present:
                headers.append((name, value.encode()))

    return inject


@contextmanager
def producer_span(topic: str) -> Iterator[Span]:
    """A PRODUCER span ``<topic> send`` around one record's hand-off to a Kafka client, named
    and annotated as kafka-python's instrumentation does (for a client it does not trace)."""
    with tracer().start_as_current_span(
        f"{topic} send",
        kind=SpanKind.PRODUCER,
        attributes={"messaging.system": "kafka", "messaging.destination": topic},
    ) as span:
        yield span


@contextmanager
def traced_record(topic: str, headers: list[tuple[str, bytes]]) -> Iterator[None]:
    """Around one record's hand-off to a Kafka client that no instrumentation traces: its
    PRODUCER span, whose ``traceparent`` (and ``tracestate``) are added to ``headers`` unless
    they are there already (``RdkafkaPublisher``'s ``trace_record``)."""
    with producer_span(topic) as span:
        present = {name for name, _ in headers}
        headers += [
            (name, text.encode()) for name, text in headers_of(span).items() if name not in present
        ]
        yield


# -- spans -------------------------------------------------------------------------------


@contextmanager
def server_span(
    name: str, parent: otel_context.Context, attributes: Mapping[str, Any]
) -> Iterator[Span]:
    """A SERVER span (a function handling a request or an event) under ``parent``."""
    with tracer().start_as_current_span(
        name, context=parent, kind=SpanKind.SERVER, attributes=dict(attributes)
    ) as span:
        yield span


def annotate(attributes: Mapping[str, Any]) -> None:
    """Set attributes on the current span (e.g. the order id once it is known)."""
    span = trace.get_current_span()
    for key, value in attributes.items():
        if value is not None:
            span.set_attribute(key, value)


def fail(span: Span, message: str) -> None:
    span.set_status(Status(StatusCode.ERROR, message))
