"""The local stack fixtures are the end-to-end suite's (one stack per session), plus Prometheus."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from minimart.local import servers
from minimart.local.observe import start_prometheus
from minimart.settings import Settings


@pytest.fixture(scope="session")
def prometheus(running_stack: Settings) -> Iterator[str]:
    """Prometheus scraping the stack's functions and dispatchers; its base URL."""
    was_up = servers.Prometheus(running_stack).is_up()
    start_prometheus(running_stack)
    yield f"http://127.0.0.1:{running_stack.prometheus_port}"
    if not was_up:
        servers.stop_all(running_stack, ["prometheus"])
