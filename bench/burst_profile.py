"""Profile the running stack through a burst: py-spy on every function and dispatcher.

    python -m bench.burst_profile --rate 80 --seconds 10 --out bench/profile

Warms the stack, starts ``py-spy record --nonblocking --subprocesses --format raw`` (idle
frames left out) on each function's and each dispatcher's process, sends a burst the way
``make bench-ab`` does (``bench.measure.measure_rate``: open loop, then drained), and writes
per process the collapsed stacks (``<out>/<name>.txt``) and a summary (``<out>/summary.json``):
each function's top frames by inclusive and by own samples, as % of its samples (py-spy
samples a thread only while it runs, so samples ~ CPU), beside the burst's per-component CPU.
"""

from __future__ import annotations

import argparse
import collections
import json
import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from bench import cpu as cpu_mod
from bench import load
from bench.ab import addresses_without_logins, make_side
from bench.measure import measure_burst
from minimart.local import stack
from minimart.settings import Settings

log = logging.getLogger("bench.burst_profile")

PY_SPY = Path(sys.executable).parent / "py-spy"
_TOP = 25
# Leaf frames of a thread that waits (a lock, a selector, a socket read, a queue): under
# --nonblocking on a busy machine py-spy's idle filter lets many of them through (a thread
# woken but not yet running). Samples ending in one are counted apart as "waiting"; the rest
# are the on-CPU view (each function's top frames as % of its on-CPU samples).
WAITING_LEAVES = (
    "Connection.wait (psycopg/connection.py)", "BasePipeline._communicate_gen",
    "BasePipeline._fetch_gen",
    "Condition.wait (", "Event.wait (", "EpollSelector.select", "_PollLikeSelector.select",
    "select (selectors.py)", "_worker (futures/thread.py)", "PeriodicExecutor._run",
    "NetworkingInterface.recv_into", "SocketBuffer._read_from_socket",
    "AbstractConnection.can_read",
    "SinkConnection._exchange", "KafkaSourceDispatcher.run (local/dispatcher.py)",
    "PartitionWorker._run (local/dispatcher.py)", "readinto (socket.py)",
)  # fmt: skip


def _frame_name(frame: str) -> str:
    """``fn (path/to/module.py:12)`` -> ``fn (module.py)``: lines merged, paths shortened."""
    name, _, where = frame.partition(" (")
    path = where.rsplit(":", 1)[0]
    parts = path.split("/")
    short = "/".join(parts[-2:]) if parts else path
    return f"{name} ({short})"


def summarise(raw: Path) -> dict[str, Any]:
    """Top frames of a py-spy raw (collapsed) file, inclusive and own, as % of its on-CPU
    samples (those not ending in a ``WAITING_LEAVES`` frame)."""
    inclusive: collections.Counter[str] = collections.Counter()
    own: collections.Counter[str] = collections.Counter()
    total = waiting = 0
    for line in raw.read_text().splitlines():
        stack_text, _, count_text = line.rpartition(" ")
        if not stack_text:
            continue
        count = int(count_text)
        frames = [_frame_name(f) for f in stack_text.split(";")[1:]]  # [0] is the thread
        if not frames or frames[-1].startswith(WAITING_LEAVES):
            waiting += count
            continue
        total += count
        for frame in set(frames):
            inclusive[frame] += count
        if frames:
            own[frames[-1]] += count

    def pct(n: int) -> float:
        return round(100 * n / total, 1) if total else 0.0

    return {
        "on_cpu_samples": total,
        "waiting_samples": waiting,
        "inclusive_pct": {f: pct(n) for f, n in inclusive.most_common(_TOP * 2)},
        "own_pct": {f: pct(n) for f, n in own.most_common(_TOP)},
    }


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.burst_profile", description=__doc__)
    parser.add_argument("--rate", type=float, default=80.0)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--warm-up", type=float, default=15.0)
    parser.add_argument("--drain", type=float, default=180.0)
    parser.add_argument("--sample-rate", type=int, default=100)
    parser.add_argument("--out", type=Path, default=Path("bench/profile"))
    parser.add_argument("--no-spy", action="store_true", help="the burst alone, unprofiled")
    parser.add_argument(
        "--tree", type=Path, help="the stack runs another tree (its own .venv): its components"
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    if args.tree is None:
        settings = Settings.from_env()
        components = cpu_mod.stack_components(settings, stack.plan_stack(settings))
    else:
        minimart_env = {k: v for k, v in os.environ.items() if k.startswith("MINIMART_")}
        # A tree from before the stores' logins: its stores read as they are (bench/ab.py).
        minimart_env.update(addresses_without_logins(args.tree, minimart_env))
        side = make_side("tree", args.tree, args.tree / ".venv" / "bin" / "python", minimart_env)
        settings, components = side.settings, side.components
    profiled = [c for c in components if c.kind in (cpu_mod.FUNCTION, cpu_mod.DISPATCHER)]
    listeners = cpu_mod._listeners({c.port for c in profiled})
    if args.warm_up:
        load.warm_up(settings, seconds=args.warm_up)
    args.out.mkdir(parents=True, exist_ok=True)
    spies: dict[str, subprocess.Popen[bytes]] = {}
    for component in [] if args.no_spy else profiled:
        for pid in sorted(listeners.get(component.port, ())):
            spies[component.name] = subprocess.Popen(
                [str(PY_SPY), "record", "--nonblocking", "--subprocesses", "--format", "raw",
                 "--rate", str(args.sample_rate), "--output",
                 str(args.out / f"{component.name}.txt"), "--pid", str(pid)],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            )  # fmt: skip
            break
    if spies:
        time.sleep(2.0)  # py-spy attaches
    started = time.time()
    measured = measure_burst("burst", settings, components, args.rate, args.seconds, args.drain)
    measured["profiled_s"] = round(time.time() - started, 1)
    for spy in spies.values():
        spy.send_signal(signal.SIGINT)
    for spy in spies.values():
        spy.wait(60)
    summary: dict[str, Any] = {
        "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "loadavg_at_start": os.getloadavg(),
        "burst": measured,
        "profiles": {
            name: summarise(args.out / f"{name}.txt")
            for name in spies
            if (args.out / f"{name}.txt").exists()
        },
    }
    (args.out / "summary.json").write_text(json.dumps(summary, indent=1))
    print(json.dumps({k: summary["burst"].get(k) for k in (
        "throughput_orders_per_s", "completions_per_s_in_window", "cpu_ms_per_order",
        "functions_cpu_ms_per_order", "emulator_cpu_ms_per_order", "cpu_ms_per_order_by_component",
        "publish_mean_ms", "step_mean_ms", "delivery_mean_ms", "loadavg_1m",
    )}, indent=1))  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
