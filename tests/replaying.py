"""Test support for the replay suites: a recorded run moved to a fresh order, and waiting
until every KafkaSource has caught up."""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence

from minimart import kafka_clients
from minimart.catalog import EventType, derived_event_id
from minimart.console.replay import RecordedEvent, partitions_behind
from minimart.domain.rules import label_id, payment_id
from minimart.manifests import load_topology
from minimart.settings import PROJECT_ROOT, Settings


def wait_drained(settings: Settings, timeout: float = 60.0) -> None:
    """Return once every KafkaSource's consumer group has committed up to its topics' end."""
    topology = load_topology(PROJECT_ROOT)
    admin = kafka_clients.admin(
        settings.kafka_bootstrap, kafka_clients.credentials_of(settings), client_id="drain"
    )
    consumer = kafka_clients.consumer(
        settings.kafka_bootstrap, kafka_clients.credentials_of(settings), group_id=None
    )
    try:
        deadline = time.monotonic() + timeout
        while True:
            behind = partitions_behind(admin, consumer, topology.sources)
            if not behind:
                return
            if time.monotonic() > deadline:
                raise TimeoutError(f"not drained after {timeout}s: {behind[:5]}")
            time.sleep(0.25)
    finally:
        consumer.close()
        admin.close()


def rebase(
    records: Sequence[RecordedEvent], order_id: str, skus: Mapping[str, str] | None = None
) -> list[RecordedEvent]:
    """A recorded run of ONE order, moved to a fresh ``order_id`` (and SKUs renamed by ``skus``).

    Event ids are deterministic (each one derives from its cause's id), so the rebased run is
    exactly what the live functions emit for an order with that id: replaying it delivers every
    event twice (the recording and the functions' own), which is what idempotency must absorb.
    Payment and label ids derive from the order id and are recomputed too.
    """
    if not records:
        return []
    old_order = (records[0].key or b"").decode()
    replacements = {
        old_order: order_id,
        payment_id(old_order): payment_id(order_id),
        label_id(old_order): label_id(order_id),
    }
    for old_sku, new_sku in (skus or {}).items():
        replacements[f'"{old_sku}"'] = f'"{new_sku}"'
    new_ids: dict[str, str] = {}
    rebased = []
    for rec in records:
        event_type = EventType(rec.event_type or "")
        old_id = rec.event_id or ""
        if event_type is EventType.ORDER_CREATED:
            new_ids[old_id] = derived_event_id(order_id, event_type)
        else:
            cause = next((c for c in new_ids if derived_event_id(c, event_type) == old_id), None)
            if cause is None:
                raise ValueError(f"{old_id} ({event_type.short}): no cause in the recording")
            new_ids[old_id] = derived_event_id(new_ids[cause], event_type)
        value = (rec.value or b"").decode()
        for old, new in replacements.items():
            value = value.replace(old, new)
        headers: list[tuple[str, bytes | None]] = []
        for name, raw in rec.headers:
            text = (raw or b"").decode()
            if name == "ce_id":
                text = new_ids[old_id]
            elif name in ("ce_subject", "ce_partitionkey"):
                text = order_id
            headers.append((name, text.encode()))
        rebased.append(
            RecordedEvent(rec.topic, -1, -1, -1, order_id.encode(), value.encode(), headers)
        )
    return rebased
