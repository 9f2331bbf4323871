"""supervisord event listener: the kubelet's CrashLoopBackOff, and the restart counts.

supervisord retries a program that exits within ``startsecs`` only ``startretries`` times
(1, 2, 3 s apart) and then leaves it FATAL for good: a server that cannot start while another
one is down (PostgreSQL waiting for its old backends, Kafka for its old session) would stay
down. The kubelet never gives up: it restarts a crashing container after 10 s, 20 s, 40 s...
capped at 5 minutes, and resets the delay once the container ran for 10 minutes. This
listener does the same for FATAL programs, on a local scale (``BASE_S`` doubling up to
``CAP_S``, reset after ``RESET_AFTER_S`` of running), and counts every restart that was not
asked for (a program started again after it exited, backed off or was FATAL) into
``restarts.json`` for ``make status``.

Run by supervisord itself (``[eventlistener:crashloop]``, events PROCESS_STATE and TICK_5); the
state machine (:class:`CrashLoop`) has no I/O and is unit-tested.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
import xmlrpc.client
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from supervisor import childutils
from supervisor.xmlrpc import Faults

log = logging.getLogger("minimart.crashloop")

BASE_S = 5.0
CAP_S = 60.0
RESET_AFTER_S = 120.0
_RESTART_FROM = frozenset({"EXITED", "BACKOFF", "FATAL"})


@dataclass
class CrashLoop:
    """What to do on each supervisord event: whom to start again, and when."""

    restarts: dict[str, int] = field(default_factory=dict)
    streak: dict[str, int] = field(default_factory=dict)  # FATALs in a row
    due: dict[str, float] = field(default_factory=dict)  # FATAL program -> when to start it
    running_since: dict[str, float] = field(default_factory=dict)

    def delay(self, name: str) -> float:
        return float(min(BASE_S * 2 ** (self.streak.get(name, 1) - 1), CAP_S))

    def on_event(self, event: str, headers: dict[str, str], now: float) -> list[str]:
        """Update the state; the programs to start now."""
        if event.startswith("TICK_"):
            ready = sorted(name for name, when in self.due.items() if when <= now)
            for name in ready:
                del self.due[name]
            return ready
        name = headers.get("processname", "")
        state = event.removeprefix("PROCESS_STATE_")
        if state == "STARTING" and headers.get("from_state") in _RESTART_FROM:
            self.restarts[name] = self.restarts.get(name, 0) + 1
        elif state == "RUNNING":
            self.running_since[name] = now
        elif state in ("EXITED", "BACKOFF"):
            since = self.running_since.pop(name, None)
            if since is not None and now - since >= RESET_AFTER_S:
                self.streak.pop(name, None)
        elif state == "FATAL":
            self.streak[name] = self.streak.get(name, 0) + 1
            self.due[name] = now + self.delay(name)
            log.warning("%s is FATAL: starting it again in %.0fs", name, self.delay(name))
        elif state == "STOPPED":  # stopped on purpose: no revival, a fresh streak next time
            self.due.pop(name, None)
            self.streak.pop(name, None)
        return []


def _save(path: Path, daemon_pid: int, restarts: dict[str, int]) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps({"supervisord_pid": daemon_pid, "restarts": restarts}))
    tmp.replace(path)


def _load(path: Path, daemon_pid: int) -> dict[str, int]:
    """Counts written by an earlier listener of the same supervisord (this one restarted)."""
    try:
        doc = json.loads(path.read_text())
    except (FileNotFoundError, ValueError):
        return {}
    if doc.get("supervisord_pid") != daemon_pid:
        return {}
    return {str(k): int(v) for k, v in doc.get("restarts", {}).items()}


def _start(rpc: Any, name: str) -> None:
    try:
        rpc.supervisor.startProcess(name, False)
    except xmlrpc.client.Fault as fault:
        if fault.faultCode not in (Faults.ALREADY_STARTED, Faults.BAD_NAME):
            log.warning("cannot start %s: %s", name, fault.faultString)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m minimart.local.servers.crashloop")
    parser.add_argument("--restarts", type=Path, required=True, help="where to keep the counts")
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO, stream=sys.stderr, format="%(asctime)s %(levelname)s %(message)s"
    )
    rpc = childutils.getRPCInterface(os.environ)
    daemon_pid = int(rpc.supervisor.getPID())
    loop = CrashLoop(restarts=_load(args.restarts, daemon_pid))
    _save(args.restarts, daemon_pid, loop.restarts)
    while True:
        headers, payload = childutils.listener.wait(sys.stdin, sys.stdout)
        before = dict(loop.restarts)
        for name in loop.on_event(headers["eventname"], childutils.get_headers(payload),
                                  time.time()):  # fmt: skip
            _start(rpc, name)
        if loop.restarts != before:
            _save(args.restarts, daemon_pid, loop.restarts)
        childutils.listener.ok(sys.stdout)


if __name__ == "__main__":
    main()
