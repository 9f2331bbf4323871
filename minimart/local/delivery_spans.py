"""The dispatcher's spans: written straight to its span file, or through the SDK for OTLP.

The dispatcher stands for Knative's data plane, so how it records its spans is its own
business: through the OpenTelemetry SDK, its two spans per record cost ~240 µs of CPU (the
SDK validates every attribute, runs the span processors, and a batching thread encodes the
spans), about half of what its whole delivery path costs (``python -m bench.dispatcher_cpu``).
Its spans have a fixed shape, so ``FileSpans`` writes them itself: the documents of the span
file (``tracing.span_to_json``'s, read by ``trace_view``), one ``write`` per span on an
``O_APPEND`` descriptor, sampled as the functions' SDK samples (the parent's sampled flag;
a root by trace id ratio). With an OTLP endpoint configured, ``SdkSpans`` hands the same
spans to the SDK instead, so they reach the collector.
"""

from __future__ import annotations

import json
import random
import re
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Protocol

from opentelemetry import trace
from opentelemetry.trace import SpanKind

from minimart.observability import tracing
from minimart.settings import Settings

_TRACEPARENT = re.compile(r"^([0-9a-f]{2})-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})")
_SAMPLED = 0x01
_ID_SPACE = 1 << 64


class DeliverySpan(Protocol):
    def set(self, key: str, value: Any) -> None: ...
    def fail(self, message: str) -> None: ...
    def record_exception(self, exc: BaseException) -> None: ...
    def headers(self) -> dict[str, str]: ...
    def end(self) -> None: ...


# A new span's parent: a span of the same kind, or trace headers (W3C trace context).
Parent = DeliverySpan | Mapping[str, str] | None


class DeliverySpans(Protocol):
    def start(
        self, name: str, kind: SpanKind, parent: Parent, attributes: Mapping[str, Any]
    ) -> DeliverySpan:
        """A span under ``parent``."""
        ...


def open_spans(settings: Settings) -> DeliverySpans | None:
    """The dispatcher's spans as configured: None when tracing is off."""
    if settings.otlp_endpoint:
        return SdkSpans() if tracing.configure(settings, instrument=()) else None
    if settings.trace_file:
        return FileSpans(Path(settings.trace_file), settings.service_name,
                         settings.trace_sample_ratio)  # fmt: skip
    return None


def _valid(found: re.Match[str], length: int) -> bool:
    """W3C trace context: version ff is invalid, 00 has no more fields, ids are not all 0."""
    version, trace_id, span_id = found[1], found[2], found[3]
    if version == "ff" or (version == "00" and length != 55):
        return False
    return bool(trace_id.strip("0") and span_id.strip("0"))


# -- the span file ------------------------------------------------------------------------


class _FileSpan:
    """A span of the file. The lines of a span's children (its attempts, its dead letter)
    wait for it, so one record's spans go out in one ``write``."""

    __slots__ = ("_ctx", "_doc", "_ended", "_file", "_held", "_root", "sampled")

    def __init__(
        self, file: FileSpans, doc: dict[str, Any], sampled: bool, state: str,
        parent: _FileSpan | None,
    ) -> None:  # fmt: skip
        self._file = file
        self._doc = doc
        self.sampled = sampled
        self._ctx = (doc["traceId"], doc["spanId"], state)
        self._root: _FileSpan | None = None if parent is None else (parent._root or parent)
        self._held: list[bytes] = []
        self._ended = False

    @property
    def context(self) -> tuple[str, str, str]:
        return self._ctx

    def set(self, key: str, value: Any) -> None:
        self._doc["attributes"][key] = value

    def fail(self, message: str) -> None:
        self._doc["status"] = {"code": "ERROR", "message": message}

    def record_exception(self, exc: BaseException) -> None:
        self._doc["events"].append(
            {
                "name": "exception",
                "timeUnixNano": time.time_ns(),
                "attributes": {
                    "exception.type": type(exc).__name__,
                    "exception.message": str(exc),
                },
            }
        )

    def headers(self) -> dict[str, str]:
        trace_id, span_id, state = self._ctx
        flags = "01" if self.sampled else "00"
        headers = {"traceparent": f"00-{trace_id}-{span_id}-{flags}"}
        if state:
            headers["tracestate"] = state
        return headers

    def end(self) -> None:
        self._ended = True
        if not self.sampled:
            return
        self._doc["endTimeUnixNano"] = time.time_ns()
        line = self._file.line(self._doc)
        root = self._root
        if root is not None and not root._ended:
            root._held.append(line)
        else:
            self._file.write([*self._held, line])
            self._held.clear()


class FileSpans:
    """Spans appended to ``path`` as the span file's JSON lines (one ``write`` each)."""

    def __init__(self, path: Path, service: str, sample_ratio: float = 1.0) -> None:
        self.path = path
        self.service = service
        self._bound = round(min(max(sample_ratio, 0.0), 1.0) * _ID_SPACE)
        self._resource = json.dumps(tracing.resource_attributes(service), separators=(",", ":"))
        self._file = tracing.AppendOnlyFile(path)

    def start(
        self, name: str, kind: SpanKind, parent: Parent, attributes: Mapping[str, Any]
    ) -> DeliverySpan:
        trace_id, parent_id, state, sampled = self._parent(parent)
        span_id = f"{random.getrandbits(64) or 1:016x}"
        doc = {
            "traceId": trace_id,
            "spanId": span_id,
            "parentSpanId": parent_id,
            "name": name,
            "kind": kind.name,
            "startTimeUnixNano": time.time_ns(),
            "endTimeUnixNano": None,
            "service": self.service,
            "attributes": dict(attributes),
            "status": {"code": "UNSET", "message": ""},
            "events": [],
        }
        local_parent = parent if isinstance(parent, _FileSpan) else None
        return _FileSpan(self, doc, sampled, state, local_parent)

    def _parent(self, parent: Parent) -> tuple[str, str, str, bool]:
        """(trace id, parent span id, tracestate, sampled) of a new span under ``parent``."""
        if isinstance(parent, _FileSpan):
            trace_id, span_id, state = parent.context
            return trace_id, span_id, state, parent.sampled
        if parent:
            value = str(parent.get("traceparent", ""))  # type: ignore[union-attr]
            found = _TRACEPARENT.match(value)
            if found and _valid(found, len(value)):
                state = str(parent.get("tracestate", ""))  # type: ignore[union-attr]
                return found[2], found[3], state, bool(int(found[4], 16) & _SAMPLED)
        trace_bits = random.getrandbits(128) or 1
        sampled = (trace_bits & (_ID_SPACE - 1)) < self._bound
        return f"{trace_bits:032x}", "", "", sampled

    def line(self, doc: dict[str, Any]) -> bytes:
        return tracing.span_line(doc, self._resource).encode()

    def write(self, lines: list[bytes]) -> None:
        self._file.write(b"".join(lines))


# -- through the SDK (OTLP) ---------------------------------------------------------------


class _SdkSpan:
    __slots__ = ("span",)

    def __init__(self, span: trace.Span) -> None:
        self.span = span

    def set(self, key: str, value: Any) -> None:
        self.span.set_attribute(key, value)

    def fail(self, message: str) -> None:
        tracing.fail(self.span, message)

    def record_exception(self, exc: BaseException) -> None:
        self.span.record_exception(exc)

    def headers(self) -> dict[str, str]:
        return tracing.headers_of(self.span)

    def end(self) -> None:
        self.span.end()


class SdkSpans:
    """The same spans through the OpenTelemetry SDK ``tracing.configure`` installed."""

    def start(
        self, name: str, kind: SpanKind, parent: Parent, attributes: Mapping[str, Any]
    ) -> DeliverySpan:
        if isinstance(parent, _SdkSpan):
            context = trace.set_span_in_context(parent.span)
        else:
            context = tracing.extract(parent or {})  # type: ignore[arg-type]
        span = tracing.tracer().start_span(name, context=context, kind=kind,
                                           attributes=dict(attributes))  # fmt: skip
        return _SdkSpan(span)
