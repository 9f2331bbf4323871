"""Read the JSON-lines span files the processes write, and show one order's trace as a tree.

No collector needed: every local process appends its spans to ``<state_dir>/traces/*.jsonl``
(``tracing.JsonLinesSpanExporter``). An order's trace is found through the spans that carry
its id (``minimart.order.id``).
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from minimart.observability.tracing import ORDER_ID, OUTCOME


@dataclass
class SpanRecord:
    trace_id: str
    span_id: str
    parent_id: str
    name: str
    kind: str
    service: str
    start_ns: int
    end_ns: int
    attributes: dict[str, Any]
    status: str
    status_message: str = ""
    children: list[SpanRecord] = field(default_factory=list)

    @property
    def duration_ms(self) -> float:
        return (self.end_ns - self.start_ns) / 1e6

    @classmethod
    def from_json(cls, doc: dict[str, Any]) -> SpanRecord:
        status = doc.get("status") or {}
        return cls(
            trace_id=doc["traceId"],
            span_id=doc["spanId"],
            parent_id=doc.get("parentSpanId") or "",
            name=doc.get("name", ""),
            kind=doc.get("kind", ""),
            service=doc.get("service", ""),
            start_ns=int(doc.get("startTimeUnixNano") or 0),
            end_ns=int(doc.get("endTimeUnixNano") or 0),
            attributes=dict(doc.get("attributes") or {}),
            status=status.get("code", "UNSET"),
            status_message=status.get("message", ""),
        )


def trace_dir(state_dir: Path) -> Path:
    return state_dir / "traces"


def read_spans(paths: Iterable[Path]) -> Iterator[SpanRecord]:
    """Every span of the files (a torn last line of a file being written is skipped)."""
    for path in paths:
        try:
            lines = path.read_text(errors="replace").splitlines()
        except FileNotFoundError:
            continue
        for line in lines:
            try:
                yield SpanRecord.from_json(json.loads(line))
            except (ValueError, KeyError, TypeError):
                continue


def span_files(directory: Path) -> list[Path]:
    return sorted(directory.glob("*.jsonl"))


def order_traces(spans: Iterable[SpanRecord], order_id: str) -> dict[str, list[SpanRecord]]:
    """The traces (by trace id) that hold a span of ``order_id``: all their spans."""
    by_trace: dict[str, list[SpanRecord]] = defaultdict(list)
    wanted: set[str] = set()
    for span in spans:
        by_trace[span.trace_id].append(span)
        if span.attributes.get(ORDER_ID) == order_id:
            wanted.add(span.trace_id)
    return {
        trace_id: sorted(by_trace[trace_id], key=lambda s: s.start_ns)
        for trace_id in sorted(wanted, key=lambda t: min(s.start_ns for s in by_trace[t]))
    }


def load_order_traces(state_dir: Path, order_id: str) -> dict[str, list[SpanRecord]]:
    return order_traces(read_spans(span_files(trace_dir(state_dir))), order_id)


def build_tree(spans: list[SpanRecord]) -> list[SpanRecord]:
    """Link children to parents; the roots (no parent, or a parent not in the files)."""
    by_id = {span.span_id: span for span in spans}
    for span in spans:
        span.children = []
    roots = []
    for span in sorted(spans, key=lambda s: s.start_ns):
        parent = by_id.get(span.parent_id) if span.parent_id else None
        if parent is None:
            roots.append(span)
        else:
            parent.children.append(span)
    return roots


def format_trace(spans: list[SpanRecord]) -> str:
    """The span tree, one line per span: offset from the trace's start, duration, service."""
    roots = build_tree(spans)
    if not spans:
        return "(no spans)"
    t0 = min(s.start_ns for s in spans)
    t1 = max(s.end_ns for s in spans)
    lines = [
        f"trace {spans[0].trace_id}: {len(spans)} spans, {(t1 - t0) / 1e6:.1f} ms, "
        f"services: {', '.join(sorted({s.service for s in spans if s.service}))}"
    ]

    def walk(span: SpanRecord, prefix: str, last: bool, depth: int) -> None:
        branch = "" if depth == 0 else ("└─ " if last else "├─ ")
        notes = []
        if OUTCOME in span.attributes:
            notes.append(f"outcome={span.attributes[OUTCOME]}")
        for key in ("http.response.status_code", "minimart.delivery.attempt"):
            if key in span.attributes:
                notes.append(f"{key.rsplit('.', 1)[-1]}={span.attributes[key]}")
        if span.status == "ERROR":
            notes.append(f"ERROR {span.status_message}".rstrip())
        offset = (span.start_ns - t0) / 1e6
        lines.append(
            f"{offset:9.1f} ms {span.duration_ms:8.1f} ms  {prefix}{branch}"
            f"{span.name} [{span.service} {span.kind.lower()}]"
            + (f"  {' '.join(notes)}" if notes else "")
        )
        child_prefix = prefix + ("" if depth == 0 else ("   " if last else "│  "))
        for i, child in enumerate(span.children):
            walk(child, child_prefix, i == len(span.children) - 1, depth + 1)

    for root in roots:
        walk(root, "", True, 0)
    return "\n".join(lines)
