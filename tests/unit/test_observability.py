"""Tracing and saga metrics without servers: propagation, the span file, the trace tree."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.trace import SpanKind

from minimart.catalog import EventType
from minimart.domain.orders import OrderStatus
from minimart.handlers import order_status
from minimart.handlers.ports import OrderRecord
from minimart.observability import metrics, tracing
from minimart.observability.trace_view import format_trace, order_traces, read_spans
from minimart.settings import Settings, SettingsError
from tests.fakes import FakeOrders
from tests.unit.test_handlers import saga_event


@pytest.mark.parametrize(
    ("reason", "code"),
    [
        ("payment_declined: amount 5 exceeds the credit limit 0", "payment_declined"),
        ("stock_insufficient: SKU-1: requested 3", "stock_insufficient"),
        (None, "none"),
        ("Something Else Entirely, with no code: x", "other"),
        ("x" * 300, "other"),
    ],
)
def test_reason_codes_are_bounded(reason: str | None, code: str) -> None:
    assert metrics.reason_code(reason) == code


def test_an_order_closing_is_told_once_with_its_acceptance_time() -> None:
    created = datetime.now(UTC) - timedelta(seconds=3)
    order = OrderRecord(str(uuid.uuid4()), 402, OrderStatus.PENDING, 500, created_at=created)
    orders = FakeOrders(order)
    heard: list[tuple[OrderStatus, str | None, datetime | None]] = []
    rejected = saga_event(EventType.INVENTORY_REJECTED, order)
    order_status.track(rejected, orders, on_final=lambda *a: heard.append(a))
    order_status.track(rejected, orders, on_final=lambda *a: heard.append(a))  # a replay
    assert heard == [(OrderStatus.CANCELLED, "inventory.rejected: reason", created)]


def test_record_saga_outcome_counts_by_status_and_code() -> None:
    labels = {"status": "CANCELLED", "reason": "payment_declined"}
    before = metrics.SAGA_OUTCOMES.labels(**labels)._value.get()
    metrics.record_saga_outcome("CANCELLED", "payment_declined: no", datetime.now(UTC))
    assert metrics.SAGA_OUTCOMES.labels(**labels)._value.get() == before + 1


def test_extract_prefers_the_first_carrier_with_a_traceparent() -> None:
    transport = {"Traceparent": "00-" + "a" * 32 + "-" + "b" * 16 + "-01"}
    extension = {"traceparent": "00-" + "c" * 32 + "-" + "d" * 16 + "-01"}

    ctx = trace.get_current_span(tracing.extract({}, transport, extension)).get_span_context()
    assert f"{ctx.trace_id:032x}" == "a" * 32
    ctx = trace.get_current_span(tracing.extract({}, extension)).get_span_context()
    assert f"{ctx.span_id:016x}" == "d" * 16


@pytest.fixture
def provider(tmp_path: Path) -> tuple[TracerProvider, Path]:
    path = tmp_path / "spans.jsonl"
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(tracing.JsonLinesSpanExporter(path)))
    return provider, path


def test_spans_written_as_json_lines_form_an_order_tree(
    provider: tuple[TracerProvider, Path],
) -> None:
    tp, path = provider
    tracer = tp.get_tracer("test")
    order_id = str(uuid.uuid4())
    with tracer.start_as_current_span("POST /orders", kind=SpanKind.SERVER) as root:
        root.set_attribute(tracing.ORDER_ID, order_id)
        with tracer.start_as_current_span("minimart.order.created send", kind=SpanKind.PRODUCER):
            headers: list[tuple[str, bytes]] = []
            tracing.kafka_header_injector()(headers)
    with tracer.start_as_current_span("unrelated", kind=SpanKind.SERVER):
        pass
    docs: list[dict[str, Any]] = [json.loads(line) for line in path.read_text().splitlines()]
    assert {d["name"] for d in docs} == {"POST /orders", "minimart.order.created send", "unrelated"}
    traces = order_traces(read_spans([path]), order_id)
    ((_, spans),) = traces.items()
    assert len(spans) == 2
    text = format_trace(spans)
    assert "POST /orders" in text and "└─ minimart.order.created send" in text


def test_the_kafka_injector_adds_the_cloudevents_extension(
    provider: tuple[TracerProvider, Path],
) -> None:
    tracer = provider[0].get_tracer("test")
    headers: list[tuple[str, bytes]] = [("ce_id", b"1")]
    with tracer.start_as_current_span("step", kind=SpanKind.SERVER) as span:
        tracing.kafka_header_injector()(headers)
        trace_id = f"{span.get_span_context().trace_id:032x}"
    names = dict(headers)
    assert trace_id in names["ce_traceparent"].decode()


def test_without_a_span_nothing_is_injected() -> None:
    headers: list[tuple[str, bytes]] = []
    tracing.kafka_header_injector()(headers)
    assert headers == []


def test_a_span_line_is_span_to_json(provider: tuple[TracerProvider, Path]) -> None:
    tp, path = provider
    with tp.get_tracer("test").start_as_current_span("s", attributes={"a": [1, 2]}) as span:
        span.add_event("e", {"k": "v"})
    [line] = path.read_text().splitlines()
    assert json.loads(line) == json.loads(json.dumps(tracing.span_to_json(span)))  # type: ignore[arg-type]


def test_the_sample_ratio_is_decided_at_the_root_and_followed_downstream() -> None:
    sampler = tracing._EntryPointRoots(0.0)
    never = TracerProvider(sampler=tracing.ParentBased(root=sampler))
    with never.get_tracer("t").start_as_current_span("POST", kind=SpanKind.SERVER) as root:
        assert not root.get_span_context().trace_flags.sampled
    downstream = TracerProvider(sampler=tracing.ParentBased(root=tracing._EntryPointRoots(0.0)))
    parent = trace.set_span_in_context(
        trace.NonRecordingSpan(
            trace.SpanContext(1, 2, is_remote=True, trace_flags=trace.TraceFlags(1))
        )
    )
    with downstream.get_tracer("t").start_as_current_span("hop", context=parent) as hop:
        assert hop.get_span_context().trace_flags.sampled  # the root's decision holds


def test_the_sample_ratio_setting_is_a_share() -> None:
    assert Settings.from_env({}).trace_sample_ratio == 1.0
    assert Settings.from_env({"MINIMART_TRACE_SAMPLE_RATIO": "0.1"}).trace_sample_ratio == 0.1
    with pytest.raises(SettingsError, match="MINIMART_TRACE_SAMPLE_RATIO"):
        Settings.from_env({"MINIMART_TRACE_SAMPLE_RATIO": "2"})
