"""Planning up, down and status of the local stack over fakes of its collaborators
(supervisord, the servers, the probes): no servers, no processes."""

from __future__ import annotations

import contextlib
import tempfile
import threading
from collections.abc import Iterable
from dataclasses import replace
from pathlib import Path

import pytest

from minimart import identity, local_stores
from minimart.local import stack
from minimart.local.servers import ALL as SERVERS
from minimart.local.servers.supervision import Program, ProgramInfo
from minimart.local.stack import DispatcherProcess, FunctionProcess, Stack, StackPlan
from minimart.manifests import Delivery, KafkaSourceSpec, load_topology
from minimart.settings import PROJECT_ROOT, Settings

# Its own state dir: planning the functions' environments makes the local Secret there.
SETTINGS = Settings(
    state_dir=Path(tempfile.gettempdir()) / "minimart-unit-stack",
    host="10.1.2.3",
    ingress_port=18080,
    function_port_base=18081,
)


def source(name: str, sink: str, timeout_s: float | None = None) -> KafkaSourceSpec:
    return KafkaSourceSpec(
        name=name, consumer_group=name, topics=(f"{name}.topic",), sink_service=sink,
        initial_offset="earliest", ordering="ordered", delivery=Delivery(timeout_s=timeout_s),
    )  # fmt: skip


def small_plan() -> StackPlan:
    order = FunctionProcess("order", Path("functions/order/main.py"), "http", 18080, "10.1.2.3")
    pay = FunctionProcess(
        "payment", Path("functions/payment/main.py"), "cloudevent", 18081, "10.1.2.3"
    )
    return StackPlan(
        functions=(order, pay),
        dispatchers=(
            DispatcherProcess(source("payment-src", "payment"), pay.url + "/", 18181, "10.1.2.3"),
        ),
    )


class FakeSupervisor:
    """supervisord in memory: programs defined, started (RUNNING at once) and stopped."""

    url = "unix:///fake/supervisor.sock"

    def __init__(self, running: bool = True, fatal: Iterable[str] = ()) -> None:
        self.running = running
        self.defined: dict[str, Program] = {}
        self.states: dict[str, str] = {}
        self.fatal = set(fatal)
        self.calls: list[tuple[str, tuple[str, ...]]] = []
        self._lock = threading.Lock()

    def _call(self, verb: str, *names: str) -> None:
        with self._lock:
            self.calls.append((verb, names))

    def lock(self, name: str = "supervisor") -> contextlib.AbstractContextManager[None]:
        return contextlib.nullcontext()

    def is_running(self) -> bool:
        return self.running

    def shutdown(self, timeout: float = 60.0) -> bool:
        self._call("shutdown")
        was, self.running = self.running, False
        return was

    def define(self, programs: Iterable[Program]) -> list[str]:
        programs = list(programs)
        self._call("define", *(p.name for p in programs))
        new = [p.name for p in programs if self.defined.get(p.name) != p]
        for program in programs:
            self.defined[program.name] = program
            self.states.setdefault(program.name, "STOPPED")
        return new

    def forget(self, names: Iterable[str]) -> None:
        names = list(names)
        self._call("forget", *names)
        for name in names:
            self.defined.pop(name, None)
            self.states.pop(name, None)

    def start(self, name: str) -> None:
        self._call("start", name)
        self.states[name] = "FATAL" if name in self.fatal else "RUNNING"

    def stop(self, names: Iterable[str], timeout: float = 60.0) -> list[str]:
        running = [n for n in names if self.states.get(n) == "RUNNING"]
        self._call("stop", *running)
        for name in running:
            self.states[name] = "STOPPED"
        return running

    def infos(self) -> dict[str, ProgramInfo]:
        if not self.running:
            return {}
        return {
            name: ProgramInfo(name, state, 100 if state == "RUNNING" else None, None, 0, "")
            for name, state in self.states.items()
        }

    def state(self, name: str) -> str:
        return self.states.get(name, "UNKNOWN")

    def pid(self, name: str) -> int | None:
        return 100 if self.states.get(name) == "RUNNING" else None

    def kill(self, name: str, *, family: bool = False) -> int | None:
        return self.pid(name)

    def log_file(self, name: str) -> Path:
        return Path("/fake/logs") / f"{name}.log"


class FakeServers:
    """The servers: up when ensured, down when stopped."""

    def __init__(self, supervisor: FakeSupervisor) -> None:
        self.supervisor = supervisor
        self.retired: list[str] = []

    def ensure_up(self, names: Iterable[str]) -> list[str]:
        started = [n for n in names if self.supervisor.states.get(n) != "RUNNING"]
        for name in started:
            self.supervisor.states[name] = "RUNNING"
        return started

    def stop_all(self) -> list[str]:
        return self.supervisor.stop(SERVERS)

    def retire_unsupervised(self, url: str) -> None:
        self.retired.append(url)

    def ready(self, name: str) -> bool | None:
        if name not in SERVERS:
            return None
        return self.supervisor.states.get(name) == "RUNNING"


class FakeProbe:
    """A function answers once its program runs; so does a dispatcher's metrics port."""

    def __init__(self, supervisor: FakeSupervisor, plan: StackPlan) -> None:
        self.supervisor = supervisor
        self.plan = plan
        self.asked: list[str] = []

    def healthy(self, url: str) -> bool:
        self.asked.append(url)
        [fn] = [f for f in self.plan.functions if f.url == url]
        return self.supervisor.pid(fn.process_name) is not None

    def port_open(self, host: str, port: int) -> bool:
        self.asked.append(f"{host}:{port}")
        [d] = [d for d in self.plan.dispatchers if (d.host, d.metrics_port) == (host, port)]
        return self.supervisor.pid(d.process_name) is not None


class SilentProbe(FakeProbe):
    """Nothing ever answers."""

    def healthy(self, url: str) -> bool:
        return False


def fake_stack(sup: FakeSupervisor | None = None, plan: StackPlan | None = None) -> Stack:
    sup = sup or FakeSupervisor()
    plan = plan or small_plan()
    return Stack(
        SETTINGS, plan=plan, supervisor=sup, servers=FakeServers(sup),
        probe=FakeProbe(sup, plan), code=lambda: "c0de", issuer=lambda: False,
        secret=lambda name: {}, ready_timeout_s=0.2, poll_s=0.001,
    )  # fmt: skip


def verbs(sup: FakeSupervisor) -> list[tuple[str, tuple[str, ...]]]:
    return [call for call in sup.calls if call[0] != "define"]


def test_up_defines_every_program_and_starts_the_functions_before_the_dispatchers() -> None:
    sup = FakeSupervisor()
    stack_ = fake_stack(sup)

    started = stack_.up()

    assert started == ["postgres", "redis", "mongo", "kafka", "fn-order", "fn-payment",
                       "dispatch-payment-src"]  # fmt: skip
    assert set(sup.defined) == {"fn-order", "fn-payment", "dispatch-payment-src"}
    assert verbs(sup) == [("start", ("fn-order",)), ("start", ("fn-payment",)),
                          ("start", ("dispatch-payment-src",))]  # fmt: skip
    assert stack_.not_ready() == []


def test_a_second_up_starts_nothing_and_forgets_programs_no_longer_planned() -> None:
    sup = FakeSupervisor()
    sup.states["fn-retired"] = "RUNNING"
    stack_ = fake_stack(sup)
    stack_.up()
    sup.calls.clear()

    assert stack_.up() == []
    assert verbs(sup) == []
    assert "fn-retired" not in sup.states


def test_the_programs_run_on_the_settings_host_with_the_code_hash() -> None:
    sup = FakeSupervisor()
    fake_stack(sup).up()

    order = sup.defined["fn-order"]
    assert "--host=10.1.2.3" in order.argv and "--port=18080" in order.argv
    assert order.env[stack.CODE_HASH_VARIABLE] == "c0de"
    dispatcher = sup.defined["dispatch-payment-src"]
    assert "--sink-url=http://10.1.2.3:18081/" in dispatcher.argv


def test_each_function_is_served_by_the_images_command() -> None:
    """As the Dockerfile's CMD: ``python -m minimart.serve`` (no gunicorn control socket),
    not functions-framework's command line (every function's gunicorn would open one at the
    same ``$HOME/.gunicorn/gunicorn.ctl``)."""
    sup = FakeSupervisor()
    fake_stack(sup).up()

    dockerfile = (PROJECT_ROOT / "Dockerfile").read_text()
    assert "python -m minimart.serve" in dockerfile
    for name, program in sup.defined.items():
        if name.startswith("fn-"):
            assert program.argv[1:3] == ("-m", "minimart.serve"), name
            assert "--target=handle" in program.argv


def test_reload_runs_each_function_under_the_reloader() -> None:
    sup = FakeSupervisor()
    fake_stack(sup).up(reload=True)

    assert sup.defined["fn-payment"].argv[1:3] == ("-m", "minimart.local.reload")
    assert "minimart.local.reload" not in sup.defined["dispatch-payment-src"].argv


def test_a_dispatcher_may_finish_its_attempt_before_it_is_killed() -> None:
    plan = small_plan()
    slow = replace(plan.dispatchers[0], source=source("payment-src", "payment", timeout_s=5.0))
    default = stack.dispatcher_program(plan.dispatchers[0], SETTINGS, "c0de")
    given = stack.dispatcher_program(slow, SETTINGS, "c0de")

    assert default.stop_wait_s == Delivery().attempt_timeout_s + stack.STOP_MARGIN_S
    assert given.stop_wait_s == 5.0 + stack.STOP_MARGIN_S


def test_a_function_that_keeps_exiting_fails_up_naming_its_log() -> None:
    sup = FakeSupervisor(fatal={"fn-payment"})

    with pytest.raises(RuntimeError, match=r"function payment .* keeps exiting.*fn-payment\.log"):
        fake_stack(sup).up()
    assert ("start", ("dispatch-payment-src",)) not in sup.calls


def test_up_waits_no_longer_than_its_timeout() -> None:
    sup = FakeSupervisor()
    plan = small_plan()
    stack_ = fake_stack(sup, plan)
    stack_.probe = SilentProbe(sup, plan)

    with pytest.raises(TimeoutError, match="not ready after"):
        stack_.up()


def test_down_stops_dispatchers_then_functions_then_the_servers_then_supervisord() -> None:
    sup = FakeSupervisor()
    stack_ = fake_stack(sup)
    stack_.up()
    sup.states["prometheus"] = "RUNNING"
    sup.calls.clear()

    stopped = stack_.down()

    assert verbs(sup) == [
        ("stop", ("dispatch-payment-src",)),
        ("stop", ("fn-order", "fn-payment")),
        ("stop", ()),
        ("stop", ("postgres", "redis", "mongo", "kafka", "prometheus")),
        ("shutdown", ()),
    ]
    assert stopped[:3] == ["dispatch-payment-src", "fn-order", "fn-payment"]
    assert not sup.running


def test_down_without_supervisord_retires_what_it_left_behind() -> None:
    sup = FakeSupervisor(running=False)
    servers = FakeServers(sup)
    stack_ = Stack(SETTINGS, plan=small_plan(), supervisor=sup, servers=servers)

    assert stack_.down() == []
    assert servers.retired == [sup.url]
    assert sup.calls == []


def test_status_lists_every_planned_program_and_what_else_is_defined() -> None:
    sup = FakeSupervisor()
    stack_ = fake_stack(sup)
    sup.states["fn-order"] = "RUNNING"
    sup.states["extra"] = "EXITED"

    rows = {row.name: row.state for row in stack_.status()}

    assert list(rows) == ["postgres", "redis", "mongo", "kafka", "fn-order", "fn-payment",
                          "dispatch-payment-src", "extra"]  # fmt: skip
    assert rows["fn-order"] == "RUNNING" and rows["fn-payment"] == "STOPPED"
    assert "prometheus" not in rows  # listed only when defined


def test_a_dispatcher_answers_only_while_it_runs() -> None:
    sup = FakeSupervisor()
    stack_ = fake_stack(sup)
    assert not stack_.answers("dispatch-payment-src")
    sup.states["dispatch-payment-src"] = "RUNNING"
    assert stack_.answers("dispatch-payment-src")
    with pytest.raises(KeyError):
        stack_.answers("nothing-of-the-stack")


def test_the_plan_of_the_manifests_uses_the_settings_host_and_ports() -> None:
    plan = stack.plan_stack(SETTINGS, load_topology(PROJECT_ROOT))

    assert plan.function("order").url == "http://10.1.2.3:18080"
    assert {fn.host for fn in plan.functions} == {"10.1.2.3"}
    assert {d.host for d in plan.dispatchers} == {"10.1.2.3"}
    assert all(d.sink_url.startswith("http://10.1.2.3:") for d in plan.dispatchers)


def test_not_ready_names_the_programs_that_do_not_answer() -> None:
    sup = FakeSupervisor()
    stack_ = fake_stack(sup)
    stack_.up()
    sup.states["kafka"] = sup.states["fn-payment"] = "STOPPED"

    assert stack_.not_ready() == ["kafka", "fn-payment"]
    with pytest.raises(TimeoutError, match=r"not ready after 0s: kafka, fn-payment$"):
        stack_.wait_ready(timeout=0)


def test_each_fed_function_is_told_who_may_deliver_to_it() -> None:
    topology = load_topology(PROJECT_ROOT)
    plan = stack.plan_stack(SETTINGS, topology)

    for source in topology.sources:
        env = dict(plan.function(source.sink_service).env)
        allowed = identity.parse_subjects(env["MINIMART_OIDC_SUBJECTS"])
        assert identity.source_subject(source.name) in allowed
        assert allowed - {identity.CONSOLE_SUBJECT} == {
            identity.source_subject(s.name)
            for s in topology.sources
            if s.sink_service == source.sink_service
        }
    assert "MINIMART_OIDC_SUBJECTS" not in dict(plan.function("order").env)  # public


def test_each_function_is_told_the_login_of_its_own_stores_and_no_other() -> None:
    """The stores a function's manifest gives it a password for (k8s/functions/), each with
    its owner's login; every other store's variable empty (no login to derive from)."""
    plan = stack.plan_stack(SETTINGS, load_topology(PROJECT_ROOT))
    secret = local_stores.local_secret(SETTINGS)
    owners = {
        "MINIMART_ORDERS_DSN": {"order", "order-status"},
        "MINIMART_INVENTORY_DSN": {"inventory"},
        "MINIMART_PAYMENTS_DSN": {"payment"},
        "MINIMART_MONGO_URL": {"shipping"},
        "MINIMART_REDIS_URL": {"notification"},
    }
    told: dict[str, set[str]] = {variable: set() for variable in owners}
    for fn in plan.functions:
        env = dict(fn.env)
        assert set(owners) <= set(env), fn.service
        for variable in owners:
            if env[variable]:
                told[variable].add(fn.service)
        passwords = {key for key, pw in secret.items() if any(pw in v for v in env.values())}
        stores = {f for f, login in local_stores.LOGINS.items() if login.key in passwords}
        assert {Settings.declarations()[f].env for f in stores} == {
            variable for variable in owners if env[variable]
        }, fn.service
    assert told == owners
    settings = Settings.from_env(dict(plan.function("order").env))
    assert settings.orders_dsn.startswith("postgresql://minimart_orders:")
    assert settings.payments_dsn == Settings().payments_dsn  # derived: no password in it


def test_up_makes_the_token_issuer_before_any_function_starts() -> None:
    sup = FakeSupervisor()
    plan = small_plan()
    seen: list[list[tuple[str, tuple[str, ...]]]] = []
    stack_ = Stack(
        SETTINGS, plan=plan, supervisor=sup, servers=FakeServers(sup),
        probe=FakeProbe(sup, plan), code=lambda: "c0de",
        issuer=lambda: bool(seen.append(verbs(sup))), ready_timeout_s=0.2, poll_s=0.001,
    )  # fmt: skip

    stack_.up()

    assert seen == [[]]  # once, before anything was started


def test_each_program_presents_the_kafka_principal_its_manifest_names() -> None:
    topology = load_topology(PROJECT_ROOT)
    plan = stack.plan_stack(SETTINGS, topology)
    asked: list[str] = []

    def secret(name: str) -> dict[str, str]:
        asked.append(name)
        return {"user": name.removeprefix("kafka-"), "password": f"pw-of-{name}"}

    sup = FakeSupervisor()
    programs = {
        p.name: p
        for p in Stack(
            SETTINGS, plan=plan, supervisor=sup, servers=FakeServers(sup),
            probe=FakeProbe(sup, plan), code=lambda: "c0de", issuer=lambda: False, secret=secret,
        ).planned_programs()
    }  # fmt: skip

    for name, service in topology.services.items():
        env = programs[f"fn-{name}"].env
        assert (env["MINIMART_KAFKA_USER"], env["MINIMART_KAFKA_PASSWORD"]) == (
            f"fn-{name}",
            f"pw-of-kafka-fn-{name}",
        ), name
        assert service.kafka_secret == f"kafka-fn-{name}"
    sinks = {topic: sink for sink, topic in topology.dead_letter_sinks.items()}
    for source in topology.sources:
        env = programs[f"dispatch-{source.name}"].env
        assert env["MINIMART_KAFKA_USER"] == source.name
        assert env["MINIMART_DEAD_LETTER_KAFKA_USER"] == sinks[source.delivery.dead_letter_topic]
    # Each principal's password went only to the programs that are that principal.
    for program in programs.values():
        passwords = {v for k, v in program.env.items() if k.endswith("KAFKA_PASSWORD")}
        users = {v for k, v in program.env.items() if k.endswith("KAFKA_USER")}
        assert passwords == {f"pw-of-kafka-{user}" for user in users}, program.name
