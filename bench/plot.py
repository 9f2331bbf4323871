"""Draws bench/results.png from the results dictionary."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

# Stacked from the bottom: the product (functions, then servers), then the emulator.
_GROUPS = (
    ("functions", "functions_cpu_ms_per_order", "tab:blue"),
    ("servers (Kafka, PostgreSQL, Mongo-compatible, Redis)", "servers_cpu_ms_per_order",
     "tab:green"),
    ("emulator (dispatchers: Knative's data plane in a cluster)", "emulator_cpu_ms_per_order",
     "tab:orange"),
)  # fmt: skip


def _cpu_split(ax: Any, rates: dict[str, Any]) -> None:
    labels = [f"{r}/s" for r in rates]
    bottom = [0.0] * len(labels)
    for label, key, color in _GROUPS:
        values = [float(rates[r].get(key) or 0.0) for r in rates]
        ax.bar(labels, values, bottom=bottom, label=label, color=color)
        bottom = [b + v for b, v in zip(bottom, values, strict=True)]
    ax.set_xlabel("arrival rate (orders/s)")
    ax.set_ylabel("CPU ms per completed order")
    ax.set_title("CPU per order: the product (functions + servers) vs the emulator")
    ax.grid(True, axis="y", alpha=0.3)
    ax.legend(fontsize=8)


def draw(results: dict[str, Any], path: Path) -> None:
    rates = dict(sorted(results["rates"].items(), key=lambda item: float(item[0])))
    xs = [float(r) for r in rates]
    fig, axes = plt.subplots(2, 2, figsize=(13, 9))
    fig.suptitle(
        f"minimart saga benchmark — {results['date']} — {results['machine']['cores']} cores "
        f"({results['machine']['cpu']})",
        fontsize=11,
    )

    ax = axes[0][0]
    for q, style in (("p50", "o-"), ("p95", "s--"), ("p99", "^:")):
        values = [rates[r]["e2e_ms"][q] or float("nan") for r in rates]
        ax.plot(xs, values, style, label=f"saga {q}")
    floor = results["floor_ms"].get("by_rate", {})
    if floor:
        ax.plot([float(r) for r in floor], [floor[r]["p50"] for r in floor], "kx-",
                label="floor p50 (no-op hops)")  # fmt: skip
    targets = results["targets"]
    ax.axhline(targets["e2e_p50_ms"], color="green", lw=0.8, ls="--", label="target p50 @50/s")
    ax.axhline(targets["e2e_p99_ms"], color="red", lw=0.8, ls="--", label="target p99 @50/s")
    ax.set_yscale("log")
    ax.set_xlabel("arrival rate (orders/s, open loop)")
    ax.set_ylabel("end-to-end latency (ms, log)")
    ax.set_title("Order accepted -> last saga step (6 Kafka hops)")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)

    ax = axes[0][1]
    for r, entry in rates.items():
        series = entry["backlog"]
        ax.plot([p[0] for p in series], [p[1] for p in series],
                label=f"{r}/s{'' if entry['sustained'] else ' (not sustained)'}")  # fmt: skip
    ax.set_xlabel("seconds into the window")
    ax.set_ylabel("orders in flight (accepted - completed)")
    best = results["sustained_orders_per_s"] or "none of these"
    ax.set_title(f"Backlog — sustained: {best} orders/s")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8)

    ax = axes[1][0]
    ax.plot(xs, [rates[r]["post_orders_ms"]["p50"] for r in rates], "o-", label="POST p50")
    ax.plot(xs, [rates[r]["post_orders_ms"]["p99"] for r in rates], "^:", label="POST p99")
    alone = results.get("post_orders_alone")
    title = "POST /orders latency under load"
    if alone:
        title += f" — alone: {alone['orders_per_s']} orders/s"
    ax.set_title(title)
    ax.set_xlabel("arrival rate (orders/s)")
    ax.set_ylabel("ms")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8)

    ax = axes[1][1]
    _cpu_split(ax, rates)

    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
