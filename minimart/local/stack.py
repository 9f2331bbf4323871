"""The local stack: every function under functions-framework and a dispatcher per KafkaSource.

The plan comes from the manifests (``eventing/``, ``k8s/``) and the ``functions/`` folders:
which functions exist, which KafkaSource feeds which function, with what delivery settings.
Nothing about the topology is written here. Every process is a program of the state dir's
supervisord (``servers/supervision.py``), which restarts whatever exits, as a kubelet would.

``Stack(settings)`` is one stack: its plan, decided once, and its collaborators, each the one
handed in or the real one (the supervisord of the state dir, the servers, the probes that ask
a function or a dispatcher whether it answers), as honcho's ``Manager`` takes its printer and
its process constructor. ``tests/unit/test_stack.py`` runs up, down and status over fakes.
The module functions (``up(settings)`` ...) are that stack with the real collaborators.
"""

from __future__ import annotations

import concurrent.futures
import functools
import hashlib
import logging
import sys
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Protocol

import requests

from minimart import identity, local_secrets, local_stores
from minimart.local import servers
from minimart.local.servers import process
from minimart.local.servers.base import child_env
from minimart.local.servers.supervision import (
    Program,
    ProgramInfo,
    Supervisor,
    retire_unsupervised,
)
from minimart.manifests import KafkaSourceSpec, Topology, load_topology
from minimart.settings import PROJECT_ROOT, Settings

log = logging.getLogger(__name__)

INGRESS = "order"  # the public ingress (an HTTP function), served on settings.ingress_port
REDRIVE = "redrive"  # its sinks are every other KafkaSource's (MINIMART_REDRIVE_SINKS)
INFRASTRUCTURE = ("postgres", "redis", "mongo", "kafka")
READY_TIMEOUT_S = 90.0
STARTING_POLL_S = 0.1  # up: how often a starting program is asked whether it answers
READY_POLL_S = 0.2  # wait_ready: how often every program of the stack is asked
# The code a function or dispatcher runs; its hash is in each one's environment.
CODE_FOLDERS = ("minimart", "functions", "eventing", "k8s")
CODE_HASH_VARIABLE = "MINIMART_CODE_HASH"
_STACK_PREFIXES = ("fn-", "dispatch-")
# What `up(reload=True)` watches: a change to a Python file there restarts every function.
RELOAD_FOLDERS = ("minimart", "functions")
# supervisord's stop wait of a dispatcher beyond the attempt it may be finishing.
STOP_MARGIN_S = 10.0


@dataclass(frozen=True)
class FunctionProcess:
    service: str
    source: Path
    signature: str
    port: int
    host: str
    env: tuple[tuple[str, str], ...] = ()  # what this function alone is told
    kafka_secret: str | None = None  # its Kafka principal's Secret (its manifest's)

    @property
    def process_name(self) -> str:
        return f"fn-{self.service}"

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"


@dataclass(frozen=True)
class DispatcherProcess:
    source: KafkaSourceSpec
    sink_url: str
    metrics_port: int
    host: str  # where its metrics listen
    # The Secret of the dead-letter KafkaSink it writes dead letters as (its manifest's).
    dead_letter_secret: str | None = None

    @property
    def process_name(self) -> str:
        return f"dispatch-{self.source.name}"


@dataclass(frozen=True)
class StackPlan:
    functions: tuple[FunctionProcess, ...]
    dispatchers: tuple[DispatcherProcess, ...]

    def function(self, service: str) -> FunctionProcess:
        for fn in self.functions:
            if fn.service == service:
                return fn
        raise KeyError(service)


def plan_stack(settings: Settings, topology: Topology | None = None) -> StackPlan:
    topology = topology or load_topology(PROJECT_ROOT)
    folders = sorted(p.parent for p in (PROJECT_ROOT / "functions").glob("*/main.py"))
    functions = []
    others = [folder for folder in folders if folder.name != INGRESS]
    for folder in folders:
        if folder.name == INGRESS:
            port = settings.ingress_port
        else:
            port = settings.function_port_base + others.index(folder)
        main = folder / "main.py"
        manifest = topology.services.get(folder.name)
        functions.append(
            FunctionProcess(
                folder.name,
                main,
                signature_of(main),
                port,
                settings.host,
                kafka_secret=manifest.kafka_secret if manifest else None,
            )
        )
    by_service = {fn.service: fn for fn in functions}
    sinks = ",".join(
        f"{s.sink_service}={by_service[s.sink_service].url}"
        for s in topology.sources
        if s.sink_service != REDRIVE and s.sink_service in by_service
    )
    if REDRIVE in by_service:
        redrive = replace(by_service[REDRIVE], env=(("MINIMART_REDRIVE_SINKS", sinks),))
        functions[functions.index(by_service[REDRIVE])] = redrive
        by_service[REDRIVE] = redrive
    for service, subjects in allowed_senders(topology).items():
        if service in by_service:
            fn = by_service[service]
            fed = replace(fn, env=(*fn.env, ("MINIMART_OIDC_SUBJECTS", ",".join(subjects))))
            functions[functions.index(fn)] = by_service[service] = fed
    for fn in list(functions):
        stores = store_environment(settings, topology, fn.service)
        told = replace(fn, env=(*fn.env, *stores))
        functions[functions.index(fn)] = by_service[fn.service] = told
    dispatchers = []
    for index, source in enumerate(topology.sources):
        if source.sink_service not in by_service:
            raise KeyError(f"{source.name}: sink {source.sink_service!r} has no functions/ folder")
        dispatchers.append(
            DispatcherProcess(
                source=source,
                sink_url=by_service[source.sink_service].url + "/",
                metrics_port=settings.function_port_base + 100 + index,
                host=settings.host,
                dead_letter_secret=next(
                    (
                        topology.sink_secrets.get(sink)
                        for sink, topic in topology.dead_letter_sinks.items()
                        if topic == source.delivery.dead_letter_topic
                    ),
                    None,
                ),
            )
        )
    return StackPlan(tuple(functions), tuple(dispatchers))


def allowed_senders(topology: Topology) -> dict[str, tuple[str, ...]]:
    """Who may deliver to each function a KafkaSource feeds: the ServiceAccounts of the
    sources the manifests declare for it (as Knative names them), and the ops console
    (``minimart replay --http``); k8s/functions/ spell the same out for the cluster."""
    allowed: dict[str, list[str]] = {}
    for source in topology.sources:
        allowed.setdefault(source.sink_service, []).append(identity.source_subject(source.name))
    return {
        service: (*sorted(subjects), identity.CONSOLE_SUBJECT)
        for service, subjects in allowed.items()
    }


def store_environment(
    settings: Settings, topology: Topology, function: str
) -> tuple[tuple[str, str], ...]:
    """The stores' variables of ``function``: the address of each store whose password its
    Knative Services read from minimart-secrets, with its login there, and no other store's
    login (``minimart/local_stores.py``), as k8s/functions/ give it in the cluster."""
    keys = [k for s in topology.services.values() if s.function == function
            for k in s.store_secret_keys]  # fmt: skip
    return tuple(local_stores.store_environment(settings, keys).items())


def signature_of(main: Path) -> str:
    """A function's signature type, from the functions_framework decorator its main.py uses
    (the Dockerfile's SIGNATURE in skaffold.yaml says the same: tests/deploy checks it)."""
    return "http" if "@functions_framework.http" in main.read_text() else "cloudevent"


def _python() -> str:
    return sys.executable


def code_hash(root: Path = PROJECT_ROOT) -> str:
    """A digest of the code a function or dispatcher runs (file names and contents of
    ``CODE_FOLDERS``): ``up`` restarts a program that runs another tree than the working one."""
    digest = hashlib.sha256()
    for folder in CODE_FOLDERS:
        for path in sorted((root / folder).rglob("*")):
            if path.is_file() and "__pycache__" not in path.parts and path.suffix != ".pyc":
                digest.update(str(path.relative_to(root)).encode() + b"\0")
                digest.update(path.read_bytes() + b"\0")
    return digest.hexdigest()[:16]


def _env(settings: Settings, service: str) -> dict[str, str]:
    return child_env(
        settings,
        {
            **{k: v for k, v in replace(settings, service_name=service).to_env().items() if v},
            "MINIMART_TRACE_FILE": str(settings.state_dir / "traces" / f"{service}.jsonl"),
            "PYTHONPATH": str(PROJECT_ROOT),
            "PYTHONUNBUFFERED": "1",
        },
    )


def reloading(argv: Sequence[str]) -> tuple[str, ...]:
    """``argv`` under ``minimart.local.reload``, which starts it anew whenever a Python file
    of ``RELOAD_FOLDERS`` changes: ``make dev``, as ``skaffold dev`` redeploys on the cluster.
    supervisord supervises the runner, and stops it with its child (one process group)."""
    watched = [f"--watch={PROJECT_ROOT / folder}" for folder in RELOAD_FOLDERS]
    return (_python(), "-m", "minimart.local.reload", *watched, "--", *argv)


KafkaSecret = Callable[[str], Mapping[str, str]]  # a Secret's name -> its keys


def kafka_env(secret: KafkaSecret, name: str | None, prefix: str = "MINIMART_") -> dict[str, str]:
    """The variables giving a process the principal of Secret ``name`` (none: empty ones,
    so that it inherits no other principal)."""
    keys = secret(name) if name else {}
    return {
        f"{prefix}KAFKA_USER": keys.get("user", ""),
        f"{prefix}KAFKA_PASSWORD": keys.get("password", ""),
    }


def serve_argv(source: Path, signature: str, host: str, port: int) -> tuple[str, ...]:
    """The command serving one function, the image's own (Dockerfile ``CMD``):
    functions-framework's server without gunicorn's control socket (minimart/serve.py). Its
    command line would open one per function at the same ``$HOME/.gunicorn/gunicorn.ctl``:
    all but the first logged an error at every start, and the first took commands."""
    return (
        _python(),
        "-m",
        "minimart.serve",
        "--target=handle",
        f"--source={source}",
        f"--signature-type={signature}",
        f"--host={host}",
        f"--port={port}",
    )


def function_program(
    fn: FunctionProcess,
    settings: Settings,
    code: str,
    reload: bool = False,
    secret: KafkaSecret | None = None,
) -> Program:
    argv = serve_argv(fn.source, fn.signature, fn.host, fn.port)
    if reload:
        argv = reloading(argv)
    env = {**_env(settings, fn.service), **dict(fn.env), CODE_HASH_VARIABLE: code}
    if secret is not None:
        env.update(kafka_env(secret, fn.kafka_secret))
    return Program(fn.process_name, argv, PROJECT_ROOT, env, priority=300)


def dispatcher_program(
    dispatcher: DispatcherProcess,
    settings: Settings,
    code: str,
    secret: KafkaSecret | None = None,
) -> Program:
    argv = (
        _python(),
        "-m",
        "minimart.local.dispatcher",
        f"--source={dispatcher.source.name}",
        f"--sink-url={dispatcher.sink_url}",
        f"--metrics-port={dispatcher.metrics_port}",
    )
    env = {**_env(settings, dispatcher.process_name), CODE_HASH_VARIABLE: code}
    if secret is not None:  # its source's principal, and its dead-letter sink's
        env.update(kafka_env(secret, dispatcher.source.kafka_secret))
        env.update(kafka_env(secret, dispatcher.dead_letter_secret, "MINIMART_DEAD_LETTER_"))
    # It finishes the delivery in flight (up to the attempt timeout) and commits on SIGTERM.
    grace = dispatcher.source.delivery.attempt_timeout_s + STOP_MARGIN_S
    return Program(dispatcher.process_name, argv, PROJECT_ROOT, env, stop_wait_s=grace,
                   priority=400)  # fmt: skip


class Supervision(Protocol):
    """What the stack asks of supervisord (``supervision.Supervisor``)."""

    @property
    def url(self) -> str: ...

    def lock(self, name: str = ...) -> AbstractContextManager[None]: ...
    def is_running(self) -> bool: ...
    def shutdown(self, timeout: float = ...) -> bool: ...
    def define(self, programs: Iterable[Program]) -> list[str]: ...
    def forget(self, names: Iterable[str]) -> None: ...
    def start(self, name: str) -> None: ...
    def stop(self, names: Iterable[str], timeout: float = ...) -> list[str]: ...
    def infos(self) -> dict[str, ProgramInfo]: ...
    def state(self, name: str) -> str: ...
    def pid(self, name: str) -> int | None: ...
    def kill(self, name: str, *, family: bool = ...) -> int | None: ...
    def log_file(self, name: str) -> Path: ...


class Servers(Protocol):
    """The stack's servers (PostgreSQL, Redis, Mongo, Kafka, Prometheus): ``servers``."""

    def ensure_up(self, names: Sequence[str]) -> list[str]: ...
    def stop_all(self) -> list[str]: ...
    def retire_unsupervised(self, url: str) -> None: ...
    def ready(self, name: str) -> bool | None:
        """Whether server ``name`` answers a real request; None: no server of that name."""


class Probe(Protocol):
    """Whether a function or a dispatcher answers."""

    def healthy(self, url: str) -> bool: ...
    def port_open(self, host: str, port: int) -> bool: ...


class LocalServers:
    """The servers of ``servers`` for this state dir."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings

    def ensure_up(self, names: Sequence[str]) -> list[str]:
        return list(servers.ensure_up(self.settings, names))

    def stop_all(self) -> list[str]:
        return servers.stop_all(self.settings)

    def retire_unsupervised(self, url: str) -> None:
        retire_unsupervised(self.settings, url)

    def ready(self, name: str) -> bool | None:
        server = servers.infrastructure(self.settings).get(name)
        if server is None:
            return None
        try:
            return server.is_up() and server.is_ready()
        except Exception:  # a restarting server refuses in many ways
            return False


class HttpProbe:
    """A function answers its ``/healthz``; a dispatcher accepts on its metrics port."""

    def healthy(self, url: str) -> bool:
        try:
            return requests.get(url + "/healthz", timeout=2).status_code == 200
        except requests.RequestException:
            return False

    def port_open(self, host: str, port: int) -> bool:
        return process.port_open(host, port)


def _in_parallel(wait: Callable[[Any], None], items: Sequence[Any]) -> None:
    with concurrent.futures.ThreadPoolExecutor(max(1, len(items))) as pool:
        list(pool.map(wait, items))


class Stack:
    """The local stack of one state dir: its plan and its collaborators (see the module)."""

    def __init__(
        self,
        settings: Settings,
        *,
        plan: StackPlan | None = None,
        supervisor: Supervision | None = None,
        servers: Servers | None = None,
        probe: Probe | None = None,
        code: Callable[[], str] = code_hash,
        issuer: Callable[[], bool] | None = None,
        secret: KafkaSecret | None = None,
        ready_timeout_s: float = READY_TIMEOUT_S,
        poll_s: float = STARTING_POLL_S,
    ) -> None:
        self.settings = settings
        self.plan = plan if plan is not None else plan_stack(settings)
        self.supervisor: Supervision = supervisor or Supervisor(settings)
        self.servers: Servers = servers or LocalServers(settings)
        self.probe: Probe = probe or HttpProbe()
        self._code = code
        # The local token issuer's key pair (the cluster's ServiceAccount issuer stands here).
        self._issuer = issuer or identity.LocalIssuer(settings.identity_dir,
                                                      settings.oidc_issuer).create  # fmt: skip
        # The Kafka Secrets the manifests name, from the state dir (a cluster's kind-up makes them).
        self._secret = secret or functools.partial(
            local_secrets.kafka_secret, local_secrets.of(settings)
        )
        self._ready_timeout_s = ready_timeout_s
        self._poll_s = poll_s

    # -- planning ----------------------------------------------------------------------

    def planned_programs(self, reload: bool = False) -> list[Program]:
        """The programs of every function and dispatcher of the plan (running the code of
        today's tree; ``reload``: functions restart when their code changes)."""
        code = self._code()
        settings, secret = self.settings, self._secret
        programs = [
            function_program(fn, settings, code, reload, secret) for fn in self.plan.functions
        ]
        programs += [dispatcher_program(d, settings, code, secret) for d in self.plan.dispatchers]
        return programs

    def programs(self) -> list[str]:
        """Every program of the stack: the servers, the functions, the dispatchers."""
        return programs(self.plan)

    # -- up, down, status ----------------------------------------------------------------

    def up(self, reload: bool = False) -> list[str]:
        """Bring the whole stack up under supervisord, reusing whatever already runs (a
        function or dispatcher whose code changed is restarted); the names it started.
        ``reload``: every function restarts by itself when its code changes (``reloading``);
        a later ``up`` without it puts them back."""
        started = list(self.servers.ensure_up(INFRASTRUCTURE))
        if self._issuer():
            log.info("made the local token issuer's key pair in %s", self.settings.identity_dir)
        sup = self.supervisor
        programs = self.planned_programs(reload)
        with sup.lock("stack"):
            sup.define(programs)
            planned = {p.name for p in programs}
            stale = [n for n in sup.infos() if n.startswith(_STACK_PREFIXES) and n not in planned]
            if stale:
                sup.forget(stale)
            started += self._start_layer([fn.process_name for fn in self.plan.functions])
            _in_parallel(self.wait_function_ready, self.plan.functions)
            started += self._start_layer([d.process_name for d in self.plan.dispatchers])
            _in_parallel(self.wait_dispatcher_ready, self.plan.dispatchers)
        return started

    def down(self) -> list[str]:
        """Stop everything the stack runs (dispatchers, functions, servers, then supervisord
        itself); the names stopped."""
        sup = self.supervisor
        if not sup.is_running():
            self.servers.retire_unsupervised(sup.url)  # what a dead supervisord left behind
            return []
        stopped = sup.stop([d.process_name for d in self.plan.dispatchers])
        stopped += sup.stop([f.process_name for f in self.plan.functions])
        stopped += sup.stop(
            [n for n, i in sup.infos().items() if n not in servers.ALL and i.active]
        )
        stopped += self.servers.stop_all()
        sup.shutdown()
        return stopped

    def status(self) -> list[ProgramInfo]:
        """Every program of the stack (planned or defined) as supervisord sees it."""
        infos = self.supervisor.infos()
        names = [*servers.ALL, *(f.process_name for f in self.plan.functions)]
        names += [d.process_name for d in self.plan.dispatchers]
        names += [n for n in infos if n not in names]
        return [
            infos.get(name) or ProgramInfo(name, "STOPPED", None, None, 0, "not started")
            for name in names
            if name in infos or name not in ("prometheus",)
        ]

    # -- readiness ---------------------------------------------------------------------

    def _start_layer(self, names: Iterable[str]) -> list[str]:
        """Start those of ``names`` that do not run; the names started."""
        started = [name for name in names if self.supervisor.pid(name) is None]
        for name in started:
            self.supervisor.start(name)
        return started

    def _wait(self, name: str, ready: Callable[[], bool], what: str) -> None:
        deadline = time.monotonic() + self._ready_timeout_s
        while not ready():
            if self.supervisor.state(name) == "FATAL":
                raise RuntimeError(
                    f"{what} keeps exiting at start; see {self.supervisor.log_file(name)}"
                )
            if time.monotonic() > deadline:
                raise TimeoutError(f"{what} not ready after {self._ready_timeout_s:.0f}s")
            time.sleep(self._poll_s)

    def wait_function_ready(self, fn: FunctionProcess) -> None:
        what = f"function {fn.service} ({fn.url})"
        self._wait(fn.process_name, lambda: self.probe.healthy(fn.url), what)

    def wait_dispatcher_ready(self, d: DispatcherProcess) -> None:
        what = f"dispatcher {d.source.name} (metrics :{d.metrics_port})"
        ready = lambda: self.probe.port_open(d.host, d.metrics_port)  # noqa: E731
        self._wait(d.process_name, ready, what)

    def answers(self, name: str) -> bool:
        """Whether program ``name`` of the stack answers: a server a real request, a function
        its /healthz, a dispatcher (running) its metrics port."""
        server = self.servers.ready(name)
        if server is not None:
            return server
        for fn in self.plan.functions:
            if fn.process_name == name:
                return self.probe.healthy(fn.url)
        for d in self.plan.dispatchers:
            if d.process_name == name:
                running = self.supervisor.pid(name) is not None
                return running and self.probe.port_open(d.host, d.metrics_port)
        raise KeyError(name)

    def not_ready(self) -> list[str]:
        """The programs of the stack that do not answer yet (empty: every one is ready)."""
        return [name for name in self.programs() if not self.answers(name)]

    def wait_ready(self, timeout: float = READY_TIMEOUT_S) -> None:
        """Return once every program of the stack answers (after a crash, supervisord brings
        it back: nothing here starts anything); TimeoutError naming the laggards otherwise."""
        deadline = time.monotonic() + timeout
        while pending := self.not_ready():
            if time.monotonic() > deadline:
                raise TimeoutError(f"not ready after {timeout:.0f}s: {', '.join(pending)}")
            time.sleep(READY_POLL_S)


def programs(plan: StackPlan) -> list[str]:
    """Every program of the stack: the servers, the functions, the dispatchers."""
    return [
        *INFRASTRUCTURE,
        *(fn.process_name for fn in plan.functions),
        *(d.process_name for d in plan.dispatchers),
    ]


# -- the stack with the real collaborators -------------------------------------------------


def up(settings: Settings, plan: StackPlan | None = None, reload: bool = False) -> list[str]:
    """``Stack.up`` of the state dir's stack."""
    return Stack(settings, plan=plan).up(reload)


def down(settings: Settings, plan: StackPlan | None = None) -> list[str]:
    """``Stack.down`` of the state dir's stack."""
    return Stack(settings, plan=plan).down()


def status(settings: Settings, plan: StackPlan | None = None) -> list[ProgramInfo]:
    """``Stack.status`` of the state dir's stack."""
    return Stack(settings, plan=plan).status()


def answers(settings: Settings, name: str, plan: StackPlan | None = None) -> bool:
    """``Stack.answers`` of the state dir's stack."""
    return Stack(settings, plan=plan).answers(name)


def not_ready(settings: Settings, plan: StackPlan | None = None) -> list[str]:
    """``Stack.not_ready`` of the state dir's stack."""
    return Stack(settings, plan=plan).not_ready()


def wait_ready(settings: Settings, timeout: float = READY_TIMEOUT_S) -> None:
    """``Stack.wait_ready`` of the state dir's stack."""
    Stack(settings).wait_ready(timeout)


def kill(settings: Settings, name: str) -> int | None:
    """SIGKILL one program of the stack with its process group (a crash); its old pid."""
    return servers.kill(settings, name)


def format_status(rows: Iterable[ProgramInfo]) -> str:
    """``make status``: one line per program with its state, pid, uptime and restarts."""
    lines = [f"  {'program':<32} {'state':<9} {'pid':>7}  {'uptime':>8}  restarts"]
    for row in rows:
        uptime = "-" if row.uptime_s is None else _clock(row.uptime_s)
        lines.append(
            f"  {row.name:<32} {row.state:<9} {row.pid or '-':>7}  {uptime:>8}  {row.restarts}"
            + ("" if row.state == "RUNNING" or not row.detail else f"  ({row.detail})")
        )
    return "\n".join(lines)


def _clock(seconds: float) -> str:
    minutes, secs = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}"
