"""bench/publisher_cpu.py sends the saga's events onto its throwaway topic, not the saga's."""

from __future__ import annotations

from typing import Any

from bench.publisher_cpu import Redirected


class FakeProducer:
    def __init__(self) -> None:
        self.topics: list[str] = []
        self.flushed = False

    def send(self, topic: str, **kwargs: Any) -> str:
        self.topics.append(topic)
        return "future"

    def produce(self, topic: str, **kwargs: Any) -> None:
        self.topics.append(topic)

    def flush(self, timeout: float) -> None:
        self.flushed = True


def test_every_record_goes_to_the_throwaway_topic_whatever_the_publisher_asks() -> None:
    producer = FakeProducer()
    redirected = Redirected(producer, "bench.publisher-cpu.1234")

    assert redirected.send("minimart.inventory.reserved", value=b"{}", key=b"k") == "future"
    redirected.produce("minimart.inventory.reserved", value=b"{}")
    redirected.flush(5)

    assert producer.topics == ["bench.publisher-cpu.1234"] * 2
    assert producer.flushed  # the rest is the producer's
