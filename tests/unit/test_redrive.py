"""Which dead letters go back by themselves, and how a re-driven record looks
(minimart.handlers.redrive)."""

from __future__ import annotations

import pytest

from minimart.catalog import REDRIVES_EXTENSION
from minimart.handlers.redrive import MAX_REDRIVES, DeadLetter, Verdict, decide, redriven, transient

SINK = "http://127.0.0.1:18084/"
OWN = "127.0.0.1:18085"


@pytest.mark.parametrize(
    ("code", "expected"),
    [("0", True), ("", True), ("500", True), ("503", True), ("408", True), ("429", True),
     ("400", False), ("404", False), ("409", False), ("422", False), ("x", False)],
)  # fmt: skip
def test_transient_failures_are_no_answer_timeouts_throttling_and_5xx(
    code: str, expected: bool
) -> None:
    assert transient(code) is expected


def _letter(code: str = "503", *, redrives: int = 0, destination: str = SINK,
            event_type: str = "com.minimart.order.created") -> DeadLetter:  # fmt: skip
    return DeadLetter({"id": "e-1", "type": event_type, "knativeerrorcode": code,
                       "knativeerrordest": destination, REDRIVES_EXTENSION: str(redrives)},
                      b"{}")  # fmt: skip


def _decide(
    code: str = "503",
    *,
    healthy: bool = True,
    redrives: int = 0,
    destination: str = SINK,
    event_type: str = "com.minimart.order.created",
) -> Verdict:
    asked: list[bool] = []

    def sink_healthy() -> bool:
        asked.append(True)
        return healthy

    letter = _letter(code, redrives=redrives, destination=destination, event_type=event_type)
    decision = decide(letter, own_host=OWN, sink_healthy=sink_healthy)
    if decision.verdict is Verdict.KEEP:
        assert not asked, "a letter kept for a human needs no health check"
    return decision.verdict


def test_a_transient_letter_goes_back_once_its_sink_is_healthy_and_waits_before() -> None:
    assert _decide("0", healthy=True) is Verdict.REDRIVE
    assert _decide("502", healthy=False) is Verdict.WAIT


def test_poison_is_never_redriven_even_with_a_healthy_sink() -> None:
    for code in ("400", "404", "422"):
        assert _decide(code, healthy=True) is Verdict.KEEP


def test_redrives_are_bounded_and_our_own_give_ups_are_kept() -> None:
    assert _decide(redrives=MAX_REDRIVES - 1) is Verdict.REDRIVE
    assert _decide(redrives=MAX_REDRIVES) is Verdict.KEEP
    assert _decide(destination=f"http://{OWN}/") is Verdict.KEEP  # it died on its way to us
    assert _decide(event_type="dev.knative.kafka.event") is Verdict.KEEP  # not in the catalog


def test_the_redrive_function_puts_the_event_back_keyed_by_its_order_and_counted() -> None:
    letter = DeadLetter(
        {"specversion": "1.0", "id": "e-1", "type": "com.minimart.payment.captured",
         "source": "/minimart/payment", "subject": "o-1", "datacontenttype": "application/json",
         "knativeerrordest": SINK, "knativeerrorcode": "0", "knativeerrordata": "refused",
         REDRIVES_EXTENSION: "2"},
        b'{"orderId": "o-1"}',
    )  # fmt: skip
    assert letter.topic == "minimart.payment.captured"

    record = redriven(letter, "minimart.payment.captured")

    assert (record.topic, record.key, record.value) == (
        "minimart.payment.captured", b"o-1", b'{"orderId": "o-1"}',
    )  # fmt: skip
    assert dict(record.headers) == {
        "ce_specversion": b"1.0",
        "ce_id": b"e-1",
        "ce_type": b"com.minimart.payment.captured",
        "ce_source": b"/minimart/payment",
        "ce_subject": b"o-1",
        f"ce_{REDRIVES_EXTENSION}": b"3",
        "content-type": b"application/json",
    }
