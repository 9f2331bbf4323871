"""The local stack: every function under functions-framework and a dispatcher per KafkaSource.

The plan comes from the manifests (``eventing/``, ``k8s/``) and the ``functions/`` folders:
which functions exist, which KafkaSource feeds which function, with what delivery settings.
Nothing about the topology is written here. Every process is a program of the state dir's
supervisord (``servers/supervision.py``), which restarts whatever exits, as a kubelet would.
"""

from __future__ import annotations

import concurrent.futures
import hashlib
import logging
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import requests

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
# The code a function or dispatcher runs; its hash is in each one's environment.
CODE_FOLDERS = ("minimart", "functions", "eventing", "k8s")
CODE_HASH_VARIABLE = "MINIMART_CODE_HASH"
_STACK_PREFIXES = ("fn-", "dispatch-")
# What `up(reload=True)` watches: a change to a Python file there restarts every function.
RELOAD_FOLDERS = ("minimart", "functions")


@dataclass(frozen=True)
class FunctionProcess:
    service: str
    source: Path
    signature: str
    port: int
    env: tuple[tuple[str, str], ...] = ()  # what this function alone is told

    @property
    def process_name(self) -> str:
        return f"fn-{self.service}"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


@dataclass(frozen=True)
class DispatcherProcess:
    source: KafkaSourceSpec
    sink_url: str
    metrics_port: int

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
        functions.append(FunctionProcess(folder.name, main, signature_of(main), port))
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
    dispatchers = []
    for index, source in enumerate(topology.sources):
        if source.sink_service not in by_service:
            raise KeyError(f"{source.name}: sink {source.sink_service!r} has no functions/ folder")
        dispatchers.append(
            DispatcherProcess(
                source=source,
                sink_url=by_service[source.sink_service].url + "/",
                metrics_port=settings.function_port_base + 100 + index,
            )
        )
    return StackPlan(tuple(functions), tuple(dispatchers))


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


def function_program(
    fn: FunctionProcess, settings: Settings, code: str, reload: bool = False
) -> Program:
    argv: tuple[str, ...] = (
        str(Path(_python()).parent / "functions-framework"),
        "--target=handle",
        f"--source={fn.source}",
        f"--signature-type={fn.signature}",
        "--host=127.0.0.1",
        f"--port={fn.port}",
    )
    if reload:
        argv = reloading(argv)
    env = {**_env(settings, fn.service), **dict(fn.env), CODE_HASH_VARIABLE: code}
    return Program(fn.process_name, argv, PROJECT_ROOT, env, priority=300)


def dispatcher_program(dispatcher: DispatcherProcess, settings: Settings, code: str) -> Program:
    argv = (
        _python(),
        "-m",
        "minimart.local.dispatcher",
        f"--source={dispatcher.source.name}",
        f"--sink-url={dispatcher.sink_url}",
        f"--metrics-port={dispatcher.metrics_port}",
    )
    env = {**_env(settings, dispatcher.process_name), CODE_HASH_VARIABLE: code}
    # It finishes the delivery in flight (up to the delivery timeout) and commits on SIGTERM.
    grace = (dispatcher.source.delivery.timeout_s or 30.0) + 10.0
    return Program(dispatcher.process_name, argv, PROJECT_ROOT, env, stop_wait_s=grace,
                   priority=400)  # fmt: skip


def _healthy(url: str) -> bool:
    try:
        return requests.get(url + "/healthz", timeout=2).status_code == 200
    except requests.RequestException:
        return False


def _wait(sup: Supervisor, name: str, ready: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + READY_TIMEOUT_S
    while not ready():
        if sup.state(name) == "FATAL":
            raise RuntimeError(f"{what} keeps exiting at start; see {sup.log_file(name)}")
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what} not ready after {READY_TIMEOUT_S:.0f}s")
        time.sleep(0.1)


def wait_function_ready(fn: FunctionProcess, settings: Settings) -> None:
    sup = Supervisor(settings)
    _wait(sup, fn.process_name, lambda: _healthy(fn.url), f"function {fn.service} ({fn.url})")


def wait_dispatcher_ready(dispatcher: DispatcherProcess, settings: Settings) -> None:
    sup = Supervisor(settings)
    port = dispatcher.metrics_port
    _wait(sup, dispatcher.process_name, lambda: process.port_open("127.0.0.1", port),
          f"dispatcher {dispatcher.source.name} (metrics :{port})")  # fmt: skip


def _start_layer(sup: Supervisor, names: Iterable[str]) -> list[str]:
    """Start those of ``names`` that do not run; the names started."""
    started = [name for name in names if sup.pid(name) is None]
    for name in started:
        sup.start(name)
    return started


def _in_parallel(wait: Callable[[Any], None], items: Sequence[Any]) -> None:
    with concurrent.futures.ThreadPoolExecutor(max(1, len(items))) as pool:
        list(pool.map(wait, items))


def up(settings: Settings, plan: StackPlan | None = None, reload: bool = False) -> list[str]:
    """Bring the whole stack up under supervisord, reusing whatever already runs (a function
    or dispatcher whose code changed is restarted); the names it started. ``reload``: every
    function restarts by itself when its code changes (``reloading``); a later ``up``
    without it puts them back."""
    plan = plan or plan_stack(settings)
    started = list(servers.ensure_up(settings, INFRASTRUCTURE))
    sup = Supervisor(settings)
    code = code_hash()
    programs = [function_program(fn, settings, code, reload) for fn in plan.functions]
    programs += [dispatcher_program(d, settings, code) for d in plan.dispatchers]
    with sup.lock("stack"):
        sup.define(programs)
        planned = {p.name for p in programs}
        stale = [n for n in sup.infos() if n.startswith(_STACK_PREFIXES) and n not in planned]
        if stale:
            sup.forget(stale)
        started += _start_layer(sup, [fn.process_name for fn in plan.functions])
        _in_parallel(lambda fn: wait_function_ready(fn, settings), plan.functions)
        started += _start_layer(sup, [d.process_name for d in plan.dispatchers])
        _in_parallel(lambda d: wait_dispatcher_ready(d, settings), plan.dispatchers)
    return started


def down(settings: Settings, plan: StackPlan | None = None) -> list[str]:
    """Stop everything the stack runs (dispatchers, functions, servers, then supervisord
    itself); the names stopped."""
    plan = plan or plan_stack(settings)
    sup = Supervisor(settings)
    if not sup.is_running():
        retire_unsupervised(settings, sup.url)  # what a dead supervisord left behind
        return []
    stopped = sup.stop([d.process_name for d in plan.dispatchers])
    stopped += sup.stop([f.process_name for f in plan.functions])
    stopped += sup.stop([n for n, i in sup.infos().items() if n not in servers.ALL and i.active])
    stopped += servers.stop_all(settings)
    sup.shutdown()
    return stopped


def status(settings: Settings, plan: StackPlan | None = None) -> list[ProgramInfo]:
    """Every program of the stack (planned or defined) as supervisord sees it."""
    plan = plan or plan_stack(settings)
    infos = Supervisor(settings).infos()
    names = [*servers.ALL, *(f.process_name for f in plan.functions)]
    names += [d.process_name for d in plan.dispatchers]
    names += [n for n in infos if n not in names]
    return [
        infos.get(name) or ProgramInfo(name, "STOPPED", None, None, 0, "not started")
        for name in names
        if name in infos or name not in ("prometheus",)
    ]


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


def kill(settings: Settings, name: str) -> int | None:
    """SIGKILL one program of the stack with its process group (a crash); its old pid."""
    return servers.kill(settings, name)


def answers(settings: Settings, name: str, plan: StackPlan | None = None) -> bool:
    """Whether program ``name`` of the stack answers: a server a real request, a function
    its /healthz, a dispatcher (running) its metrics port."""
    plan = plan or plan_stack(settings)
    server = servers.infrastructure(settings).get(name)
    if server is not None:
        return _ready_server(server)
    for fn in plan.functions:
        if fn.process_name == name:
            return _healthy(fn.url)
    for d in plan.dispatchers:
        if d.process_name == name:
            running = Supervisor(settings).pid(name) is not None
            return running and process.port_open("127.0.0.1", d.metrics_port)
    raise KeyError(name)


def programs(plan: StackPlan) -> list[str]:
    """Every program of the stack: the servers, the functions, the dispatchers."""
    return [
        *INFRASTRUCTURE,
        *(fn.process_name for fn in plan.functions),
        *(d.process_name for d in plan.dispatchers),
    ]


def not_ready(settings: Settings, plan: StackPlan | None = None) -> list[str]:
    """The programs of the stack that do not answer yet (empty: every one is ready)."""
    plan = plan or plan_stack(settings)
    return [name for name in programs(plan) if not answers(settings, name, plan)]


def _ready_server(server: servers.ManagedServer) -> bool:
    try:
        return server.is_up() and server.is_ready()
    except Exception:  # a restarting server refuses in many ways
        return False


def wait_ready(settings: Settings, timeout: float = READY_TIMEOUT_S) -> None:
    """Return once every program of the stack answers (after a crash, supervisord brings it
    back: nothing here starts anything); TimeoutError naming the laggards otherwise."""
    plan = plan_stack(settings)
    deadline = time.monotonic() + timeout
    while pending := not_ready(settings, plan):
        if time.monotonic() > deadline:
            raise TimeoutError(f"not ready after {timeout:.0f}s: {', '.join(pending)}")
        time.sleep(0.2)
