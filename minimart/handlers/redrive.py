"""Which dead letters go back to their topic by themselves, and when.

A KafkaSource dead-letters an event after its retries (a sink that was down longer than the
retry budget: connection refused, timeout, 5xx) or at once (a 4xx: the event is poison). The
re-drive function reads the dead-letter topic: a transient failure is published again to the
event's own topic once its sink answers its health check; a poison one never is. While the
sink is still down it answers 503, so the re-drive source's own retries wait (with backoff)
for it. Re-driving is safe because every step is idempotent and an order's events are a chain
(each one caused by the one before), so a re-driven event is the only one of its order in
flight; ``MAX_REDRIVES`` bounds an event whose sink is healthy yet keeps failing on it.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from enum import StrEnum
from urllib.parse import urlsplit

from minimart.catalog import ERROR_EXTENSIONS, REDRIVES_EXTENSION, EventType

MAX_REDRIVES = 3
# Statuses a delivery gives up on that say nothing against the event: no answer at all (0),
# a timeout, throttling, a server error.
TRANSIENT_CLIENT_STATUSES = frozenset({408, 429})


@dataclass(frozen=True)
class DeadLetter:
    """A dead letter as the re-drive function receives it: the CloudEvent's attributes (the
    Knative error extensions among them) and its data as delivered."""

    attributes: Mapping[str, str]
    data: bytes

    @property
    def code(self) -> str:
        return self.attributes.get("knativeerrorcode", "")

    @property
    def destination(self) -> str:
        return self.attributes.get("knativeerrordest", "")

    @property
    def redrives(self) -> int:
        raw = self.attributes.get(REDRIVES_EXTENSION, "0")
        return int(raw) if raw.isdigit() else 0

    @property
    def topic(self) -> str | None:
        """The event's own topic (the catalog's, from its type); None outside the catalog."""
        try:
            return EventType(self.attributes.get("type", "")).topic
        except ValueError:
            return None


@dataclass(frozen=True)
class Record:
    """A Kafka record to publish: a binary-mode CloudEvent keyed by its order."""

    topic: str
    key: bytes | None
    value: bytes
    headers: tuple[tuple[str, bytes], ...]


def redriven(letter: DeadLetter, topic: str) -> Record:
    """The record that puts ``letter`` back on ``topic``: its attributes as ``ce_`` headers
    without the error extensions and with its re-drive count one higher, its data as the
    value, keyed by its order (``partitionkey``, else ``subject``: the key picks the
    partition, which keeps an order's events in order)."""
    dropped = {*ERROR_EXTENSIONS, REDRIVES_EXTENSION, "datacontenttype"}
    attributes = {k: v for k, v in letter.attributes.items() if k not in dropped}
    attributes[REDRIVES_EXTENSION] = str(letter.redrives + 1)
    headers = [(f"ce_{name}", value.encode()) for name, value in attributes.items()]
    if "datacontenttype" in letter.attributes:
        headers.append(("content-type", letter.attributes["datacontenttype"].encode()))
    key = letter.attributes.get("partitionkey") or letter.attributes.get("subject")
    return Record(topic, key.encode() if key else None, letter.data, tuple(headers))


class Verdict(StrEnum):
    REDRIVE = "redrive"  # publish it again to its topic now
    WAIT = "wait"  # its sink is still down: try again later (503 to the re-drive source)
    KEEP = "keep"  # leave it to a human (`deadletters`, `redrive`)


@dataclass(frozen=True)
class Decision:
    verdict: Verdict
    reason: str


def transient(code: str) -> bool:
    """Whether a ``knativeerrorcode`` is a failure of the moment rather than of the event."""
    if not code.strip() or code.strip() == "0":
        return True
    try:
        status = int(code)
    except ValueError:
        return False
    return status >= 500 or status in TRANSIENT_CLIENT_STATUSES


def decide(letter: DeadLetter, *, own_host: str, sink_healthy: Callable[[], bool]) -> Decision:
    """What to do with one dead letter. ``own_host``: the re-drive function's own host (a
    letter that died on its way to us is one we already gave up waiting for); ``sink_healthy``
    asks the letter's sink, only when it matters."""
    if not transient(letter.code):
        return Decision(Verdict.KEEP, f"poison (HTTP {letter.code}): never re-driven")
    if letter.topic is None:
        return Decision(Verdict.KEEP, "not an event of the catalog: no topic to go back to")
    if urlsplit(letter.destination).netloc == own_host:
        return Decision(Verdict.KEEP, "its sink stayed down past the re-drive budget")
    if letter.redrives >= MAX_REDRIVES:
        return Decision(Verdict.KEEP, f"re-driven {letter.redrives} times already")
    if not sink_healthy():
        return Decision(Verdict.WAIT, f"{letter.destination} is not healthy yet")
    return Decision(Verdict.REDRIVE, f"back to {letter.topic}")
