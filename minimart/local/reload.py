"""``python -m minimart.local.reload --watch DIR ... -- COMMAND...``: run COMMAND and start it
anew whenever a Python file under a watched folder changes (``make dev``).

The watching is watchfiles' (inotify, debounced). Its own command-line runner stops the child
with SIGINT and, after a timeout, SIGKILLs that one process; a functions-framework server
(gunicorn) takes about 30 s to stop on SIGINT (its worker waits out the graceful timeout) and
keeps its worker when only the master is killed. So this runner stops the child's whole process
tree at once (SIGKILL, through psutil): a function keeps no state of its own, and what it had in
flight is redelivered by its KafkaSource, as after a crash. When the child exits by itself, the
runner exits with its code, so supervisord restarts (and counts) it like any crashed program.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import subprocess
import sys
import threading
from collections.abc import Sequence

import psutil
from watchfiles import PythonFilter, watch

log = logging.getLogger("minimart.reload")
POLL_MS = 500  # how often the runner looks whether the child still runs


def kill_tree(pid: int) -> None:
    """SIGKILL ``pid`` and every process below it; return once they are gone."""
    try:
        root = psutil.Process(pid)
        family = [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return
    for member in family:
        with contextlib.suppress(psutil.NoSuchProcess):
            member.kill()
    psutil.wait_procs(family, timeout=10)


def run(command: Sequence[str], folders: Sequence[str], stop: threading.Event | None = None) -> int:
    """Run ``command`` until it exits (its exit code) or ``stop`` is set (0), restarting it
    after each change of a Python file under ``folders``."""
    stop = stop or threading.Event()
    child = subprocess.Popen(command)
    try:
        for changes in watch(
            *folders,
            watch_filter=PythonFilter(),
            stop_event=stop,
            rust_timeout=POLL_MS,
            yield_on_timeout=True,
            raise_interrupt=False,
        ):
            if child.poll() is not None:
                return child.returncode
            if changes:
                names = sorted({path for _, path in changes})
                log.info("changed: %s; restarting %s", ", ".join(names[:5]), command[0])
                kill_tree(child.pid)
                child.wait()
                child = subprocess.Popen(command)
        return 0
    finally:
        if child.poll() is None:
            kill_tree(child.pid)
            child.wait()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m minimart.local.reload")
    parser.add_argument("--watch", action="append", required=True, help="a folder (repeat)")
    parser.add_argument("command", nargs=argparse.REMAINDER, help="-- then the command")
    args = parser.parse_args(argv)
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not command:
        parser.error("no command given")
    logging.basicConfig(level=logging.INFO, format="[reload] %(message)s")
    return run(command, args.watch)


if __name__ == "__main__":
    sys.exit(main())
