"""Fixtures shared by the suites that run on the local stack (e2e, observability, reliability).

The stack starts once per test session (or is reused if already up) and is stopped at the end
only if this session started it.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from minimart.console.client import OrderClient
from minimart.local_stores import local_store_settings
from minimart.settings import Settings
from tests.stack import bring_up, console_settings, tear_down


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--fuzz-records",
        type=int,
        default=48,
        help="bad records the poison fuzz suite draws (tests/reliability/test_poison_fuzz.py)",
    )


@pytest.fixture(scope="session")
def fuzz_records(request: pytest.FixtureRequest) -> int:
    return int(request.config.getoption("--fuzz-records"))


@pytest.fixture(scope="session")
def settings() -> Settings:
    """The local stack's settings as the ops console's: each store's address with its owner's
    login (the one way in: ``minimart.local_stores.local_store_settings``) and Kafka's
    ``minimart-console`` principal (``tests.stack.console_settings``)."""
    return console_settings(local_store_settings(Settings.from_env()))


@pytest.fixture(scope="session")
def running_stack(settings: Settings) -> Iterator[Settings]:
    started = bring_up(settings)
    yield settings
    tear_down(settings, started)


@pytest.fixture(scope="session")
def client(running_stack: Settings) -> OrderClient:
    return OrderClient(f"http://127.0.0.1:{running_stack.ingress_port}")
