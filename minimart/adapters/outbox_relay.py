"""The order ingress's outbox relay: publish accepted orders, mark them, recover the rest.

The ingress commits an order and its ``order.created`` record in one transaction (the outbox),
then publishes at once (``publish``). Marking the record published is not part of the request:
the relay marks every record published since its last pass in one statement every
``mark_interval_s`` (one commit for many orders instead of one more per order). Every
``relay_every`` passes it also publishes the records a crashed or failed request left behind
(older than ``stale_after_s``). A record whose mark is lost (a crash) is published again with
the same event id: consumers treat it as a replay.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence
from typing import Protocol

from minimart.catalog import Event
from minimart.handlers.ports import Publisher

log = logging.getLogger(__name__)

MARK_INTERVAL_S = 0.2
RELAY_EVERY = 5
STALE_AFTER_S = 2.0
SOURCE = "order"


class Outbox(Protocol):
    """The outbox side of the order intake (``PostgresOrderIntake``)."""

    def mark_published(self, event_ids: Sequence[str]) -> None: ...

    def claim_unpublished(self, older_than_s: float, limit: int = 100) -> list[Event]:
        """Records not marked published, written more than ``older_than_s`` ago."""


class OutboxRelay:
    """Publishes outbox records and marks them published; thread-safe."""

    def __init__(
        self,
        outbox: Outbox,
        publisher: Publisher,
        *,
        mark_interval_s: float = MARK_INTERVAL_S,
        relay_every: int = RELAY_EVERY,
        stale_after_s: float = STALE_AFTER_S,
    ) -> None:
        self._outbox = outbox
        self._publisher = publisher
        self.mark_interval_s = mark_interval_s
        self.relay_every = relay_every
        self.stale_after_s = stale_after_s
        # Records published but not yet marked so: marked in batches by ``mark_published``.
        self._published: list[str] = []
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()

    def publish(self, event: Event) -> bool:
        """Publish a freshly accepted order now; False if that failed (left to the relay)."""
        try:
            self._publisher.publish([event], source=SOURCE)
        except Exception:  # the order is durable in the outbox: a later pass publishes it
            log.exception("publishing %s failed; left to the outbox relay", event.id)
            return False
        with self._lock:
            self._published.append(event.id)
        return True

    def mark_published(self) -> int:
        """Mark the records published since the last call; how many."""
        with self._lock:
            ids, self._published = self._published, []
        if ids:
            try:
                self._outbox.mark_published(ids)
            except Exception:
                with self._lock:  # next pass
                    self._published[:0] = ids
                raise
        return len(ids)

    def relay_once(self, older_than_s: float | None = None) -> int:
        """Publish the records a crashed or failed request left behind; how many."""
        self.mark_published()
        age = self.stale_after_s if older_than_s is None else older_than_s
        pending = self._outbox.claim_unpublished(age)
        with self._lock:  # published meanwhile, mark not yet written
            marking = set(self._published)
        pending = [event for event in pending if event.id not in marking]
        if pending:
            self._publisher.publish(pending, source=SOURCE)
            self._outbox.mark_published([event.id for event in pending])
        return len(pending)

    def run_pass(self, number: int) -> None:
        """Pass ``number`` (1-based) of the loop: mark, and every ``relay_every``-th relay."""
        if number % self.relay_every == 0:
            self.relay_once()
        else:
            self.mark_published()

    def start(self) -> None:
        """Run the passes in a daemon thread (once; later calls do nothing)."""
        with self._lock:
            if self._thread is not None:
                return
            self._stop.clear()
            self._thread = threading.Thread(target=self._loop, name="outbox-relay", daemon=True)
            self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        """Stop the thread after its current pass (then ``start`` may run it again)."""
        with self._lock:
            thread, self._thread = self._thread, None
        self._stop.set()
        if thread is not None:
            thread.join(timeout)

    @property
    def running(self) -> bool:
        thread = self._thread
        return thread is not None and thread.is_alive()

    def _loop(self) -> None:
        number = 0
        while not self._stop.wait(self.mark_interval_s):
            number += 1
            try:
                self.run_pass(number)
            except Exception:
                log.exception("outbox relay pass failed; retrying")
