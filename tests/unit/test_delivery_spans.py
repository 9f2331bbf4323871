"""The dispatcher's span file: the documents the trace view reads, linked and sampled as the
functions' SDK links and samples theirs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from opentelemetry.trace import SpanKind

from minimart.local.delivery_spans import FileSpans
from minimart.observability.trace_view import build_tree, read_spans

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT_ID = "00f067aa0ba902b7"
SAMPLED = {"traceparent": f"00-{TRACE_ID}-{PARENT_ID}-01", "tracestate": "mm=1"}


def lines(path: Path) -> list[dict[str, object]]:
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def test_a_record_span_and_its_attempt_continue_the_records_trace(tmp_path: Path) -> None:
    spans = FileSpans(tmp_path / "spans.jsonl", "inventory-source")

    record = spans.start("t process", SpanKind.CONSUMER, SAMPLED, {"messaging.kafka.offset": 7})
    attempt = spans.start("deliver inventory-source", SpanKind.CLIENT, record, {})
    sent = attempt.headers()
    attempt.set("http.response.status_code", 200)
    attempt.end()
    assert lines(tmp_path / "spans.jsonl") == []  # an attempt goes out with its record's span
    record.end()

    written = {doc["name"]: doc for doc in lines(tmp_path / "spans.jsonl")}
    consumer, client = written["t process"], written["deliver inventory-source"]
    assert consumer["traceId"] == client["traceId"] == TRACE_ID
    assert consumer["parentSpanId"] == PARENT_ID
    assert client["parentSpanId"] == consumer["spanId"]
    assert sent == {"traceparent": f"00-{TRACE_ID}-{client['spanId']}-01", "tracestate": "mm=1"}
    assert consumer["kind"] == "CONSUMER" and consumer["service"] == "inventory-source"
    assert consumer["attributes"] == {"messaging.kafka.offset": 7}
    assert client["attributes"] == {"http.response.status_code": 200}
    assert consumer["endTimeUnixNano"] >= consumer["startTimeUnixNano"] > 0  # type: ignore[operator]
    assert consumer["resource"]["service.name"] == "inventory-source"  # type: ignore[index]
    (root,) = build_tree(list(read_spans([tmp_path / "spans.jsonl"])))
    assert (root.name, [s.name for s in root.children]) == (
        "t process",
        ["deliver inventory-source"],
    )


def test_a_failure_and_an_exception_are_kept_on_the_span(tmp_path: Path) -> None:
    spans = FileSpans(tmp_path / "spans.jsonl", "s")
    span = spans.start("t process", SpanKind.CONSUMER, SAMPLED, {})
    span.record_exception(ValueError("bad"))
    span.fail("dead_lettered")
    span.end()

    (doc,) = lines(tmp_path / "spans.jsonl")
    assert doc["status"] == {"code": "ERROR", "message": "dead_lettered"}
    assert doc["events"][0]["attributes"]["exception.type"] == "ValueError"  # type: ignore[index]


def test_a_parent_sampled_out_is_followed_and_nothing_is_written(tmp_path: Path) -> None:
    spans = FileSpans(tmp_path / "spans.jsonl", "s")
    unsampled = {"traceparent": f"00-{TRACE_ID}-{PARENT_ID}-00"}

    record = spans.start("t process", SpanKind.CONSUMER, unsampled, {})
    attempt = spans.start("deliver", SpanKind.CLIENT, record, {})
    headers = attempt.headers()
    attempt.end()
    record.end()

    assert headers["traceparent"].startswith(f"00-{TRACE_ID}-")
    assert headers["traceparent"].endswith("-00")
    assert lines(tmp_path / "spans.jsonl") == []


@pytest.mark.parametrize(
    "traceparent",
    [
        f"ff-{TRACE_ID}-{PARENT_ID}-01",  # version ff is invalid
        f"00-{'0' * 32}-{PARENT_ID}-01",  # all-zero trace id
        f"00-{TRACE_ID}-{'0' * 16}-01",  # all-zero parent id
        f"00-{TRACE_ID}-{PARENT_ID}-01-extra",  # version 00 has four fields
        f"00-{TRACE_ID.upper()}-{PARENT_ID}-01",  # upper-case hex
        "garbage",
    ],
)
def test_an_invalid_traceparent_starts_a_new_trace(tmp_path: Path, traceparent: str) -> None:
    spans = FileSpans(tmp_path / "spans.jsonl", "s")
    span = spans.start("t process", SpanKind.CONSUMER, {"traceparent": traceparent}, {})
    span.end()

    (doc,) = lines(tmp_path / "spans.jsonl")
    assert doc["traceId"] != TRACE_ID and doc["parentSpanId"] == ""


def test_new_traces_follow_the_sample_ratio(tmp_path: Path) -> None:
    never = FileSpans(tmp_path / "never.jsonl", "s", sample_ratio=0.0)
    half = FileSpans(tmp_path / "half.jsonl", "s", sample_ratio=0.5)
    for _ in range(400):
        never.start("root", SpanKind.CONSUMER, None, {}).end()
        half.start("root", SpanKind.CONSUMER, None, {}).end()

    assert lines(tmp_path / "never.jsonl") == []
    assert 120 < len(lines(tmp_path / "half.jsonl")) < 280
