"""The junk of the fuzz suite and the poison soak (bench/junk.py) is honest: every record it
draws, delivered as the dispatcher delivers it (minimart.binding), is refused with a 4xx by
every function that reads its topic, in-process on fakes. A junk record that was in fact a
valid event (it happened: a valid order.cancelled for a random order, odd unicode being legal
text) would make the stack suites count a dead letter that can never come."""

from __future__ import annotations

import random

import flask
import pytest

from bench import junk
from minimart.binding import KafkaRecord, to_event
from minimart.bootstrap import bootstrap
from minimart.catalog import EventType
from minimart.entrypoints import use_container
from minimart.manifests import load_topology
from minimart.settings import PROJECT_ROOT, Settings
from tests.unit.test_functions import SAGA_FUNCTIONS, Fakes, create_app

SOURCES = load_topology(PROJECT_ROOT).sources
READERS = {t.topic: sorted({s.sink_service for s in SOURCES if t.topic in s.topics})
           for t in EventType}  # fmt: skip


@pytest.fixture(scope="module")
def apps() -> dict[str, flask.Flask]:
    built = {name: create_app(name, "cloudevent") for name in SAGA_FUNCTIONS}
    fakes = Fakes()
    container = bootstrap(
        Settings(),
        tracing=False,
        publisher=fakes.publisher,
        inventory_uow=lambda: fakes.inventory,
        payments_uow=lambda: fakes.payments,
        orders_uow=lambda: fakes.orders,
        shipments=fakes.shipments,
        notifications=fakes.notifications,
    )
    for app in built.values():
        use_container(app, container)
    return built


@pytest.mark.parametrize("kind", junk.KINDS, ids=lambda k: k.__name__)
def test_every_junk_record_is_refused_by_every_reader_of_its_topic(
    apps: dict[str, flask.Flask], kind: junk.Kind
) -> None:
    rng = random.Random(kind.__name__)
    for topic, readers in READERS.items():
        for _ in range(8):
            bad = kind(rng, EventType.for_topic(topic))
            record = KafkaRecord(topic, 0, 7, 1_700_000_000_000, b"k", bad.value, bad.headers)
            event = to_event("test-source", record)
            for reader in readers:
                response = (
                    apps[reader]
                    .test_client()
                    .post("/", data=event.body, headers=event.http_headers())
                )
                assert 400 <= response.status_code < 500, (kind.__name__, topic, reader,
                                                           response.status_code, bad)  # fmt: skip


def test_the_conformance_junk_is_refused(apps: dict[str, flask.Flask]) -> None:
    for bad in junk.conformance_junk(EventType.ORDER_CREATED):
        record = KafkaRecord(EventType.ORDER_CREATED.topic, 0, 1, 0, b"k", bad.value, bad.headers)
        event = to_event("test-source", record)
        response = (
            apps["inventory"].test_client().post("/", data=event.body, headers=event.http_headers())
        )
        assert response.status_code == 400, bad
