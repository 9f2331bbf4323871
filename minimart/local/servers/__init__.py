"""The embedded local stack: real servers on 127.0.0.1, no containers.

``ensure_up(settings)`` starts PostgreSQL, Redis, secantusdb (Mongo wire protocol) and a
KRaft Kafka broker (and Prometheus when asked), each as a detached process supervised through
pid files under ``<state_dir>/run`` with logs under ``<state_dir>/logs``. Nothing here does
I/O at import time.
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
    is_running,
    kill_process,
    listening_addresses,
    log_path,
    pid_path,
    port_open,
    process_listening_addresses,
    read_pid,
    session_pids,
    spawn,
    stop_process,
    wait_for_port,
    wait_for_port_closed,
)
from minimart.local.servers.prometheus import Prometheus
from minimart.local.servers.redis_server import Redis
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
    """Stop the named servers (all by default) concurrently; returns those that were running."""
    servers = _select(settings, names)
    with ThreadPoolExecutor(max_workers=len(servers) or 1, thread_name_prefix="stop") as pool:
        results = list(pool.map(lambda server: (server.name, server.stop()), servers))
    return [name for name, stopped in results if stopped]


def restart(settings: Settings, name: str) -> None:
    """Stop then start one server, keeping its data (for fault-injection tests)."""
    (server,) = _select(settings, [name])
    server.stop()
    if server.is_up():
        raise ServerError(f"{name}: port {server.port} is held by a process we did not start")
    server.start()


__all__ = [
    "ALL",
    "DEFAULT",
    "Kafka",
    "ManagedServer",
    "MissingBinaryError",
    "Mongo",
    "Postgres",
    "ProcessError",
    "Prometheus",
    "Redis",
    "ServerError",
    "ensure_up",
    "family_pids",
    "infrastructure",
    "is_running",
    "kill_process",
    "listening_addresses",
    "log_path",
    "pid_path",
    "port_open",
    "process_listening_addresses",
    "read_pid",
    "restart",
    "session_pids",
    "spawn",
    "stop_all",
    "stop_process",
    "wait_for_port",
    "wait_for_port_closed",
]
