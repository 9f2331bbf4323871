"""What the local runtime's subcommands of ``minimart`` run (their parser: ``local/cli.py``):
up, down, status, dev, prometheus, servers, and the demo's first half. Each builds one
``stack.Stack`` and asks it."""

from __future__ import annotations

import argparse
import time
from collections.abc import Sequence
from pathlib import Path

from minimart.local import observe, servers
from minimart.local.stack import RELOAD_FOLDERS, Stack, format_status
from minimart.settings import Settings

FOLLOW_POLL_S = 0.2


def up(args: argparse.Namespace, settings: Settings) -> int:
    started = Stack(settings).up()
    print(f"minimart is up: http://{settings.host}:{settings.ingress_port}/orders")
    print("started: " + (", ".join(started) or "nothing (all already running)"))
    if args.with_prometheus:
        prometheus(args, settings)
    return 0


def down(args: argparse.Namespace, settings: Settings) -> int:
    print("stopped: " + (", ".join(Stack(settings).down()) or "nothing"))
    return 0


def status(args: argparse.Namespace, settings: Settings) -> int:
    print(format_status(Stack(settings).status()))
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


def dev(args: argparse.Namespace, settings: Settings) -> int:
    stack = Stack(settings)
    started = stack.up(reload=True)
    print(f"minimart is up: http://{settings.host}:{settings.ingress_port}/orders")
    print("started: " + (", ".join(started) or "nothing (all already running)"))
    watched = ", ".join(f"{folder}/" for folder in RELOAD_FOLDERS)
    print(f"every function restarts when a Python file under {watched} changes")
    if args.no_follow:
        return 0
    print("following the functions' logs (Ctrl-C stops following; the stack keeps running,")
    print("`make up` puts the functions back to no reloading, `make down` stops everything)")
    logs = [(fn.service, stack.supervisor.log_file(fn.process_name)) for fn in stack.plan.functions]
    try:
        follow(logs)
    except KeyboardInterrupt:
        return 0
    return 0


def prometheus(args: argparse.Namespace, settings: Settings) -> int:
    path = observe.start_prometheus(settings)
    print(f"Prometheus: http://{settings.host}:{settings.prometheus_port} (config {path})")
    return 0


def servers_only(args: argparse.Namespace, settings: Settings) -> int:
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


def stack_up(args: argparse.Namespace, settings: Settings) -> int:
    """``demo``'s first half: the stack up, as ``up`` without its output."""
    Stack(settings).up()
    return 0
