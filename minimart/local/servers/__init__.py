"""The embedded local stack: real servers on this machine (``settings.host``), no containers.

``ensure_up(settings)`` starts PostgreSQL, Redis, secantusdb (Mongo wire protocol) and a
KRaft Kafka broker (and Prometheus when asked), each a program of the state dir's supervisord
(``supervision.py``: restarted whenever it exits) with its log under ``<state_dir>/logs``.
Nothing here does I/O at import time.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor

from minimart.local.servers.base import ManagedServer, MissingBinaryError, ServerError
from minimart.local.servers.kafka_broker import Kafka
from minimart.local.servers.mongo import Mongo
from minimart.local.servers.postgres import Postgres
from minimart.local.servers.process import (
    ProcessError,
    family_pids,
    listening_addresses,
    port_open,
    wait_for_port,
    wait_for_port_closed,
)
from minimart.local.servers.prometheus import Prometheus
from minimart.local.servers.redis_server import Redis
from minimart.local.servers.supervision import ProgramInfo, Supervisor
from minimart.settings import Settings

log = logging.getLogger(__name__)

ALL = ("postgres", "redis", "mongo", "kafka", "prometheus")
DEFAULT = ("postgres", "redis", "mongo", "kafka")


def infrastructure(settings: Settings) -> dict[str, ManagedServer]:
    """Every server of the local stack by name (nothing is started)."""
    servers: list[ManagedServer] = [
        Postgres(settings),
        Redis(settings),
        Mongo(settings),
        Kafka(settings),
        Prometheus(settings),
    ]
    return {server.name: server for server in servers}


def _select(settings: Settings, names: Iterable[str] | None) -> list[ManagedServer]:
    servers = infrastructure(settings)
    chosen = list(ALL if names is None else names)
    unknown = [name for name in chosen if name not in servers]
    if unknown:
        raise ServerError(f"unknown server(s) {unknown}; known: {list(servers)}")
    return [servers[name] for name in chosen]


def ensure_up(settings: Settings, names: Iterable[str] = DEFAULT) -> list[str]:
    """Start the named servers that are not up (concurrently), wait until all are ready and
    provisioned (databases, topics). Returns the names of the servers it started."""
    servers = _select(settings, names)

    def start(server: ManagedServer) -> tuple[str, bool, float]:
        began = time.monotonic()
        started = server.start()
        return server.name, started, time.monotonic() - began

    with ThreadPoolExecutor(max_workers=len(servers) or 1, thread_name_prefix="start") as pool:
        futures = [pool.submit(start, server) for server in servers]
        errors: list[BaseException] = []
        started: list[str] = []
        for future in futures:
            exc = future.exception()
            if exc is not None:
                errors.append(exc)
                continue
            name, did_start, seconds = future.result()
            log.info(
                "%s %s in %.1fs",
                name,
                "started" if did_start else "already up",
                seconds,
            )
            if did_start:
                started.append(name)
    if errors:
        if len(errors) == 1:
            raise errors[0]
        raise ServerError("; ".join(f"{type(e).__name__}: {e}" for e in errors))
    return started


def stop_all(settings: Settings, names: Iterable[str] | None = None) -> list[str]:
    """Stop the named servers (all by default) together; returns those that were running.
    With no names, supervisord stops too once nothing else of it runs."""
    servers = _select(settings, names)
    sup = Supervisor(settings)
    if not sup.is_running():
        return []
    stopped = sup.stop([server.name for server in servers])
    for server in servers:
        if server.name in stopped:
            wait_for_port_closed(server.host, server.port, 5.0)
    if names is None and not any(info.active for info in sup.infos().values()):
        sup.shutdown()
    return stopped


def restart(settings: Settings, name: str) -> None:
    """Stop then start one server, keeping its data (for fault-injection tests)."""
    (server,) = _select(settings, [name])
    server.stop()
    server.start()


def supervised(settings: Settings, name: str) -> ProgramInfo | None:
    """What supervisord says of program ``name`` (None: not defined or no supervisord)."""
    return Supervisor(settings).infos().get(name)


def pid_of(settings: Settings, name: str) -> int | None:
    """The pid of program ``name`` while it runs."""
    return Supervisor(settings).pid(name)


def kill(settings: Settings, name: str, *, family: bool = True) -> int | None:
    """SIGKILL program ``name`` with its process group (and, with ``family``, every
    descendant): a crash, which supervisord heals by itself. Its old pid (None: not running)."""
    return Supervisor(settings).kill(name, family=family)


def process_listening_addresses(settings: Settings, name: str) -> set[tuple[str, int]]:
    """Where program ``name`` and its descendants listen (empty when not running)."""
    pid = pid_of(settings, name)
    return set() if pid is None else listening_addresses(family_pids(pid))


__all__ = [
    "ALL",
    "DEFAULT",
    "Kafka",
    "ManagedServer",
    "MissingBinaryError",
    "Mongo",
    "Postgres",
    "ProcessError",
    "ProgramInfo",
    "Prometheus",
    "Redis",
    "ServerError",
    "Supervisor",
    "ensure_up",
    "family_pids",
    "infrastructure",
    "kill",
    "listening_addresses",
    "pid_of",
    "port_open",
    "process_listening_addresses",
    "restart",
    "stop_all",
    "supervised",
    "wait_for_port",
    "wait_for_port_closed",
]
