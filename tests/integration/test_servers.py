"""The local stack's servers, against a private state dir and private ports.

Everything here runs on free ports picked at session start and under its own temporary
state dir, so it never touches a developer's running stack (``make up``).
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import psycopg
import pytest
import redis
import requests
from kafka import KafkaConsumer, KafkaProducer, TopicPartition
from pymongo import MongoClient

from minimart.local import servers
from minimart.local.servers.postgres import DATABASES
from minimart.manifests import load_topology
from minimart.settings import PROJECT_ROOT, Settings
from tests.stack import free_ports, private_settings, private_state_dir

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]

LOOPBACK = {"127.0.0.1", "::ffff:127.0.0.1"}


def _eventually(check: Callable[[], bool], timeout: float = 15.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"{what} not met within {timeout}s"
        time.sleep(0.05)


def _live(pids: list[int]) -> list[int]:
    """Those of ``pids`` still running (zombies count as gone)."""
    live = []
    for pid in pids:
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
        except FileNotFoundError:
            continue
        if stat[stat.rfind(")") + 2] not in "ZX":
            live.append(pid)
    return live


def _uid() -> str:
    return uuid.uuid4().hex[:12]


@dataclass
class Stack:
    settings: Settings
    started: list[str]
    seconds: float


@pytest.fixture(scope="session")
def stack() -> Iterator[Stack]:
    names = ("POSTGRES", "REDIS", "MONGO", "KAFKA", "KAFKA_CONTROLLER", "PROMETHEUS")
    ports = dict(zip((f"MINIMART_{n}_PORT" for n in names), free_ports(len(names)), strict=True))
    with private_state_dir("minimart-it-") as state_dir:
        settings = private_settings(state_dir, ports)
        began = time.monotonic()
        try:
            started = servers.ensure_up(settings, servers.ALL)
            yield Stack(settings, started, time.monotonic() - began)
        finally:
            servers.stop_all(settings)


def _pg_row(settings: Settings, database: str, table: str) -> list[str]:
    with psycopg.connect(
        f"postgresql://postgres@127.0.0.1:{settings.postgres_port}/{database}"
    ) as conn:
        return [row[0] for row in conn.execute(f"SELECT v FROM {table}").fetchall()]


def _redis(settings: Settings) -> redis.Redis:
    return redis.Redis(host="127.0.0.1", port=settings.redis_port, socket_timeout=5)


def _mongo(settings: Settings) -> MongoClient[dict[str, object]]:
    return MongoClient("127.0.0.1", settings.mongo_port, serverSelectionTimeoutMS=5000)


def _produce(settings: Settings, topic: str, partition: int, value: bytes) -> int:
    producer = KafkaProducer(bootstrap_servers=settings.kafka_bootstrap, acks="all")
    try:
        return int(producer.send(topic, value, partition=partition).get(timeout=15).offset)
    finally:
        producer.close()


def _consume(settings: Settings, topic: str, partition: int, offset: int) -> bytes:
    consumer = KafkaConsumer(
        bootstrap_servers=settings.kafka_bootstrap,
        enable_auto_commit=False,
        fetch_max_wait_ms=10,
    )
    try:
        tp = TopicPartition(topic, partition)
        consumer.assign([tp])
        consumer.seek(tp, offset)
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            for records in consumer.poll(timeout_ms=200).values():
                for record in records:
                    if record.offset == offset:
                        return bytes(record.value)
        raise AssertionError(f"no record at {topic}[{partition}]@{offset}")
    finally:
        consumer.close()


# -- the supervision primitive -----------------------------------------------------------


def test_spawned_process_outlives_its_parent_and_stops_with_its_group(stack: Stack) -> None:
    settings = stack.settings
    name = f"sleeper-{_uid()}"
    # A parent Python process spawns a shell that forks a child, then exits.
    code = (
        "from pathlib import Path\n"
        "from minimart.settings import Settings\n"
        "from minimart.local.servers import spawn\n"
        f"s = Settings.from_env({{'MINIMART_STATE_DIR': {str(settings.state_dir)!r}}})\n"
        f"spawn({name!r}, ['sh', '-c', 'sleep 300 & echo child-up; wait'],"
        " env={'PATH': '/usr/bin:/bin'}, cwd=Path('/'), settings=s)\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=PROJECT_ROOT, timeout=30)

    pid = servers.read_pid(name, settings)
    assert pid is not None and servers.is_running(name, settings)
    _eventually(lambda: len(servers.session_pids(pid)) == 2, what="shell and its child")
    _eventually(lambda: "child-up" in servers.log_path(name, settings).read_text())

    assert servers.stop_process(name, settings, timeout=5)
    assert servers.session_pids(pid) == []
    assert not servers.is_running(name, settings)
    assert not servers.pid_path(name, settings).exists()


def test_stop_process_kills_what_ignores_sigterm(stack: Stack) -> None:
    settings = stack.settings
    name = f"stubborn-{_uid()}"
    pid = servers.spawn(
        name,
        ["sh", "-c", "trap '' TERM; sleep 300 & wait"],
        env={"PATH": "/usr/bin:/bin"},
        cwd=Path("/"),
        settings=settings,
    )
    _eventually(lambda: len(servers.session_pids(pid)) == 2)
    began = time.monotonic()
    assert servers.stop_process(name, settings, timeout=0.5)
    assert time.monotonic() - began < 5
    assert servers.session_pids(pid) == []


def test_kill_process_and_double_spawn(stack: Stack) -> None:
    settings = stack.settings
    name = f"victim-{_uid()}"
    argv = ["sleep", "300"]
    env = {"PATH": "/usr/bin:/bin"}
    pid = servers.spawn(name, argv, env=env, cwd=Path("/"), settings=settings)
    with pytest.raises(servers.ProcessError, match="already running"):
        servers.spawn(name, argv, env=env, cwd=Path("/"), settings=settings)
    assert servers.kill_process(name, settings)
    assert servers.session_pids(pid) == []
    assert not servers.kill_process(name, settings)
    assert not servers.stop_process(name, settings)


def test_a_recycled_pid_is_not_taken_for_ours(stack: Stack) -> None:
    settings = stack.settings
    name = f"stale-{_uid()}"
    path = servers.pid_path(name, settings)
    # The pid file was written long ago; the live process with that pid (this one) started
    # after it: the kernel recycled the pid, the process is not ours.
    path.write_text(f"{os.getpid()}\n")
    old = time.time() - 3600 * 24 * 365
    os.utime(path, (old, old))
    assert servers.read_pid(name, settings) is None
    assert not path.exists()


def test_missing_binary_names_the_package() -> None:
    from minimart.local.servers.base import require_binary

    with pytest.raises(servers.MissingBinaryError, match=r"install the-package.*make install"):
        require_binary(f"no-such-program-{_uid()}", "the-package")


def test_wait_for_port_times_out_on_a_closed_port() -> None:
    (port,) = free_ports(1)
    with pytest.raises(TimeoutError):
        servers.wait_for_port("127.0.0.1", port, timeout=0.3)


# -- the servers ------------------------------------------------------------------------


def test_ensure_up_started_every_server(stack: Stack) -> None:
    assert sorted(stack.started) == sorted(servers.ALL)
    for server in servers.infrastructure(stack.settings).values():
        assert server.is_up(), server
        assert server.is_running(), server
    print(f"\nstack started in {stack.seconds:.1f}s")


def test_postgres_has_the_databases(stack: Stack) -> None:
    table = f"t_{_uid()}"
    for database in DATABASES:
        dsn = f"postgresql://postgres@127.0.0.1:{stack.settings.postgres_port}/{database}"
        with psycopg.connect(dsn) as conn:
            conn.execute(f"CREATE TABLE {table} (v text)")
            conn.execute(f"INSERT INTO {table} VALUES (%s)", (database,))
            conn.commit()
        assert _pg_row(stack.settings, database, table) == [database]
    with psycopg.connect(
        f"postgresql://postgres@127.0.0.1:{stack.settings.postgres_port}/postgres"
    ) as conn:
        row = conn.execute("SHOW max_connections").fetchone()
        assert row is not None and int(row[0]) >= 100
        fsync = conn.execute("SHOW fsync").fetchone()
        assert fsync is not None and fsync[0] == "on"


def test_redis_answers_and_streams(stack: Stack) -> None:
    client = _redis(stack.settings)
    assert client.ping()
    stream = f"it-{_uid()}"
    entry = client.xadd(stream, {"k": "v"})
    entries = client.xrange(stream)
    assert entries is not None and entries[0][0] == entry
    client.close()


def test_mongo_inserts_and_finds(stack: Stack) -> None:
    client = _mongo(stack.settings)
    collection = client["it"][f"c{_uid()}"]
    key = _uid()
    collection.insert_one({"_id": key, "n": 1})
    assert collection.find_one({"_id": key}) == {"_id": key, "n": 1}
    client.close()


def test_kafka_topics_match_the_manifests_and_carry_records(stack: Stack) -> None:
    wanted = load_topology(PROJECT_ROOT).topics
    admin = servers.Kafka(stack.settings).admin()
    try:
        described = admin.describe_topics(list(wanted))
    finally:
        admin.close()
    assert {item["topic"]: len(item["partitions"]) for item in described} == dict(wanted)

    topic, partitions = max(wanted.items(), key=lambda item: item[1])
    value = _uid().encode()
    offset = _produce(stack.settings, topic, partitions - 1, value)
    assert _consume(stack.settings, topic, partitions - 1, offset) == value


def test_prometheus_is_ready(stack: Stack) -> None:
    port = stack.settings.prometheus_port
    assert requests.get(f"http://127.0.0.1:{port}/-/ready", timeout=5).status_code == 200


def test_every_listening_socket_is_on_loopback(stack: Stack) -> None:
    for name, server in servers.infrastructure(stack.settings).items():
        addresses = servers.process_listening_addresses(name, stack.settings)
        assert (server.host, server.port) in {("127.0.0.1", p) for _, p in addresses}, name
        assert {host for host, _ in addresses} <= LOOPBACK, (name, addresses)


def test_second_ensure_up_reuses_running_servers(stack: Stack) -> None:
    before = {name: servers.read_pid(name, stack.settings) for name in servers.ALL}
    assert servers.ensure_up(stack.settings, servers.ALL) == []
    after = {name: servers.read_pid(name, stack.settings) for name in servers.ALL}
    assert before == after


def test_restart_and_crash_keep_data(stack: Stack) -> None:
    settings = stack.settings
    key = _uid()
    table = f"r_{key}"
    dsn = f"postgresql://postgres@127.0.0.1:{settings.postgres_port}/minimart_orders"
    with psycopg.connect(dsn) as conn:
        conn.execute(f"CREATE TABLE {table} (v text)")
        conn.execute(f"INSERT INTO {table} VALUES (%s)", (key,))
        conn.commit()
    client = _redis(settings)
    entry = client.xadd(f"it-{key}", {"k": key})
    client.close()
    mongo = _mongo(settings)
    mongo["it"]["restart"].insert_one({"_id": key})
    mongo.close()
    topic = "minimart.order.created"
    offset = _produce(settings, topic, 0, key.encode())

    pids = {name: servers.read_pid(name, settings) for name in ("postgres", "redis", "mongo")}
    for name in pids:
        servers.restart(settings, name)
        assert servers.read_pid(name, settings) not in (None, pids[name])
    # Kafka and Postgres also recover from a crash (SIGKILL): what was acknowledged is kept.
    for name in ("kafka", "postgres"):
        pid = servers.read_pid(name, settings)
        assert pid is not None
        family = servers.family_pids(pid)
        assert len(family) > 1 or name == "kafka"  # the postmaster has children
        assert servers.kill_process(name, settings)
        assert _live(family) == []
    assert sorted(servers.ensure_up(settings, servers.ALL)) == ["kafka", "postgres"]

    assert _pg_row(settings, "minimart_orders", table) == [key]
    client = _redis(settings)
    entries = client.xrange(f"it-{key}")
    assert entries is not None and entries[0] == (entry, {b"k": key.encode()})
    client.close()
    mongo = _mongo(settings)
    assert mongo["it"]["restart"].find_one({"_id": key}) == {"_id": key}
    mongo.close()
    assert _consume(settings, topic, 0, offset) == key.encode()


def test_zz_stop_all_leaves_no_process_and_frees_the_ports(stack: Stack) -> None:
    settings = stack.settings
    infrastructure = servers.infrastructure(settings)
    families = {}
    for name in infrastructure:
        pid = servers.read_pid(name, settings)
        assert pid is not None, name
        families[name] = servers.family_pids(pid)

    assert sorted(servers.stop_all(settings)) == sorted(infrastructure)

    for name, server in infrastructure.items():
        assert _live(families[name]) == [], name
        assert not server.is_up(), name
        assert not servers.pid_path(name, settings).exists(), name
    assert servers.stop_all(settings) == []
