"""CloudEvents replay: recorded saga runs replayed to Kafka and over HTTP, and a storm of
duplicates, change nothing in any store; dead letters are listed with their reasons and
re-driven after a fix.

The fixtures under tests/fixtures/replay are real runs recorded with
`python -m minimart.local record FILE --order-id ID`. Their order id is moved to a fresh one
(``replaying.rebase``: event ids are deterministic, so the rebased run is exactly what the live
functions emit for that order) and their SKUs to fresh test SKUs with the same prices. The
order row is seeded as the ingress would have stored it (with its outbox row marked published:
only the replay drives the saga), because order-status refuses events of unknown orders.
"""

from __future__ import annotations

import json
import random
import uuid
from pathlib import Path

import pytest
from cloudevents.conversion import to_structured

from minimart.bootstrap import Container
from minimart.catalog import Event, EventType, build, derived_event_id
from minimart.console import replay
from minimart.console.checker import wait_for_books
from minimart.console.client import OrderClient
from minimart.local import stack
from minimart.settings import Settings
from tests import replaying
from tests.reliability.saga import assert_books, place_batch, wait_final
from tests.reliability.stores import settle, snapshot
from tests.stack import dead_letter_within_s, eventually, new_sku
from tests.stack import producer as kafka_producer

pytestmark = pytest.mark.e2e

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "replay"


def rebased_fixture(
    settings: Settings, name: str
) -> tuple[str, list[str], list[replay.RecordedEvent]]:
    """The recorded run moved to a fresh order and to fresh SKUs with the same prices; a run
    refused for stock keeps its SKU (SKU-OUT: none in stock, none ever reserved), because the
    refusal's reason names it."""
    records = replay.load(FIXTURES / f"{name}.jsonl")
    created = json.loads(records[0].value or b"{}")
    refused = any(r.event_type == EventType.INVENTORY_REJECTED.value for r in records)
    skus = {item["sku"]: item["sku"] if refused else
            new_sku(settings, stock=10, price_cents=item["unitPriceCents"])
            for item in created["items"]}  # fmt: skip
    order_id = str(uuid.uuid4())
    return order_id, list(skus.values()), replaying.rebase(records, order_id, skus)


def seed_order(settings: Settings, created: replay.RecordedEvent) -> None:
    """Store the order as the ingress does (row, timeline, outbox) and mark it published."""
    assert created.event_type == EventType.ORDER_CREATED.value
    data = json.loads(created.value or b"{}")
    event = Event(EventType.ORDER_CREATED, str(created.event_id), data["orderId"], data)
    intake = Container(settings).intake
    intake.accept(event, None, fingerprint="replayed")
    intake.mark_published([event.id])


@pytest.mark.parametrize(
    ("fixture", "status"),
    [
        ("saga-confirmed", "CONFIRMED"),
        ("saga-payment-declined", "CANCELLED"),
        ("saga-shipping-failed", "CANCELLED"),
        ("saga-stock-refused", "CANCELLED"),
    ],
)
def test_recorded_run_replayed_to_kafka_reaches_the_same_end_and_twice_changes_nothing(
    running_stack: Settings, client: OrderClient, fixture: str, status: str
) -> None:
    order_id, skus, records = rebased_fixture(running_stack, fixture)
    seed_order(running_stack, records[0])
    replay.replay_to_kafka(running_stack, records)  # every event, plus the functions' own
    order = client.wait_final(order_id, timeout=60)
    assert order["status"] == status
    recorded_steps = {r.event_type.removeprefix("com.minimart.") for r in records}  # type: ignore[union-attr]
    assert recorded_steps - {"order.confirmed", "order.cancelled"} <= {
        step["step"] for step in order["timeline"]
    }
    assert_books(running_stack, [order_id], skus)
    settle(running_stack)
    before = snapshot(running_stack, [order_id], skus)
    for _ in range(2):
        replay.replay_to_kafka(running_stack, records, rate=200)
    settle(running_stack)
    assert snapshot(running_stack, [order_id], skus) == before
    assert_books(running_stack, [order_id], skus)


def test_recorded_run_replayed_over_http_straight_to_inventory(
    running_stack: Settings, client: OrderClient
) -> None:
    order_id, skus, records = rebased_fixture(running_stack, "saga-payment-declined")
    seed_order(running_stack, records[0])
    inventory = stack.plan_stack(running_stack).function("inventory").url + "/"
    accepts = {t.value for t in (EventType.ORDER_CREATED, EventType.PAYMENT_DECLINED,
                                 EventType.PAYMENT_REFUNDED, EventType.ORDER_CONFIRMED)
               }  # fmt: skip
    mine = [r for r in records if r.event_type in accepts]
    as_console = replay.console_identity(running_stack, "inventory")
    first = replay.replay_to_http(inventory, mine[:1], authorization=as_console)  # the saga starts
    assert [r.status for r in first] == [200], first
    assert client.wait_final(order_id, timeout=60)["status"] == "CANCELLED"
    assert_books(running_stack, [order_id], skus)
    settle(running_stack)
    before = snapshot(running_stack, [order_id], skus)
    for _ in range(2):
        results = replay.replay_to_http(inventory, mine, rate=100, authorization=as_console)
        assert all(r.status == 200 for r in results), results
    settle(running_stack)  # inventory re-published its outcomes: the others have seen them
    assert snapshot(running_stack, [order_id], skus) == before


def test_duplicate_storm_mid_flight_and_after_changes_nothing(
    running_stack: Settings, client: OrderClient
) -> None:
    """Every event of ten orders (two of them declined: the compensations too) re-produced
    three times, shuffled across topics and orders: once while the orders are in flight, and
    once after they settled. The second storm leaves every store exactly as it was."""
    sku = new_sku(running_stack, stock=10_000)
    declined = place_batch(client, sku, 2, customer=402)
    order_ids = place_batch(client, sku, 8) + declined
    rng = random.Random(7)
    early = replay.record(running_stack, order_ids=order_ids) * 3  # whatever is there so far
    rng.shuffle(early)
    replay.replay_to_kafka(running_stack, early)
    wait_final(client, order_ids)
    settle(running_stack)
    everything = replay.record(running_stack, order_ids=order_ids)
    before = snapshot(running_stack, order_ids, [sku], everything)
    assert len(before["event_ids"]) >= 10 * 6
    storm = everything * 3
    rng.shuffle(storm)
    replay.replay_to_kafka(running_stack, storm)
    settle(running_stack)
    assert snapshot(running_stack, order_ids, [sku]) == before
    report = assert_books(running_stack, order_ids, [sku])
    assert report.final == {"CONFIRMED": 8, "CANCELLED": 2}


def publish_structured(settings: Settings, event: Event, source: str) -> None:
    """``event`` as a structured-mode CloudEvent (attributes in the JSON value), as a producer
    other than minimart's own publisher may write it."""
    headers, body = to_structured(build(event, source))
    producer = kafka_producer(settings)
    try:
        content_type = str(headers["content-type"]).encode()
        producer.send(
            event.type.topic, key=event.order_id.encode(), value=body,
            headers=[("content-type", content_type)],
        ).get(timeout=30)  # fmt: skip
    finally:
        producer.close(timeout=10)


# It waits out a source's retry budget (63 s) at least, longer behind transient dead letters
# the redrive function keeps sending back to the same partitions: `make reliability` runs it.
# Without the stack, tests/unit/test_dead_letters.py reads both modes in the default run.
@pytest.mark.slow
def test_dead_letters_listed_with_reason_and_redriven_after_the_fix(
    running_stack: Settings, client: OrderClient
) -> None:
    """An event for an order order-status does not know is refused (400 unknown-order) and
    dead-lettered at once, in binary mode (``ce_*`` headers) and in structured mode (the
    attributes inside the JSON value) alike: each is listed with its type, code and reason.
    Once the order exists (the fix), re-driving by hand (`minimart redrive`: the redrive
    function never re-drives poison) completes the saga and the books balance (a re-driven
    dead letter is resolved)."""
    cases = {}
    for mode in ("binary", "structured"):
        order_id, _, records = rebased_fixture(running_stack, "saga-confirmed")
        created = records[0]
        rejected = Event(
            EventType.INVENTORY_REJECTED,
            derived_event_id(str(created.event_id), EventType.INVENTORY_REJECTED),
            order_id,
            {"orderId": order_id, "reason": f"insufficient_stock: re-drive test ({mode})"},
        )
        if mode == "binary":
            Container(running_stack).publisher.publish([rejected], source="inventory")
        else:
            publish_structured(running_stack, rejected, source="inventory")
        cases[mode] = (created, rejected)

    def letters() -> dict[str, replay.DeadLetter] | None:
        wanted = {rejected.id: mode for mode, (_, rejected) in cases.items()}
        found = {wanted[d.event_id]: d for d in replay.read_dead_letters(running_stack)
                 if d.event_id in wanted}  # fmt: skip
        return found if len(found) == len(cases) else None

    within = 3 * dead_letter_within_s(EventType.INVENTORY_REJECTED.topic)
    dead = eventually(letters, timeout=within, what="both events dead-lettered")
    port = stack.plan_stack(running_stack).function("order-status").port
    for mode, (_, rejected) in cases.items():
        letter = dead[mode]
        assert letter.record.structured == (mode == "structured"), letter
        assert letter.code == "400", letter
        assert letter.event_type == EventType.INVENTORY_REJECTED.value
        assert letter.destination.endswith(f":{port}/")
        assert letter.original_topic == EventType.INVENTORY_REJECTED.topic
        assert letter.order_id == rejected.order_id
        assert "HTTP 400 from" in letter.reason and "unknown-order" in letter.reason

    for created, _ in cases.values():
        seed_order(running_stack, created)  # the fix: the order exists now
    outcome = replay.redrive(running_stack, list(dead.values()))
    assert sorted((o.event_id, o.topic) for o in outcome) == sorted(
        (rejected.id, rejected.type.topic) for _, rejected in cases.values()
    )

    for mode, (_, rejected) in cases.items():

        def cancelled(order_id: str = rejected.order_id) -> bool:
            order = client.get(order_id)
            steps = {s["step"] for s in order["timeline"]}
            return order["status"] == "CANCELLED" and {
                "inventory.rejected", "notification.sent"} <= steps  # fmt: skip

        eventually(cancelled, timeout=within, what=f"the re-driven event handled ({mode})")
        order = client.get(rejected.order_id)
        assert order["reason"] == f"insufficient_stock: re-drive test ({mode})"
    order_ids = [rejected.order_id for _, rejected in cases.values()]
    report = wait_for_books(running_stack, timeout=60, order_ids=order_ids)
    assert report.ok, report.summary()
