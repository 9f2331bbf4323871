"""Helpers of the contract suite: concurrent callers, deliveries retried as a source does."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Generic, TypeVar

T = TypeVar("T")


def new_id() -> str:
    return str(uuid.uuid4())


def new_sku() -> str:
    return f"C-{uuid.uuid4().hex[:12].upper()}"


def concurrently(count: int, call: Callable[[int], T]) -> list[T]:
    """``call(0..count-1)`` on ``count`` threads released together; their results in order."""
    start = threading.Barrier(count)

    def run(index: int) -> T:
        start.wait(timeout=30)
        return call(index)

    with ThreadPoolExecutor(count) as pool:
        return list(pool.map(run, range(count)))


@dataclass
class Delivery(Generic[T]):
    result: T
    errors: list[BaseException] = field(default_factory=list)


def delivered(handle: Callable[[], T], attempts: int = 20) -> Delivery[T]:
    """Call ``handle`` as a KafkaSource delivers an event: an error (a 5xx) is retried after a
    short backoff. The result, and the errors of the attempts that failed."""
    errors: list[BaseException] = []
    for attempt in range(attempts):
        try:
            return Delivery(handle(), errors)
        except Exception as exc:  # any error is a 5xx: the source retries it
            errors.append(exc)
            time.sleep(0.02 * (attempt + 1))
    raise AssertionError(f"still failing after {attempts} attempts: {errors[-3:]!r}")


def blocked(call: Callable[[], T], while_held: Callable[[], None], hold_s: float = 0.5) -> T:
    """Run ``call`` on another thread, check it has not returned after ``hold_s``, then run
    ``while_held`` (which must release what blocks it) and return its result."""
    with ThreadPoolExecutor(1) as pool:
        future = pool.submit(call)
        time.sleep(hold_s)  # a negative check: nothing to poll for
        assert not future.done(), "the second transaction did not wait for the first"
        while_held()
        return future.result(timeout=30)
