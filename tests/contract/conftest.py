"""The contract suite's real servers: private ones, started once per session on free ports.

Each server starts the first time a test asks for it (a run of the fake half alone starts
none) and everything is stopped at the end of the session. The adapters are built by the
composition root, as the functions build them (pools, migrations, seed data).
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from minimart.bootstrap import Container
from minimart.local import servers
from minimart.settings import Settings
from tests.stack import as_kafka_admin, free_ports, private_settings, private_state_dir

PORTS = ("POSTGRES", "REDIS", "MONGO", "KAFKA", "KAFKA_CONTROLLER", "PROMETHEUS")


@pytest.fixture(scope="session")
def private_stack() -> Iterator[Settings]:
    """Settings of a private state dir and free ports; nothing started yet."""
    ports = dict(zip((f"MINIMART_{n}_PORT" for n in PORTS), free_ports(len(PORTS)), strict=True))
    with private_state_dir("minimart-contract-") as state_dir:
        settings = private_settings(state_dir, ports)
        try:
            yield settings
        finally:
            servers.stop_all(settings)


def _server(settings: Settings, name: str) -> Settings:
    servers.ensure_up(settings, [name])
    return settings


@pytest.fixture(scope="session")
def postgres(private_stack: Settings) -> Settings:
    return _server(private_stack, "postgres")


@pytest.fixture(scope="session")
def mongo(private_stack: Settings) -> Settings:
    return _server(private_stack, "mongo")


@pytest.fixture(scope="session")
def redis_server(private_stack: Settings) -> Settings:
    return _server(private_stack, "redis")


@pytest.fixture(scope="session")
def kafka(private_stack: Settings) -> Settings:
    return _server(private_stack, "kafka")


@pytest.fixture(scope="session")
def container(private_stack: Settings) -> Container:
    """The composition root on the private servers (each adapter built on first use); its
    publisher writes the contract tests' events as the broker's super user (every step's
    topics in one container)."""
    return Container(as_kafka_admin(private_stack))
