"""The local runtime's subcommands of ``minimart``: up, down, status, prometheus."""

from __future__ import annotations

import argparse
from typing import Any

from minimart.local import observe, stack
from minimart.settings import Settings


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


def _prometheus(args: argparse.Namespace, settings: Settings) -> int:
    path = observe.start_prometheus(settings)
    print(f"Prometheus: http://127.0.0.1:{settings.prometheus_port} (config {path})")
    return 0


def add_commands(sub: Any) -> None:
    """Register the runtime's subcommands on ``sub`` (each runs ``args.run(args, settings)``)."""
    up = sub.add_parser("up", help="start servers, functions and dispatchers (reuses what runs)")
    up.add_argument("--with-prometheus", action="store_true", help="and Prometheus scraping them")
    up.set_defaults(run=_up)
    sub.add_parser("down", help="stop everything the stack started").set_defaults(run=_down)
    sub.add_parser("status", help="what runs").set_defaults(run=_status)
    sub.add_parser(
        "prometheus", help="start Prometheus scraping every function and dispatcher"
    ).set_defaults(run=_prometheus)
