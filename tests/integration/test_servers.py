"""The local stack's servers, against a private state dir and private ports.

Everything here runs on free ports picked at session start and under its own temporary
state dir, so it never touches a developer's running stack (``make up``).
"""

from __future__ import annotations

import stat
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
from minimart.local.servers.crashloop import CrashLoop
from minimart.local.servers.postgres import DATABASES
from minimart.local.servers.process import alive
from minimart.local.servers.supervision import START_RETRIES, Program, Supervisor
from minimart.manifests import load_topology
from minimart.settings import PROJECT_ROOT, Settings
from tests.stack import as_kafka_admin, free_ports, private_settings, private_state_dir, sasl

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]

LOOPBACK = {"127.0.0.1", "::ffff:127.0.0.1"}


def _eventually(check: Callable[[], bool], timeout: float = 15.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"{what} not met within {timeout}s"
        time.sleep(0.05)


def _live(pids: list[int]) -> list[int]:
    """Those of ``pids`` still running (zombies count as gone)."""
    return [pid for pid in pids if alive(pid)]


def _answers(server: servers.ManagedServer) -> bool:
    try:
        return server.is_up() and server.is_ready()
    except Exception:  # a starting server refuses in many ways
        return False


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


def _dsn(settings: Settings, database: str) -> str:
    """The DSN of ``database`` with its own role's login (``settings`` are private_settings)."""
    dsns = {settings.orders_dsn, settings.inventory_dsn, settings.payments_dsn}
    (dsn,) = [d for d in dsns if d.endswith(f"/{database}")]
    return dsn


def _pg_row(settings: Settings, database: str, table: str) -> list[str]:
    with psycopg.connect(_dsn(settings, database)) as conn:
        return [row[0] for row in conn.execute(f"SELECT v FROM {table}").fetchall()]


def _redis(settings: Settings) -> redis.Redis:
    return redis.Redis.from_url(settings.redis_url, socket_timeout=5)


def _mongo(settings: Settings) -> MongoClient[dict[str, object]]:
    return MongoClient(settings.mongo_url, serverSelectionTimeoutMS=5000)


def _produce(settings: Settings, topic: str, partition: int, value: bytes) -> int:
    producer = KafkaProducer(
        bootstrap_servers=settings.kafka_bootstrap, **sasl(as_kafka_admin(settings)), acks="all"
    )
    try:
        return int(producer.send(topic, value, partition=partition).get(timeout=15).offset)
    finally:
        producer.close()


def _consume(settings: Settings, topic: str, partition: int, offset: int) -> bytes:
    consumer = KafkaConsumer(
        bootstrap_servers=settings.kafka_bootstrap,
        **sasl(as_kafka_admin(settings)),
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


# -- supervision -------------------------------------------------------------------------


def _program(name: str, script: str, **options: object) -> Program:
    return Program(name, ("sh", "-c", script), Path("/"), {"PATH": "/usr/bin:/bin"},
                   **options)  # type: ignore[arg-type]  # fmt: skip


def _wait_state(sup: Supervisor, name: str, states: set[str], timeout: float = 30.0) -> None:
    _eventually(lambda: sup.state(name) in states, timeout, f"{name} in {states}")


def test_a_program_outlives_the_process_that_started_it_and_stops_with_its_group(
    stack: Stack,
) -> None:
    settings = stack.settings
    name = f"sleeper-{_uid()}"
    # A separate Python process defines and starts a shell that forks a child, then exits.
    code = (
        "from pathlib import Path\n"
        "from minimart.settings import Settings\n"
        "from minimart.local.servers.supervision import Program, Supervisor\n"
        f"env = {{'MINIMART_STATE_DIR': {str(settings.state_dir)!r}}}\n"
        "s = Supervisor(Settings.from_env(env))\n"
        f"s.define([Program({name!r}, ('sh', '-c', 'sleep 300 & echo child-up; wait'),"
        " Path('/'), {'PATH': '/usr/bin:/bin'})])\n"
        f"s.start({name!r})\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=PROJECT_ROOT, timeout=30)
    sup = Supervisor(settings)
    _eventually(lambda: servers.pid_of(settings, name) is not None, what="started")
    pid = servers.pid_of(settings, name)
    assert pid is not None
    _eventually(lambda: len(servers.family_pids(pid)) == 2, what="shell and its child")
    _eventually(lambda: "child-up" in sup.log_file(name).read_text())
    family = servers.family_pids(pid)

    assert sup.stop([name]) == [name]
    assert _live(family) == []
    assert sup.state(name) == "STOPPED"
    sup.forget([name])
    assert sup.state(name) == "UNKNOWN"


def test_stop_kills_what_ignores_sigterm(stack: Stack) -> None:
    sup = Supervisor(stack.settings)
    name = f"stubborn-{_uid()}"
    sup.define([_program(name, "trap '' TERM; sleep 300 & wait", stop_wait_s=1)])
    sup.start(name)
    _eventually(lambda: len(servers.family_pids(sup.pid(name) or 0)) == 2)
    family = servers.family_pids(sup.pid(name) or 0)
    began = time.monotonic()
    assert sup.stop([name]) == [name]
    assert time.monotonic() - began < 10
    assert _live(family) == []
    sup.forget([name])


def test_a_killed_program_comes_back_by_itself_and_is_counted(stack: Stack) -> None:
    sup = Supervisor(stack.settings)
    name = f"victim-{_uid()}"
    sup.define([_program(name, "sleep 300 & wait")])
    sup.start(name)
    _eventually(lambda: len(servers.family_pids(sup.pid(name) or 0)) == 2)
    family = servers.family_pids(sup.pid(name) or 0)
    old = servers.kill(stack.settings, name)

    assert old == family[0]
    assert _live(family) == []  # the whole group, the child too
    _eventually(lambda: sup.pid(name) not in (None, old), what="restarted by supervisord")

    # supervisord's event listener counts the restart on its own time (its own process):
    # wait for the count, which must then be exactly one.
    def counted() -> bool:
        info = servers.supervised(stack.settings, name)
        return info is not None and info.restarts >= 1

    _eventually(counted, what="the restart counted")
    info = servers.supervised(stack.settings, name)
    assert info is not None and info.restarts == 1, info
    sup.stop([name])
    sup.forget([name])


def test_a_program_that_keeps_crashing_is_retried_after_fatal_with_backoff(stack: Stack) -> None:
    """supervisord gives up (FATAL) after its quick retries; the listener starts it again."""
    sup = Supervisor(stack.settings)
    name = f"crasher-{_uid()}"
    sup.define([_program(name, "echo crashing; exit 3")])
    sup.start(name)
    _wait_state(sup, name, {"FATAL"}, timeout=30)
    fatal_at = time.monotonic()
    before = servers.supervised(stack.settings, name)
    assert before is not None and before.restarts == START_RETRIES, before
    _eventually(lambda: (servers.supervised(stack.settings, name) or before).restarts
                > START_RETRIES, timeout=30, what="started again after FATAL")  # fmt: skip
    waited = time.monotonic() - fatal_at
    assert CrashLoop().delay(name) - 1 <= waited, waited  # not at once: after the backoff
    sup.stop([name])
    sup.forget([name])


def test_a_changed_definition_restarts_the_program_and_the_same_one_does_not(
    stack: Stack,
) -> None:
    sup = Supervisor(stack.settings)
    name = f"versioned-{_uid()}"
    first = Program(name, ("sleep", "300"), Path("/"), {"PATH": "/usr/bin:/bin", "V": "1"})
    sup.define([first])
    sup.start(name)
    _eventually(lambda: sup.pid(name) is not None)
    pid = sup.pid(name)
    assert sup.define([first]) == []
    assert sup.pid(name) == pid
    second = Program(name, ("sleep", "300"), Path("/"), {"PATH": "/usr/bin:/bin", "V": "2"})
    assert sup.define([second]) == [name]
    assert sup.state(name) == "STOPPED"
    assert _live([pid or 0]) == []
    sup.forget([name])


def test_supervisord_is_controlled_over_a_private_unix_socket_only(stack: Stack) -> None:
    sup = Supervisor(stack.settings)
    pid = sup.daemon_pid()
    assert pid is not None
    assert servers.listening_addresses([pid]) == set()
    assert stat.S_IMODE(sup.socket.stat().st_mode) == 0o700


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
    for name, server in servers.infrastructure(stack.settings).items():
        assert server.is_up(), server
        assert server.is_running(), server
        info = servers.supervised(stack.settings, name)
        assert info is not None and info.state == "RUNNING", info
    print(f"\nstack started in {stack.seconds:.1f}s")


def test_postgres_has_the_databases(stack: Stack) -> None:
    table = f"t_{_uid()}"
    for database in DATABASES:
        with psycopg.connect(_dsn(stack.settings, database)) as conn:
            conn.execute(f"CREATE TABLE {table} (v text)")
            conn.execute(f"INSERT INTO {table} VALUES (%s)", (database,))
            conn.commit()
        assert _pg_row(stack.settings, database, table) == [database]
    with psycopg.connect(servers.Postgres(stack.settings).dsn()) as conn:
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
    collection = client.get_default_database()[f"it{_uid()}"]
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
        addresses = servers.process_listening_addresses(stack.settings, name)
        assert (server.host, server.port) in {("127.0.0.1", p) for _, p in addresses}, name
        assert {host for host, _ in addresses} <= LOOPBACK, (name, addresses)


def test_second_ensure_up_reuses_running_servers(stack: Stack) -> None:
    before = {name: servers.pid_of(stack.settings, name) for name in servers.ALL}
    assert servers.ensure_up(stack.settings, servers.ALL) == []
    after = {name: servers.pid_of(stack.settings, name) for name in servers.ALL}
    assert before == after


def test_restart_and_crash_keep_data(stack: Stack) -> None:
    settings = stack.settings
    key = _uid()
    table = f"r_{key}"
    with psycopg.connect(settings.orders_dsn) as conn:
        conn.execute(f"CREATE TABLE {table} (v text)")
        conn.execute(f"INSERT INTO {table} VALUES (%s)", (key,))
        conn.commit()
    client = _redis(settings)
    entry = client.xadd(f"it-{key}", {"k": key})
    client.close()
    mongo = _mongo(settings)
    mongo.get_default_database()["it_restart"].insert_one({"_id": key})
    mongo.close()
    topic = "minimart.order.created"
    offset = _produce(settings, topic, 0, key.encode())

    pids = {name: servers.pid_of(settings, name) for name in ("postgres", "redis", "mongo")}
    for name in pids:
        servers.restart(settings, name)
        assert servers.pid_of(settings, name) not in (None, pids[name])
    # Kafka and Postgres also recover from a crash (SIGKILL of the process, its group and its
    # descendants): supervisord restarts them by itself; what was acknowledged is kept.
    for name in ("kafka", "postgres"):
        server = servers.infrastructure(settings)[name]
        pid = servers.pid_of(settings, name)
        assert pid is not None
        family = servers.family_pids(pid)
        assert len(family) > 1 or name == "kafka"  # the postmaster has children
        assert servers.kill(settings, name) == pid
        assert _live(family) == []
        _eventually(lambda s=server: _answers(s), timeout=120,  # type: ignore[misc]
                    what=f"{name} back by itself")  # fmt: skip
    assert servers.ensure_up(settings, servers.ALL) == []

    assert _pg_row(settings, "minimart_orders", table) == [key]
    client = _redis(settings)
    entries = client.xrange(f"it-{key}")
    assert entries is not None and entries[0] == (entry, {b"k": key.encode()})
    client.close()
    mongo = _mongo(settings)
    assert mongo.get_default_database()["it_restart"].find_one({"_id": key}) == {"_id": key}
    mongo.close()
    assert _consume(settings, topic, 0, offset) == key.encode()


def test_zz_stop_all_leaves_no_process_and_frees_the_ports(stack: Stack) -> None:
    settings = stack.settings
    infrastructure = servers.infrastructure(settings)
    families = {}
    for name in infrastructure:
        pid = servers.pid_of(settings, name)
        assert pid is not None, name
        families[name] = servers.family_pids(pid)
    sup = Supervisor(settings)
    daemon = sup.daemon_pid()
    assert daemon is not None

    assert sorted(servers.stop_all(settings)) == sorted(infrastructure)

    for name, server in infrastructure.items():
        assert _live(families[name]) == [], name
        assert not server.is_up(), name
    assert _live([daemon]) == []  # supervisord too
    assert servers.stop_all(settings) == []
