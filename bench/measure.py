"""One measurement on a running stack: open-loop orders at a rate, then what they cost.

Shared by ``bench.ab`` (both trees) and ``bench.loadtest`` (the capacity that sets the load
test's peak): completions per second while a backlog stands, the throughput of a burst (every
order completed over the time from the first POST to the last completion), end-to-end and POST
latency, and CPU per completed order by component (bench/cpu.py), window and drain included.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Mapping, Sequence
from typing import Any

from bench import cpu as cpu_mod
from bench import load
from bench import run as bench_run
from minimart.settings import Settings

log = logging.getLogger("bench.measure")

# One scrape of the functions' and dispatchers' /metrics (``bench.run.scrape``).
Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def _completed_between(found: Mapping[str, load.Completion], start: float, end: float) -> int:
    return sum(1 for c in found.values() if c.final_at is not None and start <= c.final_at <= end)


def throughput(done: Sequence[load.Completion], started_at: float) -> float | None:
    """Completed orders per second from ``started_at`` (the first POST) to the last one's end."""
    last = max((c.final_at for c in done if c.final_at is not None), default=None)
    if last is None or last <= started_at:
        return None
    return round(len(done) / (last - started_at), 2)


def metrics_urls(settings: Settings, components: Sequence[cpu_mod.Component]) -> list[str]:
    return [
        f"http://{settings.host}:{c.port}/metrics"
        for c in components
        if c.kind in (cpu_mod.FUNCTION, cpu_mod.DISPATCHER)
    ]


def measure_rate(
    label: str,
    settings: Settings,
    components: Sequence[cpu_mod.Component],
    rate: float,
    seconds: float,
    drain_s: float,
) -> dict[str, Any]:
    """Open-loop ``rate`` for ``seconds``; CPU (window and drain) per completed order."""
    return _measured(label, settings, components, rate, seconds, drain_s)[0]


def _measured(
    label: str,
    settings: Settings,
    components: Sequence[cpu_mod.Component],
    rate: float,
    seconds: float,
    drain_s: float,
) -> tuple[dict[str, Any], Samples, Samples]:
    """``measure_rate``'s figures, with the /metrics scraped before and after them."""
    urls = metrics_urls(settings, components)
    meter = cpu_mod.ComponentCpu(components)
    before = bench_run.scrape(urls)
    load_before = os.getloadavg()[0]
    meter.start()
    result = load.run_open_loop(
        settings.host, settings.ingress_port, rate, seconds, seed=int(rate * 100)
    )
    window_end = time.time()
    ids = [p.order_id for p in result.posted if p.status == 202 and p.order_id]
    found = load.wait_complete(settings, ids, drain_s)
    by_component = meter.stop()
    after = bench_run.scrape(urls)
    done = [c for c in found.values() if c.final_at is not None]
    confirmed = [c for c in done if c.status == "CONFIRMED"]
    e2e = [(c.final_at - c.created_at) * 1000 for c in confirmed if c.final_at is not None]
    # Completions per second once a backlog stands (after the first 3 s of the window).
    steady_from = result.started_at + min(3.0, seconds / 3)
    completed_in_window = _completed_between(found, steady_from, window_end)
    entry: dict[str, Any] = {
        "rate": rate,
        "seconds": seconds,
        "accepted": len(ids),
        "completed": len(done),
        "completions_per_s_in_window": round(completed_in_window / (window_end - steady_from), 2),
        # Every completed order over the time from the first POST to the last completion: with
        # more offered than the stack takes, what it gets through, the POSTs' work included.
        "throughput_orders_per_s": throughput(done, result.started_at),
        "backlog_at_window_end": len(ids) - _completed_between(found, 0.0, window_end),
        "e2e_ms": bench_run.summary(e2e),
        "post_orders_ms": bench_run.summary([p.latency_ms for p in result.posted]),
        "post_errors": sum(1 for p in result.posted if p.status != 202),
        "loadavg_1m": [round(load_before, 2), round(os.getloadavg()[0], 2)],
        **cpu_mod.split(components, by_component, len(done), bench_run.deliveries(before, after)),
    }
    log.info(
        "%s %5.1f/s: completed %d/%d, %.1f/s in window, %s/s through, e2e p50 %s p99 %s ms, "
        "cpu/order %s ms (functions %s, emulator %s), emulator/delivery %s ms, load %s",
        label,
        rate,
        len(done),
        len(ids),
        entry["completions_per_s_in_window"],
        entry["throughput_orders_per_s"],
        entry["e2e_ms"]["p50"],
        entry["e2e_ms"]["p99"],
        entry.get("cpu_ms_per_order"),
        entry.get("functions_cpu_ms_per_order"),
        entry.get("emulator_cpu_ms_per_order"),
        entry.get("emulator_cpu_ms_per_delivery"),
        entry["loadavg_1m"],
    )
    return entry, before, after


def measure_burst(
    label: str,
    settings: Settings,
    components: Sequence[cpu_mod.Component],
    rate: float,
    seconds: float,
    drain_s: float,
) -> dict[str, Any]:
    """``measure_rate``, with the functions' and dispatchers' mean publish, step and delivery
    times over it (ms by source or service, from /metrics scraped before and after)."""
    measured, before, after = _measured(label, settings, components, rate, seconds, drain_s)
    means = {
        "publish_mean_ms": ("minimart_publish_seconds", "source"),
        "step_mean_ms": ("minimart_step_duration_seconds", "service"),
        "delivery_mean_ms": ("minimart_dispatcher_delivery_seconds", "source"),
    }
    for key, (metric, by) in means.items():
        measured[key] = bench_run.metric_means(before, after, metric, by)
    return measured
