"""Serve one function as the image does: functions-framework's server without a control socket.

The same as ``functions-framework --target T --source S --signature-type X --host H --port P``
(its command line builds the app with ``create_app`` and runs ``create_server(app, debug)``),
with one gunicorn setting more: ``control_socket_disable``. gunicorn 25.1 and later open a
control socket by default, under ``$XDG_RUNTIME_DIR`` or ``$HOME/.gunicorn/``; the image's
user has the home ``/nonexistent`` and a read-only root, so every start logged a failure, and
no pod needs a management socket. functions-framework's command line cannot pass a gunicorn
setting (its GunicornApplication reads neither ``GUNICORN_CMD_ARGS`` nor a config file).

    python -m minimart.serve --target handle --source functions/order/main.py \\
        --signature-type http --host 0.0.0.0 --port 8080
"""

from __future__ import annotations

import argparse

from functions_framework import create_app
from functions_framework._http import create_server

# Settings of the pinned gunicorn (requirements.lock) passed to its application.
# keepalive: how long an idle kept-alive connection (the sender's, between deliveries) stays
# open; gunicorn's default is 2 s. A stopped-and-continued worker (SIGSTOP in the fault suite)
# wakes with its poll interrupted and, past that deadline, closed the connection holding an
# unread delivery instead of answering it (gthread closes expired kept-alive connections after
# an empty poll); with 2 s it also closed the dispatchers' connections between most deliveries.
GUNICORN_OPTIONS = {"control_socket_disable": True, "keepalive": 75}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m minimart.serve", description=__doc__)
    parser.add_argument("--target", required=True)
    parser.add_argument("--source", required=True)
    parser.add_argument("--signature-type", choices=("http", "cloudevent"), required=True)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8080)
    args = parser.parse_args(argv)
    app = create_app(args.target, args.source, args.signature_type)  # type: ignore[no-untyped-call]
    server = create_server(app, False, **GUNICORN_OPTIONS)  # type: ignore[no-untyped-call]
    server.run(args.host, args.port)


if __name__ == "__main__":
    main()
