"""How a KafkaSource hands one Kafka record to its sink, as Knative's dispatcher does.

A record becomes a CloudEvent HTTP request by the bindings of ``minimart.binding`` (a record
that is not a CloudEvent is wrapped, as Knative does). This module is the transport: the HTTP
client, the retries and the dead-letter producer. Failed deliveries are retried with the
source's backoff; when retries are exhausted, or the sink answers a non-retryable status, the
event goes to the dead-letter topic with the ``knativeerror*`` extensions, so the partition
keeps flowing.
``Deliverer.deliver`` returns a ``DeliveryResult`` (outcome, attempts, status): the metrics
(``observe``) and tracing (traced_delivery.py) read that one answer.
"""

from __future__ import annotations

import base64
import logging
import select
import socket
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Protocol
from urllib.parse import urlsplit

import httptools
from prometheus_client import Counter, Histogram

from minimart.binding import OutgoingEvent, Record, to_event
from minimart.catalog import ERROR_EXTENSIONS
from minimart.manifests import KafkaSourceSpec

log = logging.getLogger(__name__)

RETRYABLE_STATUSES = frozenset({404, 408, 409, 429})
ERROR_DATA_MAX_BYTES = 4096
DEAD_LETTER_TIMEOUT_S = 10.0

DELIVERIES = Counter(
    "minimart_dispatcher_deliveries",
    "Delivery attempts of Kafka records to a KafkaSource's sink, by outcome.",
    ["source", "topic", "outcome"],
)
DELIVERY_SECONDS = Histogram(
    "minimart_dispatcher_delivery_seconds",
    "Time from taking a record off its partition queue to delivered or dead-lettered.",
    ["source", "topic"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)


class Outcome(StrEnum):
    DELIVERED = "delivered"
    RETRIED = "retried"  # a metrics label: an attempt that is tried again
    DEAD_LETTERED = "dead_lettered"
    DROPPED = "dropped"
    INTERRUPTED = "interrupted"  # stopped (revoked, shutting down) before an outcome


@dataclass(frozen=True)
class Attempt:
    """The result of one HTTP attempt: a status (0 if none came back) and what was said."""

    status: int
    body: bytes = b""
    error: str = ""

    @property
    def ok(self) -> bool:
        return 200 <= self.status < 300

    @property
    def retryable(self) -> bool:
        return self.status == 0 or self.status >= 500 or self.status in RETRYABLE_STATUSES


def error_data(body: bytes) -> str:
    """``knativeerrordata``: the response body as text, base64 if it is not, truncated."""
    body = body[:ERROR_DATA_MAX_BYTES]
    try:
        return body.decode("utf-8")
    except UnicodeDecodeError:
        return base64.b64encode(body).decode("ascii")


class DeadLetterSink(Protocol):
    def publish(self, topic: str, event: OutgoingEvent, extensions: Mapping[str, str]) -> None:
        """Write the event to ``topic``; return only once the broker has it (acks=all)."""


class KafkaDeadLetterSink:
    """Dead letters as binary-mode Kafka CloudEvents, produced with acks=all (thread-safe).

    ``producer_factory`` builds a ``confluent_kafka.Producer`` (librdkafka: thread-safe; each
    publish waits for its own delivery report).
    """

    def __init__(self, producer_factory: Callable[[], Any]) -> None:
        self._factory = producer_factory
        self._producer: Any = None
        self._lock = threading.Lock()

    def _get(self) -> Any:
        with self._lock:
            if self._producer is None:
                self._producer = self._factory()
            return self._producer

    def publish(self, topic: str, event: OutgoingEvent, extensions: Mapping[str, str]) -> None:
        letter = event.with_extensions(extensions, dropping=ERROR_EXTENSIONS)
        producer = self._get()
        reported = threading.Event()
        errors: list[Any] = []

        def on_delivery(error: Any, message: Any) -> None:
            if error is not None:
                errors.append(error)
            reported.set()

        producer.produce(
            topic,
            value=letter.body,
            key=letter.key,
            headers=letter.kafka_headers(),
            on_delivery=on_delivery,
        )
        deadline = time.monotonic() + DEAD_LETTER_TIMEOUT_S
        while not reported.is_set():
            if time.monotonic() > deadline:
                raise TimeoutError(f"no acknowledgement of the dead letter on {topic}")
            producer.poll(0.05)  # serves the delivery reports (of any thread's letters)
        if errors:
            raise RuntimeError(f"dead letter to {topic} not acknowledged: {errors[0]}")

    def close(self) -> None:
        with self._lock:
            if self._producer is not None:
                self._producer.flush(5)
                self._producer = None


class _Response:
    """httptools' callbacks for one response."""

    __slots__ = ("answered", "body", "close", "complete")

    def __init__(self) -> None:
        self.body: list[bytes] = []
        self.close = False
        self.complete = False
        self.answered = False  # some bytes of the answer came back

    def on_header(self, name: bytes, value: bytes) -> None:
        if name.lower() == b"connection" and value.strip().lower() == b"close":
            self.close = True

    def on_body(self, body: bytes) -> None:
        self.body.append(body)

    def on_message_complete(self) -> None:
        self.complete = True


def _left(deadline: float) -> float:
    """Seconds to ``deadline`` as a socket timeout (never 0, which would mean non-blocking)."""
    return max(0.001, deadline - time.monotonic())


class SinkConnection:
    """One keep-alive HTTP/1.1 connection to the sink, for one partition worker.

    Why not urllib3 or http.client: a worker sends one POST at a time to one fixed address
    and needs no pool, redirects or retries; urllib3's per-request machinery, then
    http.client's header validation and ``email.parser`` response headers, were a third of the
    dispatcher's CPU per delivery (py-spy). So the request is written in one ``sendall``
    (its header values are percent-encoded or checked by ``OutgoingEvent.http_headers``) and
    the response is parsed by ``httptools`` (llhttp, C; uvicorn's parser). As urllib3 does,
    a kept-alive socket the sink closed meanwhile (readable while idle) is replaced before it
    is used. ``timeout_s`` bounds the whole attempt (connect, send, response).
    """

    def __init__(self, url: str, timeout_s: float) -> None:
        target = urlsplit(url)
        self.host = target.hostname or "127.0.0.1"
        self.port = target.port or 80
        path = (target.path or "/") + (f"?{target.query}" if target.query else "")
        self._head = f"POST {path} HTTP/1.1\r\nHost: {self.host}:{self.port}\r\n".encode()
        self.timeout_s = timeout_s
        self._sock: socket.socket | None = None

    def _socket(self, deadline: float) -> socket.socket:
        sock = self._sock
        if sock is not None:
            readable, _, _ = select.select([sock], [], [], 0)
            if readable:  # closed by the sink (or stray bytes): not reusable
                self.close()
                sock = None
        if sock is None:
            sock = socket.create_connection((self.host, self.port), timeout=_left(deadline))
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            self._sock = sock
        return sock

    def post(self, body: bytes, headers: Mapping[str, str]) -> tuple[int, bytes]:
        deadline = time.monotonic() + self.timeout_s
        lines = [self._head]
        lines.extend(f"{name}: {value}\r\n".encode("latin-1") for name, value in headers.items())
        lines.append(b"Content-Length: %d\r\n\r\n" % len(body))
        lines.append(body)
        request = b"".join(lines)
        reused = self._sock is not None
        response = _Response()
        try:
            return self._exchange(request, response, deadline)
        except (ConnectionResetError, BrokenPipeError):
            # A kept-alive socket the sink had given up on without a word: it answered the
            # previous request before reading all of its body (a 413) and dropped the rest of
            # the stream. As urllib3 does, a reused connection that fails before any byte of an
            # answer is tried once more on a new one (a duplicate delivery at worst: steps are
            # idempotent); anything else is this attempt's failure.
            if not reused or response.answered:
                raise
            return self._exchange(request, _Response(), deadline)

    def _exchange(self, request: bytes, response: _Response, deadline: float) -> tuple[int, bytes]:
        parser = httptools.HttpResponseParser(response)
        sock = self._socket(deadline)
        try:
            sock.settimeout(_left(deadline))
            sock.sendall(request)
            while not response.complete:
                sock.settimeout(_left(deadline))
                chunk = sock.recv(65536)
                if not chunk:
                    raise ConnectionResetError("the sink closed the connection")
                parser.feed_data(chunk)
                response.answered = True
        except BaseException:
            self.close()
            raise
        if response.close or parser.get_http_version() != "1.1":
            self.close()
        return parser.get_status_code(), b"".join(response.body)

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None


@dataclass(frozen=True)
class DeliveryResult:
    """What became of one record: read by the metrics (``observe``) and by tracing."""

    outcome: Outcome  # DELIVERED, DEAD_LETTERED, DROPPED or INTERRUPTED
    attempts: int  # HTTP attempts made
    status: int  # the last status the sink answered (0: none)
    retries: int  # retries scheduled (a stop may interrupt the last one's wait)
    seconds: float  # from taking the record to its outcome
    error: str = ""

    @property
    def done(self) -> bool:
        """The record needs nothing more (its offset may be committed)."""
        return self.outcome is not Outcome.INTERRUPTED


# Makes one HTTP attempt: (connection, event, attempt number from 1) -> Attempt. Tracing
# passes its own, which opens a span around ``Deliverer.attempt``.
AttemptFn = Callable[[SinkConnection, OutgoingEvent, int], Attempt]


def observe(source: str, topic: str, result: DeliveryResult) -> None:
    """The delivery metrics of one result."""
    if result.retries:
        DELIVERIES.labels(source, topic, Outcome.RETRIED.value).inc(result.retries)
    if result.done:
        DELIVERIES.labels(source, topic, result.outcome.value).inc()
        DELIVERY_SECONDS.labels(source, topic).observe(result.seconds)


class Deliverer:
    """Delivers records of one KafkaSource to its sink, retrying and dead-lettering.

    One instance serves every partition worker; each worker passes its own connection.
    """

    def __init__(
        self,
        spec: KafkaSourceSpec,
        sink_url: str,
        dead_letters: DeadLetterSink | None,
        sleep: Callable[[threading.Event, float], bool] | None = None,
        authorization: Callable[[], str] | None = None,
    ) -> None:
        self.spec = spec
        # The sender's token (minimart/identity.py TokenMinter): an Authorization header on
        # every attempt, as Knative's dispatcher sends its OIDC token; None: no header.
        self._authorization = authorization
        self.sink_url = sink_url
        self._dead_letters = dead_letters
        self._timeout_s = spec.delivery.attempt_timeout_s
        self._wait = sleep or (lambda stop, seconds: stop.wait(seconds))

    def new_connection(self) -> SinkConnection:
        return SinkConnection(self.sink_url, self._timeout_s)

    def attempt(self, conn: SinkConnection, event: OutgoingEvent, number: int = 1) -> Attempt:
        headers = event.http_headers()
        if self._authorization is not None:
            headers["Authorization"] = self._authorization()
        try:
            status, body = conn.post(event.body, headers)
        except (OSError, httptools.HttpParserError) as exc:
            return Attempt(status=0, error=f"{type(exc).__name__}: {exc}")
        return Attempt(status=status, body=body)

    def deliver(
        self,
        record: Record,
        conn: SinkConnection,
        stop: threading.Event,
        attempt: AttemptFn | None = None,
    ) -> DeliveryResult:
        """Deliver or dead-letter ``record`` (INTERRUPTED if ``stop`` cut it short)."""
        started = time.perf_counter()
        attempt = attempt or self.attempt
        event = to_event(self.spec.name, record)
        policy = self.spec.delivery
        retry = 0
        while True:
            result = attempt(conn, event, retry + 1)
            if result.ok:
                return DeliveryResult(
                    Outcome.DELIVERED, retry + 1, result.status, retry,
                    time.perf_counter() - started,
                )  # fmt: skip
            if not result.retryable or retry >= policy.retry:
                break
            retry += 1
            delay = policy.backoff(retry)
            log.info(
                "%s: %s[%d]@%d: sink answered %s%s; retry %d/%d in %.2fs",
                self.spec.name,
                record.topic,
                record.partition,
                record.offset,
                result.status or "no response",
                f" ({result.error})" if result.error else "",
                retry,
                policy.retry,
                delay,
            )
            if stop.is_set() or self._wait(stop, delay):
                return DeliveryResult(
                    Outcome.INTERRUPTED, retry, result.status, retry,
                    time.perf_counter() - started, result.error,
                )  # fmt: skip
        outcome = self._dead_letter(record, event, result, stop)
        return DeliveryResult(
            outcome, retry + 1, result.status, retry, time.perf_counter() - started,
            result.error or f"HTTP {result.status}",
        )  # fmt: skip

    def _dead_letter(
        self, record: Record, event: OutgoingEvent, result: Attempt, stop: threading.Event
    ) -> Outcome:
        topic = self.spec.delivery.dead_letter_topic
        where = f"{self.spec.name}: {record.topic}[{record.partition}]@{record.offset}"
        reason = result.error or f"HTTP {result.status}"
        if topic is None or self._dead_letters is None:
            log.warning(
                "%s: delivery failed (%s) and there is no dead-letter sink: dropped", where, reason
            )
            return Outcome.DROPPED
        # As Knative's dispatcher: no knativeerrorcode when no response came back at all.
        extensions = {"knativeerrordest": self.sink_url}
        if result.status:
            extensions["knativeerrorcode"] = str(result.status)
        extensions["knativeerrordata"] = error_data(result.body) if result.body else result.error
        delay = 0.5
        while True:
            try:
                self._dead_letters.publish(topic, event, extensions)
                break
            except Exception:  # the broker being away must not lose the event
                log.exception("%s: cannot write the dead letter to %s; retrying", where, topic)
                if self._wait(stop, delay):
                    return Outcome.INTERRUPTED
                delay = min(delay * 2, 10.0)
        log.warning("%s: delivery failed (%s): dead-lettered to %s", where, reason, topic)
        return Outcome.DEAD_LETTERED
