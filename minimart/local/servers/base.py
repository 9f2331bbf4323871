"""What every managed server has: a name, a port, start (idempotent), stop, readiness."""

from __future__ import annotations

import logging
import os
import pwd
import shutil
import subprocess
import sys
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

from minimart.local.servers import process
from minimart.local.servers.supervision import Program, Supervisor
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


def supervisor(settings: Settings) -> Supervisor:
    """The supervisord of ``settings``' state dir (a handle: nothing is started)."""
    return Supervisor(settings)


@dataclass(frozen=True)
class Account:
    """subprocess's ``user``/``group``/``extra_groups`` to run a setup tool as another account."""

    user: int | None = None
    group: int | None = None
    extra_groups: list[int] | None = None


def account(user: str | None) -> Account:
    """How to run a tool as ``user``: a uid/gid switch as root, nothing when we already are
    that user (or when ``user`` is None); ServerError otherwise."""
    if user is None:
        return Account()
    entry = pwd.getpwnam(user)
    if os.geteuid() == 0:
        return Account(entry.pw_uid, entry.pw_gid, [])
    if os.geteuid() == entry.pw_uid:
        return Account()
    raise ServerError(f"cannot run as {user!r}: not root")


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
    """One server of the local stack, run as a supervised process bound to ``settings.host``
    (127.0.0.1 unless ``MINIMART_HOST`` says otherwise)."""

    name: str
    start_timeout: float = 60.0
    stop_timeout: float = 15.0

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.host = settings.host

    @property
    @abstractmethod
    def port(self) -> int: ...

    @property
    def data_dir(self) -> Path:
        return self.settings.state_dir / self.name

    @property
    def log_file(self) -> Path:
        return supervisor(self.settings).log_file(self.name)

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
        who = account(self.run_as())
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

    def stop_signal(self) -> tuple[str, bool]:
        """The graceful-stop signal and whether it goes to the whole process group."""
        return "TERM", True

    def program(self) -> Program:
        """How supervisord runs this server."""
        sig, group = self.stop_signal()
        return Program(
            name=self.name,
            argv=tuple(self.command()),
            cwd=self.data_dir,
            env=child_env(self.settings),
            user=self.run_as(),
            stop_signal=sig,
            stop_group=group,
            stop_wait_s=self.stop_timeout,
            priority=100,
        )

    # -- lifecycle ------------------------------------------------------------------------

    def is_up(self) -> bool:
        """Whether the server's port accepts a TCP connection."""
        return process.port_open(self.host, self.port)

    def is_running(self) -> bool:
        """Whether supervisord runs (or is bringing back) this server."""
        return supervisor(self.settings).pid(self.name) is not None

    def start(self) -> bool:
        """Start the server under supervisord unless it runs; wait until ready; provision.

        Returns True if a process was started, False if a running server was reused.
        Safe to call from several processes at once (a lock file serialises them).
        """
        sup = supervisor(self.settings)
        sup.ensure_running(child_env(self.settings))
        with sup.lock(self.name):
            sup.define([self.program()])  # a changed definition stops it: it starts anew
            started = sup.pid(self.name) is None
            if started:
                if self.is_up():
                    raise ServerError(
                        f"{self.name}: {self.host}:{self.port} is held by a process that"
                        " supervisord does not run: stop it"
                    )
                self.check_installed()
                self.data_dir.mkdir(parents=True, exist_ok=True)
                self.prepare()
                sup.start(self.name)
            self.wait_ready(self.start_timeout)
            self.provision()
        return started

    def wait_ready(self, timeout: float | None = None) -> None:
        """Return once the server answers; ServerError with the log's tail if supervisord
        gave up on it (FATAL: it keeps exiting at start)."""
        timeout = self.start_timeout if timeout is None else timeout
        sup = supervisor(self.settings)

        def ready() -> bool:
            if sup.state(self.name) == "FATAL":
                raise ServerError(f"{self.name} keeps exiting at start:\n{self.log_tail()}")
            return self.is_up() and self.is_ready()

        try:
            poll(ready, timeout, f"{self.name} not ready on {self.host}:{self.port}")
        except ServerError:
            raise
        except TimeoutError as exc:
            raise ServerError(f"{exc}\n{self.log_tail()}") from exc

    def stop(self) -> bool:
        """Stop the server and wait until its port is free; whether it was running."""
        sup = supervisor(self.settings)
        with sup.lock(self.name):
            stopped = bool(sup.is_running() and sup.stop([self.name]))
        if stopped:
            process.wait_for_port_closed(self.host, self.port, 5.0)
        elif self.is_up():
            log.warning(
                "%s: %s:%d is held by a process we did not start", self.name, self.host, self.port
            )
        return stopped

    def kill(self) -> bool:
        """SIGKILL the server's process group (a crash: supervisord brings it back)."""
        return supervisor(self.settings).kill(self.name, family=True) is not None

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_file.read_text(errors="replace").splitlines()[-lines:])
        except FileNotFoundError:
            return "(no log)"
