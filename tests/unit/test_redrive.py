"""Which dead letters go back by themselves (minimart.handlers.redrive), and how a re-driven
record looks (replay.redriven_record)."""

from __future__ import annotations

import pytest

from minimart.handlers.redrive import MAX_REDRIVES, Verdict, decide, transient
from minimart.local.replay import REDRIVES_EXTENSION, RecordedEvent, dead_letter, redriven_record

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


def _decide(
    code: str = "503",
    *,
    healthy: bool = True,
    redrives: int = 0,
    destination: str = SINK,
    topic: str | None = "minimart.order.created",
) -> Verdict:
    asked: list[bool] = []

    def sink_healthy() -> bool:
        asked.append(True)
        return healthy

    decision = decide(code=code, destination=destination, original_topic=topic,
                      redrives=redrives, own_host=OWN, sink_healthy=sink_healthy)  # fmt: skip
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
    assert _decide(topic=None) is Verdict.KEEP  # not a catalog event


def test_a_redriven_record_drops_the_error_extensions_and_counts_the_redrive() -> None:
    headers: list[tuple[str, bytes | None]] = [
        ("ce_id", b"e-1"),
        ("ce_type", b"com.minimart.order.created"),
        ("ce_knativeerrordest", SINK.encode()),
        ("ce_knativeerrorcode", b"503"),
        ("ce_knativeerrordata", b"down"),
        (f"ce_{REDRIVES_EXTENSION}", b"1"),
        ("content-type", b"application/json"),
    ]
    letter = dead_letter(RecordedEvent("minimart.deadletter", 0, 7, 1, b"o-1", b"{}", headers))
    assert (letter.code, letter.destination, letter.redrives) == ("503", SINK, 1)

    again = redriven_record(letter, "minimart.order.created")

    assert again.topic == "minimart.order.created"
    assert (again.key, again.value) == (b"o-1", b"{}")
    assert again.headers == [
        ("ce_id", b"e-1"),
        ("ce_type", b"com.minimart.order.created"),
        ("content-type", b"application/json"),
        (f"ce_{REDRIVES_EXTENSION}", b"2"),
    ]
