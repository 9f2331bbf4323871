"""``python -m bench.cold_ab --base DIR | --base-rev REV``: a base tree against the working
tree, one stack on the machine at a time, each round on a stack just started.

``make bench-ab`` measures two warm stacks side by side; this measures a burst soon after
``up`` (a short warm-up only), with the other tree's stack down:

1. the base tree is ``--base`` (a tree dir with its own ``.venv``) or ``--base-rev`` exported
   and installed as bench/ab.py does it (``<state_dir>/bench-ab/base-<sha>``);
2. rounds alternate the sides (base, head, base, head, ...), ``--rounds`` per side, both on
   the configured ports; a round starts that tree's stack (``python -m minimart.local up``;
   the base in ``<state_dir>/cold-ab/base-state``, the working tree in its state dir), warms
   it up (``--warm-up`` s, ``bench.load.warm_up``), sends one burst of ``--rate`` orders/s
   for ``--seconds`` as ``bench.burst_profile --no-spy`` does (``bench.measure.measure_burst``),
   then stops the stack (``minimart.local down``) and waits until its ports are free;
3. a round keeps the burst's throughput, completions per second in the window, backlog at the
   window's end, POST p50, CPU per completed order (all, functions, emulator, servers), the
   mean publish/step/delivery times, the load average and the load from outside the stack
   (bench/outside.py);
4. it prints every round and the head/base ratios of the means, and appends the sitting to
   ``bench/cold_ab.json``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import logging
import statistics
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from bench import ab, labelled_results, load
from bench import run as bench_run
from bench.measure import measure_burst
from minimart.local.servers import process
from minimart.settings import PROJECT_ROOT, Settings

log = logging.getLogger("bench.cold_ab")

SIDES = ("base", "head")
# What a round keeps of a burst: figure -> its value in measure_burst's answer.
FIGURES: dict[str, Callable[[Mapping[str, Any]], Any]] = {
    "throughput_orders_per_s": lambda m: m.get("throughput_orders_per_s"),
    "completions_per_s_in_window": lambda m: m.get("completions_per_s_in_window"),
    "backlog_at_window_end": lambda m: m.get("backlog_at_window_end"),
    "post_p50_ms": lambda m: m["post_orders_ms"]["p50"],
    "cpu_ms_per_order": lambda m: m.get("cpu_ms_per_order"),
    "functions_cpu_ms_per_order": lambda m: m.get("functions_cpu_ms_per_order"),
    "emulator_cpu_ms_per_order": lambda m: m.get("emulator_cpu_ms_per_order"),
    "servers_cpu_ms_per_order": lambda m: m.get("servers_cpu_ms_per_order"),
}
MEANS = ("publish_mean_ms", "step_mean_ms", "delivery_mean_ms")  # by source or service
_NOT_FIGURES = ("side", "loadavg_1m", "outside")


# -- the arithmetic (pure) ----------------------------------------------------------------------


def round_row(label: str, measured: Mapping[str, Any]) -> dict[str, Any]:
    """What a round keeps of ``measure_burst``'s answer (with ``outside``)."""
    row: dict[str, Any] = {"side": label}
    row.update({figure: get(measured) for figure, get in FIGURES.items()})
    for mean in MEANS:
        for name, value in sorted(measured.get(mean, {}).items()):
            row[f"{mean}.{name}"] = value
    row["loadavg_1m"] = measured.get("loadavg_1m")
    row["outside"] = measured.get("outside")
    return row


def _mean(values: Sequence[float]) -> float | None:
    return round(statistics.fmean(values), 3) if values else None


def ratios(rows: Sequence[Mapping[str, Any]]) -> dict[str, dict[str, float | None]]:
    """Per figure of the rounds: each side's mean, and head / base of the means."""
    figures = [k for k in dict.fromkeys(k for row in rows for k in row) if k not in _NOT_FIGURES]
    out: dict[str, dict[str, float | None]] = {}
    for figure in figures:
        means = {
            side: _mean(
                [row[figure] for row in rows if row["side"] == side and row.get(figure) is not None]
            )
            for side in SIDES
        }
        head, base = means["head"], means["base"]
        out[figure] = {
            **means,
            "ratio": round(head / base, 3) if head is not None and base else None,
        }
    return out


def _cell(value: Any) -> str:
    return f"{value:>10.2f}" if isinstance(value, int | float) else f"{'-':>10}"


def table_lines(rows: Sequence[Mapping[str, Any]], table: Mapping[str, Any]) -> list[str]:
    """Figures down, rounds across, then each side's mean and head/base."""
    width = max([len("figure"), *(len(f) for f in table)])
    heads = [f"{i + 1}:{row['side']}" for i, row in enumerate(rows)]
    lines = [
        f"{'figure':<{width}}" + "".join(f"{h:>10}" for h in [*heads, "base", "head", "head/base"])
    ]
    for figure, row in table.items():
        cells = [r.get(figure) for r in rows] + [row["base"], row["head"], row["ratio"]]
        lines.append(f"{figure:<{width}}" + "".join(_cell(c) for c in cells))
    load_1m = [(r.get("loadavg_1m") or [None, None])[-1] for r in rows]
    lines.append(f"{'loadavg_1m at end':<{width}}" + "".join(_cell(v) for v in load_1m))
    idle = [str(bool((r.get("outside") or {}).get("idle"))) for r in rows]
    lines.append(f"{'idle (bench/outside.py)':<{width}}" + "".join(f"{v:>10}" for v in idle))
    return lines


# -- the stacks ---------------------------------------------------------------------------------


def make_sides(settings: Settings, base_root: Path) -> dict[str, ab.Side]:
    """Both trees on ``settings``' ports: the base in its own state dir, the head in its own."""
    base_env = ab.side_settings(settings, settings.state_dir / "cold-ab" / "base-state", 0)
    base_env.update(ab.addresses_without_logins(base_root, base_env))
    head_env = ab.side_settings(settings, settings.state_dir, 0)
    return {
        "base": ab.make_side("base", base_root, base_root / ".venv" / "bin" / "python", base_env),
        "head": ab.make_side("head", PROJECT_ROOT, Path(sys.executable), head_env),
    }


def stack_ports(side: ab.Side) -> list[int]:
    s = side.settings
    extra = [s.ingress_port, s.prometheus_port, s.kafka_controller_port]
    return sorted({c.port for c in side.components} | set(extra))


def wait_ports_free(host: str, ports: Sequence[int], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    for port in ports:
        process.wait_for_port_closed(host, port, max(0.0, deadline - time.monotonic()))


def one_round(side: ab.Side, args: argparse.Namespace) -> dict[str, Any]:
    """Up, warm-up, one burst, down; what the round keeps."""
    ports = stack_ports(side)
    taken = [p for p in ports if process.port_open(side.settings.host, p)]
    if taken:
        raise SystemExit(f"{side.label}: ports already in use ({taken}): run `make down` first")
    log.info("%s: starting the stack in %s", side.label, side.settings.state_dir)
    try:
        side.run("-m", "minimart.local", "up", timeout=900)
        if args.warm_up:
            load.warm_up(side.settings, seconds=args.warm_up)
        measured = ab.measure_with_outside(
            side, side.components, args.rate, args.seconds, args.drain, measure=measure_burst
        )
    finally:
        side.run("-m", "minimart.local", "down")
        wait_ports_free(side.settings.host, ports, 180)
    return {**round_row(side.label, measured), "burst": measured}


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.cold_ab", description=__doc__)
    base = parser.add_mutually_exclusive_group(required=True)
    base.add_argument("--base", type=Path, help="a tree dir with its own .venv")
    base.add_argument("--base-rev", help="a git revision, exported and installed as bench.ab does")
    parser.add_argument("--rounds", type=int, default=2, help="rounds per side")
    parser.add_argument("--warm-up", type=float, default=10.0, help="seconds of load after up")
    parser.add_argument("--rate", type=float, default=80.0, help="the burst (orders/s)")
    parser.add_argument("--seconds", type=float, default=10.0, help="the burst's length")
    parser.add_argument("--drain", type=float, default=180.0)
    parser.add_argument("--out", type=Path, default=ab.HERE / "cold_ab.json")
    args = parser.parse_args(argv)
    if args.rounds < 1:
        parser.error("--rounds must be at least 1")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    logging.getLogger("kafka").setLevel(logging.ERROR)

    settings = Settings.from_env()
    if args.base is not None:
        base_root = args.base.resolve()
    else:
        base_root = ab.export_base(args.base_rev, settings.state_dir / "bench-ab")
    sides = make_sides(settings, base_root)
    started = dt.datetime.now(dt.UTC)
    info = bench_run.machine()
    rounds = [one_round(sides[label], args) for _ in range(args.rounds) for label in SIDES]
    rows = [{k: v for k, v in r.items() if k != "burst"} for r in rounds]
    table = ratios(rows)
    print("\n".join(table_lines(rows, table)))
    labelled_results.append(
        args.out,
        {
            "date": started.isoformat(timespec="seconds"),
            "machine": info,
            "base": str(base_root),
            "head": str(PROJECT_ROOT),
            "idle": all((r.get("outside") or {}).get("idle") for r in rows),
            "settings": {
                k: getattr(args, k) for k in ("rounds", "warm_up", "rate", "seconds", "drain")
            },
            "ratios": table,
            "rounds": rounds,
        },
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
