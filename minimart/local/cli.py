"""The local runtime's subcommands of ``minimart``: up, down, status, dev, prometheus, and
``servers`` (the servers alone: ``mk/servers.mk``).

This module declares their parsers only; what each runs is in ``local/commands.py``, imported
when one of them runs (``runtime``). So ``minimart`` and the console's commands start without
the runtime's modules and their dependencies (psutil, supervisord, httptools: the ``local``
extra), which a console against a cluster does not install.
"""

from __future__ import annotations

import argparse
import importlib
from collections.abc import Callable
from typing import Any

from minimart.settings import Settings

Run = Callable[[argparse.Namespace, Settings], int]
# The servers of `minimart servers` (servers.ALL: tests/unit/test_cli.py checks they agree).
SERVERS = ("postgres", "redis", "mongo", "kafka", "prometheus")


def runtime(name: str) -> Run:
    """The runner ``name`` of ``minimart.local.commands``, imported when it runs."""

    def run(args: argparse.Namespace, settings: Settings) -> int:
        try:
            commands = importlib.import_module("minimart.local.commands")
        except ModuleNotFoundError as missing:
            if (missing.name or "minimart").split(".")[0] == "minimart":
                raise
            raise SystemExit(
                f"the local runtime needs {missing.name!r}: install the `local` extra"
                " (pip install 'minimart[local]')"
            ) from missing
        return int(getattr(commands, name)(args, settings))

    run.__qualname__ = f"runtime({name!r})"
    return run


def add_commands(sub: Any) -> None:
    """Register the runtime's subcommands on ``sub`` (each runs ``args.run(args, settings)``)."""
    up = sub.add_parser("up", help="start servers, functions and dispatchers (reuses what runs)")
    up.add_argument("--with-prometheus", action="store_true", help="and Prometheus scraping them")
    up.set_defaults(run=runtime("up"))
    sub.add_parser("down", help="stop everything the stack started").set_defaults(
        run=runtime("down")
    )
    sub.add_parser("status", help="what runs").set_defaults(run=runtime("status"))
    dev = sub.add_parser(
        "dev", help="the stack with every function restarting when its code changes"
    )
    dev.add_argument("--no-follow", action="store_true", help="return once up (no log lines)")
    dev.set_defaults(run=runtime("dev"))
    sub.add_parser(
        "prometheus", help="start Prometheus scraping every function and dispatcher"
    ).set_defaults(run=runtime("prometheus"))
    only = sub.add_parser("servers", help="the servers alone: up, down, status, restart")
    only.add_argument("action", choices=["up", "down", "status", "restart"])
    only.add_argument("names", nargs="*", help=f"servers among {', '.join(SERVERS)}")
    only.set_defaults(run=runtime("servers_only"))
