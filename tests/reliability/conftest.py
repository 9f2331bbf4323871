"""The fault-injection suite shares the local stack with tests/e2e (started once per session)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from minimart.local.client import OrderClient
from minimart.settings import Settings
from tests.stack import bring_up, tear_down


@pytest.fixture(scope="session")
def settings() -> Settings:
    return Settings.from_env()


@pytest.fixture(scope="session")
def running_stack(settings: Settings) -> Iterator[Settings]:
    started = bring_up(settings)
    yield settings
    tear_down(settings, started)


@pytest.fixture(scope="session")
def client(running_stack: Settings) -> OrderClient:
    return OrderClient(f"http://127.0.0.1:{running_stack.ingress_port}")
