"""What the local stack asks of the operating system about processes and ports (psutil).

Starting, restarting and stopping processes is supervisord's job (``supervision.py``); this
module only looks: a process's family (itself and every descendant, even those that left its
session, as PostgreSQL's backends do), where processes listen, whether a port answers; and
signals a process group (a crash, for fault tests and the chaos soak).
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import time
from collections.abc import Iterable, Sequence

import psutil

_POLL_S = 0.05
# How long SIGKILLed processes may take to disappear before that is an error.
KILL_WAIT_S = 5.0


class ProcessError(RuntimeError):
    """A supervised process could not be started or does not behave."""


def alive(pid: int) -> bool:
    """Whether ``pid`` is a live process (a zombie is not)."""
    try:
        return bool(psutil.Process(pid).status() != psutil.STATUS_ZOMBIE)
    except psutil.Error:
        return False


def family_pids(pid: int) -> list[int]:
    """``pid`` and all its live descendants (empty when ``pid`` is gone)."""
    try:
        leader = psutil.Process(pid)
        members = [leader, *leader.children(recursive=True)]
    except psutil.Error:
        return []
    return sorted(p.pid for p in members if alive(p.pid))


def wait_gone(pids: Iterable[int], timeout: float) -> bool:
    """Whether every one of ``pids`` is gone within ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    pending = list(pids)
    while True:
        pending = [pid for pid in pending if alive(pid)]
        if not pending:
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(_POLL_S)


def kill_group(pid: int, *, family: bool = False) -> list[int]:
    """SIGKILL ``pid``'s process group (with ``family``, every descendant too, as a container
    crash would); return once they are gone, with the pids killed."""
    victims = family_pids(pid) if family else [pid]
    try:
        group = os.getpgid(pid)
    except ProcessLookupError:
        return []
    victims = sorted({*victims, *(p.pid for p in psutil.process_iter() if _in_group(p, group))})
    os.killpg(group, signal.SIGKILL)
    for member in victims:
        with contextlib.suppress(ProcessLookupError):
            os.kill(member, signal.SIGKILL)
    if not wait_gone(victims, KILL_WAIT_S):
        raise ProcessError(f"pid {pid} survives SIGKILL")
    return victims


def _in_group(proc: psutil.Process, group: int) -> bool:
    try:
        return os.getpgid(proc.pid) == group
    except ProcessLookupError:
        return False


def listening_addresses(pids: Sequence[int]) -> set[tuple[str, int]]:
    """TCP (v4 and v6) addresses on which any of ``pids`` listens."""
    found: set[tuple[str, int]] = set()
    for pid in pids:
        try:
            connections = psutil.Process(pid).net_connections(kind="tcp")
        except psutil.Error:
            continue
        found |= {(c.laddr.ip, c.laddr.port) for c in connections if c.status == psutil.CONN_LISTEN}
    return found


def port_open(host: str, port: int, timeout: float = 0.5) -> bool:
    """Whether something accepts a TCP connection on ``host:port``."""
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def wait_for_port(host: str, port: int, timeout: float) -> None:
    """Return once ``host:port`` accepts a connection; TimeoutError after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not port_open(host, port):
        if time.monotonic() >= deadline:
            raise TimeoutError(f"nothing listens on {host}:{port} after {timeout:.0f}s")
        time.sleep(_POLL_S)


def wait_for_port_closed(host: str, port: int, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while port_open(host, port):
        if time.monotonic() >= deadline:
            raise TimeoutError(f"{host}:{port} still accepts connections after {timeout:.0f}s")
        time.sleep(_POLL_S)
