"""``python -m bench``: the saga benchmark on the local stack, in one run.

1. the transport floor (bench/floor.py) at the floor rates;
2. open-loop arrival rates (default 10, 25, 50, 100, 150, 200 orders/s, then upward while the
   stack keeps up, then one bisection step): end-to-end latency, backlog over time, POST
   latency, CPU per completed order by component (bench/cpu.py: each function, each
   dispatcher, Kafka, PostgreSQL, the Mongo-compatible store, Redis) with the product
   (functions and servers) and emulator (dispatchers) sums;
3. POST /orders alone, closed loop, for its throughput;
4. a per-hop breakdown at the target rate from the timelines and the /metrics endpoints.

The stack is warmed up first (``--warm-up`` seconds of orders). Writes bench/results.json
and bench/results.png. The stack is the one of
``Settings.from_env()`` (``MINIMART_*`` ports and state dir); ``up`` is run first.
"""

from __future__ import annotations

import argparse
import datetime as dt
import http.client
import json
import logging
import os
import platform
import statistics
import threading
import time
import uuid
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import requests
from prometheus_client.parser import text_string_to_metric_families

from bench import cpu as cpu_mod
from bench import floor as floor_mod
from bench import identity_cpu, load
from minimart.local import stack
from minimart.local_stores import local_store_settings
from minimart.manifests import load_topology
from minimart.settings import PROJECT_ROOT, Settings

log = logging.getLogger("bench")

HERE = Path(__file__).resolve().parent
# order.created -> inventory -> payment -> shipping -> order-status -> notification -> order-status
HOPS = 6
TARGET_RATE = 50.0
TARGETS = {"e2e_p50_ms": 50.0, "e2e_p99_ms": 250.0, "sustained_orders_per_s": 150.0,
           "floor_ratio_p50": 3.0}  # fmt: skip
DELIVERIES_TOTAL = "minimart_dispatcher_deliveries_total"
SPLIT_KEYS = (
    "cpu_ms_per_order_by_component",
    "product_cpu_ms_per_order",
    "functions_cpu_ms_per_order",
    "servers_cpu_ms_per_order",
    "emulator_cpu_ms_per_order",
    "emulator_cpu_ms_per_delivery",
)
# Sustained: every accepted order completed, the backlog did not grow after the window's first
# second, and the last order finished within this long after the window closed.
DRAIN_LIMIT_S = 5.0
# After a rate the stack did not sustain: the longest wait for its backlog to drain.
BACKLOG_DRAIN_S = 240.0


def pct(values: Sequence[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))
    return round(ordered[index], 2)


def summary(values: Sequence[float]) -> dict[str, float | None]:
    return {
        "p50": pct(values, 50),
        "p95": pct(values, 95),
        "p99": pct(values, 99),
        "max": pct(values, 100),
        "n": len(values),
    }


# -- Prometheus metrics of functions and dispatchers --------------------------------------------


def scrape(urls: Iterable[str]) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    samples: dict[tuple[str, tuple[tuple[str, str], ...]], float] = {}
    for url in urls:
        try:
            text = requests.get(url, timeout=5).text
        except requests.RequestException:
            continue
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                if sample.name.startswith("minimart_") and (
                    sample.name.endswith(("_sum", "_count")) or sample.name == DELIVERIES_TOTAL
                ):
                    key = (sample.name, tuple(sorted(sample.labels.items())))
                    samples[key] = samples.get(key, 0.0) + sample.value
    return samples


def deliveries(before: dict[Any, float], after: dict[Any, float]) -> float:
    """Records the dispatchers finished between two scrapes (delivered, dead-lettered or
    dropped; retries are attempts, not deliveries)."""
    total = 0.0
    for (name, labels), value in after.items():
        if name == DELIVERIES_TOTAL and dict(labels).get("outcome") != "retried":
            total += value - before.get((name, labels), 0.0)
    return total


def metric_means(
    before: dict[Any, float], after: dict[Any, float], metric: str, label: str
) -> dict[str, float]:
    """Mean (ms) of a histogram between two scrapes, per value of ``label``."""
    sums: dict[str, float] = {}
    counts: dict[str, float] = {}
    for (name, labels), value in after.items():
        labels_d = dict(labels)
        if label not in labels_d:
            continue
        delta = value - before.get((name, labels), 0.0)
        if name == metric + "_sum":
            sums[labels_d[label]] = sums.get(labels_d[label], 0.0) + delta
        elif name == metric + "_count":
            counts[labels_d[label]] = counts.get(labels_d[label], 0.0) + delta
    return {k: round(sums.get(k, 0.0) / c * 1000, 2) for k, c in counts.items() if c > 0}


# -- one arrival rate --------------------------------------------------------------------------


def backlog_series(
    done: Sequence[load.Completion], start: float, end: float
) -> list[tuple[float, int]]:
    """(seconds since start, accepted - completed) every 0.5 s until ``end``."""
    created = sorted(c.created_at for c in done)
    finals = sorted(c.final_at for c in done if c.final_at is not None)
    series, t = [], start
    i = j = 0
    while t <= end:
        while i < len(created) and created[i] <= t:
            i += 1
        while j < len(finals) and finals[j] <= t:
            j += 1
        series.append((round(t - start, 2), i - j))
        t += 0.5
    return series


def slope(points: Sequence[tuple[float, int]]) -> float:
    if len(points) < 2:
        return 0.0
    xs = [p[0] for p in points]
    ys = [float(p[1]) for p in points]
    mx, my = statistics.fmean(xs), statistics.fmean(ys)
    var = sum((x - mx) ** 2 for x in xs)
    return sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / var if var else 0.0


def run_rate(
    settings: Settings,
    rate: float,
    seconds: float,
    drain_s: float,
    urls: list[str],
    components: list[cpu_mod.Component],
) -> dict[str, Any]:
    cpu = cpu_mod.ComponentCpu(components)
    before = scrape(urls)
    cpu.start()
    result = load.run_open_loop(
        settings.host, settings.ingress_port, rate, seconds, seed=int(rate * 1000)
    )
    window_end = time.time()
    accepted = [p for p in result.posted if p.status == 202 and p.order_id]
    ids = [p.order_id for p in accepted if p.order_id]
    found = load.wait_complete(settings, ids, drain_s)
    by_component = cpu.stop()
    cpu_s = sum(by_component.values())
    after = scrape(urls)
    done = [c for c in found.values() if c.final_at is not None]
    kinds = {p.order_id: p.kind for p in accepted}
    sent = {p.order_id: p.sent_at for p in accepted}
    confirmed = [
        c for c in done if c.status == "CONFIRMED" and kinds.get(c.order_id) == "confirmed"
    ]
    e2e = [(c.final_at - c.created_at) * 1000 for c in confirmed if c.final_at]
    e2e_all = [(c.final_at - c.created_at) * 1000 for c in done if c.final_at]
    e2e_post = [(c.final_at - sent[c.order_id]) * 1000 for c in confirmed if c.final_at]
    status_e2e = [(c.status_at - c.created_at) * 1000 for c in confirmed]
    created_min = min((c.created_at for c in found.values()), default=result.started_at)
    series = backlog_series(list(found.values()), created_min, window_end)
    # Over the window after its first second: a stack that keeps up reaches its steady
    # in-flight count (rate x latency) within a second and stays there.
    growth = slope([p for p in series if p[0] >= 1.0])
    last_final = max((c.final_at or 0.0 for c in done), default=window_end)
    drain_after_s = max(0.0, last_final - window_end)
    post = [p.latency_ms for p in result.posted]
    ok = (
        len(accepted) >= 0.98 * round(rate * seconds)
        and len(done) == len(accepted)
        and growth <= max(0.5, 0.02 * rate)
        and drain_after_s <= DRAIN_LIMIT_S
    )
    elapsed = max(c.final_at or 0.0 for c in done) - created_min if done else 0.0
    entry: dict[str, Any] = {
        "rate": rate,
        "seconds": seconds,
        "sent": len(result.posted),
        "accepted": len(accepted),
        "completed": len(done),
        "e2e_ms": summary(e2e),
        "e2e_all_paths_ms": summary(e2e_all),
        "e2e_from_post_sent_ms": summary(e2e_post),
        "confirmed_status_ms": summary(status_e2e),
        "post_orders_ms": summary(post),
        "post_errors": sum(1 for p in result.posted if p.status != 202),
        "backlog_slope_per_s": round(growth, 3),
        "drain_after_window_s": round(drain_after_s, 2),
        "backlog_max": max((b for _, b in series), default=0),
        "backlog": series,
        "completed_per_s": round(len(done) / elapsed, 1) if elapsed else None,
        "cpu_s": round(cpu_s, 2),
        "cpu_s_per_order": round(cpu_s / len(done), 4) if done else None,
        **cpu_mod.split(components, by_component, len(done), deliveries(before, after)),
        "sustained": ok,
        "hops": hop_breakdown(confirmed, found, settings, before, after),
        "_ids": ids,
    }
    log.info(
        "rate %5.0f/s: e2e p50 %s p95 %s p99 %s ms | POST p50 %s p99 %s | backlog slope %.2f"
        " max %d | cpu/order %s s (emulator %s ms) | %s",
        rate,
        entry["e2e_ms"]["p50"],
        entry["e2e_ms"]["p95"],
        entry["e2e_ms"]["p99"],
        entry["post_orders_ms"]["p50"],
        entry["post_orders_ms"]["p99"],
        growth,
        entry["backlog_max"],
        entry["cpu_s_per_order"],
        entry.get("emulator_cpu_ms_per_order"),
        "sustained" if ok else "NOT sustained",
    )
    return entry


STAGES = (
    ("order.created", "inventory.reserved", "inventory-source"),
    ("inventory.reserved", "payment.captured", "payment-source"),
    ("payment.captured", "shipping.prepared", "shipping-source"),
    ("shipping.prepared", "notification.sent", "order-status-source+notification-source"),
)


def hop_breakdown(
    confirmed: list[load.Completion],
    found: dict[str, load.Completion],
    settings: Settings,
    before: dict[Any, float],
    after: dict[Any, float],
) -> dict[str, Any]:
    """Timeline stage p50s (confirmed orders) and per-service means from /metrics."""
    from minimart.adapters import postgres_views

    ids = [c.order_id for c in confirmed][:2000]
    stages: dict[str, list[float]] = {f"{a} -> {b}": [] for a, b, _ in STAGES}
    if ids:
        with postgres_views.connect(local_store_settings(settings).orders_dsn) as conn:
            rows = postgres_views.timeline_moments(conn, ids)
        at: dict[str, dict[str, float]] = {}
        for order_id, step, moment in rows:
            at.setdefault(order_id, {})[step] = moment
        for steps in at.values():
            for a, b, _ in STAGES:
                if a in steps and b in steps:
                    stages[f"{a} -> {b}"].append((steps[b] - steps[a]) * 1000)
    return {
        "timeline_stage_p50_ms": {k: pct(v, 50) for k, v in stages.items()},
        "function_step_mean_ms": metric_means(
            before, after, "minimart_step_duration_seconds", "service"
        ),
        "publish_mean_ms": metric_means(before, after, "minimart_publish_seconds", "source"),
        "dispatcher_delivery_mean_ms": metric_means(
            before, after, "minimart_dispatcher_delivery_seconds", "source"
        ),
        "order_api_mean_ms": metric_means(
            before, after, "minimart_http_request_duration_seconds", "route"
        ),
    }


# -- POST alone, closed loop ---------------------------------------------------------------------


def post_throughput(settings: Settings, clients: int, seconds: float) -> dict[str, Any]:
    import random

    latencies: list[float] = []
    ids: list[str] = []
    lock = threading.Lock()
    stop_at = time.monotonic() + seconds

    def client(seed: int) -> None:
        rng = random.Random(seed)  # noqa: S311 (load, not secrets)
        conn = http.client.HTTPConnection(settings.host, settings.ingress_port, timeout=30)
        while time.monotonic() < stop_at:
            _, body = load.cart(rng)
            started = time.perf_counter()
            conn.request(
                "POST",
                "/orders",
                body=json.dumps(body).encode(),
                headers={"Content-Type": "application/json", "Idempotency-Key": str(uuid.uuid4())},
            )
            response = conn.getresponse()
            payload = response.read()
            with lock:
                latencies.append((time.perf_counter() - started) * 1000)
                if response.status == 202:
                    ids.append(json.loads(payload)["orderId"])
        conn.close()

    threads = [threading.Thread(target=client, args=(i,)) for i in range(clients)]
    began = time.monotonic()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    took = time.monotonic() - began
    entry = {
        "clients": clients,
        "seconds": round(took, 2),
        "accepted": len(ids),
        "orders_per_s": round(len(ids) / took, 1),
        "latency_ms": summary(latencies),
    }
    log.info("POST alone (%d clients): %s orders/s, %s", clients, entry["orders_per_s"],
             entry["latency_ms"])  # fmt: skip
    load.wait_complete(settings, ids, 120)  # let the saga drain before anything else
    return entry


# -- the floor -----------------------------------------------------------------------------------


def run_floor(settings: Settings, rates: Sequence[float], seconds: float) -> dict[str, Any]:
    partitions = dict(load_topology(PROJECT_ROOT).topics).get("minimart.order.created", 4)
    threads = stack.function_threads() if hasattr(stack, "function_threads") else "8"
    chain = floor_mod.Floor(settings, HOPS, partitions, str(threads))
    results: dict[str, Any] = {}
    try:
        chain.start()
        chain.warm_up()
        for rate in rates:
            res = chain.measure(rate, seconds)
            results[str(int(rate))] = {**summary(res.latencies_ms), "sent": res.sent}
            log.info("floor %4.0f/s: %s", rate, results[str(int(rate))])
    finally:
        chain.stop()
    return results


# -- the whole run -------------------------------------------------------------------------------


def machine() -> dict[str, Any]:
    model = ""
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            model = line.split(":", 1)[1].strip()
            break
    return {
        "host": platform.node(),
        "cpu": model,
        "cores": os.cpu_count(),
        "memory_gb": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1),
        "python": platform.python_version(),
        "kernel": platform.release(),
        "loadavg_at_start": [round(x, 2) for x in os.getloadavg()],
    }


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("--rates", default="10,25,50,100,150,200", help="orders/s, comma-separated")
    parser.add_argument("--seconds", type=float, default=20.0, help="window per rate")
    parser.add_argument("--drain", type=float, default=30.0, help="max wait for completion")
    parser.add_argument("--max-rate", type=float, default=400.0)
    parser.add_argument("--floor-rates", default="10,50")
    parser.add_argument("--floor-seconds", type=float, default=15.0)
    parser.add_argument("--no-floor", action="store_true")
    parser.add_argument("--no-search", action="store_true", help="only the fixed rates")
    parser.add_argument("--post-clients", type=int, default=16)
    parser.add_argument("--post-seconds", type=float, default=5.0)
    parser.add_argument("--no-up", action="store_true", help="do not run `up` first")
    parser.add_argument("--warm-up", type=float, default=20.0, help="seconds of load first")
    parser.add_argument("--out", default=str(HERE / "results.json"))
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    logging.getLogger("kafka").setLevel(logging.ERROR)
    settings = Settings.from_env()
    plan = stack.plan_stack(settings)
    if not args.no_up:
        stack.up(settings, plan)
    urls = [fn.url + "/metrics" for fn in plan.functions] + [
        f"http://127.0.0.1:{d.metrics_port}/metrics" for d in plan.dispatchers
    ]
    started = dt.datetime.now(dt.UTC)
    info = machine()
    log.info("machine: %s", info)

    # Sender identity's CPU per event (verify and mint, cold and cached), before the load.
    identity_figures = identity_cpu.measure()
    log.info("sender identity, CPU per event: %s", identity_figures)

    log.info("warming the stack up (%.0f s)", args.warm_up)
    load.warm_up(settings, seconds=args.warm_up)
    components = cpu_mod.stack_components(settings, plan)

    floor: dict[str, Any] = {}
    if not args.no_floor:
        floor = run_floor(
            settings, [float(r) for r in args.floor_rates.split(",")], args.floor_seconds
        )

    rates: dict[str, Any] = {}
    fixed = [float(r) for r in args.rates.split(",")]
    best: float | None = None
    failed: float | None = None
    queue_ = list(fixed)
    tried: set[float] = set()
    while queue_:
        rate = queue_.pop(0)
        if rate in tried:
            continue
        tried.add(rate)
        entry = run_rate(settings, rate, args.seconds, args.drain, urls, components)
        ids = entry.pop("_ids")
        rates[str(int(rate))] = entry
        if entry["sustained"]:
            best = rate if best is None else max(best, rate)
        else:
            failed = rate if failed is None else min(failed, rate)
            # Higher rates would only pile up more: stop there, and let the backlog drain
            # so that it does not pollute what is measured next.
            if not args.no_search:
                queue_ = [r for r in queue_ if r < rate]
            load.wait_complete(settings, ids, BACKLOG_DRAIN_S)
        time.sleep(2)
        if queue_ or args.no_search:
            continue
        if failed is None and rate + 50 <= args.max_rate:
            queue_.append(rate + 50)
        elif failed is not None and best is not None and failed - best > 20:
            middle = float(round((best + failed) / 2 / 10) * 10)
            if middle not in tried and best < middle < failed:
                queue_.append(middle)

    post_alone = post_throughput(settings, args.post_clients, args.post_seconds)

    # The headline figures are at the target rate, or at the highest rate measured below it.
    below = [float(r) for r in rates if float(r) <= TARGET_RATE] or [float(r) for r in rates]
    headline_rate = TARGET_RATE if str(int(TARGET_RATE)) in rates else max(below)
    target = rates[str(int(headline_rate))]
    floor_rates = sorted(float(r) for r in floor)
    nearest = [r for r in floor_rates if r <= headline_rate] or floor_rates
    floor_target = floor[str(int(max(nearest)))] if floor else {}
    floor_p50 = floor_target.get("p50")
    saga_p50 = target["e2e_ms"]["p50"]
    results = {
        "date": started.isoformat(timespec="seconds"),
        "machine": info,
        "noise": "2 cores shared with other workloads: see machine.loadavg_at_start",
        "settings": {
            "seconds_per_rate": args.seconds,
            "hops": HOPS,
            "target_rate": TARGET_RATE,
            "e2e": "order accepted (timeline order.created) -> last step recorded "
            "(notification.sent), confirmed orders, Postgres clock_timestamp()",
        },
        "e2e_ms": {k: {q: v["e2e_ms"][q] for q in ("p50", "p95", "p99")} for k, v in rates.items()},
        "sustained_orders_per_s": best,
        "first_unsustained_orders_per_s": failed,
        "post_orders_ms": {
            "p50": target["post_orders_ms"]["p50"],
            "p99": target["post_orders_ms"]["p99"],
            "at_rate": headline_rate,
        },
        "post_orders_alone": post_alone,
        "cpu_s_per_order": target["cpu_s_per_order"],
        # CPU per completed order at the headline rate, by component, and its two sums.
        **{k: target[k] for k in SPLIT_KEYS if k in target},
        "headline_rate": headline_rate,
        "floor_ms": {"p50": floor_p50, "by_rate": floor},
        "floor_ratio_p50": round(saga_p50 / floor_p50, 2) if saga_p50 and floor_p50 else None,
        "floor_ratio_p50_by_rate": {
            r: round(rates[r]["e2e_ms"]["p50"] / f["p50"], 2)
            for r, f in floor.items()
            if r in rates and rates[r]["e2e_ms"]["p50"] and f.get("p50")
        },
        "hops_at_target_rate": target["hops"],
        "identity": identity_figures,
        "targets": TARGETS,
        "rates": rates,
    }
    out = Path(args.out)
    out.write_text(json.dumps(results, indent=2) + "\n")
    from bench.plot import draw

    draw(results, out.with_suffix(".png"))
    log.info("wrote %s and %s", out, out.with_suffix(".png"))
    keys = ("e2e_ms", "sustained_orders_per_s", "post_orders_ms", "cpu_s_per_order",
            "product_cpu_ms_per_order", "emulator_cpu_ms_per_order", "floor_ratio_p50")  # fmt: skip
    headline = {k: results.get(k) for k in keys}
    headline["floor_ms"] = {"p50": floor_p50}
    headline["identity_verify_us"] = {
        k: identity_figures[f"cpu_per_event_verify_{k}"]["median_us"] for k in ("cold", "cached")
    }
    print(json.dumps(headline, indent=2))
    return 0
