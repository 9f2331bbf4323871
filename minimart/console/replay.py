"""Record the CloudEvents of a run, replay them, list dead letters and re-drive them.

A recording is a JSON-lines file, one Kafka record per line::

    {"topic": ..., "partition": ..., "offset": ..., "timestamp": ...,
     "key": "<order id>", "headers": [["ce_id", "..."], ...], "value": "<JSON text>"}

(``value_b64`` instead of ``value`` when a record is not UTF-8). Replaying sends records back
to their topics (the dispatchers deliver them again) or straight to one function over HTTP as
binary-mode CloudEvents, as the dispatcher would. Every step is idempotent, so replaying a run
changes nothing.
"""

from __future__ import annotations

import base64
import html
import json
import re
import time
from collections.abc import Callable, Collection, Iterable, Iterator, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import urllib3
from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer, TopicPartition

from minimart import identity, kafka_clients
from minimart.binding import (
    STRUCTURED_CONTENT_TYPE,
    STRUCTURED_DATA,
    KafkaRecord,
    order_id_of,
    to_event,
)
from minimart.catalog import DEAD_LETTER_TOPICS, ERROR_EXTENSIONS, PARKED_TOPIC, EventType
from minimart.manifests import KafkaSourceSpec
from minimart.settings import Settings

SAGA_TOPICS: tuple[str, ...] = tuple(t.topic for t in EventType)
_HTML_PARAGRAPH = re.compile(r"<p>(.*?)</p>", re.S)


@dataclass(frozen=True)
class RecordedEvent(KafkaRecord):
    """One Kafka record, with what the console reads from it (its CloudEvent attributes in
    either mode) and its JSON-lines form."""

    def header(self, name: str) -> str | None:
        for key, raw in self.headers:
            if key.lower() == name:
                return None if raw is None else raw.decode("utf-8", errors="replace")
        return None

    @property
    def structured(self) -> bool:
        """A structured-mode CloudEvent: the attributes are members of the JSON value."""
        content_type = self.header("content-type") or ""
        return content_type.startswith(STRUCTURED_CONTENT_TYPE) and not self.header(
            "ce_specversion"
        )

    def _document(self) -> dict[str, Any]:
        try:
            document = json.loads(self.value or b"")
        except (ValueError, RecursionError):  # not JSON, or nested past what json reads
            return {}
        return document if isinstance(document, dict) else {}

    def attribute(self, name: str) -> str | None:
        """A CloudEvent attribute or extension: a ``ce_`` header in binary mode, a member of
        the JSON value in structured mode."""
        if not self.structured:
            return self.header(f"ce_{name}")
        value = self._document().get(name)
        return None if value is None or name in STRUCTURED_DATA else str(value)

    def without_attributes(self, names: Collection[str]) -> RecordedEvent:
        """This record without the attributes ``names``, in its own mode (not yet produced)."""
        value, headers = self.value, self.headers
        if self.structured:
            document = self._document()
            if document:
                kept = {k: v for k, v in document.items() if k not in names}
                value = json.dumps(kept).encode()
        else:
            headers = [(k, v) for k, v in headers if k.lower().removeprefix("ce_") not in names]
        return RecordedEvent(self.topic, -1, -1, -1, self.key, value, headers)

    @property
    def event_id(self) -> str | None:
        return self.attribute("id")

    @property
    def event_type(self) -> str | None:
        return self.attribute("type")

    def to_json(self) -> dict[str, Any]:
        doc: dict[str, Any] = {
            "topic": self.topic,
            "partition": self.partition,
            "offset": self.offset,
            "timestamp": self.timestamp,
            "key": None if self.key is None else self.key.decode("utf-8", errors="replace"),
            "headers": [[k, None if v is None else v.decode("utf-8")] for k, v in self.headers],
        }
        try:
            doc["value"] = None if self.value is None else self.value.decode("utf-8")
        except UnicodeDecodeError:
            doc["value_b64"] = base64.b64encode(self.value or b"").decode("ascii")
        return doc

    @classmethod
    def from_json(cls, doc: dict[str, Any]) -> RecordedEvent:
        if "value_b64" in doc:
            value: bytes | None = base64.b64decode(doc["value_b64"])
        else:
            value = None if doc.get("value") is None else str(doc["value"]).encode()
        key = doc.get("key")
        return cls(
            topic=doc["topic"],
            partition=int(doc.get("partition", -1)),
            offset=int(doc.get("offset", -1)),
            timestamp=int(doc.get("timestamp", -1)),
            key=None if key is None else str(key).encode(),
            value=value,
            headers=[(k, None if v is None else str(v).encode()) for k, v in doc["headers"]],
        )

    @classmethod
    def from_consumer(cls, record: Any) -> RecordedEvent:
        return cls(
            topic=record.topic,
            partition=record.partition,
            offset=record.offset,
            timestamp=record.timestamp,
            key=record.key,
            value=record.value,
            headers=list(record.headers or ()),
        )


def read_topics(
    settings: Settings, topics: Sequence[str], timeout_s: float = 30.0
) -> list[RecordedEvent]:
    """Every record of ``topics`` from the beginning to the current end (no consumer group)."""
    consumer = kafka_clients.consumer(
        settings.kafka_bootstrap,
        kafka_clients.credentials_of(settings),
        enable_auto_commit=False,
        group_id=None,
        fetch_max_wait_ms=50,
        consumer_timeout_ms=1_000,
    )
    try:
        partitions = [
            TopicPartition(topic, p)
            for topic in topics
            for p in sorted(consumer.partitions_for_topic(topic) or ())
        ]
        consumer.assign(partitions)
        consumer.seek_to_beginning(*partitions)
        ends = consumer.end_offsets(partitions)
        remaining = {tp for tp in partitions if ends[tp] > consumer.position(tp)}
        records: list[RecordedEvent] = []
        deadline = time.monotonic() + timeout_s
        while remaining:
            if time.monotonic() > deadline:
                raise TimeoutError(f"could not read {sorted(remaining)} to their end")
            for tp, batch in consumer.poll(timeout_ms=200).items():
                for record in batch:
                    if record.offset < ends[tp]:
                        records.append(RecordedEvent.from_consumer(record))
                if consumer.position(tp) >= ends[tp]:
                    remaining.discard(tp)
        return records
    finally:
        consumer.close()


def end_offsets(settings: Settings, topics: Sequence[str]) -> dict[str, int]:
    """Each topic's end offset summed over its partitions: how many records it ever held."""
    consumer = kafka_clients.consumer(
        settings.kafka_bootstrap, kafka_clients.credentials_of(settings), group_id=None
    )
    try:
        parts = [TopicPartition(t, p) for t in topics
                 for p in sorted(consumer.partitions_for_topic(t) or ())]  # fmt: skip
        ends = consumer.end_offsets(parts)
        return {t: sum(n for tp, n in ends.items() if tp.topic == t) for t in topics}
    finally:
        consumer.close()


def partitions_behind(
    admin: KafkaAdminClient, consumer: KafkaConsumer, sources: Iterable[KafkaSourceSpec]
) -> list[str]:
    """Each partition a source's consumer group has not committed to the end of, as
    ``"<source> <topic>[<partition>]"`` (none: every source has caught up)."""
    behind = []
    for source in sources:
        committed = admin.list_consumer_group_offsets(source.consumer_group)
        tps = [
            TopicPartition(topic, p)
            for topic in source.topics
            for p in sorted(consumer.partitions_for_topic(topic) or ())
        ]
        ends = consumer.end_offsets(tps)
        for tp in tps:
            done = committed.get(tp)
            if ends[tp] > (done.offset if done is not None else 0):
                behind.append(f"{source.name} {tp.topic}[{tp.partition}]")
    return behind


def record(
    settings: Settings,
    topics: Sequence[str] = SAGA_TOPICS,
    order_ids: Iterable[str] | None = None,
) -> list[RecordedEvent]:
    """The records of ``topics`` (of some orders: keyed by order id), in timestamp order."""
    wanted = None if order_ids is None else {oid.encode() for oid in order_ids}
    records = [r for r in read_topics(settings, topics) if wanted is None or r.key in wanted]
    return sorted(records, key=lambda r: (r.timestamp, r.topic, r.partition, r.offset))


def save(records: Iterable[RecordedEvent], path: Path) -> int:
    count = 0
    with path.open("w") as out:
        for rec in records:
            out.write(json.dumps(rec.to_json(), sort_keys=True) + "\n")
            count += 1
    return count


def load(path: Path) -> list[RecordedEvent]:
    with path.open() as lines:
        return [RecordedEvent.from_json(json.loads(line)) for line in lines if line.strip()]


def _paced(records: Sequence[RecordedEvent], rate: float | None) -> Iterator[RecordedEvent]:
    """``records`` at ``rate`` per second (as fast as possible when None)."""
    started = time.monotonic()
    for index, rec in enumerate(records):
        if rate:
            delay = started + index / rate - time.monotonic()
            if delay > 0:
                time.sleep(delay)
        yield rec


def new_producer(settings: Settings, client_id: str = "minimart-replay") -> KafkaProducer:
    return kafka_clients.producer(
        settings.kafka_bootstrap,
        kafka_clients.credentials_of(settings),
        client_id,
        linger_ms=5,
        max_block_ms=15_000,
    )


def replay_to_kafka(
    settings: Settings,
    records: Sequence[RecordedEvent],
    rate: float | None = None,
    topic_of: Callable[[RecordedEvent], str] | None = None,
) -> int:
    """Produce ``records`` again (same key, headers and value) to their topics; how many."""
    producer = new_producer(settings)
    try:
        futures = [
            producer.send(
                topic_of(rec) if topic_of else rec.topic,
                key=rec.key,
                value=rec.value,
                headers=[(k, v or b"") for k, v in rec.headers],
            )
            for rec in _paced(records, rate)
        ]
        for future in futures:
            future.get(timeout=30)
        return len(futures)
    finally:
        producer.close(timeout=10)


@dataclass(frozen=True)
class HttpReplay:
    event_id: str | None
    status: int
    body: str


def replay_to_http(
    url: str,
    records: Sequence[RecordedEvent],
    rate: float | None = None,
    source_name: str = "replay",
    authorization: Callable[[], str] | None = None,
) -> list[HttpReplay]:
    """POST each record to ``url`` as the dispatcher would (binary-mode CloudEvent), with
    the ``Authorization`` that ``authorization`` gives (``console_identity``): a function
    refuses a delivery without one."""
    pool = urllib3.PoolManager(num_pools=1, maxsize=1, retries=False)
    results = []
    try:
        for rec in _paced(records, rate):
            event = to_event(source_name, rec)
            headers = event.http_headers()
            if authorization is not None:
                headers["Authorization"] = authorization()
            response = pool.request("POST", url, body=event.body, headers=headers, timeout=30.0)
            results.append(
                HttpReplay(rec.event_id, response.status, response.data.decode("utf-8", "replace"))
            )
    finally:
        pool.clear()
    return results


def console_identity(settings: Settings, function: str) -> identity.TokenMinter:
    """The console's own identity towards ``function`` (``identity.CONSOLE_SUBJECT``): tokens
    of the local issuer, whose key pair ``up`` made in the state dir."""
    issuer = identity.LocalIssuer(settings.identity_dir, settings.oidc_issuer)
    audience = identity.audience_of(function)
    return identity.TokenMinter(issuer.signing_key(), identity.CONSOLE_SUBJECT, audience)


def token_from(path: Path) -> Callable[[], str]:
    """The console's identity as a token issued elsewhere (a cluster's TokenRequest), read
    once from ``path``."""
    header = identity.BEARER + path.read_text().strip()
    return lambda: header


@dataclass(frozen=True)
class DeadLetter:
    """A record of the dead-letter topic with the reason the dispatcher gave."""

    record: RecordedEvent
    event_id: str
    event_type: str
    destination: str
    code: str
    data: str
    order_id: str | None

    @property
    def timestamp(self) -> datetime:
        return datetime.fromtimestamp(self.record.timestamp / 1000, tz=UTC)

    @property
    def detail(self) -> str:
        """``knativeerrordata`` as plain text (Flask's error pages are HTML)."""
        paragraph = _HTML_PARAGRAPH.search(self.data)
        text = paragraph.group(1) if paragraph else self.data
        return html.unescape(text).strip()

    @property
    def parked(self) -> bool:
        """Given up on by the source that reads the dead letters: no source reads it."""
        return self.record.topic == PARKED_TOPIC

    @property
    def reason(self) -> str:
        answer = f"HTTP {self.code}" if self.code else "no response"
        return f"{answer} from {self.destination or '?'}: {self.detail}"

    @property
    def original_topic(self) -> str | None:
        """Where the event came from, from its type (the catalog); None for unknown types."""
        try:
            return EventType(self.event_type).topic
        except ValueError:
            return None


def _order_id_of(rec: RecordedEvent) -> str | None:
    """The binding's rule; a wrapped record (no CloudEvent) names its key in ``key``."""
    subject = rec.attribute("subject") or rec.attribute("key") or ""
    return order_id_of({"partitionkey": rec.attribute("partitionkey") or "", "subject": subject},
                       rec.key)  # fmt: skip


def dead_letter(rec: RecordedEvent) -> DeadLetter:
    """A record of the dead-letter topic read as a dead letter (binary or structured mode)."""
    return DeadLetter(
        record=rec,
        event_id=rec.event_id or f"partition:{rec.partition}/offset:{rec.offset}",
        event_type=rec.event_type or "",
        destination=rec.attribute("knativeerrordest") or "",
        code=rec.attribute("knativeerrorcode") or "",
        data=rec.attribute("knativeerrordata") or "",
        order_id=_order_id_of(rec),
    )


def read_dead_letters(settings: Settings) -> list[DeadLetter]:
    """The letters of both dead-letter topics: those the redrive function reads, and those
    parked (``DEAD_LETTER_TOPICS``)."""
    return [dead_letter(rec) for rec in read_topics(settings, DEAD_LETTER_TOPICS)]


@dataclass(frozen=True)
class Redriven:
    event_id: str
    topic: str | None
    note: str


def plan_redrive(letters: Sequence[DeadLetter]) -> tuple[list[Redriven], list[RecordedEvent]]:
    """What re-driving ``letters`` does: each letter's outcome, and the records to produce
    (the event again, on its original topic, without the error extensions).

    Events whose type is not in the catalog (malformed records, wrapped non-CloudEvents)
    cannot be re-driven and are reported as skipped.
    """
    outcome: list[Redriven] = []
    to_send: list[RecordedEvent] = []
    for letter in letters:
        topic = letter.original_topic
        if topic is None:
            outcome.append(
                Redriven(letter.event_id, None, f"skipped: unknown type {letter.event_type!r}")
            )
            continue
        to_send.append(replace(letter.record.without_attributes(ERROR_EXTENSIONS), topic=topic))
        outcome.append(Redriven(letter.event_id, topic, "re-published"))
    return outcome, to_send


def redrive(
    settings: Settings, letters: Sequence[DeadLetter], rate: float | None = None
) -> list[Redriven]:
    """Publish dead letters again to their original topic (``plan_redrive``)."""
    outcome, to_send = plan_redrive(letters)
    if to_send:
        replay_to_kafka(settings, to_send, rate)
    return outcome
