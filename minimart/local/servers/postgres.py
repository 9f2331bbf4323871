"""PostgreSQL 15 from Debian, run as the ``postgres`` account (it refuses to run as root).

Every client logs in with a password (scram-sha-256), over TCP and over the unix socket alike:
no ``trust``, no ``peer``. Each database is owned by a login role of its name that may do
nothing else (``k8s/infra/postgres.yaml`` makes the same roles in the cluster); PUBLIC may
connect to none of the databases. The superuser ``postgres`` is the runner's alone (it creates
the roles and databases); its password is minimart-secrets' ``POSTGRES_PASSWORD`` too, as in
the cluster. Peer authentication over the runner's socket would spare that password, but the
socket is optional here (a state dir at a long path gets none) and the runner is root, not
``postgres``: it would need an ident map naming root, so TCP with a password it is.

A state dir made before the roles (trust for every client, every table the superuser's) is
brought over at the next start, its data kept: ``provision`` gives the superuser its password,
makes the roles, hands each database and what is in it to its role, and only then rewrites
``pg_hba.conf`` and reloads (a trusting server accepts the password it is not asked for).
"""

from __future__ import annotations

import contextlib
import os
import pwd
import stat
from pathlib import Path

import psycopg
from psycopg import sql

from minimart import local_stores
from minimart.local.servers.base import (
    INSTALL_HINT,
    ManagedServer,
    MissingBinaryError,
    ServerError,
)

BIN_DIR = Path("/usr/lib/postgresql/15/bin")
ACCOUNT = "postgres"
DATABASES = tuple(local_stores.DATABASES)
# Every client, every database, a password; the runner's socket included.
HBA = (
    "# minimart local stack (minimart/local/servers/postgres.py): a password for every client\n"
    "local all all scram-sha-256\n"
    "host  all all 127.0.0.1/32 scram-sha-256\n"
    "host  all all samehost scram-sha-256\n"
)
# What a role owns in its database (tables, views, sequences no column owns: those follow
# their table); the superuser's before the roles existed.
_OWNED_BY_SUPERUSER = """
SELECT n.nspname, c.relname, c.relkind FROM pg_class c
JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE n.nspname = 'public' AND c.relowner = 'postgres'::regrole
  AND c.relkind IN ('r', 'p', 'v', 'm', 'f', 'S')
  AND NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.classid = 'pg_class'::regclass
                  AND d.objid = c.oid AND d.deptype IN ('a', 'i'))
"""
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
        # The superuser's password from a file only the postgres account reads, beside the
        # data dir (initdb wants that empty), removed at once.
        password_file = self.data_dir.parent / ".postgres-password"
        fd = os.open(password_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write(self._admin_password())
        try:
            if os.geteuid() == 0:
                account = pwd.getpwnam(ACCOUNT)
                os.chown(password_file, account.pw_uid, account.pw_gid)
            argv = [
                str(BIN_DIR / "initdb"),
                "-D",
                str(self.data_dir),
                "-U",
                ACCOUNT,
                f"--pwfile={password_file}",
                "--auth=scram-sha-256",
                "--encoding=UTF8",
                "--locale=C",
            ]
            self.run_tool(argv, "initdb")
        finally:
            password_file.unlink(missing_ok=True)
        (self.data_dir / "pg_hba.conf").write_text(HBA)
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

    def _admin_password(self) -> str:
        return local_stores.local_secret(self.settings)[local_stores.POSTGRES_ADMIN_KEY]

    def dsn(self, database: str = "postgres") -> str:
        """The superuser's DSN of ``database`` (the runner's: provisioning, test set-up)."""
        url = f"postgresql://{self.host}:{self.port}/{database}"
        return local_stores.with_login(url, local_stores.POSTGRES_ADMIN, self._admin_password())

    def is_ready(self) -> bool:
        with psycopg.connect(self.dsn(), connect_timeout=2) as conn:
            conn.execute("SELECT 1")
        return True

    def provision(self) -> None:
        """The roles and databases, each database its role's; then password auth only."""
        secret = local_stores.local_secret(self.settings)
        with psycopg.connect(self.dsn(), autocommit=True, connect_timeout=5) as conn:
            admin = local_stores.POSTGRES_ADMIN
            _set_password(conn, admin, secret[local_stores.POSTGRES_ADMIN_KEY])
            existing = {
                row[0] for row in conn.execute("SELECT datname FROM pg_database").fetchall()
            }
            for database, login in local_stores.DATABASES.items():
                role = sql.Identifier(login.user)
                # DuplicateObject/DuplicateDatabase: made concurrently by another `ensure_up`.
                with contextlib.suppress(psycopg.errors.DuplicateObject):
                    conn.execute(sql.SQL("CREATE ROLE {} LOGIN").format(role))
                conn.execute(
                    sql.SQL("ALTER ROLE {} LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE").format(role)
                )
                _set_password(conn, login.user, secret[login.key])
                name = sql.Identifier(database)
                if database not in existing:
                    with contextlib.suppress(psycopg.errors.DuplicateDatabase):
                        conn.execute(sql.SQL("CREATE DATABASE {} OWNER {}").format(name, role))
                conn.execute(sql.SQL("ALTER DATABASE {} OWNER TO {}").format(name, role))
                conn.execute(sql.SQL("REVOKE ALL ON DATABASE {} FROM PUBLIC").format(name))
                self._hand_over(database, login.user)
            conn.execute("REVOKE CONNECT ON DATABASE postgres, template1 FROM PUBLIC")
            hba = self.data_dir / "pg_hba.conf"
            if hba.read_text() != HBA:
                hba.write_text(HBA)
                if not conn.execute("SELECT pg_reload_conf()").fetchone():
                    raise ServerError("postgres: pg_hba.conf rewritten but not reloaded")

    def _hand_over(self, database: str, role: str) -> None:
        """What the superuser owns in ``database`` (a state dir from before the roles) goes
        to ``role``, which owns the database."""
        with psycopg.connect(self.dsn(database), autocommit=True, connect_timeout=5) as conn:
            for schema, relation, kind in conn.execute(_OWNED_BY_SUPERUSER).fetchall():
                what = "SEQUENCE" if kind == "S" else "TABLE"  # ALTER TABLE covers views too
                conn.execute(
                    sql.SQL("ALTER {} {} OWNER TO {}").format(
                        sql.SQL(what), sql.Identifier(schema, relation), sql.Identifier(role)
                    )
                )


def _set_password(conn: psycopg.Connection[tuple[object, ...]], role: str, password: str) -> None:
    """Give ``role`` ``password``, hashed here (as psql's \\password does): the server, its
    logs and its statistics never see the password itself."""
    verifier = conn.pgconn.encrypt_password(password.encode(), role.encode(), b"scram-sha-256")
    conn.execute(
        sql.SQL("ALTER ROLE {} PASSWORD {}").format(
            sql.Identifier(role), sql.Literal(verifier.decode())
        )
    )


def _make_traversable(folder: Path) -> None:
    """Let the ``postgres`` account reach ``folder``: add o+x to ancestors that lack it."""
    for path in [folder, *folder.parents]:
        mode = path.stat().st_mode
        if not mode & stat.S_IXOTH:
            path.chmod(stat.S_IMODE(mode) | stat.S_IXOTH)
