"""The local stores refuse a client without its credentials (#23), on a state dir made now and
on one made before the credentials existed (trust for every PostgreSQL client, every table the
superuser's, a Mongo-wire store without users, Redis without a password), which ``ensure_up``
brings over with its data.

Every server is the real one, started by this module on free ports under private state dirs;
the logins come the one way they come everywhere (``minimart.local_stores``).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
import redis
from pymongo import MongoClient
from pymongo.errors import OperationFailure

from minimart import local_stores
from minimart.adapters.mongo import shipments_collection
from minimart.adapters.redis_streams import make_client
from minimart.local import servers
from minimart.local.servers.base import child_env, require_binary
from minimart.local.servers.postgres import BIN_DIR
from minimart.local_secrets import random_password
from minimart.settings import Settings
from tests.stack import eventually, free_ports, private_settings, private_state_dir

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]

STORES = ("postgres", "redis", "mongo")
# What the state dir made before the credentials holds (checked after the migration).
KEPT = "kept-" + uuid.uuid4().hex[:8]


def _settings(state_dir: Path) -> Settings:
    names = ("POSTGRES", "REDIS", "MONGO")
    ports = dict(zip((f"MINIMART_{n}_PORT" for n in names), free_ports(len(names)), strict=True))
    return private_settings(state_dir, ports)


def _as_postgres(*argv: str) -> None:
    prefix = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
    subprocess.run([*prefix, *argv], check=True, capture_output=True, timeout=120)


def _old_postgres(settings: Settings) -> None:
    """A data dir as the runner made it before the roles: trust, the superuser's tables."""
    server = servers.Postgres(settings)
    data = server.data_dir
    data.mkdir(mode=0o700)
    if os.geteuid() == 0:
        shutil.chown(data, "postgres", "postgres")
    initdb = [str(BIN_DIR / "initdb"), "-D", str(data), "-U", "postgres", "--auth=trust"]
    server.run_tool([*initdb, "--encoding=UTF8", "--locale=C"], "initdb")
    (data / "pg_hba.conf").write_text(
        "local all all trust\nhost  all all 127.0.0.1/32 trust\nhost  all all samehost trust\n"
    )
    with (data / "postgresql.conf").open("a") as conf:
        conf.write("\ninclude_if_exists = 'minimart.conf'\n")
    options = f"-c listen_addresses=127.0.0.1 -p {settings.postgres_port} -k {data}"
    pg_ctl = [str(BIN_DIR / "pg_ctl"), "-D", str(data), "-l", str(data / "old.log")]
    _as_postgres(*pg_ctl, "-o", options, "-w", "start")
    try:
        url = f"postgresql://postgres@127.0.0.1:{settings.postgres_port}"
        with psycopg.connect(f"{url}/postgres", autocommit=True) as conn:
            for database in local_stores.DATABASES:
                conn.execute(f"CREATE DATABASE {database}".encode())
        with psycopg.connect(f"{url}/minimart_orders", autocommit=True) as conn:
            conn.execute("CREATE TABLE kept (id bigserial PRIMARY KEY, v text)")
            conn.execute("INSERT INTO kept (v) VALUES (%s)", (KEPT,))
    finally:
        _as_postgres(*pg_ctl, "-m", "fast", "stop")


def _old_mongo(settings: Settings) -> None:
    """A store without users, a shipment in it."""
    server = servers.Mongo(settings)
    server.data_dir.mkdir()
    argv = [require_binary("secantusd-py", "secantusdb"), "--host", "127.0.0.1"]
    argv += ["--port", str(settings.mongo_port), "--storage-path", str(server.data_dir)]
    process = subprocess.Popen(argv, env=child_env(settings), stdout=subprocess.DEVNULL,
                               stderr=subprocess.STDOUT)  # fmt: skip
    client: MongoClient[dict[str, object]] = MongoClient(
        "127.0.0.1", settings.mongo_port, serverSelectionTimeoutMS=20_000
    )
    try:
        client.minimart.shipments.insert_one({"_id": KEPT})
    finally:
        client.close()
        process.terminate()
        process.wait(30)


def _old_redis(settings: Settings) -> None:
    """A Redis without a password, an entry in its append-only file."""
    server = servers.Redis(settings)
    server.data_dir.mkdir()
    port = str(settings.redis_port)
    argv = [require_binary("redis-server", "redis-server"), "--bind", "127.0.0.1", "--port", port]
    argv += ["--appendonly", "yes", "--dir", str(server.data_dir), "--save", ""]
    process = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
    client = redis.Redis(host="127.0.0.1", port=settings.redis_port, socket_timeout=5)
    try:
        eventually(lambda: _pings(client), 20, "redis up")
        client.xadd("kept", {"v": KEPT})
        client.shutdown()  # flushes the append-only file
    finally:
        client.close()
        process.wait(30)


def _pings(client: redis.Redis) -> bool:
    try:
        return bool(client.ping())
    except redis.ConnectionError:
        return False


@pytest.fixture(scope="module", params=["new", "migrated"])
def stores(request: pytest.FixtureRequest) -> Iterator[Settings]:
    """Settings (with the owners' logins) of the three stores on a state dir made now, or made
    before the credentials and migrated by ``ensure_up``."""
    with private_state_dir(f"minimart-auth-{request.param}-") as state_dir:
        settings = _settings(state_dir)
        try:
            if request.param == "migrated":
                _old_postgres(settings)
                _old_mongo(settings)
                _old_redis(settings)
            servers.ensure_up(settings, STORES)
            yield settings
        finally:
            servers.stop_all(settings)


def _pg(settings: Settings, user: str, database: str, password: str | None) -> None:
    address = {"host": settings.host, "port": settings.postgres_port, "connect_timeout": 5}
    with psycopg.connect(**address, user=user, dbname=database, password=password or "") as conn:
        conn.execute("SELECT 1")


def test_postgres_refuses_a_client_without_the_password_of_its_role(stores: Settings) -> None:
    secret = local_stores.local_secret(stores)
    wrong = random_password()
    for database, login in local_stores.DATABASES.items():
        for user in (login.user, local_stores.POSTGRES_ADMIN):
            for password in (None, wrong):
                with pytest.raises(psycopg.OperationalError, match="password"):
                    _pg(stores, user, database, password)
        _pg(stores, login.user, database, secret[login.key])
    # The runner's socket asks for the password too.
    socket_dir = servers.Postgres(stores).data_dir
    if (socket_dir / f".s.PGSQL.{stores.postgres_port}").exists():
        with pytest.raises(psycopg.OperationalError, match="password"):
            psycopg.connect(host=str(socket_dir), port=stores.postgres_port, user="postgres",
                            dbname="postgres", connect_timeout=5).close()  # fmt: skip


def test_postgres_refuses_a_role_in_another_database(stores: Settings) -> None:
    secret = local_stores.local_secret(stores)
    for database in local_stores.DATABASES:
        for other in local_stores.DATABASES.values():
            if other.user == database:
                continue
            with pytest.raises(psycopg.OperationalError, match="permission denied"):
                _pg(stores, other.user, database, secret[other.key])
        with pytest.raises(psycopg.OperationalError, match="permission denied"):
            login = local_stores.DATABASES[database]
            _pg(stores, login.user, "postgres", secret[login.key])


def test_each_postgres_role_owns_its_database_and_nothing_more(stores: Settings) -> None:
    for dsn in (stores.orders_dsn, stores.inventory_dsn, stores.payments_dsn):
        with psycopg.connect(dsn, autocommit=True) as conn:
            row = conn.execute(
                "SELECT r.rolsuper, r.rolcreatedb, r.rolcreaterole, d.datdba = r.oid"
                " FROM pg_roles r, pg_database d"
                " WHERE r.rolname = current_user AND d.datname = current_database()"
            ).fetchone()
            assert row == (False, False, False, True), dsn
            table = f"t_{uuid.uuid4().hex[:8]}"
            conn.execute(f"CREATE TABLE {table} (id bigserial PRIMARY KEY)".encode())
            conn.execute(f"DROP TABLE {table}".encode())


def test_a_state_dir_from_before_the_roles_keeps_its_data(
    stores: Settings, request: pytest.FixtureRequest
) -> None:
    if request.node.callspec.params["stores"] != "migrated":
        pytest.skip("a new state dir has no old data")
    with psycopg.connect(stores.orders_dsn, autocommit=True) as conn:
        # The superuser's table is the orders role's now, its sequence too.
        conn.execute("INSERT INTO kept (v) VALUES ('after')")
        rows = conn.execute("SELECT v FROM kept ORDER BY id").fetchall()
    assert rows == [(KEPT,), ("after",)]
    assert shipments_collection(stores.mongo_url).find_one({"_id": KEPT}) == {"_id": KEPT}
    client = make_client(stores.redis_url)
    try:
        assert [fields for _, fields in client.xrange("kept")] == [{b"v": KEPT.encode()}]
    finally:
        client.close()


def test_redis_refuses_a_client_without_the_password(stores: Settings) -> None:
    for password in (None, "not-the-password"):
        client = redis.Redis(host=stores.host, port=stores.redis_port, password=password,
                             socket_timeout=5)  # fmt: skip
        try:
            with pytest.raises(redis.AuthenticationError):
                client.xadd("minimart:notifications", {"v": "intruder"})
        finally:
            client.close()
    client = make_client(stores.redis_url)
    try:
        assert client.config_get("protected-mode") == {"protected-mode": "yes"}
        assert client.config_get("bind") == {"bind": stores.host}
    finally:
        client.close()


def test_mongo_refuses_a_client_without_its_login(stores: Settings) -> None:
    anonymous: MongoClient[dict[str, object]] = MongoClient(
        stores.host, stores.mongo_port, serverSelectionTimeoutMS=5000
    )
    try:
        with pytest.raises(OperationFailure, match="requires authentication"):
            anonymous.minimart.shipments.find_one()
    finally:
        anonymous.close()
    secret = local_stores.local_secret(stores)
    wrong = stores.mongo_url.replace(secret["MINIMART_SHIPPING_MONGO_PASSWORD"], "not-it")
    intruder: MongoClient[dict[str, object]] = MongoClient(wrong, serverSelectionTimeoutMS=5000)
    try:
        with pytest.raises(OperationFailure, match=r"(?i)authentication failed"):
            intruder.minimart.shipments.find_one()
    finally:
        intruder.close()
    shipping: MongoClient[dict[str, object]] = MongoClient(stores.mongo_url)
    try:
        shipping.minimart.shipments.find_one()  # its own database
        with pytest.raises(OperationFailure, match="not authorized"):
            shipping.admin.command("listDatabases")
        with pytest.raises(OperationFailure, match="not authorized"):
            shipping["elsewhere"]["c"].insert_one({"v": 1})
    finally:
        shipping.close()
