"""CPU seconds of a running stack, split by component (psutil).

A component is found by the port it listens on, so the same code measures any tree's stack
(whatever manages its processes): each function on its port, each dispatcher on its metrics
port, Kafka, PostgreSQL, the Mongo-compatible store and Redis on theirs. A component's CPU is
that of the processes listening on its port and all their descendants (PostgreSQL's backends,
gunicorn's workers), user + system, between ``start()`` and ``stop()``; a process that appears
in between counts from zero.

The functions and the servers are the product; the dispatchers are the local stand-in for
Knative's KafkaSource data plane (in a cluster: Knative's, not minimart's), so the two sums
are reported apart.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import psutil

FUNCTION = "function"
DISPATCHER = "dispatcher"
SERVER = "server"
PRODUCT_KINDS = (FUNCTION, SERVER)
EMULATOR_KINDS = (DISPATCHER,)


@dataclass(frozen=True)
class Component:
    name: str  # fn-order, dispatch-inventory-source, kafka, postgres, mongo, redis
    kind: str  # FUNCTION, DISPATCHER or SERVER
    port: int

    def as_dict(self) -> dict[str, Any]:
        return {"name": self.name, "kind": self.kind, "port": self.port}

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any]) -> Component:
        return cls(str(raw["name"]), str(raw["kind"]), int(raw["port"]))


def stack_components(settings: Any, plan: Any) -> list[Component]:
    """The components of the stack ``plan_stack(settings)`` describes."""
    components = [Component(fn.process_name, FUNCTION, fn.port) for fn in plan.functions]
    components += [Component(d.process_name, DISPATCHER, d.metrics_port) for d in plan.dispatchers]
    components += [
        Component("kafka", SERVER, settings.kafka_port),
        Component("postgres", SERVER, settings.postgres_port),
        Component("mongo", SERVER, settings.mongo_port),
        Component("redis", SERVER, settings.redis_port),
    ]
    return components


_Key = tuple[int, float]  # (pid, create time): a reused pid is another process


def _listeners(ports: set[int]) -> dict[int, set[int]]:
    """port -> pids listening on it (TCP)."""
    found: dict[int, set[int]] = {}
    for conn in psutil.net_connections(kind="tcp"):
        listening = conn.status == psutil.CONN_LISTEN and conn.pid is not None
        if listening and conn.laddr and conn.laddr.port in ports:
            found.setdefault(conn.laddr.port, set()).add(conn.pid)
    return found


def _family(pids: Iterable[int]) -> dict[_Key, psutil.Process]:
    family: dict[_Key, psutil.Process] = {}
    for pid in pids:
        try:
            root = psutil.Process(pid)
            members = [root, *root.children(recursive=True)]
        except psutil.Error:
            continue
        for proc in members:
            try:
                family[(proc.pid, proc.create_time())] = proc
            except psutil.Error:
                continue
    return family


def _cpu_seconds(procs: Mapping[_Key, psutil.Process]) -> dict[_Key, float]:
    seconds = {}
    for key, proc in procs.items():
        try:
            times = proc.cpu_times()
        except psutil.Error:
            continue
        seconds[key] = times.user + times.system
    return seconds


class ComponentCpu:
    """CPU seconds per component between ``start()`` and ``stop()``."""

    def __init__(self, components: Sequence[Component]) -> None:
        self.components = list(components)
        self._before: dict[str, dict[_Key, float]] = {}

    def _sample(self) -> dict[str, dict[_Key, float]]:
        listeners = _listeners({c.port for c in self.components})
        return {c.name: _cpu_seconds(_family(listeners.get(c.port, ()))) for c in self.components}

    def start(self) -> None:
        self._before = self._sample()

    def stop(self) -> dict[str, float]:
        after = self._sample()
        used = {}
        for name, now in after.items():
            before = self._before.get(name, {})
            used[name] = sum(max(0.0, s - before.get(key, 0.0)) for key, s in now.items())
        return used


def split(
    components: Sequence[Component], cpu_s: Mapping[str, float], orders: int, deliveries: float
) -> dict[str, Any]:
    """CPU per completed order (ms) by component, with the product / emulator sums."""
    if orders <= 0:
        return {}
    kinds = {c.name: c.kind for c in components}
    per_order = {name: round(s / orders * 1000, 3) for name, s in sorted(cpu_s.items())}

    def total(selected: Sequence[str]) -> float:
        return sum(s for name, s in cpu_s.items() if kinds.get(name) in selected)

    emulator_s = total(EMULATOR_KINDS)
    return {
        "cpu_ms_per_order_by_component": per_order,
        "cpu_ms_per_order": round(sum(cpu_s.values()) / orders * 1000, 3),
        "product_cpu_ms_per_order": round(total(PRODUCT_KINDS) / orders * 1000, 3),
        "functions_cpu_ms_per_order": round(total((FUNCTION,)) / orders * 1000, 3),
        "servers_cpu_ms_per_order": round(total((SERVER,)) / orders * 1000, 3),
        "emulator_cpu_ms_per_order": round(emulator_s / orders * 1000, 3),
        "deliveries": int(deliveries),
        "emulator_cpu_ms_per_delivery": (
            round(emulator_s / deliveries * 1000, 4) if deliveries > 0 else None
        ),
    }
