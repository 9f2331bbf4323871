"""Shared by the integration and end-to-end suites: the local stack, once per test session."""

from __future__ import annotations

import shutil
import socket
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import TypeVar

import psycopg
from kafka import KafkaProducer

from minimart import kafka_clients, local_secrets
from minimart.kafka_access import CONSOLE, secret_of
from minimart.kafka_clients import KafkaCredentials
from minimart.local import stack
from minimart.local.servers.kafka_broker import jars_present
from minimart.local_stores import local_store_settings, without_store_logins
from minimart.manifests import load_topology
from minimart.settings import PROJECT_ROOT, Settings

T = TypeVar("T")


def bring_up(settings: Settings) -> list[str]:
    """Start whatever of the stack is not running yet; the names started (to stop later).
    The runner is handed ``settings`` without the stores' logins: it gives each function its
    own (``minimart.local_stores``), and nothing else any."""
    return stack.up(without_store_logins(settings))


def console_settings(settings: Settings) -> Settings:
    """``settings`` as the ops console's on the local stack: Kafka's ``minimart-console``
    principal (its Secret made now if the stack has not made it yet; ``up`` provisions the
    same). The console may read every topic and write those a function writes (a replay), so
    the tests that write records of their own do it as the console."""
    local_secrets.kafka_secret(local_secrets.of(settings), secret_of(CONSOLE))
    return local_secrets.with_console_credentials(settings)


def as_kafka_principal(settings: Settings, principal: str) -> Settings:
    """``settings`` presenting ``principal`` to Kafka (its Secret from the state dir): e.g. the
    dead-letter sink's, for a test that writes dead letters as the sink would."""
    credentials = local_secrets.kafka_credentials(local_secrets.of(settings), principal)
    return local_secrets.presenting(settings, credentials)


def kafka_admin(settings: Settings) -> KafkaCredentials:
    """The broker's super user: for the tests of a dispatcher on topics of their own."""
    return local_secrets.admin_credentials(local_secrets.of(settings))


def as_kafka_admin(settings: Settings) -> Settings:
    """``settings`` as the broker's super user: a dispatcher under test reads and writes topics
    no manifest declares."""
    return local_secrets.with_admin_credentials(settings)


def sasl(settings: Settings) -> dict[str, object]:
    """kafka-python's SASL configuration for ``settings``' Kafka principal."""
    return kafka_clients.auth(kafka_clients.credentials_of(settings))


def producer(settings: Settings, **config: object) -> KafkaProducer:
    """A producer (acks=all) under ``settings``' Kafka principal."""
    return kafka_clients.producer(
        settings.kafka_bootstrap, kafka_clients.credentials_of(settings), "tests", **config
    )


def tear_down(settings: Settings, started: list[str]) -> None:
    if started:
        stack.down(settings)


def eventually(check: Callable[[], T], timeout: float = 30.0, what: str = "condition") -> T:
    """Poll ``check`` until it returns something truthy; its value. Fails after ``timeout``."""
    deadline = time.monotonic() + timeout
    last: T | None = None
    while time.monotonic() < deadline:
        last = check()
        if last:
            return last
        time.sleep(0.05)
    raise AssertionError(f"{what} not reached within {timeout}s (last: {last!r})")


def dead_letter_within_s(topic: str, slack_s: float = 60.0) -> float:
    """How long the KafkaSources reading ``topic`` take at most to dead-letter an event their
    sink keeps failing fast (every backoff of the retry budget), plus ``slack_s``."""
    sources = [s for s in load_topology(PROJECT_ROOT).sources if topic in s.topics]
    budgets = [sum(s.delivery.backoff(n) for n in range(1, s.delivery.retry + 1)) for s in sources]
    return max(budgets, default=0.0) + slack_s


def new_sku(settings: Settings, stock: int, price_cents: int = 1_000) -> str:
    """A product of the test's own, sold by the shop and stocked by the warehouse."""
    sku = f"T-{uuid.uuid4().hex[:12].upper()}"
    with psycopg.connect(settings.orders_dsn, autocommit=True) as conn:
        conn.execute(
            "INSERT INTO products (sku, name, price_cents) VALUES (%s, %s, %s)",
            (sku, "test product", price_cents),
        )
    with psycopg.connect(settings.inventory_dsn, autocommit=True) as conn:
        conn.execute(
            "INSERT INTO stock (sku, initial, available) VALUES (%s, %s, %s)", (sku, stock, stock)
        )
    return sku


def stock_of(settings: Settings, sku: str) -> dict[str, int]:
    with psycopg.connect(settings.inventory_dsn, autocommit=True) as conn:
        row = conn.execute(
            "SELECT initial, available, reserved, shipped FROM stock WHERE sku = %s", (sku,)
        ).fetchone()
    assert row is not None, sku
    return dict(zip(("initial", "available", "reserved", "shipped"), row, strict=True))


def free_ports(count: int) -> list[int]:
    """Ports free on 127.0.0.1 right now (for a private server of a test)."""
    sockets = []
    try:
        for _ in range(count):
            sock = socket.socket()
            sock.bind(("127.0.0.1", 0))
            sockets.append(sock)
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


@contextmanager
def private_state_dir(prefix: str) -> Iterator[Path]:
    """A state dir of a test's own servers, removed afterwards; it reuses the Kafka jars
    `make install` fetched (no Maven run per session)."""
    # Not pytest's tmp_path: its folders are 0700 and the postgres account must traverse it.
    state_dir = Path(tempfile.mkdtemp(prefix=prefix, dir="/tmp"))
    state_dir.chmod(0o755)
    installed = Settings.from_env().state_dir / "kafka" / "jars"
    if jars_present(installed):
        (state_dir / "kafka").mkdir()
        (state_dir / "kafka" / "jars").symlink_to(installed)
    try:
        yield state_dir
    finally:
        shutil.rmtree(state_dir, ignore_errors=True)


def private_settings(state_dir: Path, ports: Mapping[str, int]) -> Settings:
    """Settings of a private stack: ``ports`` maps e.g. MINIMART_KAFKA_PORT to a port; each
    store's address with its owner's login (generated in ``state_dir`` if new)."""
    env = {"MINIMART_STATE_DIR": str(state_dir)}
    env.update({name: str(port) for name, port in ports.items()})
    return local_store_settings(Settings.from_env(env))
