"""``python -m minimart.local.servers up|down|status|restart [NAME...]`` (used by mk/servers.mk)."""

from __future__ import annotations

import argparse
import logging
import sys
import time

from minimart.local import servers
from minimart.settings import Settings


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m minimart.local.servers")
    parser.add_argument("action", choices=["up", "down", "status", "restart"])
    parser.add_argument("names", nargs="*", help=f"servers among {', '.join(servers.ALL)}")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    logging.getLogger("kafka").setLevel(logging.WARNING)
    settings = Settings.from_env()
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


if __name__ == "__main__":
    sys.exit(main())
