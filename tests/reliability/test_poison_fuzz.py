"""A fuzz suite of the whole refusal path, on the running stack.

Bad records of every kind (``bench.junk``: random bytes, no headers, random headers, broken
binary and structured CloudEvents, the conformance suite's invalid events, data that breaks
its type's schema, deep nesting, huge numbers, NUL and odd unicode, wrong content types,
oversized values) go onto every partition of every saga topic, beside real orders of every
saga path. hypothesis draws them (``st.randoms()``: a failure is reported with its seed).

Each bad record must end as exactly one dead letter per KafkaSource that reads its topic,
with a 4xx and a reason; none may be retried (no partition held past one delivery); the
redrive function keeps them all (nothing is parked, nothing loops: the dead-letter topics stop
at exactly the letters made); every real order completes; the books balance.

``--fuzz-records N`` sets how many records (default 48: the default suite); ``make fuzz``
runs a longer one.
"""

from __future__ import annotations

import random
import time
import uuid
from collections import Counter
from dataclasses import dataclass

import hypothesis
import pytest
import requests
from hypothesis import strategies as st
from prometheus_client.parser import text_string_to_metric_families

from bench import junk
from minimart.catalog import DEAD_LETTER_TOPIC, DEAD_LETTER_TOPICS, PARKED_TOPIC, EventType
from minimart.console import replay
from minimart.console.client import OrderClient
from minimart.local import stack
from minimart.manifests import load_topology
from minimart.settings import PROJECT_ROOT, Settings
from tests.reliability.saga import US, assert_books, place_batch, wait_final
from tests.replaying import wait_drained
from tests.stack import new_sku
from tests.stack import producer as kafka_producer

pytestmark = pytest.mark.e2e


@dataclass(frozen=True)
class Sent:
    key: bytes
    kind: str
    topic: str
    partition: int


def _retries(plan: stack.StackPlan) -> int:
    """Delivery attempts the saga's dispatchers have retried so far (their /metrics)."""
    total = 0.0
    for dispatcher in plan.dispatchers:
        if DEAD_LETTER_TOPIC in dispatcher.source.topics:
            continue
        text = requests.get(f"http://127.0.0.1:{dispatcher.metrics_port}/metrics", timeout=5).text
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                if (sample.name == "minimart_dispatcher_deliveries_total"
                        and sample.labels.get("outcome") == "retried"):  # fmt: skip
                    total += sample.value
    return int(total)


def _produce(settings: Settings, records: int, readers: dict[str, list[str]],
             partitions: dict[str, int]) -> list[Sent]:  # fmt: skip
    """``records`` bad records drawn by hypothesis, plus each conformance case once."""
    producer = kafka_producer(settings, max_request_size=2 * 1024 * 1024)
    sent: list[Sent] = []

    def send(topic: str, partition: int, bad: junk.Junk) -> None:
        key = f"fuzz-{uuid.uuid4()}".encode()
        producer.send(topic, key=key, value=bad.value, headers=bad.headers,
                      partition=partition).get(timeout=30)  # fmt: skip
        sent.append(Sent(key, bad.kind, topic, partition))

    topics = sorted(readers)

    @hypothesis.given(rng=st.randoms(use_true_random=False), topic=st.sampled_from(topics),
                      spread=st.integers(0, 1_000))  # fmt: skip
    @hypothesis.settings(max_examples=records, deadline=None, database=None,
                         phases=[hypothesis.Phase.generate],
                         suppress_health_check=list(hypothesis.HealthCheck))  # fmt: skip
    def one(rng: random.Random, topic: str, spread: int) -> None:
        send(topic, spread % partitions[topic], junk.draw(rng, EventType.for_topic(topic)))

    try:
        one()
        created = EventType.ORDER_CREATED
        for index, bad in enumerate(junk.conformance_junk(created)):
            send(created.topic, index % partitions[created.topic], bad)
    finally:
        producer.close(timeout=10)
    return sent


def test_every_bad_record_is_one_dead_letter_and_nothing_loops(
    running_stack: Settings, client: OrderClient, fuzz_records: int
) -> None:
    settings = running_stack
    topology = load_topology(PROJECT_ROOT)
    plan = stack.plan_stack(settings, topology)
    saga_topics = {t.topic for t in EventType}
    readers: dict[str, list[str]] = {}
    for source in topology.sources:
        for topic in source.topics:
            if topic in saga_topics:
                readers.setdefault(topic, []).append(source.name)
    sinks = {d.source.name: d.sink_url for d in plan.dispatchers}
    wait_drained(settings, timeout=120)
    ends_before = replay.end_offsets(settings, DEAD_LETTER_TOPICS)
    retries_before = _retries(plan)

    sku, none_left = new_sku(settings, stock=1_000), new_sku(settings, stock=0)
    orders = place_batch(client, sku, 6)
    sent = _produce(settings, fuzz_records, readers, dict(topology.topics))
    orders += place_batch(client, sku, 4)
    orders += place_batch(client, sku, 2, customer=402)  # declined
    orders += place_batch(client, sku, 2, address={**US, "postalCode": "00000"})  # refunded
    orders += place_batch(client, none_left, 2)  # out of stock
    assert {s.kind for s in sent} >= {"conformance"}

    expected = Counter(
        (s.key, sinks[source]) for s in sent for source in readers[s.topic]
    )  # one letter per record and source reading its topic
    keys = {s.key for s in sent}

    def ours() -> list[replay.DeadLetter]:
        return [x for x in replay.read_dead_letters(settings) if x.record.key in keys]

    by_key = {s.key: s for s in sent}

    def missing() -> list[tuple[str, str, int]]:
        made = {(x.record.key, x.destination) for x in ours()}
        return sorted((by_key[k].kind, by_key[k].topic, by_key[k].partition)
                      for k, sink in expected if (k, sink) not in made)  # fmt: skip

    deadline = time.monotonic() + 180
    while (lacking := missing()) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert not lacking, f"no dead letter (yet) of {len(lacking)}: {lacking[:10]}"
    finals = wait_final(client, orders, timeout=180)
    wait_drained(settings, timeout=180)  # redrive-source has read every letter too
    letters = ours()

    assert Counter((x.record.key, x.destination) for x in letters) == expected
    for letter in letters:
        what = (by_key[letter.record.key].kind, letter.reason)
        assert not letter.parked, what  # the redrive function kept it: nothing re-delivered
        assert letter.code is not None and letter.code[:1] == "4", what
        assert letter.detail, what
    assert _retries(plan) == retries_before, "a bad record was retried (a 5xx or no answer)"

    # Nothing loops: the dead-letter topics hold exactly the letters made, and no more.
    ends_after = replay.end_offsets(settings, DEAD_LETTER_TOPICS)
    assert ends_after[DEAD_LETTER_TOPIC] - ends_before[DEAD_LETTER_TOPIC] == len(letters)
    assert ends_after[PARKED_TOPIC] == ends_before[PARKED_TOPIC]

    statuses = Counter(order["status"] for order in finals)
    assert statuses == {"CONFIRMED": 10, "CANCELLED": 6}, statuses
    assert_books(settings, orders, [sku, none_left],
                 expected_dead_letters={x.event_id for x in letters})  # fmt: skip
