"""``python -m bench.loadtest``: the k6 checkout test at a peak this machine can carry.

What a machine completes differs ~2x between VMs of one kind (and with a neighbour's load), so
a fixed default peak passes on one and fails on the next. Unless ``PEAK_RATE`` is given
(``-e PEAK_RATE=...`` among the k6 arguments), the stack's capacity is measured first: a short
warm-up, then orders offered faster than it completes for a few seconds, counting completions
per second while the backlog stands. The peak is ``PEAK_SHARE`` of that (k6 itself and the
followed orders run beside the stack on the same cores). After k6, the summary says what was
offered and what the stack sustained: the orders accepted and completed during the run, read
from the orders database.
"""

from __future__ import annotations

import argparse
import json
import logging
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from bench import cpu as cpu_mod
from bench import load
from bench.measure import measure_rate
from minimart.adapters import postgres_views
from minimart.local import stack
from minimart.local_stores import local_store_settings
from minimart.settings import PROJECT_ROOT, Settings

log = logging.getLogger("bench.loadtest")

SCRIPT = PROJECT_ROOT / "loadtests" / "checkout_test.js"
RESULTS = PROJECT_ROOT / "loadtests" / "results"
# Of the measured capacity, what the checkout peak offers (k6 and the followed orders share
# the cores with the stack).
PEAK_SHARE = 0.5
OVER_RATE = 80.0
OVER_SECONDS = 6.0
MIN_PEAK = 2


def measure_capacity(settings: Settings) -> float:
    components = cpu_mod.stack_components(settings, stack.plan_stack(settings))
    load.warm_up(settings, rate=10, seconds=8)
    entry = measure_rate("capacity", settings, components, OVER_RATE, OVER_SECONDS, 300)
    return float(entry["completions_per_s_in_window"])


def _given_peak(k6_args: Sequence[str]) -> int | None:
    for arg in k6_args:
        if arg.startswith("PEAK_RATE="):
            return int(float(arg.split("=", 1)[1]))
    return None


def run_report(settings: Settings, started: float, ended: float) -> dict[str, Any]:
    """Orders of the run: accepted, completed, and completions per second (the sustained)."""
    with postgres_views.connect(local_store_settings(settings).orders_dsn) as conn:
        accepted, final, last = postgres_views.orders_between(conn, started, ended)
    span = (last - started) if last else 0.0
    return {
        "accepted": int(accepted),
        "completed": int(final),
        "completed_per_s": round(final / span, 1) if span > 0 else None,
        "last_completion_after_run_s": round(max(0.0, float(last) - ended), 1) if last else None,
    }


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.loadtest", description=__doc__)
    parser.add_argument("--k6", default=str(Path(sys.executable).parent / "k6"))
    parser.add_argument("--base-url", required=True)
    parser.add_argument("k6_args", nargs=argparse.REMAINDER, help="more k6 arguments")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    logging.getLogger("kafka").setLevel(logging.ERROR)
    settings = Settings.from_env()
    stack.up(settings)
    extra = [a for a in args.k6_args if a != "--"]
    peak = _given_peak(extra)
    capacity: float | None = None
    if peak is None:
        capacity = measure_capacity(settings)
        peak = max(MIN_PEAK, int(capacity * PEAK_SHARE))
        log.info("measured capacity %.1f orders/s: checkout peak %d orders/s", capacity, peak)
        extra = ["-e", f"PEAK_RATE={peak}", *extra]
    RESULTS.mkdir(parents=True, exist_ok=True)
    command = [
        args.k6,
        "run",
        "--summary-export",
        str(RESULTS / "summary.json"),
        "-e",
        f"BASE_URL={args.base_url}",
        *extra,
        str(SCRIPT),
    ]
    started = time.time()
    with (RESULTS / "summary.txt").open("w") as text:
        k6 = subprocess.Popen(command, stdout=subprocess.PIPE, text=True)
        assert k6.stdout is not None
        for line in k6.stdout:
            sys.stdout.write(line)
            text.write(line)
        code = k6.wait()
    ended = time.time()
    time.sleep(2)  # the last orders' final steps
    sustained = run_report(settings, started, ended)
    summary = {
        "offered_peak_orders_per_s": peak,
        "measured_capacity_orders_per_s": capacity,
        "peak_share_of_capacity": PEAK_SHARE if capacity is not None else None,
        "k6_exit_code": code,
        **sustained,
    }
    lines = [
        "",
        f"offered: checkout peak {peak} orders/s"
        + (
            f" ({PEAK_SHARE:.0%} of the {capacity:.1f} orders/s measured just before)"
            if capacity is not None
            else " (PEAK_RATE given)"
        )
        + ", plus the followed orders",
        f"sustained: {sustained['accepted']} orders accepted, {sustained['completed']} final,"
        f" {sustained['completed_per_s']} completed/s over the run; the last finished"
        f" {sustained['last_completion_after_run_s']} s after k6 ended",
    ]
    with (RESULTS / "summary.txt").open("a") as text:
        text.write("\n".join(lines) + "\n")
    (RESULTS / "rates.json").write_text(json.dumps(summary, indent=2) + "\n")
    print("\n".join(lines))
    return code


if __name__ == "__main__":
    raise SystemExit(main())
