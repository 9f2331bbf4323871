"""The local stack: every function under functions-framework and a dispatcher per KafkaSource.

The plan comes from the manifests (``eventing/``, ``k8s/``) and the ``functions/`` folders:
which functions exist, which KafkaSource feeds which function, with what delivery settings.
Nothing about the topology is written here.
"""

from __future__ import annotations

import concurrent.futures
import logging
import sys
import time
from dataclasses import dataclass, replace
from pathlib import Path

import requests

from minimart.local import servers
from minimart.local.servers import process
from minimart.local.servers.base import child_env
from minimart.manifests import KafkaSourceSpec, Topology, load_topology
from minimart.settings import PROJECT_ROOT, Settings

log = logging.getLogger(__name__)

INGRESS = "order"  # the one HTTP function (the public ingress); the others take CloudEvents
INFRASTRUCTURE = ("postgres", "redis", "mongo", "kafka")
READY_TIMEOUT_S = 90.0


@dataclass(frozen=True)
class FunctionProcess:
    service: str
    source: Path
    signature: str
    port: int

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
            port, signature = settings.ingress_port, "http"
        else:
            port, signature = settings.function_port_base + others.index(folder), "cloudevent"
        functions.append(FunctionProcess(folder.name, folder / "main.py", signature, port))
    by_service = {fn.service: fn for fn in functions}
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


def _python() -> str:
    return sys.executable


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


def _healthy(url: str) -> bool:
    try:
        return requests.get(url + "/healthz", timeout=2).status_code == 200
    except requests.RequestException:
        return False


def _start_once(name: str, argv: list[str], service: str, settings: Settings) -> bool:
    """Spawn ``name`` unless it runs (two `up`s at once start it once); True if started."""
    with process.lock(name, settings):
        if process.is_running(name, settings):
            return False
        process.spawn(name, argv, env=_env(settings, service), cwd=PROJECT_ROOT, settings=settings)
    return True


def start_function(fn: FunctionProcess, settings: Settings) -> bool:
    """Start one function unless it runs; True if started."""
    argv = [
        str(Path(_python()).parent / "functions-framework"),
        "--target=handle",
        f"--source={fn.source}",
        f"--signature-type={fn.signature}",
        "--host=127.0.0.1",
        f"--port={fn.port}",
    ]
    return _start_once(fn.process_name, argv, fn.service, settings)


def wait_function_ready(fn: FunctionProcess, settings: Settings) -> None:
    deadline = time.monotonic() + READY_TIMEOUT_S
    while not _healthy(fn.url):
        if not process.is_running(fn.process_name, settings):
            log_file = process.log_path(fn.process_name, settings)
            raise RuntimeError(f"function {fn.service} exited; see {log_file}")
        if time.monotonic() > deadline:
            raise TimeoutError(f"function {fn.service} not ready at {fn.url}/healthz")
        time.sleep(0.1)


def start_dispatcher(dispatcher: DispatcherProcess, settings: Settings) -> bool:
    """Start one dispatcher unless it runs; True if started."""
    argv = [
        _python(),
        "-m",
        "minimart.local.dispatcher",
        f"--source={dispatcher.source.name}",
        f"--sink-url={dispatcher.sink_url}",
        f"--metrics-port={dispatcher.metrics_port}",
    ]
    return _start_once(dispatcher.process_name, argv, dispatcher.process_name, settings)


def up(settings: Settings, plan: StackPlan | None = None) -> list[str]:
    """Bring the whole stack up, reusing whatever already runs; the names it started."""
    plan = plan or plan_stack(settings)
    started = list(servers.ensure_up(settings, INFRASTRUCTURE))
    started += [fn.process_name for fn in plan.functions if start_function(fn, settings)]
    with concurrent.futures.ThreadPoolExecutor(len(plan.functions)) as pool:
        list(pool.map(lambda fn: wait_function_ready(fn, settings), plan.functions))
    started += [d.process_name for d in plan.dispatchers if start_dispatcher(d, settings)]
    for dispatcher in plan.dispatchers:
        process.wait_for_port("127.0.0.1", dispatcher.metrics_port, READY_TIMEOUT_S)
    return started


def down(settings: Settings, plan: StackPlan | None = None) -> list[str]:
    """Stop everything the stack runs (dispatchers, functions, servers); the names stopped."""
    plan = plan or plan_stack(settings)
    names = [d.process_name for d in plan.dispatchers] + [f.process_name for f in plan.functions]
    stopped = [name for name in names if process.stop_process(name, settings)]
    stopped += servers.stop_all(settings)
    return stopped


def status(settings: Settings, plan: StackPlan | None = None) -> dict[str, bool]:
    plan = plan or plan_stack(settings)
    state = {name: server.is_up() for name, server in servers.infrastructure(settings).items()}
    for fn in plan.functions:
        state[fn.process_name] = process.is_running(fn.process_name, settings)
    for dispatcher in plan.dispatchers:
        state[dispatcher.process_name] = process.is_running(dispatcher.process_name, settings)
    return state
