"""Each function's CPU per event against the no-op function's, in one run on the local stack.

    python -m bench.floor_cpu --rate 10 --seconds 20

First the saga at ``--rate`` orders/s (open loop, drained): CPU of each function's processes
(bench/cpu.py) over the events it handled (``minimart_events_handled_total``; the order
function: per accepted POST). Then the transport floor (bench/floor.py: the same hops, no-op
functions publishing with the saga's producer settings) at ``--rate`` chains/s: CPU of its
function processes over the events they handled (chains x hops). Written to
``bench/floor_cpu.json`` (appended), printed as µs per event and as a multiple of the no-op's.
"""

from __future__ import annotations

import argparse
import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import requests
from prometheus_client.parser import text_string_to_metric_families

from bench import cpu as cpu_mod
from bench import floor as floor_mod
from bench import labelled_results, load
from bench.run import HOPS
from minimart.local import stack
from minimart.manifests import load_topology
from minimart.settings import PROJECT_ROOT, Settings


def handled(settings: Settings, components: Sequence[cpu_mod.Component]) -> dict[str, float]:
    """Events each function answered (any outcome), from its /metrics."""
    counts: dict[str, float] = {}
    for component in components:
        if component.kind != cpu_mod.FUNCTION:
            continue
        url = f"http://{settings.host}:{component.port}/metrics"
        try:
            text = requests.get(url, timeout=5).text
        except requests.RequestException:
            continue
        total = 0.0
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                if (
                    sample.name
                    in (
                        "minimart_events_handled_total",
                        "minimart_http_requests_total",
                    )
                    and sample.labels.get("method", "POST") == "POST"
                ):
                    total += sample.value
        counts[component.name] = total
    return counts


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.floor_cpu", description=__doc__)
    parser.add_argument("--rate", type=float, default=10.0)
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--label", default="")
    parser.add_argument("--out", type=Path, default=Path("bench/floor_cpu.json"))
    args = parser.parse_args(argv)
    settings = Settings.from_env()
    components = cpu_mod.stack_components(settings, stack.plan_stack(settings))
    functions = [c for c in components if c.kind == cpu_mod.FUNCTION]
    load_start = os.getloadavg()[0]

    before = handled(settings, functions)
    meter = cpu_mod.ComponentCpu(functions)
    meter.start()
    result = load.run_open_loop(settings.host, settings.ingress_port, args.rate, args.seconds)
    ids = [p.order_id for p in result.posted if p.status == 202 and p.order_id]
    load.wait_complete(settings, ids, 120)
    used = meter.stop()
    after = handled(settings, functions)
    saga = {
        name: round(used[name] / events * 1e6, 1)
        for name in used
        if (events := after.get(name, 0.0) - before.get(name, 0.0)) > 0
    }

    partitions = dict(load_topology(PROJECT_ROOT).topics).get("minimart.order.created", 4)
    chain = floor_mod.Floor(settings, HOPS, partitions, "8")
    try:
        chain.start()
        chain.warm_up()
        hops = [cpu_mod.Component(f"floor-h{i + 1}", cpu_mod.FUNCTION, port)
                for i, port in enumerate(chain.ports)]  # fmt: skip
        floor_meter = cpu_mod.ComponentCpu(hops)
        floor_meter.start()
        measured = chain.measure(args.rate, args.seconds)
        floor_used = floor_meter.stop()
    finally:
        chain.stop()
    noop_us = round(sum(floor_used.values()) / (measured.sent * HOPS) * 1e6, 1)
    entry: dict[str, Any] = {
        "label": args.label,
        "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "loadavg": [round(load_start, 2), round(os.getloadavg()[0], 2)],
        "rate": args.rate,
        "seconds": args.seconds,
        "cpu_us_per_event": saga,
        "noop_cpu_us_per_event": noop_us,
        "times_the_noop": {name: round(us / noop_us, 2) for name, us in saga.items()},
    }
    labelled_results.append(args.out, entry)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
