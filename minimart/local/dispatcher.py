"""A local stand-in for Knative's KafkaSource dispatcher: one process per KafkaSource.

Design:

* The main thread owns the ``KafkaConsumer`` (it is not shared): it polls, hands each
  partition's records to that partition's worker, pauses partitions whose backlog is large,
  commits, and updates the lag gauge.
* A worker thread per assigned partition (created on its first record) delivers its records
  one at a time, in offset order, waiting for the sink (``ordering: ordered``); partitions and
  topics proceed concurrently. Each worker has its own keep-alive HTTP connection.
* At-least-once: a worker advances its partition's "done" offset only after a record was
  delivered, dead-lettered or (without a dead-letter sink) dropped. The main thread commits
  done offsets asynchronously every ``COMMIT_INTERVAL_S``; revocation and shutdown commit
  what is done before the partitions are given up.
* Rebalance: kafka-python runs the listener inside ``poll()`` on the main thread; revoked
  partitions' workers are stopped (their queued records are discarded, a retry wait is cut
  short, an HTTP attempt in flight is allowed to finish within ``REVOKE_WAIT_S``), then their
  done offsets are committed synchronously, before the group is rejoined.
  kafka-python 2.3 reports partitions lost by an evicted member as revoked: their commit is
  then refused (stale generation) and the next owner redelivers from the last commit.
* Partitions added to a subscribed topic are seen within ``METADATA_MAX_AGE_MS`` (the metadata
  refresh makes the group rebalance). ``MAX_POLL_INTERVAL_MS`` is the rebalance timeout: how
  long the broker holds a JoinGroup for a member that has not rejoined, and how long this
  client waits for its JoinGroup answer (kafka-python's default is 5 minutes; a rebalance stuck
  that long stalled every order). A watchdog ends ``run()`` with ``DispatcherStalled`` if the
  dispatcher has been without an assignment for ``WATCHDOG_SESSIONS`` session timeouts; the
  process then closes that consumer and joins the group again with a new one.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import queue
import signal
import threading
import time
from collections.abc import Iterable, Sequence
from types import FrameType
from typing import Any

from kafka import ConsumerRebalanceListener, KafkaConsumer, KafkaProducer, TopicPartition
from kafka.structs import OffsetAndMetadata
from prometheus_client import Gauge, start_http_server

from minimart.kafka_clients import FETCH_LIMITS
from minimart.local.delivery import Deliverer, KafkaDeadLetterSink, Record
from minimart.local.traced_delivery import TracedDeliverer
from minimart.manifests import KafkaSourceSpec, load_topology
from minimart.observability import tracing
from minimart.settings import PROJECT_ROOT, Settings

log = logging.getLogger(__name__)

POLL_TIMEOUT_MS = 100
# How long the broker holds a fetch that has no records (it answers as soon as one arrives, so
# this adds no latency per hop). 10 ms cost ~0.1 core per idle dispatcher (plus the broker's
# side): 0.60 -> 0.10 core for the idle local stack at 500 ms (docs/performance.md).
FETCH_MAX_WAIT_MS = 500
SESSION_TIMEOUT_MS = 6000
HEARTBEAT_INTERVAL_MS = 2000
# New partitions of subscribed topics are seen (and the group rebalanced) within this.
METADATA_MAX_AGE_MS = 5000
# The rebalance timeout (see above); the main loop polls every POLL_TIMEOUT_MS, far below it.
MAX_POLL_INTERVAL_MS = 20000
# Without an assignment for this many session timeouts while subscribed, rejoin afresh.
WATCHDOG_SESSIONS = 10
MAX_POLL_RECORDS = 100
# A partition with more records waiting than this is paused until half of them are delivered.
MAX_BACKLOG = 2 * MAX_POLL_RECORDS
COMMIT_INTERVAL_S = 0.25
LAG_INTERVAL_S = 2.0
# How long a revocation waits for an HTTP attempt in flight; the rebalance waits meanwhile, so
# keep it well below the session timeout.
REVOKE_WAIT_S = 2.0

CONSUMER_LAG = Gauge(
    "minimart_dispatcher_consumer_lag",
    "Records of a partition not yet delivered: high watermark minus the done offset.",
    ["source", "topic", "partition"],
)


class DispatcherStalled(RuntimeError):
    """The consumer has been without an assignment for too long: the process should restart."""


class PartitionWorker:
    """Delivers one partition's records in order, on its own thread and connection."""

    def __init__(self, tp: TopicPartition, deliverer: Deliverer) -> None:
        self.tp = tp
        self._deliverer = deliverer
        self._queue: queue.SimpleQueue[Record | None] = queue.SimpleQueue()
        self._stop = threading.Event()
        self.first_offset: int | None = None
        # The next offset to commit: every record below it was delivered or dead-lettered.
        self.done_offset: int | None = None
        self._thread = threading.Thread(
            target=self._run, name=f"deliver-{tp.topic}-{tp.partition}", daemon=True
        )
        self._thread.start()

    def submit(self, records: Iterable[Record]) -> None:
        for record in records:
            if self.first_offset is None:
                self.first_offset = record.offset
            self._queue.put(record)

    def backlog(self) -> int:
        return self._queue.qsize()

    def stop(self) -> None:
        """Finish the record in flight (no more retries), then stop; queued records are left."""
        self._stop.set()
        self._queue.put(None)

    def join(self, timeout: float) -> bool:
        self._thread.join(timeout)
        return not self._thread.is_alive()

    def _run(self) -> None:
        pool = self._deliverer.new_pool()
        try:
            while not self._stop.is_set():
                record = self._queue.get()
                if record is None or self._stop.is_set():
                    return
                if not self._deliver(record, pool):
                    return
                self.done_offset = record.offset + 1
        finally:
            self._deliverer.close_pool(pool)

    def _deliver(self, record: Record, pool: Any) -> bool:
        while True:
            try:
                return self._deliverer.deliver(record, pool, self._stop)
            except Exception:  # a bug here must not silently skip a record
                log.exception("%s: unexpected error delivering offset %d", self.tp, record.offset)
                if self._stop.wait(1.0):
                    return False


class _RebalanceListener(ConsumerRebalanceListener):  # type: ignore[misc]
    def __init__(self, dispatcher: KafkaSourceDispatcher) -> None:
        self._dispatcher = dispatcher

    def on_partitions_revoked(self, revoked: Iterable[TopicPartition]) -> None:
        self._dispatcher._release(revoked)

    def on_partitions_assigned(self, assigned: Iterable[TopicPartition]) -> None:
        self._dispatcher._on_assigned(sorted(assigned))


class KafkaSourceDispatcher:
    """Does what Knative's KafkaSource does for ``spec``: deliver its topics to ``sink_url``."""

    def __init__(
        self,
        spec: KafkaSourceSpec,
        sink_url: str,
        settings: Settings,
        watchdog_s: float = WATCHDOG_SESSIONS * SESSION_TIMEOUT_MS / 1000,
    ) -> None:
        if spec.ordering != "ordered":
            log.warning("%s: ordering %r is delivered as ordered", spec.name, spec.ordering)
        self.spec = spec
        self.sink_url = sink_url
        self.settings = settings
        # Set once the group gave this dispatcher at least one partition.
        self.assigned = threading.Event()
        # Completed rebalances (assignments received, empty ones included).
        self.generations = 0
        self._watchdog_s = watchdog_s
        # Since when this dispatcher has had no assignment (None: it has one).
        self._unassigned_since: float | None = time.monotonic()
        self._stopping = threading.Event()
        self._lock = threading.Lock()
        self._workers: dict[TopicPartition, PartitionWorker] = {}
        self._committed: dict[TopicPartition, int] = {}
        self._paused: set[TopicPartition] = set()
        self._consumer: KafkaConsumer | None = None
        self._dead_letters = (
            KafkaDeadLetterSink(self._new_producer) if spec.delivery.dead_letter_topic else None
        )
        self._deliverer = TracedDeliverer(spec, sink_url, self._dead_letters)

    # -- lifecycle -------------------------------------------------------------------------

    def run(self) -> None:
        """Consume and deliver until ``stop()``; then finish in-flight work, commit, close."""
        consumer = self._new_consumer()
        self._consumer = consumer
        consumer.subscribe(list(self.spec.topics), listener=_RebalanceListener(self))
        log.info(
            "%s: consuming %s as group %s, delivering to %s",
            self.spec.name,
            ", ".join(self.spec.topics),
            self.spec.consumer_group,
            self.sink_url,
        )
        next_commit = next_lag = time.monotonic()
        try:
            while not self._stopping.is_set():
                batch = consumer.poll(timeout_ms=POLL_TIMEOUT_MS)
                self._dispatch(consumer, batch)
                self._flow_control(consumer)
                now = time.monotonic()
                if now >= next_commit:
                    self._commit(consumer, None, sync=False)
                    next_commit = now + COMMIT_INTERVAL_S
                if now >= next_lag:
                    self._update_lag(consumer)
                    next_lag = now + LAG_INTERVAL_S
                    self._check_watchdog(now)
        finally:
            self._shutdown(consumer)

    def stop(self) -> None:
        """Ask ``run()`` to return (safe from any thread or a signal handler)."""
        self._stopping.set()

    def _check_watchdog(self, now: float) -> None:
        since = self._unassigned_since
        if since is not None and now - since > self._watchdog_s:
            raise DispatcherStalled(
                f"{self.spec.name}: no partition assignment for {now - since:.0f}s"
                f" (group {self.spec.consumer_group})"
            )

    # -- main-thread work ------------------------------------------------------------------

    def _new_consumer(self) -> KafkaConsumer:
        return KafkaConsumer(
            bootstrap_servers=self.settings.kafka_bootstrap,
            client_id=f"{self.spec.name}-dispatcher",
            group_id=self.spec.consumer_group,
            enable_auto_commit=False,
            auto_offset_reset=self.spec.initial_offset,
            fetch_max_wait_ms=FETCH_MAX_WAIT_MS,
            session_timeout_ms=SESSION_TIMEOUT_MS,
            heartbeat_interval_ms=HEARTBEAT_INTERVAL_MS,
            max_poll_interval_ms=MAX_POLL_INTERVAL_MS,
            metadata_max_age_ms=METADATA_MAX_AGE_MS,
            max_poll_records=MAX_POLL_RECORDS,
            # kafka-python's client metrics: never read, ~5% of the consumer's CPU per fetch.
            metrics_enabled=False,
            **FETCH_LIMITS,
        )

    def _new_producer(self) -> KafkaProducer:
        return KafkaProducer(
            bootstrap_servers=self.settings.kafka_bootstrap,
            client_id=f"{self.spec.name}-deadletter",
            acks="all",
            linger_ms=0,
            metrics_enabled=False,
        )

    def _dispatch(self, consumer: KafkaConsumer, batch: dict[TopicPartition, list[Any]]) -> None:
        if not batch:
            return
        with self._lock:
            assigned = consumer.assignment()
            for tp, records in batch.items():
                if tp not in assigned:
                    continue  # revoked while this batch was on its way
                worker = self._workers.get(tp)
                if worker is None:
                    worker = self._workers[tp] = PartitionWorker(tp, self._deliverer)
                worker.submit(records)

    def _flow_control(self, consumer: KafkaConsumer) -> None:
        with self._lock:
            for tp, worker in self._workers.items():
                backlog = worker.backlog()
                if tp not in self._paused and backlog >= MAX_BACKLOG:
                    consumer.pause(tp)
                    self._paused.add(tp)
                elif tp in self._paused and backlog <= MAX_BACKLOG // 2:
                    consumer.resume(tp)
                    self._paused.discard(tp)

    def _pending_offsets(
        self, tps: Iterable[TopicPartition] | None
    ) -> dict[TopicPartition, OffsetAndMetadata]:
        """Done offsets not yet committed (caller holds the lock)."""
        offsets = {}
        for tp in self._workers if tps is None else tps:
            worker = self._workers.get(tp)
            done = worker.done_offset if worker else None
            if done is not None and done > self._committed.get(tp, -1):
                offsets[tp] = OffsetAndMetadata(done, "", -1)
                self._committed[tp] = done
        return offsets

    def _commit(
        self, consumer: KafkaConsumer, tps: Iterable[TopicPartition] | None, sync: bool
    ) -> None:
        with self._lock:
            offsets = self._pending_offsets(tps)
        if not offsets:
            return
        if sync:
            try:
                consumer.commit(offsets)
            except Exception:  # the next owner redelivers: at-least-once
                log.exception("%s: commit failed", self.spec.name)
            return
        consumer.commit_async(offsets, callback=self._on_commit)

    def _on_commit(self, offsets: dict[TopicPartition, OffsetAndMetadata], result: Any) -> None:
        if isinstance(result, Exception):
            log.warning("%s: commit of %s failed: %s", self.spec.name, offsets, result)
            with self._lock:
                for tp, meta in offsets.items():
                    if self._committed.get(tp) == meta.offset:
                        del self._committed[tp]  # the next round commits it again

    def _update_lag(self, consumer: KafkaConsumer) -> None:
        with self._lock:
            for tp in consumer.assignment():
                try:
                    high = consumer.highwater(tp)
                except Exception as exc:  # revoked in between
                    log.debug("%s: no high watermark for %s: %s", self.spec.name, tp, exc)
                    continue
                if high is None:
                    continue
                worker = self._workers.get(tp)
                if worker is None:
                    lag = 0  # fetched up to the high watermark without a record
                else:
                    done = worker.done_offset
                    base = done if done is not None else worker.first_offset
                    lag = max(0, high - (base if base is not None else high))
                CONSUMER_LAG.labels(self.spec.name, tp.topic, str(tp.partition)).set(lag)

    def _shutdown(self, consumer: KafkaConsumer) -> None:
        with self._lock:
            workers = list(self._workers.values())
        for worker in workers:
            worker.stop()
        grace = (self.spec.delivery.timeout_s or 30.0) + 1.0
        deadline = time.monotonic() + grace
        for worker in workers:
            if not worker.join(max(0.0, deadline - time.monotonic())):
                log.warning("%s: %s still delivering at shutdown", self.spec.name, worker.tp)
        self._commit(consumer, None, sync=True)
        with self._lock:
            self._workers.clear()
            self._paused.clear()
        try:
            consumer.close(timeout_ms=5000)
        finally:
            self._consumer = None
            if self._dead_letters is not None:
                self._dead_letters.close()
            self._forget_lag(w.tp for w in workers)
        log.info("%s: stopped", self.spec.name)

    def _forget_lag(self, tps: Iterable[TopicPartition]) -> None:
        for tp in tps:
            with contextlib.suppress(KeyError):
                CONSUMER_LAG.remove(self.spec.name, tp.topic, str(tp.partition))

    # -- rebalance (inside consumer.poll(), on the main thread) --------------------------------

    def _on_assigned(self, assigned: list[TopicPartition]) -> None:
        log.info("%s: assigned %s", self.spec.name, assigned)
        self.generations += 1
        self._unassigned_since = None
        if assigned:
            self.assigned.set()

    def _release(self, tps: Iterable[TopicPartition]) -> None:
        tps = list(tps)
        if self._unassigned_since is None:
            self._unassigned_since = time.monotonic()
        with self._lock:
            workers = [w for tp in tps if (w := self._workers.get(tp)) is not None]
        for worker in workers:
            worker.stop()
        deadline = time.monotonic() + REVOKE_WAIT_S
        for worker in workers:
            if not worker.join(max(0.0, deadline - time.monotonic())):
                log.warning("%s: %s revoked while still delivering", self.spec.name, worker.tp)
        consumer = self._consumer
        if consumer is not None:
            # kafka-python 2.3 calls the listener from poll() on the main thread before it
            # rejoins the group: a synchronous commit gives the next owner its exact start.
            self._commit(consumer, tps, sync=True)
        with self._lock:
            for tp in tps:
                self._workers.pop(tp, None)
                self._committed.pop(tp, None)
                self._paused.discard(tp)
        self._forget_lag(tps)
        if workers:
            log.info("%s: released %s", self.spec.name, sorted(w.tp for w in workers))


def _parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m minimart.local.dispatcher",
        description="Deliver a KafkaSource's topics to its sink, as Knative's KafkaSource does.",
    )
    parser.add_argument("--source", required=True, help="KafkaSource name in eventing/")
    parser.add_argument("--sink-url", required=True, help="URL of the function to deliver to")
    parser.add_argument("--metrics-port", type=int, help="serve Prometheus metrics on this port")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> None:
    args = _parse_args(argv)
    logging.basicConfig(
        level=logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s [%(threadName)s] %(message)s",
    )
    logging.getLogger("kafka").setLevel(logging.WARNING)
    settings = Settings.from_env()
    tracing.configure(settings, instrument=())  # its Kafka spans are made by TracedDeliverer
    spec = load_topology(PROJECT_ROOT).source(args.source)
    stopping = threading.Event()
    current: list[KafkaSourceDispatcher] = []

    def on_signal(signum: int, frame: FrameType | None) -> None:
        log.info("%s: signal %d, stopping", spec.name, signum)
        stopping.set()
        for dispatcher in current:
            dispatcher.stop()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    if args.metrics_port is not None:
        start_http_server(args.metrics_port, addr=settings.host)
    try:
        while not stopping.is_set():
            current[:] = [KafkaSourceDispatcher(spec, args.sink_url, settings)]
            try:
                current[0].run()
            except DispatcherStalled as exc:  # a new consumer joins the group afresh
                log.critical("%s; rejoining with a new consumer", exc)
            else:
                break
    finally:
        tracing.flush()


if __name__ == "__main__":
    main()
