"""PostgreSQL 15 from Debian, run as the ``postgres`` account (it refuses to run as root)."""

from __future__ import annotations

import contextlib
import os
import pwd
import stat
from pathlib import Path

import psycopg
from psycopg import sql

from minimart.local.servers.base import (
    INSTALL_HINT,
    ManagedServer,
    MissingBinaryError,
)

BIN_DIR = Path("/usr/lib/postgresql/15/bin")
ACCOUNT = "postgres"
DATABASES = ("minimart_orders", "minimart_inventory", "minimart_payments")
_CONF = "minimart.conf"
# Unix socket paths are limited to 107 bytes; beyond that the server gets no socket.
_MAX_SOCKET_PATH = 100

# Sized for a 2-core laptop or CI runner; durable (fsync on).
TUNING = {
    "max_connections": "200",
    "shared_buffers": "128MB",
    "effective_cache_size": "512MB",
    "work_mem": "4MB",
    "maintenance_work_mem": "64MB",
    "max_worker_processes": "4",
    "max_parallel_workers": "2",
    "max_parallel_workers_per_gather": "1",
    "max_wal_size": "512MB",
    "random_page_cost": "1.1",
    "fsync": "on",
    "synchronous_commit": "on",
    "full_page_writes": "on",
    "logging_collector": "off",
    "log_min_messages": "warning",
    "log_line_prefix": "'%m [%p] %d '",
    "log_timezone": "'UTC'",
    "timezone": "'UTC'",
}


class Postgres(ManagedServer):
    name = "postgres"
    start_timeout = 120.0

    @property
    def port(self) -> int:
        return self.settings.postgres_port

    def check_installed(self) -> None:
        for program in ("postgres", "initdb"):
            if not (BIN_DIR / program).exists():
                raise MissingBinaryError(
                    f"{BIN_DIR / program} not found: install the Debian package postgresql-15 "
                    f"({INSTALL_HINT})"
                )
        if os.geteuid() == 0:
            try:
                pwd.getpwnam(ACCOUNT)
            except KeyError as exc:
                raise MissingBinaryError(
                    f"no {ACCOUNT!r} account: install the Debian package postgresql-15 "
                    f"({INSTALL_HINT})"
                ) from exc

    def run_as(self) -> str | None:
        return ACCOUNT if os.geteuid() == 0 else None

    def stop_signal(self) -> tuple[str, bool]:
        # SIGINT to the postmaster alone is a "fast" shutdown: it ends sessions, checkpoints
        # and exits. SIGTERM would wait for every client to disconnect.
        return "INT", False

    def _socket_dir(self) -> str:
        socket = self.data_dir / f".s.PGSQL.{self.port}"
        return str(self.data_dir) if len(str(socket)) <= _MAX_SOCKET_PATH else ""

    def prepare(self) -> None:
        data = self.data_dir
        if os.geteuid() == 0:
            account = pwd.getpwnam(ACCOUNT)
            _make_traversable(data.parent)
            os.chown(data, account.pw_uid, account.pw_gid)
        data.chmod(0o700)
        if not (data / "PG_VERSION").exists():
            self._initdb()
        (data / _CONF).write_text(self._conf())

    def _initdb(self) -> None:
        argv = [
            str(BIN_DIR / "initdb"),
            "-D",
            str(self.data_dir),
            "-U",
            ACCOUNT,
            "--auth=trust",
            "--encoding=UTF8",
            "--locale=C",
        ]
        self.run_tool(argv, "initdb")
        (self.data_dir / "pg_hba.conf").write_text(
            "# minimart local stack: trust, this machine only (settings.host is one of its own)\n"
            "local all all trust\n"
            "host  all all 127.0.0.1/32 trust\n"
            "host  all all samehost trust\n"
        )
        with (self.data_dir / "postgresql.conf").open("a") as conf:
            conf.write(f"\ninclude_if_exists = '{_CONF}'\n")

    def _conf(self) -> str:
        values = {
            "listen_addresses": f"'{self.host}'",
            "port": str(self.port),
            "unix_socket_directories": f"'{self._socket_dir()}'",
            **TUNING,
        }
        lines = [f"{key} = {value}" for key, value in values.items()]
        return "# written by minimart.local.servers at each start\n" + "\n".join(lines) + "\n"

    def command(self) -> list[str]:
        return [str(BIN_DIR / "postgres"), "-D", str(self.data_dir)]

    def dsn(self, database: str = "postgres") -> str:
        return f"postgresql://{ACCOUNT}@{self.host}:{self.port}/{database}"

    def is_ready(self) -> bool:
        with psycopg.connect(self.dsn(), connect_timeout=2) as conn:
            conn.execute("SELECT 1")
        return True

    def provision(self) -> None:
        with psycopg.connect(self.dsn(), autocommit=True, connect_timeout=5) as conn:
            existing = {
                row[0] for row in conn.execute("SELECT datname FROM pg_database").fetchall()
            }
            for database in DATABASES:
                if database in existing:
                    continue
                # DuplicateDatabase: created concurrently by another `ensure_up`.
                with contextlib.suppress(psycopg.errors.DuplicateDatabase):
                    conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(database)))


def _make_traversable(folder: Path) -> None:
    """Let the ``postgres`` account reach ``folder``: add o+x to ancestors that lack it."""
    for path in [folder, *folder.parents]:
        mode = path.stat().st_mode
        if not mode & stat.S_IXOTH:
            path.chmod(stat.S_IMODE(mode) | stat.S_IXOTH)
