"""A local stand-in for Knative's KafkaSource dispatcher: one process per KafkaSource.

In a cluster this is Knative's data plane (a JVM), not minimart; here it may use whatever
serves best, so the consumer and the dead-letter producer are librdkafka (``confluent-kafka``,
C, bundled in its wheel): fetching, decoding and the group protocol cost no Python per record.
The functions keep kafka-python.

Design:

* The main thread owns the ``Consumer``: it takes batches (``consume``), hands each
  partition's records to that partition's worker in one piece, pauses partitions whose
  backlog is large, commits, and updates the lag gauge.
* A worker thread per assigned partition (created on its first record) delivers its records
  one at a time, in offset order, waiting for the sink (``ordering: ordered``); partitions and
  topics proceed concurrently. Each worker has its own keep-alive HTTP connection.
* At-least-once: a worker advances its partition's "done" offset only after a record was
  delivered, dead-lettered or (without a dead-letter sink) dropped. The main thread commits
  done offsets asynchronously every ``COMMIT_INTERVAL_S``; revocation and shutdown commit
  what is done before the partitions are given up.
* Rebalance: librdkafka runs the callbacks inside ``consume()`` on the main thread; revoked
  partitions' workers are stopped (their queued records are discarded, a retry wait is cut
  short, an HTTP attempt in flight is allowed to finish within ``REVOKE_WAIT_S``), then their
  done offsets are committed synchronously, before the group is rejoined. Partitions *lost*
  (the member was evicted) are stopped the same way but not committed: the next owner
  redelivers from the last commit.
* Partitions added to a subscribed topic are seen within ``METADATA_MAX_AGE_MS`` (the metadata
  refresh makes the group rebalance). ``MAX_POLL_INTERVAL_MS`` is the rebalance timeout: how
  long the broker holds a JoinGroup for a member that has not rejoined. A watchdog ends
  ``run()`` with ``DispatcherStalled`` if the dispatcher has been without an assignment for
  ``WATCHDOG_SESSIONS`` session timeouts; the process then closes that consumer and joins the
  group again with a new one.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import queue
import signal
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from types import FrameType
from typing import Any

from confluent_kafka import (
    TIMESTAMP_NOT_AVAILABLE,
    Consumer,
    KafkaError,
    KafkaException,
    Producer,
    TopicPartition,
)
from prometheus_client import Gauge, start_http_server

from minimart import identity, kafka_clients
from minimart.binding import KafkaRecord
from minimart.kafka_clients import FETCH_MAX_BYTES, MAX_PARTITION_FETCH_BYTES
from minimart.local.delivery import (
    Deliverer,
    DeliveryResult,
    KafkaDeadLetterSink,
    observe,
)
from minimart.local.delivery_spans import DeliverySpans, open_spans
from minimart.local.traced_delivery import TracedDeliverer, traced_deliverer
from minimart.manifests import KafkaSourceSpec, load_topology
from minimart.observability import tracing
from minimart.settings import PROJECT_ROOT, Settings

log = logging.getLogger(__name__)

# How long the main loop waits when no record comes: it returns at once when one does, so
# this only paces the idle loop (flow control, commits, stop); each idle wake-up costs CPU.
POLL_TIMEOUT_S = 0.5
# How long the broker holds a fetch that has no records (it answers as soon as one arrives, so
# this adds no latency per hop); short waits made every idle dispatcher re-fetch all its
# partitions many times a second (docs/performance.md).
FETCH_MAX_WAIT_MS = 500
SESSION_TIMEOUT_MS = 6000
HEARTBEAT_INTERVAL_MS = 2000
# New partitions of subscribed topics are seen (and the group rebalanced) within this.
METADATA_MAX_AGE_MS = 5000
# The rebalance timeout (see above); the main loop polls every POLL_TIMEOUT_S, far below it.
MAX_POLL_INTERVAL_MS = 20000
# Without an assignment for this many session timeouts while subscribed, rejoin afresh.
WATCHDOG_SESSIONS = 10
MAX_POLL_RECORDS = 100
# A partition with more records waiting than this is paused until half of them are delivered.
MAX_BACKLOG = 2 * MAX_POLL_RECORDS
# Each commit is a request the broker writes to __consumer_offsets: every 0.25 s, five
# dispatchers sent 20 a second whenever orders flowed. A crash redelivers at most this much
# (the steps treat redeliveries as replays); revocation and shutdown commit at once.
COMMIT_INTERVAL_S = 1.0
LAG_INTERVAL_S = 2.0
# How long a revocation waits for an HTTP attempt in flight; the rebalance waits meanwhile, so
# keep it well below the session timeout.
REVOKE_WAIT_S = 2.0
CLOSE_TIMEOUT_S = 5.0

CONSUMER_LAG = Gauge(
    "minimart_dispatcher_consumer_lag",
    "Records of a partition not yet delivered: high watermark minus the done offset.",
    ["source", "topic", "partition"],
)

Partition = tuple[str, int]  # (topic, partition)


class DispatcherStalled(RuntimeError):
    """The consumer has been without an assignment for too long: the process should restart."""


def record_of(message: Any) -> KafkaRecord:
    """A librdkafka message as delivery reads it."""
    kind, moment = message.timestamp()
    return KafkaRecord(
        message.topic(),
        message.partition(),
        message.offset(),
        -1 if kind == TIMESTAMP_NOT_AVAILABLE else moment,
        message.key(),
        message.value(),
        message.headers() or (),
    )


class PartitionWorker:
    """Delivers one partition's records in order, on its own thread and connection."""

    def __init__(self, tp: Partition, deliverer: Deliverer | TracedDeliverer) -> None:
        self.tp = tp
        self._deliverer = deliverer
        # Batches as the consumer handed them over; None wakes the thread to stop.
        self._queue: queue.SimpleQueue[list[KafkaRecord] | None] = queue.SimpleQueue()
        self._stop = threading.Event()
        self._submitted = 0  # written by the main thread only
        self._finished = 0  # written by the worker thread only
        self.first_offset: int | None = None
        # The next offset to commit: every record below it was delivered or dead-lettered.
        self.done_offset: int | None = None
        self._thread = threading.Thread(
            target=self._run, name=f"deliver-{tp[0]}-{tp[1]}", daemon=True
        )
        self._thread.start()

    def submit(self, records: list[KafkaRecord]) -> None:
        if self.first_offset is None:
            self.first_offset = records[0].offset
        self._submitted += len(records)
        self._queue.put(records)

    def backlog(self) -> int:
        return self._submitted - self._finished

    def stop(self) -> None:
        """Finish the record in flight (no more retries), then stop; queued records are left."""
        self._stop.set()
        self._queue.put(None)

    def join(self, timeout: float) -> bool:
        self._thread.join(timeout)
        return not self._thread.is_alive()

    def _run(self) -> None:
        conn = self._deliverer.new_connection()
        try:
            while not self._stop.is_set():
                batch = self._queue.get()
                if batch is None:
                    return
                for record in batch:
                    if self._stop.is_set():
                        return
                    result = self._deliver(record, conn)
                    if result is None or not result.done:
                        return
                    self.done_offset = record.offset + 1
                    self._finished += 1
        finally:
            conn.close()

    def _deliver(self, record: KafkaRecord, conn: Any) -> DeliveryResult | None:
        while True:
            try:
                result = self._deliverer.deliver(record, conn, self._stop)
            except Exception:  # a bug here must not silently skip a record
                log.exception("%s: unexpected error delivering offset %d", self.tp, record.offset)
                if self._stop.wait(1.0):
                    return None
                continue
            observe(self._deliverer.spec.name, record.topic, result)
            return result


class KafkaSourceDispatcher:
    """Does what Knative's KafkaSource does for ``spec``: deliver its topics to ``sink_url``."""

    def __init__(
        self,
        spec: KafkaSourceSpec,
        sink_url: str,
        settings: Settings,
        watchdog_s: float = WATCHDOG_SESSIONS * SESSION_TIMEOUT_MS / 1000,
        spans: DeliverySpans | None = None,
        authorization: Callable[[], str] | None = None,
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
        self._assignment: set[Partition] = set()
        self._workers: dict[Partition, PartitionWorker] = {}
        self._committed: dict[Partition, int] = {}
        self._paused: set[Partition] = set()
        self._consumer: Any = None
        self._dead_letters = (
            KafkaDeadLetterSink(self._new_producer) if spec.delivery.dead_letter_topic else None
        )
        self._deliverer: Deliverer | TracedDeliverer = (
            Deliverer(spec, sink_url, self._dead_letters, authorization=authorization)
            if spans is None
            else traced_deliverer(spec, sink_url, self._dead_letters, spans, authorization)
        )

    # -- lifecycle -------------------------------------------------------------------------

    def run(self) -> None:
        """Consume and deliver until ``stop()``; then finish in-flight work, commit, close."""
        consumer = self._new_consumer()
        self._consumer = consumer
        consumer.subscribe(
            list(self.spec.topics),
            on_assign=self._on_assign,
            on_revoke=self._on_revoke,
            on_lost=self._on_lost,
        )
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
                # poll() returns as soon as one record is there (consume() would wait for a
                # full batch or its timeout); then whatever else is already fetched, at once.
                first = consumer.poll(POLL_TIMEOUT_S)
                fed: Iterable[Partition] = ()
                if first is not None:
                    fed = self._dispatch([first, *consumer.consume(MAX_POLL_RECORDS - 1, 0)])
                self._flow_control(consumer, fed)
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

    def _new_consumer(self) -> Any:
        return Consumer(
            {
                "bootstrap.servers": self.settings.kafka_bootstrap,
                "client.id": f"{self.spec.name}-dispatcher",
                "group.id": self.spec.consumer_group,
                "enable.auto.commit": False,
                "auto.offset.reset": self.spec.initial_offset,
                "fetch.wait.max.ms": FETCH_MAX_WAIT_MS,
                "fetch.max.bytes": FETCH_MAX_BYTES,
                "max.partition.fetch.bytes": MAX_PARTITION_FETCH_BYTES,
                "session.timeout.ms": SESSION_TIMEOUT_MS,
                "heartbeat.interval.ms": HEARTBEAT_INTERVAL_MS,
                "max.poll.interval.ms": MAX_POLL_INTERVAL_MS,
                "topic.metadata.refresh.interval.ms": METADATA_MAX_AGE_MS,
                "on_commit": self._on_commit,
                "logger": logging.getLogger("librdkafka"),
                "log.connection.close": False,
                **kafka_clients.librdkafka_auth(kafka_clients.credentials_of(self.settings)),
            }
        )

    def _new_producer(self) -> Any:
        return Producer(
            {
                "bootstrap.servers": self.settings.kafka_bootstrap,
                "client.id": f"{self.spec.name}-deadletter",
                "acks": "all",
                "linger.ms": 0,
                "logger": logging.getLogger("librdkafka"),
                "log.connection.close": False,
                **kafka_clients.librdkafka_auth(
                    kafka_clients.dead_letter_credentials_of(self.settings)
                ),
            }
        )

    def _dispatch(self, messages: list[Any]) -> Iterable[Partition]:
        """Hand each partition's records to its worker; the partitions that got some."""
        batches: dict[Partition, list[KafkaRecord]] = {}
        for message in messages:
            error = message.error()
            if error is not None:
                if error.code() != KafkaError._PARTITION_EOF:
                    log.warning("%s: consumer error: %s", self.spec.name, error)
                continue
            record = record_of(message)
            batches.setdefault((record.topic, record.partition), []).append(record)
        with self._lock:
            for tp, records in batches.items():
                if tp not in self._assignment:
                    continue  # revoked while this batch was on its way
                worker = self._workers.get(tp)
                if worker is None:
                    worker = self._workers[tp] = PartitionWorker(tp, self._deliverer)
                worker.submit(records)
        return batches.keys()

    def _flow_control(self, consumer: Any, fed: Iterable[Partition]) -> None:
        """Pause a partition just ``fed`` whose backlog is large; resume a paused one whose
        backlog has halved (only those can change: a backlog grows when its partition is fed)."""
        pause, resume = [], []
        with self._lock:
            for tp in fed:
                worker = self._workers.get(tp)
                if (
                    worker is not None
                    and tp not in self._paused
                    and worker.backlog() >= MAX_BACKLOG
                ):
                    pause.append(tp)
                    self._paused.add(tp)
            for tp in list(self._paused):
                worker = self._workers.get(tp)
                if worker is not None and worker.backlog() <= MAX_BACKLOG // 2:
                    resume.append(tp)
                    self._paused.discard(tp)
        if pause:
            consumer.pause([TopicPartition(t, p) for t, p in pause])
        if resume:
            consumer.resume([TopicPartition(t, p) for t, p in resume])

    def _pending_offsets(self, tps: Iterable[Partition] | None) -> list[TopicPartition]:
        """Done offsets not yet committed (caller holds the lock)."""
        offsets = []
        for tp in self._workers if tps is None else tps:
            worker = self._workers.get(tp)
            done = worker.done_offset if worker else None
            if done is not None and done > self._committed.get(tp, -1):
                offsets.append(TopicPartition(tp[0], tp[1], done))
                self._committed[tp] = done
        return offsets

    def _commit(self, consumer: Any, tps: Iterable[Partition] | None, sync: bool) -> None:
        with self._lock:
            offsets = self._pending_offsets(tps)
        if not offsets:
            return
        try:
            consumer.commit(offsets=offsets, asynchronous=not sync)
        except KafkaException as exc:  # the next owner redelivers: at-least-once
            log.warning("%s: commit of %s failed: %s", self.spec.name, offsets, exc)
            self._uncommitted(offsets)

    def _on_commit(self, error: Any, partitions: list[TopicPartition]) -> None:
        if error is not None:
            log.warning("%s: commit of %s failed: %s", self.spec.name, partitions, error)
            self._uncommitted(partitions)

    def _uncommitted(self, offsets: Iterable[TopicPartition]) -> None:
        with self._lock:
            for tp in offsets:
                key = (tp.topic, tp.partition)
                if self._committed.get(key) == tp.offset:
                    del self._committed[key]  # the next round commits it again

    def _update_lag(self, consumer: Any) -> None:
        with self._lock:
            assigned = sorted(self._assignment)
        for tp in assigned:
            try:
                _, high = consumer.get_watermark_offsets(TopicPartition(*tp), cached=True)
            except KafkaException as exc:  # revoked in between
                log.debug("%s: no high watermark for %s: %s", self.spec.name, tp, exc)
                continue
            if high is None or high < 0:
                continue
            with self._lock:
                worker = self._workers.get(tp)
                if worker is None:
                    lag = 0  # fetched up to the high watermark without a record
                else:
                    done = worker.done_offset
                    base = done if done is not None else worker.first_offset
                    lag = max(0, high - (base if base is not None else high))
            CONSUMER_LAG.labels(self.spec.name, tp[0], str(tp[1])).set(lag)

    def _shutdown(self, consumer: Any) -> None:
        with self._lock:
            workers = list(self._workers.values())
        for worker in workers:
            worker.stop()
        grace = self.spec.delivery.attempt_timeout_s + 1.0
        deadline = time.monotonic() + grace
        for worker in workers:
            if not worker.join(max(0.0, deadline - time.monotonic())):
                log.warning("%s: %s still delivering at shutdown", self.spec.name, worker.tp)
        self._commit(consumer, None, sync=True)
        with self._lock:
            self._workers.clear()
            self._paused.clear()
        try:
            self._close(consumer)
        finally:
            self._consumer = None
            if self._dead_letters is not None:
                self._dead_letters.close()
            self._forget_lag(w.tp for w in workers)
        log.info("%s: stopped", self.spec.name)

    def _close(self, consumer: Any) -> None:
        """Leave the group; a close held up by a rebalance that never ends is abandoned (the
        broker drops the member after its session timeout)."""
        closer = threading.Thread(target=consumer.close, name="consumer-close", daemon=True)
        closer.start()
        closer.join(CLOSE_TIMEOUT_S)
        if closer.is_alive():
            log.warning("%s: the consumer did not close within %.0fs", self.spec.name,
                        CLOSE_TIMEOUT_S)  # fmt: skip

    def _forget_lag(self, tps: Iterable[Partition]) -> None:
        for tp in tps:
            with contextlib.suppress(KeyError):
                CONSUMER_LAG.remove(self.spec.name, tp[0], str(tp[1]))

    # -- rebalance (inside consumer.consume(), on the main thread) ----------------------------

    def _on_assign(self, consumer: Any, partitions: list[TopicPartition]) -> None:
        assigned = sorted((tp.topic, tp.partition) for tp in partitions)
        log.info("%s: assigned %s", self.spec.name, assigned)
        with self._lock:
            self._assignment = set(assigned)
        self.generations += 1
        self._unassigned_since = None
        if assigned:
            self.assigned.set()

    def _on_revoke(self, consumer: Any, partitions: list[TopicPartition]) -> None:
        self._release([(tp.topic, tp.partition) for tp in partitions], commit=True)

    def _on_lost(self, consumer: Any, partitions: list[TopicPartition]) -> None:
        log.warning("%s: partitions lost (evicted from the group)", self.spec.name)
        self._release([(tp.topic, tp.partition) for tp in partitions], commit=False)

    def _release(self, tps: list[Partition], commit: bool) -> None:
        if self._unassigned_since is None:
            self._unassigned_since = time.monotonic()
        with self._lock:
            self._assignment.difference_update(tps)
            workers = [w for tp in tps if (w := self._workers.get(tp)) is not None]
        for worker in workers:
            worker.stop()
        deadline = time.monotonic() + REVOKE_WAIT_S
        for worker in workers:
            if not worker.join(max(0.0, deadline - time.monotonic())):
                log.warning("%s: %s revoked while still delivering", self.spec.name, worker.tp)
        consumer = self._consumer
        if commit and consumer is not None:
            # Inside the rebalance, before the group is rejoined: a synchronous commit gives
            # the next owner its exact start.
            self._commit(consumer, tps, sync=True)
        with self._lock:
            for tp in tps:
                self._workers.pop(tp, None)
                self._committed.pop(tp, None)
                self._paused.discard(tp)
        self._forget_lag(tps)
        if workers:
            log.info("%s: released %s", self.spec.name, sorted(w.tp for w in workers))


def source_identity(spec: KafkaSourceSpec, settings: Settings) -> identity.TokenMinter | None:
    """The tokens the source sends, as Knative's KafkaSource with ``authentication-oidc``: of
    its own ServiceAccount, for its sink's audience, from the local issuer (``up`` made its
    key pair); none when the manifest gives the sink no audience."""
    if spec.sink_audience is None:
        return None
    issuer = identity.LocalIssuer(settings.identity_dir, settings.oidc_issuer)
    subject = identity.source_subject(spec.name)
    return identity.TokenMinter(issuer.signing_key(), subject, spec.sink_audience)


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
    logging.getLogger("librdkafka").setLevel(logging.WARNING)
    settings = Settings.from_env()
    spans = open_spans(settings)  # its Kafka spans are made by TracedDeliverer
    spec = load_topology(PROJECT_ROOT).source(args.source)
    authorization = source_identity(spec, settings)
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
            current[:] = [
                KafkaSourceDispatcher(
                    spec, args.sink_url, settings, spans=spans, authorization=authorization
                )
            ]
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
