"""Supervision of detached processes: the primitive behind servers, functions and dispatchers.

A process started with :func:`spawn` runs in its own session (so its whole process group can
be signalled), writes stdout and stderr to ``<state_dir>/logs/<name>.log`` and is remembered
by a pid file ``<state_dir>/run/<name>.pid`` that outlives the Python process which started
it: ``make up`` returns while the servers keep running, and ``make down`` (another process)
finds them again.

A pid file holds the pid alone. A pid is trusted only while the process it names started
before the pid file was written, so a pid recycled by the kernel after a reboot or a crash
is never mistaken for ours.
"""

from __future__ import annotations

import fcntl
import logging
import os
import pwd
import signal
import socket
import subprocess
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from minimart.settings import Settings

log = logging.getLogger(__name__)

# Slack between a process's start time (whole seconds of boot time + clock ticks) and the
# modification time of its pid file.
_START_SLACK_S = 2.0
_POLL_S = 0.05
# How long SIGKILLed processes may take to disappear before that is an error.
KILL_WAIT_S = 5.0

# Children of this Python process, kept so that they are reaped (no zombies) when they exit.
_CHILDREN: dict[int, subprocess.Popen[bytes]] = {}


class ProcessError(RuntimeError):
    """A supervised process could not be started or does not behave."""


def log_path(name: str, settings: Settings) -> Path:
    return settings.state_dir / "logs" / f"{name}.log"


def pid_path(name: str, settings: Settings) -> Path:
    return settings.state_dir / "run" / f"{name}.pid"


def _boot_time() -> float:
    for line in Path("/proc/stat").read_text().splitlines():
        if line.startswith("btime "):
            return float(line.split()[1])
    raise ProcessError("no btime in /proc/stat")


def _stat_fields(pid: int) -> list[str] | None:
    """Fields of ``/proc/<pid>/stat`` after the command name (field 3 onwards)."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    return raw[raw.rfind(")") + 2 :].split()


def _start_time(pid: int) -> float | None:
    fields = _stat_fields(pid)
    if fields is None:
        return None
    return _boot_time() + int(fields[19]) / os.sysconf("SC_CLK_TCK")


def _alive(pid: int) -> bool:
    child = _CHILDREN.get(pid)
    if child is not None:
        if child.poll() is None:
            return True
        del _CHILDREN[pid]
        return False
    fields = _stat_fields(pid)
    return fields is not None and fields[0] not in ("Z", "X")


def _processes() -> dict[int, tuple[int, int]]:
    """Every live process: pid -> (parent pid, session id)."""
    table = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            fields = _stat_fields(int(entry.name))
            if fields is not None and fields[0] not in ("Z", "X"):
                table[int(entry.name)] = (int(fields[1]), int(fields[3]))
    return table


def session_pids(sid: int) -> list[int]:
    """Live processes of the session ``sid`` (a process started by :func:`spawn` leads one)."""
    return sorted(pid for pid, (_, session) in _processes().items() if session == sid)


def family_pids(pid: int) -> list[int]:
    """Live processes of ``pid``'s session and all descendants of ``pid``, even those that
    left the session (PostgreSQL's backends call setsid)."""
    table = _processes()
    family = {p for p, (_, session) in table.items() if session == pid}
    if pid in table:
        family.add(pid)
    grew = True
    while grew:
        children = {p for p, (parent, _) in table.items() if parent in family} - family
        family |= children
        grew = bool(children)
    return sorted(family)


def _recorded(name: str, settings: Settings) -> tuple[int | None, bool]:
    """The pid in ``name``'s pid file, and whether that process (the leader) is still ours
    and alive. A stale file whose session has no process left is removed."""
    path = pid_path(name, settings)
    try:
        pid = int(path.read_text().split()[0])
        written = path.stat().st_mtime
    except (FileNotFoundError, IndexError, ValueError):
        return None, False
    started = _start_time(pid)
    if started is not None and started <= written + _START_SLACK_S and _alive(pid):
        return pid, True
    # The leader is gone; processes it forked may remain in its session (a recycled pid
    # cannot lead a new session while that session still has members).
    if session_pids(pid):
        return pid, False
    path.unlink(missing_ok=True)
    return None, False


def read_pid(name: str, settings: Settings) -> int | None:
    """The pid of the live process recorded for ``name``, or None."""
    pid, alive = _recorded(name, settings)
    return pid if alive else None


def is_running(name: str, settings: Settings) -> bool:
    return read_pid(name, settings) is not None


@dataclass(frozen=True)
class Account:
    """Popen's ``user``/``group``/``extra_groups`` to run a child as another account."""

    user: int | None = None
    group: int | None = None
    extra_groups: list[int] | None = None


def account(user: str | None) -> Account:
    """How to run a child as ``user``: a uid/gid switch as root, nothing when we already are
    that user (or when ``user`` is None); ProcessError otherwise."""
    if user is None:
        return Account()
    entry = pwd.getpwnam(user)
    if os.geteuid() == 0:
        return Account(entry.pw_uid, entry.pw_gid, [])
    if os.geteuid() == entry.pw_uid:
        return Account()
    raise ProcessError(f"cannot run as {user!r}: not root")


def spawn(
    name: str,
    argv: Sequence[str],
    *,
    env: Mapping[str, str],
    cwd: Path,
    settings: Settings,
    user: str | None = None,
) -> int:
    """Start ``argv`` detached from this process and return its pid.

    The process leads a new session, so :func:`stop_process` signals it and everything it
    forks. With ``user`` (when we are root) it runs with that account's uid and gid — set in
    the child itself, with no ``su``/``runuser`` wrapper in between, which would otherwise
    own the pid, relay signals and SIGKILL a slow shutdown after two seconds.
    """
    existing = read_pid(name, settings)
    if existing is not None:
        raise ProcessError(f"{name} is already running (pid {existing})")
    who = account(user)
    logfile = log_path(name, settings)
    pidfile = pid_path(name, settings)
    logfile.parent.mkdir(parents=True, exist_ok=True)
    pidfile.parent.mkdir(parents=True, exist_ok=True)
    with logfile.open("ab") as out:
        out.write(f"--- {time.strftime('%Y-%m-%dT%H:%M:%S')} {' '.join(argv)}\n".encode())
        out.flush()
        try:
            child = subprocess.Popen(
                list(argv),
                env=dict(env),
                cwd=cwd,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                close_fds=True,
                user=who.user,
                group=who.group,
                extra_groups=who.extra_groups,
            )
        except OSError as exc:
            raise ProcessError(f"cannot start {name}: {exc}") from exc
    _CHILDREN[child.pid] = child
    tmp = pidfile.with_suffix(".tmp")
    tmp.write_text(f"{child.pid}\n")
    tmp.replace(pidfile)
    log.info("started %s (pid %d)", name, child.pid)
    return child.pid


@contextmanager
def lock(name: str, settings: Settings) -> Iterator[None]:
    """An exclusive lock (across processes) on ``name``'s lifecycle: start it or stop it."""
    path = settings.state_dir / "run" / f"{name}.lock"
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _wait_gone(pid: int, family: Sequence[int], deadline: float) -> bool:
    def gone() -> bool:
        return not _alive(pid) and not any(_alive(p) for p in family) and not session_pids(pid)

    while time.monotonic() < deadline:
        if gone():
            return True
        time.sleep(_POLL_S)
    return gone()


def _signal(pid: int, sig: int, group: bool) -> None:
    try:
        if group:
            os.killpg(pid, sig)
        else:
            os.kill(pid, sig)
    except ProcessLookupError:
        pass


def _kill_all(name: str, pid: int, family: Sequence[int]) -> None:
    """SIGKILL the process group and every family member; return once all are gone."""
    _signal(pid, signal.SIGKILL, True)
    for member in family:
        _signal(member, signal.SIGKILL, False)
    if not _wait_gone(pid, family, time.monotonic() + KILL_WAIT_S):
        raise ProcessError(f"{name} (pid {pid}) survives SIGKILL")


def stop_process(
    name: str,
    settings: Settings,
    timeout: float = 10.0,
    *,
    sig: int = signal.SIGTERM,
    group: bool = True,
) -> bool:
    """Stop ``name`` gracefully: ``sig`` to its process group (or to the leader alone when
    ``group`` is false), then SIGKILL whatever is left after ``timeout`` seconds.

    Returns whether a process was running; returns once no process of its family (session
    and descendants, see :func:`family_pids`) is left.
    """
    pid, alive = _recorded(name, settings)
    if pid is None:
        return False
    family = family_pids(pid)
    _signal(pid, sig, group if alive else True)
    if not _wait_gone(pid, family, time.monotonic() + timeout):
        log.warning("%s (pid %d) did not stop within %.0fs: SIGKILL", name, pid, timeout)
        _kill_all(name, pid, family)
    pid_path(name, settings).unlink(missing_ok=True)
    log.info("stopped %s (pid %d)", name, pid)
    return True


def kill_process(name: str, settings: Settings) -> bool:
    """SIGKILL ``name`` and its whole family at once (a crash, for fault tests)."""
    pid, _ = _recorded(name, settings)
    if pid is None:
        return False
    family = family_pids(pid)
    _kill_all(name, pid, family)
    pid_path(name, settings).unlink(missing_ok=True)
    log.info("killed %s (pid %d)", name, pid)
    return True


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


def _socket_inodes(pid: int) -> set[str]:
    inodes: set[str] = set()
    try:
        fds = list(Path(f"/proc/{pid}/fd").iterdir())
    except (FileNotFoundError, PermissionError):
        return inodes
    for fd in fds:
        try:
            target = os.readlink(fd)
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    return inodes


def _decode_address(hex_address: str) -> tuple[str, int]:
    host_hex, port_hex = hex_address.split(":")
    raw = bytes.fromhex(host_hex)
    if len(raw) == 4:
        host = socket.inet_ntop(socket.AF_INET, raw[::-1])
    else:
        words = b"".join(raw[i : i + 4][::-1] for i in range(0, 16, 4))
        host = socket.inet_ntop(socket.AF_INET6, words)
    return host, int(port_hex, 16)


def listening_addresses(pids: Sequence[int]) -> set[tuple[str, int]]:
    """TCP (v4 and v6) addresses on which any of ``pids`` listens, from ``/proc/net/tcp*``."""
    inodes: set[str] = set()
    for pid in pids:
        inodes |= _socket_inodes(pid)
    found = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except FileNotFoundError:
            continue
        for line in lines:
            fields = line.split()
            if fields[3] == "0A" and fields[9] in inodes:  # 0A: TCP_LISTEN
                found.add(_decode_address(fields[1]))
    return found


def process_listening_addresses(name: str, settings: Settings) -> set[tuple[str, int]]:
    """Where ``name`` and every process of its session listen (empty when not running)."""
    pid = read_pid(name, settings)
    return set() if pid is None else listening_addresses(family_pids(pid))
