"""The local runtime's subcommands of ``minimart``: up, down, status, dev, prometheus, and
``servers`` (the servers alone: ``mk/servers.mk``)."""

from __future__ import annotations

import argparse
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from minimart.local import observe, servers, stack
from minimart.local.servers.supervision import Supervisor
from minimart.settings import Settings

FOLLOW_POLL_S = 0.2


def _up(args: argparse.Namespace, settings: Settings) -> int:
    started = stack.up(settings)
    print(f"minimart is up: http://127.0.0.1:{settings.ingress_port}/orders")
    print("started: " + (", ".join(started) or "nothing (all already running)"))
    if args.with_prometheus:
        _prometheus(args, settings)
    return 0


def _down(args: argparse.Namespace, settings: Settings) -> int:
    print("stopped: " + (", ".join(stack.down(settings)) or "nothing"))
    return 0


def _status(args: argparse.Namespace, settings: Settings) -> int:
    print(stack.format_status(stack.status(settings)))
    return 0


def follow(logs: Sequence[tuple[str, Path]], poll_s: float = FOLLOW_POLL_S) -> None:
    """Print the lines added to each log from now on, prefixed by its name (until Ctrl-C)."""
    width = max((len(name) for name, _ in logs), default=0)
    offsets = {path: path.stat().st_size if path.exists() else 0 for _, path in logs}
    while True:
        for name, path in logs:
            if not path.exists():
                continue
            if path.stat().st_size < offsets[path]:  # rotated
                offsets[path] = 0
            with path.open("rb") as log:
                log.seek(offsets[path])
                chunk = log.read()
            complete = chunk[: chunk.rfind(b"\n") + 1]
            offsets[path] += len(complete)
            for line in complete.decode("utf-8", "replace").splitlines():
                print(f"{name:<{width}} | {line}", flush=True)
        time.sleep(poll_s)


def _dev(args: argparse.Namespace, settings: Settings) -> int:
    plan = stack.plan_stack(settings)
    started = stack.up(settings, plan, reload=True)
    print(f"minimart is up: http://127.0.0.1:{settings.ingress_port}/orders")
    print("started: " + (", ".join(started) or "nothing (all already running)"))
    watched = ", ".join(f"{folder}/" for folder in stack.RELOAD_FOLDERS)
    print(f"every function restarts when a Python file under {watched} changes")
    if args.no_follow:
        return 0
    print("following the functions' logs (Ctrl-C stops following; the stack keeps running,")
    print("`make up` puts the functions back to no reloading, `make down` stops everything)")
    sup = Supervisor(settings)
    try:
        follow([(fn.service, sup.log_file(fn.process_name)) for fn in plan.functions])
    except KeyboardInterrupt:
        return 0
    return 0


def _prometheus(args: argparse.Namespace, settings: Settings) -> int:
    path = observe.start_prometheus(settings)
    print(f"Prometheus: http://127.0.0.1:{settings.prometheus_port} (config {path})")
    return 0


def _servers(args: argparse.Namespace, settings: Settings) -> int:
    began = time.monotonic()
    if args.action == "up":
        started = servers.ensure_up(settings, args.names or servers.DEFAULT)
        print(f"started {started or 'nothing'} in {time.monotonic() - began:.1f}s")
    elif args.action == "down":
        print(f"stopped {servers.stop_all(settings, args.names or None) or 'nothing'}")
    elif args.action == "restart":
        for name in args.names:
            servers.restart(settings, name)
    else:
        for name, server in servers.infrastructure(settings).items():
            if args.names and name not in args.names:
                continue
            info = servers.supervised(settings, name)
            state = "up" if server.is_up() else "down"
            where = f"{server.host}:{server.port:<6}"
            if info is None:
                print(f"{name:<11} {state:<5} {where} not supervised")
            else:
                print(f"{name:<11} {state:<5} {where} {info.state} pid={info.pid or '-'}"
                      f" restarts={info.restarts}")  # fmt: skip
    return 0


def add_commands(sub: Any) -> None:
    """Register the runtime's subcommands on ``sub`` (each runs ``args.run(args, settings)``)."""
    up = sub.add_parser("up", help="start servers, functions and dispatchers (reuses what runs)")
    up.add_argument("--with-prometheus", action="store_true", help="and Prometheus scraping them")
    up.set_defaults(run=_up)
    sub.add_parser("down", help="stop everything the stack started").set_defaults(run=_down)
    sub.add_parser("status", help="what runs").set_defaults(run=_status)
    dev = sub.add_parser(
        "dev", help="the stack with every function restarting when its code changes"
    )
    dev.add_argument("--no-follow", action="store_true", help="return once up (no log lines)")
    dev.set_defaults(run=_dev)
    sub.add_parser(
        "prometheus", help="start Prometheus scraping every function and dispatcher"
    ).set_defaults(run=_prometheus)
    only = sub.add_parser("servers", help="the servers alone: up, down, status, restart")
    only.add_argument("action", choices=["up", "down", "status", "restart"])
    only.add_argument("names", nargs="*", help=f"servers among {', '.join(servers.ALL)}")
    only.set_defaults(run=_servers)
