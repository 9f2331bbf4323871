"""The transport floor: the saga's number of Kafka hops with functions that do no work.

Throwaway topics ``bench.floor.<run>.h0`` .. ``.hN`` (the saga's partition count); hop ``i``
is a dispatcher process (minimart's dispatcher code) consuming ``h(i-1)`` and delivering to a
no-op function process (functions-framework, same producer settings as the saga) that
publishes ``hi``. The benchmark produces ``h0`` at a fixed open-loop rate and reads ``hN``:
the latency of one chain is the last function's handling time minus the produce time, the
same span as the saga's "order accepted -> last step recorded".
"""

from __future__ import annotations

import contextlib
import json
import logging
import socket
import sys
import threading
import time
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer
from kafka.admin import NewTopic

from minimart import kafka_clients, local_secrets
from minimart.adapters.kafka_publisher import make_producer
from minimart.kafka_clients import FETCH_LIMITS
from minimart.local import stack
from minimart.local.servers import process
from minimart.local.servers.supervision import Program, Supervisor
from minimart.settings import PROJECT_ROOT, Settings

log = logging.getLogger(__name__)

NOOP_SOURCE = Path(__file__).resolve().parent / "noop" / "main.py"


def _port_base() -> int:
    """Below the kernel's ephemeral range, so no outgoing connection takes a port in between."""
    try:
        low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        low = 32768
    return low - 700


def _free_port(start: int, taken: set[int]) -> int:
    for port in range(start, start + 200):
        if port in taken:
            continue
        with socket.socket() as probe:
            try:
                probe.bind(("127.0.0.1", port))
            except OSError:
                continue
        taken.add(port)
        return port
    raise RuntimeError(f"no free port from {start}")


def _admin(admin_settings: Settings) -> KafkaAdminClient:
    return KafkaAdminClient(
        bootstrap_servers=admin_settings.kafka_bootstrap,
        **kafka_clients.auth(kafka_clients.credentials_of(admin_settings)),
    )


def create_topics(admin_settings: Settings, names: Sequence[str], partitions: int) -> None:
    """Topics ``names``, made by the broker's administrator (``admin_settings`` present it)."""
    admin = _admin(admin_settings)
    try:
        admin.create_topics([NewTopic(name, partitions, 1) for name in names])
    finally:
        admin.close()


def delete_topics(admin_settings: Settings, names: Sequence[str]) -> None:
    """Throwaway topics deleted; one left over is harmless, and only logged."""
    admin = _admin(admin_settings)
    try:
        admin.delete_topics(list(names))
    except Exception as exc:
        log.warning("could not delete the throwaway topics %s: %s", ", ".join(names), exc)
    finally:
        admin.close()


@contextlib.contextmanager
def throwaway_topics(
    settings: Settings, names: Sequence[str], partitions: int
) -> Iterator[Settings]:
    """Topics ``names`` for the block, deleted after it, made as the broker's administrator:
    yields ``settings`` presenting that super user (it may write them; SCRAM or PLAIN costs
    only at connection time)."""
    admin_settings = local_secrets.with_admin_credentials(settings)
    create_topics(admin_settings, names, partitions)
    try:
        yield admin_settings
    finally:
        delete_topics(admin_settings, names)


@dataclass
class FloorResult:
    rate: float
    sent: int
    latencies_ms: list[float]


class Floor:
    def __init__(self, settings: Settings, hops: int, partitions: int, threads: str) -> None:
        # Its topics and groups are its own: it runs as the broker's super user (SCRAM or PLAIN
        # costs only at connection time).
        self.settings = local_secrets.with_admin_credentials(settings)
        self.hops = hops
        self.partitions = partitions
        self.threads = threads
        self.prefix = f"bench.floor.{uuid.uuid4().hex[:8]}"
        self.names: list[str] = []
        self.ports: list[int] = []

    def topic(self, hop: int) -> str:
        return f"{self.prefix}.h{hop}"

    def _sasl(self) -> dict[str, Any]:
        return kafka_clients.auth(kafka_clients.credentials_of(self.settings))

    def start(self) -> None:
        create_topics(self.settings, [self.topic(h) for h in range(self.hops + 1)], self.partitions)
        base_env = stack._env(self.settings, "bench-floor")
        taken: set[int] = set()
        programs: list[Program] = []
        for hop in range(1, self.hops + 1):
            port = _free_port(_port_base() + self.settings.function_port_base % 100, taken)
            self.ports.append(port)
            name = f"bench-floor-fn-h{hop}"
            env = {**base_env, "MINIMART_SERVICE_NAME": name, "THREADS": self.threads}
            # Served as the saga's functions are (the same server and settings).
            argv = stack.serve_argv(NOOP_SOURCE, "cloudevent", "127.0.0.1", port)
            programs.append(Program(name, argv, PROJECT_ROOT, env))
            self.names.append(name)
            dname = f"bench-floor-dispatch-h{hop}"
            dargv = (
                sys.executable,
                "-m",
                "bench.floor_dispatcher",
                f"--topic={self.topic(hop - 1)}",
                f"--sink-url=http://127.0.0.1:{port}/",
            )
            programs.append(Program(dname, dargv, PROJECT_ROOT, base_env))
            self.names.append(dname)
        supervisor = Supervisor(self.settings)
        supervisor.define(programs)
        for name in self.names:
            supervisor.start(name)
        for port in self.ports:
            process.wait_for_port("127.0.0.1", port, 90)

    def stop(self) -> None:
        supervisor = Supervisor(self.settings)
        with contextlib.suppress(Exception):
            supervisor.stop(self.names)
        supervisor.forget(self.names)
        self.names.clear()
        delete_topics(self.settings, [self.topic(h) for h in range(self.hops + 1)])

    def _chain(self, producer: KafkaProducer, chain: str, now: float) -> Any:
        data = {"chain": chain, "sentAt": now, "hops": self.hops, "prefix": self.prefix}
        headers = [
            ("ce_specversion", b"1.0"),
            ("ce_id", str(uuid.uuid4()).encode()),
            ("ce_source", b"/bench/floor"),
            ("ce_type", b"bench.floor.h0"),
            ("content-type", b"application/json"),
        ]
        return producer.send(
            self.topic(0), key=chain.encode(), value=json.dumps(data).encode(), headers=headers
        )

    def measure(self, rate: float, seconds: float, drain_s: float = 30.0) -> FloorResult:
        """Chains at ``rate``/s for ``seconds``; latency of each that came back (ms)."""
        consumer = KafkaConsumer(
            self.topic(self.hops),
            bootstrap_servers=self.settings.kafka_bootstrap,
            **self._sasl(),
            group_id=None,
            auto_offset_reset="latest",
            fetch_max_wait_ms=10,
            enable_auto_commit=False,
            **FETCH_LIMITS,
        )
        while not consumer.assignment():
            consumer.poll(timeout_ms=100)
        consumer.seek_to_end()
        consumer.poll(timeout_ms=0)
        producer = make_producer(
            self.settings.kafka_bootstrap,
            "bench-floor",
            kafka_clients.credentials_of(self.settings),
        )
        latencies: list[float] = []
        expected = round(rate * seconds)
        done = threading.Event()

        def read() -> None:
            deadline: float | None = None
            while len(latencies) < expected:
                for records in consumer.poll(timeout_ms=100).values():
                    for record in records:
                        body = json.loads(record.value)
                        latencies.append((body["doneAt"] - body["sentAt"]) * 1000)
                if done.is_set():
                    deadline = deadline or time.monotonic() + drain_s
                    if time.monotonic() > deadline:
                        return

        reader = threading.Thread(target=read, daemon=True)
        reader.start()
        start = time.monotonic()
        for i in range(expected):
            delay = start + i / rate - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            self._chain(producer, uuid.uuid4().hex, time.time())
        producer.flush()
        done.set()
        reader.join()
        producer.close()
        consumer.close()
        return FloorResult(rate, expected, latencies)

    def warm_up(self, timeout: float = 90.0) -> None:
        """Send chains until one comes back (every dispatcher got its partitions)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            result = self.measure(rate=20, seconds=0.5, drain_s=3.0)
            if len(result.latencies_ms) == result.sent:
                return
        raise TimeoutError("the floor chain never completed")
