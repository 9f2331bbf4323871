"""The reload runner of `make dev`: a changed Python file restarts the command's whole process
tree; a command that exits ends the runner with its code."""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import psutil

from minimart.local.reload import run

# A child that starts a grandchild and notes both pids (one line per start).
FAMILY = """
import os, subprocess, sys, time
grandchild = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
with open(sys.argv[1], "a") as out:
    out.write(f"{os.getpid()} {grandchild.pid}\\n")
time.sleep(600)
"""


def eventually(check: Callable[[], bool], timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "not within the deadline"
        time.sleep(0.05)


def starts(notes: Path) -> list[list[int]]:
    if not notes.exists():
        return []
    return [[int(p) for p in line.split()] for line in notes.read_text().splitlines()]


def gone(pids: list[int]) -> bool:
    return not any(
        psutil.pid_exists(pid) and psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
        for pid in pids
    )


def test_a_changed_python_file_restarts_the_whole_tree(tmp_path: Path) -> None:
    watched, notes = tmp_path / "code", tmp_path / "starts.txt"
    watched.mkdir()
    stop = threading.Event()
    result: list[int] = []
    runner = threading.Thread(
        target=lambda: result.append(
            run([sys.executable, "-c", FAMILY, str(notes)], [str(watched)], stop)
        )
    )
    runner.start()
    try:
        eventually(lambda: len(starts(notes)) == 1)
        (watched / "handler.py").write_text("x = 1\n")
        eventually(lambda: len(starts(notes)) == 2)
        first, second = starts(notes)
        eventually(lambda: gone(first))  # the grandchild too, not only the child
        assert not gone(second)
        (watched / "notes.txt").write_text("not Python\n")
        time.sleep(2.5)  # past watchfiles' debounce: no restart for it
        assert len(starts(notes)) == 2
    finally:
        stop.set()
        runner.join(30)
    assert result == [0]
    eventually(lambda: gone(second))


def test_a_command_that_exits_ends_the_runner_with_its_code(tmp_path: Path) -> None:
    assert run([sys.executable, "-c", "raise SystemExit(3)"], [str(tmp_path)]) == 3
