"""What the machine did besides the measurement: CPU of every other process, and steal.

An A/B ratio means something only if nothing else took the cores while it was measured. The
load average cannot tell (the stacks themselves make it), so this counts, over a window, the
machine's busy CPU (``/proc/stat``: user, nice, system, irq, softirq) less what the measured
processes used (both stacks' components, found by their ports as bench/cpu.py finds them, and
this process, which generates the load), and the time the hypervisor stole. A window is
called idle only when both stay under the bounds below.
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil

from bench.cpu import Component, ComponentCpu

# Idle: other processes took under 15% of one core, the hypervisor under 2% of the CPU. What
# counts as outside on an idle machine too: kernel threads, the VM agent, supervisord, and this
# meter's own scans of every socket (psutil): 6-10% of a core measured on 2026-12-06.
IDLE_OUTSIDE_PCT_OF_A_CORE = 15.0
IDLE_STEAL_PCT = 2.0
_BUSY = ("user", "nice", "system", "irq", "softirq")
_FIELDS = ("user", "nice", "system", "idle", "iowait", "irq", "softirq", "steal")


@dataclass(frozen=True)
class CpuTicks:
    """The machine's CPU time (seconds, all cores) by state, from /proc/stat's "cpu" line."""

    busy: float
    steal: float
    total: float

    @classmethod
    def parse(cls, stat_text: str) -> CpuTicks:
        line = next(row for row in stat_text.splitlines() if row.startswith("cpu "))
        ticks = dict(zip(_FIELDS, (int(v) for v in line.split()[1:9]), strict=True))
        per_s = os.sysconf("SC_CLK_TCK")
        busy = sum(ticks[name] for name in _BUSY) / per_s
        return cls(busy, ticks["steal"] / per_s, sum(ticks.values()) / per_s)


def read_ticks(stat: Path = Path("/proc/stat")) -> CpuTicks:
    return CpuTicks.parse(stat.read_text())


def verdict(
    busy_s: float, steal_s: float, total_s: float, measured_s: float, wall_s: float
) -> dict[str, Any]:
    """A window's outside load from its deltas (pure: tested with made-up numbers)."""
    outside_s = max(0.0, busy_s - measured_s)
    outside_pct = round(outside_s / wall_s * 100, 1) if wall_s > 0 else None
    steal_pct = round(steal_s / total_s * 100, 2) if total_s > 0 else None
    idle = (
        outside_pct is not None
        and steal_pct is not None
        and outside_pct < IDLE_OUTSIDE_PCT_OF_A_CORE
        and steal_pct < IDLE_STEAL_PCT
    )
    return {
        "outside_cpu_pct_of_a_core": outside_pct,
        "steal_pct": steal_pct,
        "measured_cpu_s": round(measured_s, 2),
        "idle": idle,
    }


class OutsideLoad:
    """Between ``start()`` and ``stop()``: the CPU other processes used, and steal."""

    def __init__(self, components: Sequence[Component]) -> None:
        names = [c.name for c in components]
        if len(set(names)) != len(names):
            raise ValueError("components must be named apart (one name per side and component)")
        self._meter = ComponentCpu(components)
        self._me = psutil.Process()
        self._began: tuple[CpuTicks, float, float] | None = None

    def _own_cpu_s(self) -> float:
        times = self._me.cpu_times()
        return float(times.user + times.system)

    def start(self) -> None:
        self._meter.start()
        self._began = (read_ticks(), self._own_cpu_s(), time.monotonic())

    def stop(self) -> dict[str, Any]:
        assert self._began is not None, "stop() before start()"
        ticks, own, began = self._began
        stacks_s = sum(self._meter.stop().values())
        now = read_ticks()
        measured = stacks_s + (self._own_cpu_s() - own)
        return verdict(now.busy - ticks.busy, now.steal - ticks.steal, now.total - ticks.total,
                       measured, time.monotonic() - began)  # fmt: skip
