"""What every managed server has: a name, a port, start (idempotent), stop, readiness."""

from __future__ import annotations

import logging
import os
import shutil
import signal
import subprocess
import sys
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping
from pathlib import Path

from minimart.local.servers import process
from minimart.settings import Settings

log = logging.getLogger(__name__)

INSTALL_HINT = "run `make install` (scripts/install.sh)"
_SYSTEM_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
_POLL_S = 0.1


class ServerError(RuntimeError):
    """A managed server is missing, failed to start, or does not answer."""


class MissingBinaryError(ServerError):
    """A program a server needs is not installed; the message names the package."""


def venv_bin() -> Path:
    """The ``bin`` folder of the Python environment we run in (holds ``secantusd-py``)."""
    return Path(sys.executable).parent


def require_binary(program: str, package: str) -> str:
    """The path of ``program`` (an absolute path or a name looked up in the venv and the
    system PATH); MissingBinaryError naming the package that provides it otherwise."""
    if os.path.isabs(program):
        if os.access(program, os.X_OK):
            return program
    else:
        found = shutil.which(program, path=f"{venv_bin()}:{_SYSTEM_PATH}")
        if found:
            return found
    raise MissingBinaryError(f"{program} not found: install {package} ({INSTALL_HINT})")


def child_env(settings: Settings, extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """A small, explicit environment for server processes (nothing leaks from the caller)."""
    env = {
        "PATH": f"{venv_bin()}:{_SYSTEM_PATH}",
        "LANG": "C.UTF-8",
        "LC_ALL": "C.UTF-8",
        "TZ": "UTC",
        "HOME": str(settings.state_dir),
    }
    env.update(extra or {})
    return env


def poll(check: Callable[[], bool], timeout: float, what: str) -> None:
    """Call ``check`` until it returns true; TimeoutError naming ``what`` after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            if check():
                return
        except ServerError:
            raise
        except Exception as exc:  # a starting server refuses in many ways
            last: Exception | None = exc
        else:
            last = None
        if time.monotonic() >= deadline:
            raise TimeoutError(f"{what} after {timeout:.0f}s" + (f": {last}" if last else ""))
        time.sleep(_POLL_S)


class ManagedServer(ABC):
    """One server of the local stack, run as a supervised process bound to 127.0.0.1."""

    name: str
    start_timeout: float = 60.0
    stop_timeout: float = 15.0

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.host = "127.0.0.1"

    @property
    @abstractmethod
    def port(self) -> int: ...

    @property
    def data_dir(self) -> Path:
        return self.settings.state_dir / self.name

    @property
    def log_file(self) -> Path:
        return process.log_path(self.name, self.settings)

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name} {self.host}:{self.port}>"

    # -- what a concrete server provides ------------------------------------------------

    def check_installed(self) -> None:
        """Raise MissingBinaryError if a program the server needs is not installed."""
        return None

    def prepare(self) -> None:
        """One-time, idempotent setup before the first start (initdb, storage format...)."""
        return None

    @abstractmethod
    def command(self) -> list[str]:
        """The argv of the server process."""

    def run_as(self) -> str | None:
        """The account the server runs as (None: whoever we are)."""
        return None

    def run_tool(self, argv: list[str], what: str) -> None:
        """Run a one-off setup tool (initdb, storage format) in the data dir, as the server's
        account; ServerError with its output if it fails."""
        who = process.account(self.run_as())
        result = subprocess.run(
            argv,
            env=child_env(self.settings),
            cwd=self.data_dir,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            check=False,
            user=who.user,
            group=who.group,
            extra_groups=who.extra_groups,
        )
        if result.returncode != 0:
            raise ServerError(f"{what} failed:\n{result.stdout}\n{result.stderr}")

    def is_ready(self) -> bool:
        """Whether the server answers a real request (not only accepts a connection)."""
        return self.is_up()

    def provision(self) -> None:
        """Idempotent setup once the server is ready (databases, topics)."""
        return None

    def stop_signal(self) -> tuple[int, bool]:
        """The graceful-stop signal and whether it goes to the whole process group."""
        return signal.SIGTERM, True

    # -- lifecycle ------------------------------------------------------------------------

    def is_up(self) -> bool:
        """Whether the server's port accepts a TCP connection."""
        return process.port_open(self.host, self.port)

    def is_running(self) -> bool:
        """Whether the process we started (per its pid file) is alive."""
        return process.is_running(self.name, self.settings)

    def start(self) -> bool:
        """Start the server unless it already runs; wait until ready; provision.

        Returns True if a process was started, False if a running server was reused.
        Safe to call from several processes at once (a lock file serialises them).
        """
        with process.lock(self.name, self.settings):
            started = False
            if not self.is_up() and not self.is_running():
                self.check_installed()
                self.data_dir.mkdir(parents=True, exist_ok=True)
                self.prepare()
                process.spawn(
                    self.name,
                    self.command(),
                    env=child_env(self.settings),
                    cwd=self.data_dir,
                    settings=self.settings,
                    user=self.run_as(),
                )
                started = True
            self.wait_ready(self.start_timeout)
            self.provision()
        return started

    def wait_ready(self, timeout: float | None = None) -> None:
        """Return once the server answers; ServerError with the log's tail if it died."""
        timeout = self.start_timeout if timeout is None else timeout
        spawned = self.is_running()

        def ready() -> bool:
            if spawned and not self.is_running():
                raise ServerError(f"{self.name} exited during startup:\n{self.log_tail()}")
            return self.is_up() and self.is_ready()

        try:
            poll(ready, timeout, f"{self.name} not ready on {self.host}:{self.port}")
        except ServerError:
            raise
        except TimeoutError as exc:
            raise ServerError(f"{exc}\n{self.log_tail()}") from exc

    def stop(self) -> bool:
        """Stop the process we started and wait until the port is free.

        Returns whether a process was running.
        """
        sig, group = self.stop_signal()
        with process.lock(self.name, self.settings):
            stopped = process.stop_process(
                self.name, self.settings, self.stop_timeout, sig=sig, group=group
            )
        if stopped:
            process.wait_for_port_closed(self.host, self.port, 5.0)
        elif self.is_up():
            log.warning(
                "%s: %s:%d is held by a process we did not start", self.name, self.host, self.port
            )
        return stopped

    def kill(self) -> bool:
        """SIGKILL the server (a crash, for fault-injection tests)."""
        return process.kill_process(self.name, self.settings)

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_file.read_text(errors="replace").splitlines()[-lines:])
        except FileNotFoundError:
            return "(no log)"
