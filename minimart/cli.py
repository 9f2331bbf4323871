"""``minimart COMMAND``: the one command line of the ops console and the local runtime.

The ops console (``minimart.console``: record, replay, deadletters, redrive, check, trace,
order) works against any running minimart, local or a cluster; the local runtime
(``minimart.local``: up, down, status, prometheus) runs the manifests on this machine;
``demo`` composes both. One parser; every subcommand sets ``run``, called one way:
``args.run(args, settings)``. Logging is set up here, once, where the process starts. The
runtime's commands import the runtime when they run (``local/cli.py``), so the console's
commands need none of its dependencies (``pip install .[console]``).
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import sys

from minimart.console import commands as console
from minimart.console import orders
from minimart.console.client import OrderClient
from minimart.local import cli as runtime
from minimart.settings import Settings

_stack_up = runtime.runtime("stack_up")


def _demo(args: argparse.Namespace, settings: Settings) -> int:
    _stack_up(args, settings)
    orders.run_demo(OrderClient(orders.ingress_url(settings)), settings)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="minimart",
        description="The ops console of any running minimart (local or a cluster) and the "
        "local runtime. Addresses come from MINIMART_* variables or the commands' flags.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    console.add_commands(sub)
    runtime.add_commands(sub)
    sub.add_parser(
        "demo", help="bring the local stack up and run one order down each saga path"
    ).set_defaults(run=_demo)
    return parser


def settings_for(args: argparse.Namespace, env: Settings) -> Settings:
    """``env`` with every setting given as a flag (a flag's dest is its Settings field)."""
    given = {
        name: getattr(args, name)
        for name in Settings.declarations()
        if getattr(args, name, None) is not None
    }
    return dataclasses.replace(env, **given) if given else env


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    logging.getLogger("kafka").setLevel(logging.WARNING)
    settings = settings_for(args, Settings.from_env())
    return int(args.run(args, settings))


if __name__ == "__main__":
    sys.exit(main())
