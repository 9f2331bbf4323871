"""Faults injected while orders flow; every scenario ends with the books checked green.

Real processes and servers on 127.0.0.1. The quick ones run in CI (`pytest -m "not slow"`);
`make reliability` runs them all. Each test owns its SKU and its orders, so the checker is
scoped to them and other tests sharing the stack do not interfere.

A fault lands when a condition holds (orders of the batch in flight; for a function or a
dispatcher, a delivery waiting unanswered at the function, which is paused until one does),
never on a timer, and each scenario then shows that it met work in flight: the orders that
were waiting when it hit, and the trace of what it did to them (a delivery retried, an
offset delivered twice), before the books of the batch are checked.
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import psutil
import psycopg
import pytest

from minimart.bootstrap import Container
from minimart.console.client import OrderClient
from minimart.handlers.orders import place_order
from minimart.local import servers, stack
from minimart.local.dispatcher import COMMIT_INTERVAL_S
from minimart.local.servers.supervision import Supervisor
from minimart.local_stores import without_store_logins
from minimart.observability import tracing
from minimart.observability.trace_view import SpanRecord, read_spans, span_files, trace_dir
from minimart.settings import Settings
from tests.reliability.saga import US, assert_books, heal, place_batch, wait_final
from tests.stack import bring_up, eventually, new_sku, stock_of

pytestmark = pytest.mark.e2e

FINAL = ("CONFIRMED", "CANCELLED")

# Which KafkaSource delivers to which function (eventing/*-source.yaml).
SOURCE_OF = {
    "inventory": "inventory-source",
    "payment": "payment-source",
    "shipping": "shipping-source",
    "order-status": "order-status-source",
    "notification": "notification-source",
}


# -- the batch: orders placed at a steady pace while the fault lands ---------------------


@dataclass
class Batch:
    """Orders placed one after another in the background (a careful client each: a 5xx or
    no answer is retried with the same Idempotency-Key); ``ids`` grows as they are accepted."""

    client: OrderClient
    sku: str
    count: int
    pace_s: float
    ids: list[str] = field(default_factory=list)
    error: BaseException | None = None

    def __post_init__(self) -> None:
        self._thread = threading.Thread(target=self._run, name="batch", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            for _ in range(self.count):
                (order_id,) = place_batch(self.client, self.sku, 1, threads=1)
                self.ids.append(order_id)
                time.sleep(self.pace_s)
        except BaseException as exc:
            self.error = exc

    @property
    def placing(self) -> bool:
        return self._thread.is_alive()

    def join(self, timeout: float = 180.0) -> list[str]:
        self._thread.join(timeout)
        assert not self._thread.is_alive(), "the batch was not placed in time"
        if self.error is not None:
            raise self.error
        return list(self.ids)


def statuses(settings: Settings, order_ids: list[str]) -> dict[str, str]:
    with psycopg.connect(settings.orders_dsn, autocommit=True) as conn:
        rows = conn.execute(
            "SELECT id::text, status FROM orders WHERE id::text = ANY(%s)", (order_ids,)
        ).fetchall()
    return dict(rows)


def not_final(settings: Settings, batch: Batch) -> list[str]:
    """Orders of the batch in flight (accepted, not yet final)."""
    return sorted(i for i, s in statuses(settings, list(batch.ids)).items() if s not in FINAL)


Condition = Callable[[Settings, Batch], list[str]]


@dataclass(frozen=True)
class Landing:
    order_ids: list[str]
    sku: str
    met: list[str]  # orders of the batch the condition named when the fault hit


def run_with_fault(
    settings: Settings,
    client: OrderClient,
    fault: Callable[[], None],
    when: Condition = not_final,
    count: int = 30,
    pace_s: float = 0.1,
) -> Landing:
    """Place ``count`` orders at a pace; once ``when`` names orders of the batch (and more
    are still to come), inject ``fault``; then heal the stack, check every order confirmed
    and the books of the batch."""
    sku = new_sku(settings, stock=10_000, price_cents=1_100)
    batch = Batch(client, sku, count, pace_s)
    deadline = time.monotonic() + 120
    while not (met := when(settings, batch)):
        assert batch.placing, "the condition never held while the batch was placed"
        assert time.monotonic() < deadline, "the condition never held"
        time.sleep(0.02)
    assert batch.placing, "the fault would land after the last order"
    fault()
    order_ids = batch.join()
    heal(settings, client, sku)
    finals = wait_final(client, order_ids, timeout=180)
    assert {o["status"] for o in finals} == {"CONFIRMED"}
    assert set(met) <= set(order_ids)
    assert_books(settings, order_ids, [sku])
    assert stock_of(settings, sku)["shipped"] == count + 1  # the batch and heal()'s order
    return Landing(order_ids, sku, met)


# -- what the fault did: read from the traces ---------------------------------------------


def spans_of(settings: Settings, order_ids: list[str]) -> list[SpanRecord]:
    wanted = set(order_ids)
    files = span_files(trace_dir(settings.state_dir))
    return [s for s in read_spans(files) if s.attributes.get(tracing.ORDER_ID) in wanted]


def retried_deliveries(settings: Settings, source: str, order_ids: list[str]) -> list[SpanRecord]:
    """The ``source``'s deliveries of these orders' events that took more than one attempt
    (its CONSUMER spans: one per record, with the attempts it made)."""
    return [
        s for s in spans_of(settings, order_ids)
        if s.kind == "CONSUMER" and s.attributes.get(tracing.SERVICE) == source
        and s.attributes.get("minimart.delivery.attempts", 0) > 1
    ]  # fmt: skip


def handled_twice(settings: Settings, service: str, order_ids: list[str]) -> list[str]:
    """Event ids of these orders that the function ``service`` handled (answered ok) twice
    or more: a record delivered again after its first delivery's commit was lost."""
    handled = Counter(
        s.attributes.get(tracing.EVENT_ID) for s in spans_of(settings, order_ids)
        if s.kind == "SERVER" and s.attributes.get(tracing.SERVICE) == service
        and s.attributes.get(tracing.OUTCOME) == "ok"
    )  # fmt: skip
    return sorted(str(event_id) for event_id, n in handled.items() if n > 1)


# -- faults -------------------------------------------------------------------------------


def crash(settings: Settings, name: str) -> Callable[[], None]:
    """A fault: SIGKILL program ``name`` with its process group and descendants, and nothing
    else: supervisord brings it back by itself (heal() only waits for it to answer)."""

    def fault() -> None:
        assert stack.kill(settings, name) is not None, f"{name} is not running"

    return fault


@contextlib.contextmanager
def paused(settings: Settings, name: str) -> Iterator[None]:
    """Program ``name`` and its descendants stopped (SIGSTOP) inside the block: requests sent
    to it wait, unanswered, in its sockets."""
    pid = servers.pid_of(settings, name)
    assert pid is not None, f"{name} is not running"
    family = servers.family_pids(pid)
    for member in family:
        os.kill(member, signal.SIGSTOP)
    try:
        yield
    finally:
        for member in family:
            with contextlib.suppress(ProcessLookupError):
                os.kill(member, signal.SIGCONT)


def unread_requests(port: int) -> bool:
    """Whether bytes or connections wait unread at ``port`` on 127.0.0.1 (the receive queue
    of its sockets in /proc/net/tcp: an accepted connection's unread bytes, or a listening
    socket's connections not yet accepted)."""
    local = f"0100007F:{port:04X}"
    with open("/proc/net/tcp") as table:
        next(table)
        for line in table:
            fields = line.split()
            if fields[1] == local and int(fields[4].split(":")[1], 16) > 0:
                return True
    return False


# -- quick: in the default CI run -------------------------------------------------------


def test_function_killed_while_orders_wait_for_it_heals_by_itself(
    running_stack: Settings, client: OrderClient
) -> None:
    """payment is SIGKILLed while a delivery of the batch waits in its socket (it is paused
    until one does: an order reserved and not yet charged); that delivery and the ones after
    it fail and are retried until supervisord has it back."""
    name = stack.plan_stack(running_stack).function("payment").process_name
    before = servers.supervised(running_stack, name)
    assert before is not None
    landing = run_with_fault(
        running_stack, client, kill_holding_a_delivery(running_stack, "payment")
    )
    after = servers.supervised(running_stack, name)
    assert after is not None and after.restarts == before.restarts + 1, (before, after)
    retried = eventually(
        lambda: retried_deliveries(running_stack, "payment-source", landing.order_ids),
        what="a delivery to payment retried while it was down",
    )
    assert {s.attributes[tracing.OUTCOME] for s in retried} == {"delivered"}


@contextlib.contextmanager
def holding_a_delivery(settings: Settings, service: str) -> Iterator[None]:
    """The function ``service`` paused until a delivery waits unanswered in its socket."""
    function = stack.plan_stack(settings).function(service)
    with paused(settings, function.process_name):
        eventually(lambda: unread_requests(function.port), timeout=30,
                   what=f"a delivery waiting at {service}")  # fmt: skip
        yield


def kill_holding_a_delivery(settings: Settings, service: str) -> Callable[[], None]:
    """A fault that lands on work in flight: the function ``service`` SIGKILLed while a
    delivery waits in its socket (supervisord restarts it)."""
    name = stack.plan_stack(settings).function(service).process_name

    def fault() -> None:
        with holding_a_delivery(settings, service):
            assert stack.kill(settings, name) is not None

    return fault


def kill_dispatcher_holding_a_delivery(settings: Settings, service: str) -> Callable[[], None]:
    """A fault that lands after delivery and before the commit: the function ``service`` is
    paused until its dispatcher has sent it a request, the dispatcher is SIGKILLed, then the
    function resumes and handles that request, whose answer nobody reads. supervisord
    restarts the dispatcher, which delivers from the last commit: that record again."""
    port = stack.plan_stack(settings).function(service).port
    dispatcher = f"dispatch-{SOURCE_OF[service]}"

    def fault() -> None:
        with holding_a_delivery(settings, service):
            # Let the dispatcher commit whatever it would (it commits done offsets every
            # COMMIT_INTERVAL_S): the record in flight must not be among them. A negative
            # wait, shorter than the delivery timeout, so the request is not yet retried.
            time.sleep(2.5 * COMMIT_INTERVAL_S)
            assert unread_requests(port)
            assert stack.kill(settings, dispatcher) is not None

    return fault


def test_dispatcher_killed_after_delivery_before_commit_redelivers(
    running_stack: Settings, client: OrderClient
) -> None:
    """At-least-once on the real stack: the record payment handled just before its
    dispatcher died is delivered again by the successor, and the duplicate changes nothing."""
    landing = run_with_fault(
        running_stack, client, kill_dispatcher_holding_a_delivery(running_stack, "payment")
    )
    twice = eventually(lambda: handled_twice(running_stack, "payment", landing.order_ids),
                       what="an inventory.reserved handled twice by payment")  # fmt: skip
    assert twice


def test_committed_but_unpublished_order_is_published_by_the_relay(
    running_stack: Settings, client: OrderClient
) -> None:
    """The ingress's dual write: the order and its outbox row are committed, the process dies
    before publishing. Deterministically: accept through the intake without publishing."""
    sku = new_sku(running_stack, stock=5)
    container = Container(running_stack)
    body = {"customerId": 31, "items": [{"sku": sku, "quantity": 2}], "shippingAddress": US}
    accepted = place_order(body, None, container.intake, container.order_limits)
    assert accepted.created and accepted.event is not None
    with psycopg.connect(running_stack.orders_dsn, autocommit=True) as conn:
        row = conn.execute(
            "SELECT published_at FROM outbox WHERE event_id = %s", (accepted.event.id,)
        ).fetchone()
    assert row == (None,)
    order = client.wait_final(accepted.order_id, timeout=60)  # only the relay can publish it
    assert order["status"] == "CONFIRMED"
    assert_books(running_stack, [accepted.order_id], [sku])

    def published() -> bool:
        with psycopg.connect(running_stack.orders_dsn, autocommit=True) as conn:
            row = conn.execute(
                "SELECT published_at IS NOT NULL FROM outbox WHERE event_id = %s",
                (accepted.event.id,),  # type: ignore[union-attr]
            ).fetchone()
        return bool(row and row[0])

    eventually(published, timeout=10, what="outbox row marked published")


def code_hash_of(settings: Settings, name: str) -> tuple[int, str] | None:
    """(pid, code hash) of the program once it runs its own code; None before (not started
    yet, or forked by supervisord and not yet exec'd: its environment is still the parent's)."""
    pid = servers.pid_of(settings, name)
    if pid is None:
        return None
    try:
        found = psutil.Process(pid).environ().get(stack.CODE_HASH_VARIABLE)
    except psutil.Error:  # gone meanwhile
        return None
    return None if found is None else (pid, found)


@pytest.mark.parametrize("program", ["fn-notification", "dispatch-notification-source"])
def test_the_stack_fixture_restarts_a_program_that_runs_other_code(
    running_stack: Settings, client: OrderClient, program: str
) -> None:
    """A program started from another tree (its code hash is not the working tree's) is
    restarted by the fixtures' bring_up, so the suites never test old code."""
    plan = stack.plan_stack(running_stack)
    code = stack.code_hash()
    if program.startswith("fn-"):
        fn = plan.function(program.removeprefix("fn-"))
        old = stack.function_program(fn, running_stack, code="0" * 16)
    else:
        (dispatcher,) = [d for d in plan.dispatchers if d.process_name == program]
        runner = without_store_logins(running_stack)  # as tests.stack.bring_up hands it
        old = stack.dispatcher_program(dispatcher, runner, code="0" * 16)
    sup = Supervisor(running_stack)
    sup.define([old])  # as `make up` on an older tree left it
    sup.start(program)

    def running_old_tree() -> tuple[int, str] | None:
        found = code_hash_of(running_stack, program)
        return found if found is not None and found[1] == "0" * 16 else None

    stale_pid, _ = eventually(running_old_tree, what=f"{program} running the old tree")

    assert program in bring_up(running_stack)

    pid, current = eventually(lambda: code_hash_of(running_stack, program),
                              what=f"{program} running")  # fmt: skip
    assert (current, pid != stale_pid) == (code, True)
    sku = new_sku(running_stack, stock=5)
    (order_id,) = place_batch(client, sku, 1)
    assert client.wait_final(order_id, timeout=60)["status"] == "CONFIRMED"


# -- slow: `make reliability` -------------------------------------------------------------


# The KafkaSource whose deliveries a server's restart makes fail (5xx, retried): a step that
# writes to it. The clients of Kafka and Mongo wait for their server to come back (up to 10 s)
# instead of failing, so their restarts retry no delivery for sure.
RETRIED_BY = {"postgres": "payment-source", "redis": "notification-source"}


@pytest.mark.slow
@pytest.mark.parametrize("server", ["postgres", "kafka", "mongo", "redis"])
def test_server_restarted_mid_flight(running_stack: Settings, client: OrderClient, server: str
                                     ) -> None:  # fmt: skip
    landing = run_with_fault(running_stack, client,
                             lambda: servers.restart(running_stack, server), count=40)  # fmt: skip
    assert landing.met  # orders were in flight when the server went down
    if server in RETRIED_BY:
        eventually(lambda: retried_deliveries(running_stack, RETRIED_BY[server],
                                              landing.order_ids),
                   what=f"a delivery retried while {server} restarted")  # fmt: skip


@pytest.mark.slow
@pytest.mark.parametrize("service", ["inventory", "order-status", "notification", "shipping"])
def test_other_functions_killed_mid_flight(running_stack: Settings, client: OrderClient,
                                           service: str) -> None:  # fmt: skip
    name = stack.plan_stack(running_stack).function(service).process_name
    landing = run_with_fault(running_stack, client, crash(running_stack, name), count=40)
    eventually(lambda: retried_deliveries(running_stack, SOURCE_OF[service], landing.order_ids),
               what=f"a delivery to {service} retried while it was down")  # fmt: skip


@pytest.mark.slow
@pytest.mark.parametrize("service", ["inventory", "order-status"])
def test_other_dispatchers_killed_after_delivery_before_commit(
    running_stack: Settings, client: OrderClient, service: str
) -> None:
    landing = run_with_fault(
        running_stack, client, kill_dispatcher_holding_a_delivery(running_stack, service)
    )
    eventually(lambda: handled_twice(running_stack, service, landing.order_ids),
               what=f"an event handled twice by {service}")  # fmt: skip


@pytest.mark.slow
def test_two_hundred_orders_race_for_scarce_stock(running_stack: Settings, client: OrderClient
                                                  ) -> None:  # fmt: skip
    sku = new_sku(running_stack, stock=20, price_cents=900)
    order_ids = place_batch(client, sku, 200, threads=32)
    finals = wait_final(client, order_ids, timeout=240)
    confirmed = [o for o in finals if o["status"] == "CONFIRMED"]
    cancelled = [o for o in finals if o["status"] == "CANCELLED"]
    assert len(confirmed) == 20
    assert len(cancelled) == 180
    assert all(o["reason"].startswith("insufficient_stock") for o in cancelled)
    assert_books(running_stack, order_ids, [sku], timeout=120)
    assert stock_of(running_stack, sku) == {
        "initial": 20, "available": 0, "reserved": 0, "shipped": 20,
    }  # fmt: skip
