"""An order's trace: its span tree across every process, from the processes' trace files."""

from __future__ import annotations

import time

from minimart.observability import trace_view
from minimart.settings import Settings


def print_order_trace(settings: Settings, order_id: str, wait_s: float = 0.0) -> int:
    """Print the span trees of ``order_id`` (waiting up to ``wait_s`` for them); 1 if none."""
    deadline = time.monotonic() + wait_s
    while True:
        traces = trace_view.load_order_traces(settings.state_dir, order_id)
        if traces or time.monotonic() >= deadline:
            break
        time.sleep(0.2)
    if not traces:
        where = trace_view.trace_dir(settings.state_dir)
        print(f"no spans of order {order_id} in {where}/*.jsonl")
        return 1
    for spans in traces.values():
        print(trace_view.format_trace(spans))
        print()
    return 0
