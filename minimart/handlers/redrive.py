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

from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from urllib.parse import urlsplit

MAX_REDRIVES = 3
# Statuses a delivery gives up on that say nothing against the event: no answer at all (0),
# a timeout, throttling, a server error.
TRANSIENT_CLIENT_STATUSES = frozenset({408, 429})


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


def decide(
    *,
    code: str,
    destination: str,
    original_topic: str | None,
    redrives: int,
    own_host: str,
    sink_healthy: Callable[[], bool],
) -> Decision:
    """What to do with one dead letter. ``own_host``: the re-drive function's own host (a
    letter that died on its way to us is one we already gave up waiting for); ``sink_healthy``
    asks the letter's sink, only when it matters."""
    if not transient(code):
        return Decision(Verdict.KEEP, f"poison (HTTP {code}): never re-driven")
    if original_topic is None:
        return Decision(Verdict.KEEP, "not an event of the catalog: no topic to go back to")
    if urlsplit(destination).netloc == own_host:
        return Decision(Verdict.KEEP, "its sink stayed down past the re-drive budget")
    if redrives >= MAX_REDRIVES:
        return Decision(Verdict.KEEP, f"re-driven {redrives} times already")
    if not sink_healthy():
        return Decision(Verdict.WAIT, f"{destination} is not healthy yet")
    return Decision(Verdict.REDRIVE, f"back to {original_topic}")
