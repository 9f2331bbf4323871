"""The ops console's subcommands of ``minimart``: record, replay, deadletters, redrive, check,
trace and order. Each works against any running minimart: the local stack by default, a
cluster through its addresses (flags or ``MINIMART_*`` variables, e.g. over
``kubectl port-forward``; docs/deploy.md)."""

from __future__ import annotations

import argparse
import json
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from minimart.console import checker, orders, replay
from minimart.console.books import DeadLetterFilter
from minimart.console.client import OrderClient
from minimart.console.trace import print_order_trace
from minimart.local_stores import local_store_settings
from minimart.settings import Settings

# The addresses a console command may be given as flags (``--orders-dsn`` ...): each is the
# ``Settings`` field of that name, so a flag overrides its environment variable.
ADDRESSES = {
    "kafka_bootstrap": "Kafka bootstrap servers (host:port,...)",
    "orders_dsn": "PostgreSQL DSN of the orders database",
    "inventory_dsn": "PostgreSQL DSN of the inventory database",
    "payments_dsn": "PostgreSQL DSN of the payments database",
    "mongo_url": "MongoDB URL of the shipments database",
    "redis_url": "Redis URL of the notification stream",
}


def _instant(text: str) -> datetime:
    """An ISO 8601 time; one without an offset is UTC (records' timestamps are aware)."""
    moment = datetime.fromisoformat(text)
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


def addresses() -> argparse.ArgumentParser:
    """The address flags, for the commands that talk to Kafka or the stores."""
    parent = argparse.ArgumentParser(add_help=False)
    group = parent.add_argument_group("addresses (default: MINIMART_* variables, else local)")
    for name, what in ADDRESSES.items():
        group.add_argument(f"--{name.replace('_', '-')}", dest=name, metavar="ADDR", help=what)
    return parent


def _check(args: argparse.Namespace, settings: Settings) -> int:
    report = checker.wait_for_books(
        local_store_settings(settings),
        timeout=args.wait,
        order_ids=args.order_ids,
        since=args.since,
        in_flight_deadline_s=args.deadline,
        expected_dead_letters=_allowed(args),
    )
    print(report.summary())
    return 0 if report.ok else 1


def _allowed(args: argparse.Namespace) -> DeadLetterFilter:
    ids = set(args.allowed)
    prefixes = tuple(args.allowed_prefixes)

    def allowed(letter: replay.DeadLetter) -> bool:
        key = (letter.record.key or b"").decode("utf-8", errors="replace")
        return letter.event_id in ids or bool(
            prefixes and (letter.event_id.startswith(prefixes) or key.startswith(prefixes))
        )

    return allowed


def _record(args: argparse.Namespace, settings: Settings) -> int:
    records = replay.record(settings, args.topics or replay.SAGA_TOPICS, args.order_ids)
    print(f"recorded {replay.save(records, args.file)} events to {args.file}")
    return 0


def _replay(args: argparse.Namespace, settings: Settings) -> int:
    records = replay.load(args.file)
    if args.types:
        records = [r for r in records if r.event_type in set(args.types)]
    if args.http:
        if not args.function:
            print("replay --http needs --function NAME: the function the console's token is for")
            return 2
        as_console = (
            replay.token_from(args.token_file)
            if args.token_file
            else replay.console_identity(settings, args.function)
        )
        results = replay.replay_to_http(args.http, records, args.rate, authorization=as_console)
        for result in results:
            print(f"  {result.status}  {result.event_id}  {result.body[:120]}")
        return 0 if all(200 <= r.status < 300 for r in results) else 1
    print(f"replayed {replay.replay_to_kafka(settings, records, args.rate)} events to Kafka")
    return 0


def _deadletters(args: argparse.Namespace, settings: Settings) -> int:
    letters = replay.read_dead_letters(settings)
    for letter in letters:
        if args.json:
            print(json.dumps({"id": letter.event_id, "type": letter.event_type,
                              "orderId": letter.order_id, "code": letter.code,
                              "destination": letter.destination, "data": letter.data,
                              "topic": letter.record.topic, "parked": letter.parked,
                              "time": letter.timestamp.isoformat()}))  # fmt: skip
        else:
            parked = " [parked]" if letter.parked else ""
            print(f"{letter.timestamp:%Y-%m-%d %H:%M:%S} {letter.event_id} "
                  f"{letter.event_type}{parked}: {letter.reason}")  # fmt: skip
    print(f"{len(letters)} dead letters", file=sys.stderr)
    return 0


def _redrive(args: argparse.Namespace, settings: Settings) -> int:
    letters = replay.read_dead_letters(settings)
    if args.ids:
        letters = [x for x in letters if x.event_id in set(args.ids)]
    for outcome in replay.redrive(settings, letters, args.rate):
        print(f"  {outcome.event_id} -> {outcome.topic or '-'}: {outcome.note}")
    return 0


def _trace(args: argparse.Namespace, settings: Settings) -> int:
    return print_order_trace(settings, args.order_id, args.wait)


def _order(args: argparse.Namespace, settings: Settings) -> int:
    address = {**orders.ADDRESS, "country": args.country, "postalCode": args.postal_code}
    items = [{"sku": args.sku, "quantity": args.quantity}]
    client = OrderClient(args.ingress_url or orders.ingress_url(settings))
    orders.run_order(client, settings, args.customer, items, address)
    return 0


def add_commands(sub: Any) -> None:
    """Register the console's subcommands on ``sub`` (each runs ``args.run(args, settings)``)."""
    stores = [addresses()]
    check = sub.add_parser(
        "check", parents=stores, help="check the books: invariants over every store"
    )
    check.add_argument("--order-id", action="append", dest="order_ids", help="scope (repeat)")
    check.add_argument(
        "--since", type=_instant, help="orders created since (ISO 8601; no offset: UTC)"
    )
    check.add_argument(
        "--deadline",
        type=float,
        default=checker.DEFAULT_IN_FLIGHT_DEADLINE_S,
        help="seconds an order may stay in flight",
    )
    check.add_argument(
        "--wait",
        type=float,
        default=0.0,
        help="poll up to this many seconds for in-flight orders to settle",
    )
    check.add_argument(
        "--allow-dead-letter",
        action="append",
        default=[],
        dest="allowed",
        help="an expected dead letter's event id (repeat)",
    )
    check.add_argument(
        "--allow-dead-letter-prefix",
        action="append",
        default=[],
        dest="allowed_prefixes",
        help="expected dead letters: event id or key starts with this (repeat)",
    )
    check.set_defaults(run=_check)

    rec = sub.add_parser(
        "record", parents=stores, help="capture the saga topics' CloudEvents to JSON lines"
    )
    rec.add_argument("file", type=Path)
    rec.add_argument("--order-id", action="append", dest="order_ids", help="only these orders")
    rec.add_argument("--topic", action="append", dest="topics", help="default: every saga topic")
    rec.set_defaults(run=_record)

    rep = sub.add_parser(
        "replay", parents=stores, help="send a recording back to Kafka, or to one function"
    )
    rep.add_argument("file", type=Path)
    rep.add_argument("--rate", type=float, default=None, help="events per second (default: max)")
    rep.add_argument("--http", metavar="URL", help="POST to this function instead of Kafka")
    rep.add_argument(
        "--function", help="with --http: the function at URL (the audience of the console's token)"
    )
    rep.add_argument(
        "--token-file",
        type=Path,
        help="with --http: send this token (in a cluster: `kubectl -n minimart create token "
        "minimart-console --audience serving.knative.dev/service/minimart/NAME`) instead of "
        "one of the local issuer",
    )
    rep.add_argument("--type", action="append", dest="types", help="only these event types")
    rep.set_defaults(run=_replay)

    dead = sub.add_parser(
        "deadletters", parents=stores, help="list dead letters with their knativeerror* reasons"
    )
    dead.add_argument("--json", action="store_true")
    dead.set_defaults(run=_deadletters)

    red = sub.add_parser(
        "redrive", parents=stores, help="re-publish dead letters to their original topics"
    )
    red.add_argument("--id", action="append", dest="ids", help="only these event ids (repeat)")
    red.add_argument("--rate", type=float, default=None)
    red.set_defaults(run=_redrive)

    trace = sub.add_parser("trace", help="print an order's trace (span tree across processes)")
    trace.add_argument("order_id")
    trace.add_argument(
        "--wait", type=float, default=2.0, help="seconds to wait for the spans to be written"
    )
    trace.add_argument(
        "--state-dir", type=Path, dest="state_dir", help="where the trace files are (traces/)"
    )
    trace.set_defaults(run=_trace)

    order = sub.add_parser(
        "order", parents=stores, help="place one order and follow it to its final state"
    )
    order.add_argument("--ingress-url", help="the order API (default: the local ingress)")
    order.add_argument("--customer", type=int, default=7)
    order.add_argument("--sku", default="SKU-1001")
    order.add_argument("--quantity", type=int, default=1)
    order.add_argument("--country", default="US")
    order.add_argument("--postal-code", default="12345")
    order.set_defaults(run=_order)
