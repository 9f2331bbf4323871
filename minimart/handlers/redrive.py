"""Which dead letters go back to their topic by themselves, and when.

A KafkaSource dead-letters an event after its retries (a sink that was down longer than the
retry budget: no answer, timeout, 5xx) or at once (a 4xx: the event is poison). The re-drive
function reads the dead-letter topic: a transient failure is published again to the event's
own topic once its sink answers its health check; a poison one never is. While the sink is
still down it answers 503, so the re-drive source's own retries wait (with backoff) for it.
Re-driving is safe because every step is idempotent and an order's events are a chain (each
one caused by the one before), so a re-driven event is the only one of its order in flight;
``MAX_REDRIVES`` bounds an event whose sink is healthy yet keeps failing on it.

Nothing in a letter is trusted (anyone who can write the dead-letter topic writes letters):
the sink it names must be one the manifests declare (``DeclaredSinks``), whose URL, not the
letter's, is the one asked; the sink must consume the letter's type; and only a failure the
data plane marks as transient counts as one.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass
from enum import StrEnum
from urllib.parse import urlsplit

from minimart.binding import order_id_of
from minimart.catalog import ERROR_EXTENSIONS, REDRIVES_EXTENSION, EventType

MAX_REDRIVES = 3
# Statuses a delivery gives up on that say nothing against the event: a timeout, throttling,
# a server error. Knative's dispatcher writes no knativeerrorcode at all when no response
# came back (a refused connection, a timeout of its own): that is transient too.
TRANSIENT_CLIENT_STATUSES = frozenset({408, 429})
CODE = "knativeerrorcode"
DESTINATION = "knativeerrordest"


@dataclass(frozen=True)
class DeadLetter:
    """A dead letter as the re-drive function receives it: the CloudEvent's attributes (the
    Knative error extensions among them) and its data as delivered."""

    attributes: Mapping[str, str]
    data: bytes

    @property
    def code(self) -> str | None:
        """``knativeerrorcode``; None when the data plane got no response at all."""
        return self.attributes.get(CODE)

    @property
    def destination(self) -> str:
        return self.attributes.get(DESTINATION, "")

    @property
    def redrives(self) -> int:
        raw = self.attributes.get(REDRIVES_EXTENSION, "0")
        return int(raw) if raw.isdigit() and len(raw) < 6 else MAX_REDRIVES

    @property
    def event_type(self) -> EventType | None:
        """The event's type if the catalog has it."""
        try:
            return EventType(self.attributes.get("type", ""))
        except ValueError:
            return None

    @property
    def topic(self) -> str | None:
        """The event's own topic (the catalog's, from its type); None outside the catalog."""
        event_type = self.event_type
        return None if event_type is None else event_type.topic


def _origin(url: str) -> tuple[str, str, int] | None:
    """(scheme, host, port) of an http(s) URL, the port made explicit; None if not one."""
    try:
        parts = urlsplit(url.strip())
        port = parts.port
    except ValueError:
        return None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return None
    return parts.scheme, parts.hostname.lower(), port or (443 if parts.scheme == "https" else 80)


@dataclass(frozen=True)
class DeclaredSinks:
    """The sinks the manifests declare (service -> URL) and the event types each consumes."""

    urls: Mapping[str, str]
    accepts: Mapping[str, Collection[EventType]]

    def named_by(self, destination: str) -> str | None:
        """The declared service whose URL has the origin of ``destination``, if any."""
        wanted = _origin(destination)
        if wanted is None:
            return None
        return next((name for name, url in self.urls.items() if _origin(url) == wanted), None)


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
    key = order_id_of(letter.attributes, None)
    return Record(topic, key.encode() if key else None, letter.data, tuple(headers))


class Verdict(StrEnum):
    REDRIVE = "redrive"  # publish it again to its topic now
    WAIT = "wait"  # its sink is still down: try again later (503 to the re-drive source)
    KEEP = "keep"  # leave it to a human (`deadletters`, `redrive`)


@dataclass(frozen=True)
class Decision:
    verdict: Verdict
    reason: str
    sink: str | None = None  # the declared service asked, for REDRIVE and WAIT


def transient(code: str | None) -> bool:
    """Whether a letter's ``knativeerrorcode`` marks a failure of the moment rather than of
    the event: no code at all (no response), 5xx, 408 or 429. Anything else, an empty or
    malformed code included, is not."""
    if code is None:
        return True
    if not (code.isascii() and code.isdigit() and len(code) == 3):
        return False
    status = int(code)
    return 500 <= status <= 599 or status in TRANSIENT_CLIENT_STATUSES


def decide(
    letter: DeadLetter, *, sinks: DeclaredSinks, sink_healthy: Callable[[str], bool]
) -> Decision:
    """What to do with one dead letter. ``sink_healthy(service)`` asks a declared sink at its
    declared URL, only when it matters."""
    if not transient(letter.code):
        return Decision(Verdict.KEEP, f"poison (HTTP {letter.code!r}): never re-driven")
    event_type = letter.event_type
    if event_type is None:
        return Decision(Verdict.KEEP, "not an event of the catalog: no topic to go back to")
    sink = sinks.named_by(letter.destination)
    if sink is None:
        return Decision(Verdict.KEEP, f"{letter.destination!r} is no sink the manifests declare")
    if event_type not in sinks.accepts.get(sink, ()):
        return Decision(Verdict.KEEP, f"{sink} does not consume {event_type.short} events")
    if letter.redrives >= MAX_REDRIVES:
        return Decision(Verdict.KEEP, f"re-driven {letter.redrives} times already")
    if not sink_healthy(sink):
        return Decision(Verdict.WAIT, f"{sink} is not healthy yet", sink)
    return Decision(Verdict.REDRIVE, f"back to {event_type.topic}", sink)
