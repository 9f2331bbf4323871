"""``python -m bench.ab --base REV``: the base tree against the working tree, side by side.

Absolute figures move ~2x from one machine of this kind to the next (and with the neighbours'
load on a shared one), so a change is shown as a ratio measured in one run on one machine:

1. the base tree is exported (``git archive REV``) under ``.minimart/bench-ab/`` and installed
   there with its own ``scripts/install.sh`` (its own venv; kept for the next run);
2. both stacks start from fresh state dirs: the working tree on the ``MINIMART_*`` ports,
   the base on the same ports plus ``--port-offset``. **One stack runs at a time**: the
   other is stopped (``down``, its state kept) while a side measures, since an idle stack is
   not free and the two are not alike (2026-12-07: eddebda's idle stack took 212 ms of CPU a
   second, main's 89: both up, main measured beside 12% of a core more of its rival's load
   than eddebda did). A side that (re)starts is warmed up: ``--warm-up`` seconds of orders,
   then unmeasured bursts until two in a row agree on the CPU per order within
   ``--settle`` (at most ``--warm-up-bursts``); ``--both-up`` keeps the old way (both up
   throughout, warmed once);
3. rounds alternate the sides (head, base, then base, head, ...); each side in each round
   measures, on a warm stack:
   * ``--rate`` orders/s for ``--seconds``: CPU per completed order by component
     (bench/cpu.py), end-to-end and POST latency, emulator CPU per delivery;
   * ``--over-rate`` orders/s (more than either completes) for ``--over-seconds``: the
     capacity, every order of that burst over the time from its first POST to its last
     completion (a steadier yardstick than stepping the rate until a backlog grows; the
     completions per second while the burst still arrives are kept too), and CPU per completed
     order when loaded;
   * half the working tree's measured capacity: end-to-end p50/p99 there;
   * idle, ``--idle-seconds``: the stack's CPU per second with nothing sent;
   * (working tree only, once every run is done, so that its throwaway topics load neither
     side's measurements) the transport floor at that rate (bench/floor.py);
4. every figure is reported as head / base: the ratio of the means, with the range of the
   per-round ratios as its spread; ``bench/ab.json`` keeps every value;
5. the whole of 3-4 runs ``--runs`` times (2 by default): a figure is
   reported as a result only when the runs agree (their per-round ranges overlap); otherwise
   it is marked as not replicated, with every run's ratio kept;
6. every measurement records the machine's load from outside the two stacks
   (bench/outside.py: other processes' CPU and the hypervisor's steal); a run is called idle
   only when every one of its measurements was.

``--head-env KEY=VALUE`` (repeatable) gives the working tree's stack alone a setting: with
``--base HEAD``, an option A/B'd against the default on the same tree.

The machine's load average is recorded with each measurement.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import json
import logging
import os
import shutil
import statistics
import subprocess
import sys
import tarfile
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench import cpu as cpu_mod
from bench import load
from bench import run as bench_run
from bench.measure import measure_rate
from bench.outside import OutsideLoad
from minimart.local.servers import process
from minimart.settings import PROJECT_ROOT, Settings

log = logging.getLogger("bench.ab")

HERE = Path(__file__).resolve().parent
PORT_KEYS = (
    "MINIMART_POSTGRES_PORT",
    "MINIMART_REDIS_PORT",
    "MINIMART_MONGO_PORT",
    "MINIMART_KAFKA_PORT",
    "MINIMART_KAFKA_CONTROLLER_PORT",
    "MINIMART_PROMETHEUS_PORT",
    "MINIMART_INGRESS_PORT",
    "MINIMART_FUNCTION_PORT_BASE",
)
# Issue 24's targets, checked on the replicated ratios (and the floor); against BASE=eddebda.
TARGETS = {
    "capacity_orders_per_s": ("ratio >=", 1.5),
    "functions_cpu_ms_per_order": ("ratio <=", 0.7),
    "functions_cpu_ms_per_order_loaded": ("ratio <=", 0.7),
    "cpu_ms_per_order_loaded": ("ratio <=", 0.75),
}
E2E_P99_TARGET_MS = 250.0
CORES = os.cpu_count() or 1
FLOOR_FACTOR_TARGET = 2.0
# What the stack prints about itself: the components bench/cpu.py measures.
_PLAN_SCRIPT = """
import json
from minimart.local.stack import plan_stack
from minimart.settings import Settings
s = Settings.from_env()
p = plan_stack(s)
print(json.dumps({
    "functions": [[f.process_name, f.port] for f in p.functions],
    "dispatchers": [[d.process_name, d.metrics_port] for d in p.dispatchers],
    "servers": [["kafka", s.kafka_port], ["postgres", s.postgres_port],
                ["mongo", s.mongo_port], ["redis", s.redis_port]],
}))
"""


@dataclass
class Side:
    """One tree and its stack."""

    label: str  # "head" or "base"
    root: Path
    python: Path
    env: dict[str, str]
    settings: Settings
    components: list[cpu_mod.Component]

    def run(self, *args: str, timeout: float = 600) -> str:
        result = subprocess.run(
            [str(self.python), *args],
            cwd=self.root,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        if result.returncode != 0:
            raise RuntimeError(
                f"{self.label}: {' '.join(args)} failed ({result.returncode}):\n"
                f"{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
            )
        return result.stdout


# -- the two trees ---------------------------------------------------------------------------


def _git(*args: str) -> str:
    return subprocess.run(
        ["git", *args], cwd=PROJECT_ROOT, check=True, capture_output=True, text=True
    ).stdout.strip()


def export_base(rev: str, into: Path) -> Path:
    """The tree of ``rev`` under ``into`` (exported once per commit), installed there."""
    sha = _git("rev-parse", "--verify", f"{rev}^{{commit}}")
    root = into / f"base-{sha[:12]}"
    if not (root / ".venv" / "bin" / "python").exists() or not (root / ".installed").exists():
        shutil.rmtree(root, ignore_errors=True)
        root.mkdir(parents=True)
        log.info("exporting %s (%s) into %s", rev, sha[:12], root)
        archive = root / ".tree.tar"
        with archive.open("wb") as out:
            subprocess.run(
                ["git", "archive", "--format=tar", sha], cwd=PROJECT_ROOT, check=True, stdout=out
            )
        with tarfile.open(archive) as tar:
            tar.extractall(root, filter="data")
        archive.unlink()
        log.info("installing the base tree (scripts/install.sh; its own venv)")
        env = {**_plain_env(), "MINIMART_STATE_DIR": str(root / ".minimart")}
        subprocess.run(["bash", "scripts/install.sh"], cwd=root, env=env, check=True)
        (root / ".installed").write_text(sha + "\n")
    return root


def _plain_env() -> dict[str, str]:
    """The caller's environment without any minimart or OpenTelemetry setting."""
    return {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("MINIMART_", "OTEL_", "VIRTUAL_ENV", "PYTHON"))
    }


def side_settings(base: Settings, state_dir: Path, offset: int) -> dict[str, str]:
    env = {
        "MINIMART_STATE_DIR": str(state_dir),
        "MINIMART_POSTGRES_PORT": str(base.postgres_port + offset),
        "MINIMART_REDIS_PORT": str(base.redis_port + offset),
        "MINIMART_MONGO_PORT": str(base.mongo_port + offset),
        "MINIMART_KAFKA_PORT": str(base.kafka_port + offset),
        "MINIMART_KAFKA_CONTROLLER_PORT": str(base.kafka_controller_port + offset),
        "MINIMART_PROMETHEUS_PORT": str(base.prometheus_port + offset),
        "MINIMART_INGRESS_PORT": str(base.ingress_port + offset),
        "MINIMART_FUNCTION_PORT_BASE": str(base.function_port_base + offset),
    }
    return env


def head_env_assignments(pairs: Sequence[str]) -> dict[str, str]:
    """``--head-env KEY=VALUE`` arguments as variables: each a setting this tree declares
    (``minimart.local up`` hands its settings, and only those, to the processes it starts),
    none of those the A/B sets itself (state dir, ports)."""
    declared = {key.env for key in Settings.declarations().values()}
    reserved = {"MINIMART_STATE_DIR", *PORT_KEYS}
    out: dict[str, str] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or key not in declared:
            raise ValueError(
                f"--head-env {pair!r}: expected KEY=VALUE with KEY a MINIMART_ setting"
            )
        if key in reserved:
            raise ValueError(f"--head-env {pair!r}: the A/B sets {key} itself")
        out[key] = value
    return out


def addresses_without_logins(root: Path, env: dict[str, str]) -> dict[str, str]:
    """For a base tree from before the local stores' logins (no minimart/local_stores.py):
    its stores' addresses given explicitly, each marked with a harmless client name, so that
    this tree's code (``local_store_settings``: it logs in only to an address still at the
    local default) reads that stack as it is, with no login its servers would not know."""
    if (root / "minimart" / "local_stores.py").exists():
        return {}
    stores = Settings.from_env(env)
    return {
        "MINIMART_ORDERS_DSN": f"{stores.orders_dsn}?application_name=bench-base",
        "MINIMART_INVENTORY_DSN": f"{stores.inventory_dsn}?application_name=bench-base",
        "MINIMART_PAYMENTS_DSN": f"{stores.payments_dsn}?application_name=bench-base",
        "MINIMART_MONGO_URL": f"{stores.mongo_url}?appname=bench-base",
        "MINIMART_REDIS_URL": f"{stores.redis_url}?client_name=bench-base",
    }


def make_side(label: str, root: Path, python: Path, minimart_env: dict[str, str]) -> Side:
    env = {**_plain_env(), **minimart_env, "PYTHONPATH": str(root)}
    settings = Settings.from_env(minimart_env)
    side = Side(label, root, python, env, settings, [])
    plan = json.loads(side.run("-c", _PLAN_SCRIPT).strip().splitlines()[-1])
    side.components = (
        [cpu_mod.Component(n, cpu_mod.FUNCTION, p) for n, p in plan["functions"]]
        + [cpu_mod.Component(n, cpu_mod.DISPATCHER, p) for n, p in plan["dispatchers"]]
        + [cpu_mod.Component(n, cpu_mod.SERVER, p) for n, p in plan["servers"]]
    )
    return side


def fresh_up(side: Side) -> None:
    """Stop whatever ran in the side's state dir, wipe it (keeping the Kafka jars), start."""
    state = side.settings.state_dir
    if state.exists():
        side.run("-m", "minimart.local", "down")
        jars = state / "kafka" / "jars"
        keep = state.parent / f".jars-{side.label}"
        if jars.exists():
            shutil.rmtree(keep, ignore_errors=True)
            jars.rename(keep)
        shutil.rmtree(state)
        if keep.exists():
            (state / "kafka").mkdir(parents=True)
            keep.rename(jars)
    taken = [c for c in side.components if process.port_open(side.settings.host, c.port)]
    if taken:
        names = ", ".join(f"{c.name}:{c.port}" for c in taken)
        raise SystemExit(f"{side.label}: ports already in use ({names}): run `make down` first")
    log.info("%s: starting the stack in %s", side.label, state)
    side.run("-m", "minimart.local", "up", timeout=900)


# -- one measurement ---------------------------------------------------------------------------


Measure = Callable[
    [str, Settings, Sequence[cpu_mod.Component], float, float, float], dict[str, Any]
]


def measure_with_outside(
    side: Side,
    everything: Sequence[cpu_mod.Component],
    rate: float,
    seconds: float,
    drain: float,
    measure: Measure = measure_rate,
) -> dict[str, Any]:
    """``measure`` (``measure_rate``) on ``side``, with the load from outside the stacks
    (``everything``) meanwhile."""
    outside = OutsideLoad(everything)
    outside.start()
    measured = measure(side.label, side.settings, side.components, rate, seconds, drain)
    measured["outside"] = outside.stop()
    return measured


def measure_floor(side: Side, rate: float, seconds: float) -> dict[str, Any]:
    """The transport floor on the working tree's stack (bench/floor.py) at ``rate``."""
    floor: dict[str, Any] = bench_run.run_floor(side.settings, [rate], seconds)[str(int(rate))]
    return floor


def measure_idle(side: Side, seconds: float, settle_s: float = 5.0) -> dict[str, Any]:
    """The side's CPU per second with nothing sent, by component, after ``settle_s``."""
    time.sleep(settle_s)  # the last measurement's commits and span exports
    meter = cpu_mod.ComponentCpu(side.components)
    meter.start()
    time.sleep(seconds)
    used = meter.stop()
    by_component = {name: round(cpu_s / seconds * 1000, 1) for name, cpu_s in sorted(used.items())}
    return {
        "seconds": seconds,
        "cpu_ms_per_s": round(sum(by_component.values()), 1),
        "cpu_ms_per_s_by_component": by_component,
    }


def settled(figures: Sequence[float], tolerance: float) -> bool:
    """Whether the last two warm-up bursts agree on the CPU per order within ``tolerance``
    (a fraction of the larger)."""
    if len(figures) < 2:
        return False
    last, before = figures[-1], figures[-2]
    return abs(last - before) <= tolerance * max(last, before)


def warm(side: Side, seconds: float, rate: float, burst_s: float, most: int,
         tolerance: float) -> list[float]:  # fmt: skip
    """``seconds`` of orders, then bursts at ``rate`` until two in a row agree on the CPU per
    order (or ``most`` of them): the broker's JIT takes a few bursts, and a side measured less
    warm than the other is flattered or wronged. Returns each burst's CPU per order."""
    log.info("%s: warming up (%.0f s, then up to %d bursts)", side.label, seconds, most)
    load.warm_up(side.settings, seconds=seconds)
    figures: list[float] = []
    while len(figures) < most and not settled(figures, tolerance):
        burst = measure_rate("warm-up", side.settings, side.components, rate, burst_s, 300)
        if burst.get("cpu_ms_per_order") is None:
            break
        figures.append(float(burst["cpu_ms_per_order"]))
    return figures


class OneAtATime:
    """Keeps at most one side's stack running: ``use(side)`` stops the other one (its state
    kept), starts this one and warms it, unless it is the one already running."""

    def __init__(self, warm_up: Callable[[Side], list[float]]) -> None:
        self._warm_up = warm_up
        self.running: Side | None = None

    def use(self, side: Side) -> list[float] | None:
        """The warm-up bursts' CPU per order if ``side`` was (re)started, else None."""
        if self.running is side:
            return None
        self.stop()
        side.run("-m", "minimart.local", "up", timeout=900)
        self.running = side
        return self._warm_up(side)

    def stop(self) -> None:
        if self.running is not None:
            self.running.run("-m", "minimart.local", "down")
            self.running = None


# -- ratios ------------------------------------------------------------------------------------

FIGURES: dict[str, Callable[[dict[str, Any]], float | None]] = {
    # Orders completed per second through a burst of more than the stack takes (first POST to
    # last completion): all the work an order costs, as a sustained rate needs it done.
    "capacity_orders_per_s": lambda m: m["over"].get("throughput_orders_per_s"),
    # Completions per second while the burst is still arriving: the saga shares the cores with
    # accepting 80 POSTs a second, so this shows how the two split them, not what is sustained.
    "completions_per_s_while_flooded": lambda m: m["over"]["completions_per_s_in_window"],
    "cpu_ms_per_order": lambda m: m["low"].get("cpu_ms_per_order"),
    "cpu_ms_per_order_loaded": lambda m: m["over"].get("cpu_ms_per_order"),
    # What the CPU cost allows on this many dedicated cores (the stack is CPU-bound): steadier
    # than the measured capacity when neighbours take the cores.
    "cpu_bound_capacity_orders_per_s": lambda m: (
        round(CORES * 1000 / m["over"]["cpu_ms_per_order"], 2)
        if m["over"].get("cpu_ms_per_order")
        else None
    ),
    "product_cpu_ms_per_order": lambda m: m["low"].get("product_cpu_ms_per_order"),
    "functions_cpu_ms_per_order": lambda m: m["low"].get("functions_cpu_ms_per_order"),
    "functions_cpu_ms_per_order_loaded": lambda m: m["over"].get("functions_cpu_ms_per_order"),
    "servers_cpu_ms_per_order": lambda m: m["low"].get("servers_cpu_ms_per_order"),
    "emulator_cpu_ms_per_order": lambda m: m["low"].get("emulator_cpu_ms_per_order"),
    "emulator_cpu_ms_per_delivery": lambda m: m["low"].get("emulator_cpu_ms_per_delivery"),
    "e2e_p50_ms": lambda m: m["low"]["e2e_ms"]["p50"],
    "e2e_p99_ms": lambda m: m["low"]["e2e_ms"]["p99"],
    "e2e_p50_ms_at_half_capacity": lambda m: m["half"]["e2e_ms"]["p50"],
    "e2e_p99_ms_at_half_capacity": lambda m: m["half"]["e2e_ms"]["p99"],
    "post_p50_ms": lambda m: m["low"]["post_orders_ms"]["p50"],
    "post_p99_ms": lambda m: m["low"]["post_orders_ms"]["p99"],
    # The stack's own CPU with nothing sent (brokers, dispatchers' polls, functions' threads).
    "idle_cpu_ms_per_s": lambda m: m.get("idle", {}).get("cpu_ms_per_s"),
}


def _component_figure(name: str) -> Callable[[dict[str, Any]], float | None]:
    def get(m: dict[str, Any]) -> float | None:
        value = m["low"].get("cpu_ms_per_order_by_component", {}).get(name)
        return None if value is None else float(value)

    return get


def _mean(values: Sequence[float]) -> float | None:
    return round(statistics.fmean(values), 3) if values else None


def ratios(rounds: Sequence[dict[str, dict[str, Any]]]) -> dict[str, Any]:
    """head / base for every figure: ratio of the means, and the range of per-round ratios."""
    out: dict[str, Any] = {}
    components = sorted(
        set(rounds[0]["head"]["low"].get("cpu_ms_per_order_by_component", {}))
        | set(rounds[0]["base"]["low"].get("cpu_ms_per_order_by_component", {}))
    )
    figures = dict(FIGURES)
    for name in components:
        figures[f"cpu_ms_per_order.{name}"] = _component_figure(name)
    for figure, get in figures.items():
        head = [v for r in rounds if (v := get(r["head"])) is not None]
        base = [v for r in rounds if (v := get(r["base"])) is not None]
        paired = [
            h / b
            for r in rounds
            if (h := get(r["head"])) is not None and (b := get(r["base"])) and b > 0
        ]
        mean_h, mean_b = _mean(head), _mean(base)
        out[figure] = {
            "base": base,
            "head": head,
            "base_mean": mean_b,
            "head_mean": mean_h,
            "ratio": round(mean_h / mean_b, 3) if mean_h is not None and mean_b else None,
            "ratio_range": [round(min(paired), 3), round(max(paired), 3)] if paired else None,
        }
    return out


def replicated(tables: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Per figure: each run's ratio and range, whether the runs agree (every two per-round
    ranges overlap), and the ratio as a result (the mean of the runs' ratios) only if so."""
    out: dict[str, Any] = {}
    for figure in tables[0]:
        rows = [table.get(figure, {}) for table in tables]
        ratios_ = [row.get("ratio") for row in rows]
        ranges = [row.get("ratio_range") for row in rows]
        spans = [r for r in ranges if r is not None]
        known = all(r is not None for r in ratios_) and len(spans) == len(ranges)
        agree = known and max(r[0] for r in spans) <= min(r[1] for r in spans)
        out[figure] = {
            "base_mean": _mean([row["base_mean"] for row in rows if row.get("base_mean")]),
            "head_mean": _mean([row["head_mean"] for row in rows if row.get("head_mean")]),
            "ratio_by_run": ratios_,
            "range_by_run": ranges,
            "agree": agree,
            "ratio": _mean([r for r in ratios_ if r is not None]) if agree else None,
        }
    return out


def verdicts(table: Mapping[str, Any], floor_p50: list[float]) -> dict[str, Any]:
    """The targets, on the figures that replicated (a figure that did not is not met)."""
    out: dict[str, Any] = {}
    for figure, (how, bound) in TARGETS.items():
        ratio = table[figure]["ratio"]
        ok = ratio is not None and (ratio >= bound if how == "ratio >=" else ratio <= bound)
        out[figure] = {"target": f"{how} {bound}", "ratio": ratio, "met": ok}
    p50 = table["e2e_p50_ms_at_half_capacity"]["head_mean"]
    p99 = table["e2e_p99_ms_at_half_capacity"]["head_mean"]
    floor = _mean(floor_p50)
    factor = round(p50 / floor, 2) if p50 and floor else None
    out["e2e_p50_at_half_capacity_over_floor"] = {
        "target": f"<= {FLOOR_FACTOR_TARGET}",
        "head_p50_ms": p50,
        "floor_p50_ms": floor,
        "factor": factor,
        "met": factor is not None and factor <= FLOOR_FACTOR_TARGET,
    }
    out["e2e_p99_at_half_capacity_ms"] = {
        "target": f"<= {E2E_P99_TARGET_MS}",
        "head": p99,
        "met": p99 is not None and p99 <= E2E_P99_TARGET_MS,
    }
    return out


def print_table(
    table: Mapping[str, Any], checks: Mapping[str, Any], head_env: Mapping[str, str]
) -> None:
    width = max(len(k) for k in table)
    if head_env:
        print("head env: " + " ".join(f"{k}={v}" for k, v in sorted(head_env.items())))
    print(f"{'figure':<{width}}  {'base':>10}  {'head':>10}  {'head/base':>9}  runs (range)")
    for figure, row in table.items():
        runs = "  ".join(
            f"{r:.2f} ({g[0]:.2f}..{g[1]:.2f})" if r is not None and g else "-"
            for r, g in zip(row["ratio_by_run"], row["range_by_run"], strict=True)
        )
        ratio = f"{row['ratio']:.2f}" if row["ratio"] is not None else "not replicated"
        print(
            f"{figure:<{width}}  {row['base_mean'] or '-':>10}  {row['head_mean'] or '-':>10}"
            f"  {ratio:>9}  {runs}"
        )
    print()
    for name, check in checks.items():
        print(f"{'MET' if check['met'] else 'NOT MET':>7}  {name}: {check}")


# -- the run -----------------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.ab", description=__doc__)
    parser.add_argument("--base", required=True, help="git revision to compare against")
    parser.add_argument("--rounds", type=int, default=2, help="rounds per side (>= 2)")
    parser.add_argument("--runs", type=int, default=2, help="whole A/Bs that must agree (>= 2)")
    parser.add_argument("--rate", type=float, default=10.0, help="the fixed rate (orders/s)")
    parser.add_argument("--seconds", type=float, default=15.0)
    parser.add_argument("--over-rate", type=float, default=80.0, help="above either capacity")
    parser.add_argument("--over-seconds", type=float, default=10.0)
    parser.add_argument("--half-seconds", type=float, default=15.0)
    parser.add_argument("--floor-seconds", type=float, default=10.0)
    parser.add_argument(
        "--warm-up", type=float, default=40.0, help="seconds of load per stack (the JVM's JIT)"
    )
    parser.add_argument(
        "--warm-up-bursts",
        type=int,
        default=5,
        help="at most this many unmeasured bursts after it (fewer once two agree)",
    )
    parser.add_argument(
        "--settle", type=float, default=0.05, help="two warm-up bursts agree within this"
    )
    parser.add_argument("--idle-seconds", type=float, default=15.0)
    parser.add_argument(
        "--both-up", action="store_true", help="both stacks up throughout (the old way)"
    )
    parser.add_argument("--port-offset", type=int, default=300, help="the base stack's ports")
    parser.add_argument("--keep", action="store_true", help="leave both stacks running")
    parser.add_argument(
        "--head-env",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a MINIMART_ setting for the working tree's stack only (repeatable), e.g. "
        "MINIMART_KAFKA_CLIENT=librdkafka against the default with --base HEAD",
    )
    parser.add_argument("--out", default=str(HERE / "ab.json"))
    args = parser.parse_args(argv)
    if args.rounds < 2 or args.runs < 2:
        parser.error("--rounds and --runs must be at least 2")
    try:
        extra_head_env = head_env_assignments(args.head_env)
    except ValueError as exc:
        parser.error(str(exc))
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    logging.getLogger("kafka").setLevel(logging.ERROR)

    caller = Settings.from_env()
    work = caller.state_dir / "bench-ab"
    work.mkdir(parents=True, exist_ok=True)
    base_root = export_base(args.base, work)
    head_env = {**side_settings(caller, work / "state-head", 0), **extra_head_env}
    base_env = side_settings(caller, work / "state-base", args.port_offset)
    head = make_side("head", PROJECT_ROOT, Path(sys.executable), head_env)
    base_env.update(addresses_without_logins(base_root, base_env))
    base = make_side("base", base_root, base_root / ".venv" / "bin" / "python", base_env)
    started = dt.datetime.now(dt.UTC)
    info = bench_run.machine()
    revisions = {
        "base": _git("rev-parse", "--short", f"{args.base}^{{commit}}"),
        "head": _git("rev-parse", "--short", "HEAD")
        + ("+dirty" if _git("status", "--porcelain", "--untracked-files=no") else ""),
    }
    log.info("A/B %s: base %s vs head %s", info, revisions["base"], revisions["head"])
    sides = {"head": head, "base": base}
    # Named per side: the two stacks' components share their names (fn-order, kafka, ...).
    everything = [
        dataclasses.replace(c, name=f"{side.label}/{c.name}")
        for side in (head, base)
        for c in side.components
    ]
    runs: list[list[dict[str, dict[str, Any]]]] = []
    floor_p50: list[float] = []
    floors: list[dict[str, Any]] = []
    floor_rates: list[tuple[int, int]] = []  # (run, the working tree's half capacity)

    def warm_side(side: Side) -> list[float]:
        return warm(side, args.warm_up, args.over_rate, args.over_seconds,
                    args.warm_up_bursts, args.settle)  # fmt: skip

    stacks = OneAtATime(warm_side)
    try:
        for side in sides.values():
            fresh_up(side)
            if not args.both_up:
                side.run("-m", "minimart.local", "down")
        if args.both_up:
            for side in sides.values():
                warm_side(side)
        for run in range(args.runs):
            log.info("run %d of %d", run + 1, args.runs)
            rounds: list[dict[str, dict[str, Any]]] = []
            capacity: float | None = None
            for number in range(args.rounds):
                order = ("head", "base") if number % 2 == 0 else ("base", "head")
                this: dict[str, dict[str, Any]] = {}
                for label in order:
                    side = sides[label]
                    warm_up = None if args.both_up else stacks.use(side)
                    idle = measure_idle(side, args.idle_seconds)
                    low = measure_with_outside(side, everything, args.rate, args.seconds, 60)
                    over = measure_with_outside(
                        side, everything, args.over_rate, args.over_seconds, 300
                    )
                    if label == "head":
                        capacity = over["throughput_orders_per_s"]
                    half_rate = round(
                        max(1.0, (capacity or over["throughput_orders_per_s"] or args.rate) / 2)
                    )
                    half = measure_with_outside(side, everything, half_rate, args.half_seconds, 300)
                    this[label] = {"low": low, "over": over, "half": half, "idle": idle,
                                   "warm_up_cpu_ms_per_order": warm_up}  # fmt: skip
                    if label == "head":
                        floor_rates.append((run, half_rate))
                rounds.append(this)
            runs.append(rounds)
        # The floor last, on the working tree's stack: its throwaway topics (made, then
        # deleted, the logs removed a minute later) would load that side's broker alone.
        if not args.both_up:
            stacks.use(head)
        for run, rate in floor_rates:
            floor = measure_floor(head, rate, args.floor_seconds)
            floors.append({"run": run, "rate": rate, **floor})
            if floor.get("p50") is not None:
                floor_p50.append(float(floor["p50"]))
    finally:
        if not args.keep:
            for side in sides.values():
                try:
                    side.run("-m", "minimart.local", "down")
                except Exception as exc:  # report, and stop the other one still
                    log.warning("%s: down failed: %s", side.label, exc)
    tables = [ratios(rounds) for rounds in runs]
    table = replicated(tables)
    checks = verdicts(table, floor_p50)
    outside = [
        m["outside"]
        for rounds in runs
        for r in rounds
        for side in r.values()
        for phase, m in side.items()
        if phase in ("low", "over", "half")
    ]
    results = {
        "date": started.isoformat(timespec="seconds"),
        "machine": info,
        "revisions": revisions,
        "idle": all(o["idle"] for o in outside),
        "outside_cpu_pct_of_a_core_max": max(o["outside_cpu_pct_of_a_core"] or 0 for o in outside),
        "steal_pct_max": max(o["steal_pct"] or 0 for o in outside),
        "noise": "each measurement's outside.* is the CPU other processes took and the steal "
        "(bench/outside.py); idle only if every measurement was",
        "settings": {
            k: getattr(args, k)
            for k in (
                "rounds",
                "runs",
                "rate",
                "seconds",
                "over_rate",
                "over_seconds",
                "half_seconds",
                "warm_up",
                "warm_up_bursts",
                "settle",
                "idle_seconds",
                "both_up",
            )
        }
        | {"head_env": extra_head_env},
        "ratios": table,
        "targets": checks,
        "floor": floors,
        "runs": [{"ratios": t, "rounds": r} for t, r in zip(tables, runs, strict=True)],
    }
    Path(args.out).write_text(json.dumps(results, indent=2) + "\n")
    print_table(table, checks, extra_head_env)
    print(f"\nidle: {results['idle']} (outside CPU max {results['outside_cpu_pct_of_a_core_max']}%"
          f" of a core, steal max {results['steal_pct_max']}%)")  # fmt: skip
    log.info("wrote %s", args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
