"""The cluster's stores refuse clients without their credentials: k8s/infra's own settings,
run on this machine's PostgreSQL and Redis (the servers the local stack uses).

No cluster runs here, so the images' entrypoints are stood in for: PostgreSQL is initialised as
the postgres image does it (local connections trusted, TCP with scram-sha-256 once a password is
set) and the init script of ConfigMap postgres-init runs as the image runs it, with the
passwords in its environment; Redis runs with the StatefulSet's own arguments. The MongoDB
image's --auth cannot be shown here: the local stack's Mongo-wire store is another server.
"""

from __future__ import annotations

import os
import secrets
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
import redis
import yaml

from minimart.local.servers.postgres import BIN_DIR
from minimart.settings import PROJECT_ROOT
from tests.stack import free_ports

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]

INFRA = PROJECT_ROOT / "k8s" / "infra"
DATABASES = ("minimart_orders", "minimart_inventory", "minimart_payments")


def _documents(name: str) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all((INFRA / name).read_text()) if d]


def _of_kind(name: str, kind: str) -> dict[str, Any]:
    (doc,) = [d for d in _documents(name) if d["kind"] == kind]
    return doc


def _as_postgres(argv: list[str], env: dict[str, str] | None = None) -> None:
    """Run ``argv`` as the postgres account when root (PostgreSQL refuses to run as root)."""
    prefix = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
    pairs = [f"{k}={v}" for k, v in (env or {}).items()]
    subprocess.run([*prefix, "env", *pairs, *argv], check=True, capture_output=True, timeout=60)


@pytest.fixture(scope="module")
def postgres() -> Iterator[tuple[int, dict[str, str]]]:
    if not (BIN_DIR / "initdb").exists():
        pytest.fail(f"{BIN_DIR}/initdb not found: install postgresql-15 (docs/deploy.md)")
    folder = Path(tempfile.mkdtemp(prefix="minimart-pg-auth-", dir="/tmp"))
    folder.chmod(0o755)
    data = folder / "data"
    data.mkdir(mode=0o700)
    if os.geteuid() == 0:
        shutil.chown(data, "postgres", "postgres")
    (port,) = free_ports(1)
    passwords = {f"{db.upper()}_DB_PASSWORD": secrets.token_hex(24) for db in DATABASES}
    admin = secrets.token_hex(24)
    try:
        password_file = folder / "admin"
        password_file.write_text(admin)
        password_file.chmod(0o644)
        # What the image's entrypoint does: initdb with the superuser's password, local trust,
        # scram-sha-256 for every TCP client.
        _as_postgres(
            [
                str(BIN_DIR / "initdb"),
                "-D",
                str(data),
                "-U",
                "postgres",
                f"--pwfile={password_file}",
                "--auth-local=trust",
                "--auth-host=scram-sha-256",
            ]
        )
        with (data / "pg_hba.conf").open("a") as hba:
            hba.write("host all all all scram-sha-256\n")
        options = f"-c listen_addresses=127.0.0.1 -p {port} -k {data}"
        log = folder / "postgres.log"  # the server's output (not our pipe: it would stay open)
        log.touch()
        if os.geteuid() == 0:
            shutil.chown(log, "postgres", "postgres")
        pg_ctl = [str(BIN_DIR / "pg_ctl"), "-D", str(data), "-l", str(log), "-o", options]
        _as_postgres([*pg_ctl, "-w", "start"])
        init = _of_kind("postgres.yaml", "ConfigMap")["data"]
        (script,) = init.values()
        statefulset = _of_kind("postgres.yaml", "StatefulSet")
        (container,) = statefulset["spec"]["template"]["spec"]["containers"]
        names = {e["name"] for e in container["env"]}
        assert set(passwords) <= names, "the StatefulSet gives the init script its passwords"
        user = next(e["value"] for e in container["env"] if e["name"] == "POSTGRES_USER")
        env = {
            "PATH": f"{BIN_DIR}:/usr/bin:/bin",
            "POSTGRES_USER": user,
            "PGHOST": str(data),
            "PGPORT": str(port),
            **passwords,
        }
        _as_postgres(["bash", "-e", "-c", script], env)
        yield port, {db: passwords[f"{db.upper()}_DB_PASSWORD"] for db in DATABASES}
    finally:
        subprocess.run(
            [
                *(["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []),
                str(BIN_DIR / "pg_ctl"),
                "-D",
                str(data),
                "-m",
                "fast",
                "stop",
            ],
            capture_output=True,
            timeout=60,
            check=False,
        )
        shutil.rmtree(folder, ignore_errors=True)


def _connect(port: int, user: str, database: str, password: str | None) -> psycopg.Connection:
    return psycopg.connect(
        host="127.0.0.1",
        port=port,
        user=user,
        dbname=database,
        password=password or "",
        connect_timeout=5,
        autocommit=True,
    )


def test_each_role_reaches_its_own_database_and_owns_it(
    postgres: tuple[int, dict[str, str]],
) -> None:
    port, passwords = postgres
    for database, password in passwords.items():
        with _connect(port, database, database, password) as conn:
            row = conn.execute(
                "SELECT rolsuper, rolcreatedb, rolcreaterole FROM pg_roles WHERE rolname = %s",
                (database,),
            ).fetchone()
            assert row == (False, False, False), database
            # It migrates its own schema (CREATE in the public schema of its database).
            conn.execute("CREATE TABLE migrated (id int)")
            conn.execute("DROP TABLE migrated")


def test_a_role_is_refused_by_the_other_databases(postgres: tuple[int, dict[str, str]]) -> None:
    port, passwords = postgres
    for database, password in passwords.items():
        for other in [*(d for d in DATABASES if d != database), "postgres", "template1"]:
            with pytest.raises(psycopg.OperationalError, match=r"permission denied|not allowed"):
                _connect(port, database, other, password).close()


def test_a_client_without_the_password_is_refused(postgres: tuple[int, dict[str, str]]) -> None:
    port, _ = postgres
    for user in [*DATABASES, "postgres"]:
        with pytest.raises(psycopg.OperationalError, match="password"):
            _connect(port, user, DATABASES[0], None).close()
        with pytest.raises(psycopg.OperationalError, match="password authentication failed"):
            _connect(port, user, DATABASES[0], secrets.token_hex(24)).close()


@pytest.fixture(scope="module")
def redis_port() -> Iterator[tuple[int, str]]:
    statefulset = _of_kind("redis.yaml", "StatefulSet")
    (container,) = statefulset["spec"]["template"]["spec"]["containers"]
    password = secrets.token_hex(24)
    env = {e["name"]: password for e in container["env"] if "secretKeyRef" in e["valueFrom"]}
    assert set(env) == {"REDIS_PASSWORD", "REDISCLI_AUTH"}
    folder = Path(tempfile.mkdtemp(prefix="minimart-redis-auth-"))
    (port,) = free_ports(1)
    # The StatefulSet's arguments, $(VAR) expanded as the kubelet does, on a private dir/port.
    args = [a.replace("$(REDIS_PASSWORD)", env["REDIS_PASSWORD"]) for a in container["args"]]
    args[args.index("--dir") + 1] = str(folder)
    process = subprocess.Popen(
        [
            *[shutil.which("redis-server") or "redis-server", *args[1:]],
            *["--port", str(port), "--bind", "127.0.0.1", "--save", ""],
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        client = redis.Redis(host="127.0.0.1", port=port, password=password)
        deadline = time.monotonic() + 30
        while True:
            try:
                client.ping()
                break
            except redis.ConnectionError:
                assert process.poll() is None, "redis-server exited"
                assert time.monotonic() < deadline, "redis-server did not answer in 30 s"
                time.sleep(0.05)
        yield port, password
    finally:
        process.terminate()
        process.wait(timeout=30)
        shutil.rmtree(folder, ignore_errors=True)


def test_redis_refuses_a_client_without_the_password(redis_port: tuple[int, str]) -> None:
    port, password = redis_port
    with pytest.raises(redis.AuthenticationError):
        redis.Redis(host="127.0.0.1", port=port).ping()
    with pytest.raises(redis.AuthenticationError):
        redis.Redis(host="127.0.0.1", port=port, password=secrets.token_hex(24)).ping()
    assert redis.Redis(host="127.0.0.1", port=port, password=password).ping()


def test_the_readiness_probe_authenticates(redis_port: tuple[int, str]) -> None:
    port, password = redis_port
    statefulset = _of_kind("redis.yaml", "StatefulSet")
    (container,) = statefulset["spec"]["template"]["spec"]["containers"]
    probe = container["readinessProbe"]["exec"]["command"]
    argv = [probe[0], "-p", str(port), *probe[1:]]
    with_auth = subprocess.run(
        argv, env={"REDISCLI_AUTH": password}, capture_output=True, text=True, check=True
    )
    assert with_auth.stdout.strip() == "PONG"
    without = subprocess.run(argv, env={}, capture_output=True, text=True, check=False)
    assert "NOAUTH" in without.stdout + without.stderr
