"""The k6 load test reaches a Host-routed ingress (Kourier on kind) with no DNS: -e HOST=...

A stand-in for Kourier's routing on 127.0.0.1 answers only requests whose Host header names
the order Service (Kourier matches the virtual host `host` and `host:*`); the real k6 of the
venv runs loadtests/checkout_test.js against it, briefly, and every request must carry the Host.
"""

from __future__ import annotations

import json
import subprocess
import threading
import uuid
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from minimart.settings import PROJECT_ROOT

ORDER_HOST = "order.minimart.localhost"
K6 = PROJECT_ROOT / ".venv" / "bin" / "k6"


class _HostRouter(BaseHTTPRequestHandler):
    """Routes by Host as Kourier does; answers the order API's shapes for the right host."""

    seen: list[tuple[str, str]]

    def _route(self) -> bool:
        host = (self.headers.get("Host") or "").rsplit(":", 1)[0]
        self.seen.append((self.command, self.headers.get("Host") or ""))
        if host == ORDER_HOST:
            return True
        self._answer(404, {})
        return False

    def _answer(self, status: int, body: dict[str, object], location: str = "") -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        if location:
            self.send_header("Location", location)
        self.end_headers()
        self.wfile.write(data)

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        if self._route():
            order_id = str(uuid.uuid4())
            self._answer(202, {"orderId": order_id, "status": "PENDING"}, f"/orders/{order_id}")

    def do_GET(self) -> None:
        if self._route():
            timeline = [{"step": "notification.sent"}]
            self._answer(200, {"status": "CONFIRMED", "timeline": timeline})

    def log_message(self, format: str, *args: object) -> None:
        """Quiet."""


@pytest.fixture
def ingress() -> Iterator[tuple[str, list[tuple[str, str]]]]:
    seen: list[tuple[str, str]] = []
    handler = type("Router", (_HostRouter,), {"seen": seen})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}", seen
    server.shutdown()
    server.server_close()


def _k6(base_url: str, tmp_path: Path, *extra: str) -> None:
    args = ["BASE_URL=" + base_url, "DURATION=1s", "RAMP=1s", "START_RATE=2", "PEAK_RATE=2"]
    args += ["FOLLOW_RATE=1", "FINAL_TIMEOUT_S=2", *extra]
    command = [str(K6), "run", "--quiet", "--no-usage-report"]
    for arg in args:
        command += ["-e", arg]
    # Thresholds may fail on so short a run; what the ingress saw is the assertion.
    subprocess.run(
        [*command, str(PROJECT_ROOT / "loadtests" / "checkout_test.js")],
        cwd=tmp_path,
        capture_output=True,
        timeout=120,
        check=False,
    )


def test_k6_sends_the_host_header_to_the_ingress(
    ingress: tuple[str, list[tuple[str, str]]], tmp_path: Path
) -> None:
    base_url, seen = ingress
    _k6(base_url, tmp_path, f"HOST={ORDER_HOST}")
    assert {method for method, _ in seen} == {"POST", "GET"}, seen
    assert {host for _, host in seen} == {ORDER_HOST}


def test_without_host_k6_sends_the_address_and_the_ingress_refuses_it(
    ingress: tuple[str, list[tuple[str, str]]], tmp_path: Path
) -> None:
    base_url, seen = ingress
    _k6(base_url, tmp_path)
    assert seen and {host for _, host in seen} == {base_url.removeprefix("http://")}
