"""Dead letters of a transient failure go back to their topic by themselves (the redrive
function, fed by eventing/redrive-source.yaml); poison never does; and re-driving is safe.

Safe: an order's events form a chain (each is caused by the one before), every step is
idempotent and event ids are deterministic, so a re-driven event that had in fact been handled
changes nothing, in whatever order the re-drives come. Shown here the hard way: every event
of finished orders dead-lettered as if its delivery had failed, newest first.
"""

from __future__ import annotations

import collections

import pytest

from minimart.catalog import DEAD_LETTER_TOPIC
from minimart.console import replay
from minimart.console.client import OrderClient
from minimart.kafka_access import principal_of
from minimart.local import stack
from minimart.local.servers.supervision import Supervisor
from minimart.manifests import load_topology
from minimart.settings import PROJECT_ROOT, Settings
from tests.reliability.saga import US, assert_books, place_batch, wait_final
from tests.replaying import wait_drained
from tests.stack import as_kafka_principal, eventually, new_sku, stock_of

pytestmark = pytest.mark.e2e


def _sink_of(settings: Settings, topic: str) -> str:
    """The URL of a function a KafkaSource delivers ``topic`` to."""
    source = next(s for s in load_topology(PROJECT_ROOT).sources if topic in s.topics)
    return stack.plan_stack(settings).function(source.sink_service).url + "/"


def _sink_principal(settings: Settings) -> str:
    """The principal of the KafkaSink that writes ``minimart.deadletter`` (its manifest's)."""
    topology = load_topology(PROJECT_ROOT)
    [sink] = [name for name, topic in topology.dead_letter_sinks.items()
              if topic == DEAD_LETTER_TOPIC]  # fmt: skip
    return principal_of(topology.sink_secrets[sink], sink)


def _dead(rec: replay.RecordedEvent, code: str | None, sink: str) -> replay.RecordedEvent:
    """``rec`` as its KafkaSource would have dead-lettered it after failing with ``code``
    (None: no response at all, which Knative marks with no knativeerrorcode)."""
    errors: list[tuple[str, bytes | None]] = [
        ("ce_knativeerrordest", sink.encode()),
        ("ce_knativeerrordata", b"injected by tests/reliability/test_redrive.py"),
    ]
    if code is not None:
        errors.append(("ce_knativeerrorcode", code.encode()))
    return replay.RecordedEvent(DEAD_LETTER_TOPIC, -1, -1, -1, rec.key, rec.value,
                                [*rec.headers, *errors])  # fmt: skip


def _copies(settings: Settings, ids: set[str]) -> dict[tuple[str, str], list[int]]:
    """The partition of every record of the saga topics with one of these event ids, by
    (topic, event id): how many copies, and where (whatever key they carry)."""
    found: dict[tuple[str, str], list[int]] = collections.defaultdict(list)
    for rec in replay.read_topics(settings, replay.SAGA_TOPICS):
        if rec.event_id in ids:
            found[(rec.topic, rec.event_id)].append(rec.partition)
    return found


def test_transient_dead_letters_are_redriven_by_themselves_and_change_nothing(
    running_stack: Settings, client: OrderClient
) -> None:
    settings = running_stack
    sku = new_sku(settings, stock=100)
    order_ids = place_batch(client, sku, 2)  # confirmed
    order_ids += place_batch(client, sku, 1, customer=402)  # declined, stock released
    order_ids += place_batch(client, sku, 1, address={**US, "postalCode": "00000"})  # refunded
    finals = {o["orderId"]: o["status"] for o in wait_final(client, order_ids)}
    assert_books(settings, order_ids, [sku])
    stock = stock_of(settings, sku)
    records = replay.record(settings, order_ids=order_ids)
    ids = {r.event_id or "" for r in records}
    before = _copies(settings, ids)
    assert len(records) >= 4 * 5

    poison, *rest = records
    codes = (None, "503", "500", "502", "408")  # refused, down, crashed, bad gateway, timeout
    letters = [_dead(poison, "400", _sink_of(settings, poison.topic))]
    letters += [
        _dead(rec, codes[i % len(codes)], _sink_of(settings, rec.topic))
        for i, rec in enumerate(reversed(rest))  # newest first: the chain upside down
    ]
    # Dead letters are the dead-letter sink's to write (the console may only read them).
    sink = _sink_principal(settings)
    replay.replay_to_kafka(as_kafka_principal(settings, sink), letters)

    def key(rec: replay.RecordedEvent) -> tuple[str, str]:
        return (rec.topic, rec.event_id or "")

    def all_redriven() -> bool:
        now = _copies(settings, ids)
        return all(len(now[key(r)]) > len(before[key(r)]) for r in rest)

    eventually(all_redriven, timeout=120, what="every transient dead letter re-driven")
    wait_drained(settings, timeout=120)
    after = _copies(settings, ids)
    # The dead-letter topic has one partition, read in order: the poison letter, written
    # first, was decided before any of the others was re-driven, and stayed where it was.
    assert after[key(poison)] == before[key(poison)]
    # Each re-driven event went back to the partition its order's events are on (the same
    # key); the functions' duplicate path re-published their next events there too.
    for rec in rest:
        assert set(after[key(rec)]) == {rec.partition}, (key(rec), after[key(rec)])

    # Every store as before: the re-driven events were duplicates, absorbed by idempotency.
    assert {o["orderId"]: o["status"] for o in wait_final(client, order_ids)} == finals
    assert stock_of(settings, sku) == stock
    report = assert_books(settings, order_ids, [sku], expected_dead_letters={poison.event_id or ""})
    assert report.dead_letters >= len(letters)  # the re-driven ones count as resolved


@pytest.mark.slow
def test_an_order_stranded_by_a_sink_down_past_the_retry_budget_completes_by_itself(
    running_stack: Settings, client: OrderClient
) -> None:
    """payment stays down (stopped, not crashed: supervisord leaves it down) longer than its
    source's retries: the order's inventory.reserved is dead-lettered; once payment is back,
    the redrive function re-drives it and the order completes, with no manual step."""
    settings = running_stack
    payment = stack.plan_stack(settings).function("payment").process_name
    sup = Supervisor(settings)
    sku = new_sku(settings, stock=10)
    try:
        sup.stop([payment])
        (order_id,) = place_batch(client, sku, 1)

        def dead_lettered() -> bool:
            return any(x.order_id == order_id for x in replay.read_dead_letters(settings))

        eventually(dead_lettered, timeout=240, what="inventory.reserved dead-lettered")
        assert client.get(order_id)["status"] == "RESERVED"
    finally:
        sup.start(payment)
    assert client.wait_final(order_id, timeout=600)["status"] == "CONFIRMED"
    assert_books(settings, [order_id], [sku])  # the dead letter counts as resolved
