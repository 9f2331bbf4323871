"""Operator subcommands of ``python -m minimart.local``: check, record, replay, deadletters,
redrive. Kept apart from ``cli.py`` so the stack commands stay short."""

from __future__ import annotations

import argparse
import json
import sys
from datetime import datetime
from pathlib import Path
from typing import Any

from minimart.console import checker, replay
from minimart.console.books import DeadLetterFilter
from minimart.settings import Settings

COMMANDS = ("check", "record", "replay", "deadletters", "redrive")


def add_commands(sub: Any) -> None:
    check = sub.add_parser("check", help="check the books: invariants over every store")
    check.add_argument("--order-id", action="append", dest="order_ids", help="scope (repeat)")
    check.add_argument("--since", type=datetime.fromisoformat, help="orders created since (ISO)")
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

    rec = sub.add_parser("record", help="capture the saga topics' CloudEvents to JSON lines")
    rec.add_argument("file", type=Path)
    rec.add_argument("--order-id", action="append", dest="order_ids", help="only these orders")
    rec.add_argument("--topic", action="append", dest="topics", help="default: every saga topic")

    rep = sub.add_parser("replay", help="send a recording back to Kafka, or to one function")
    rep.add_argument("file", type=Path)
    rep.add_argument("--rate", type=float, default=None, help="events per second (default: max)")
    rep.add_argument("--http", metavar="URL", help="POST to this function instead of Kafka")
    rep.add_argument("--type", action="append", dest="types", help="only these event types")

    dead = sub.add_parser("deadletters", help="list dead letters with their knativeerror* reasons")
    dead.add_argument("--json", action="store_true")

    red = sub.add_parser("redrive", help="re-publish dead letters to their original topics")
    red.add_argument("--id", action="append", dest="ids", help="only these event ids (repeat)")
    red.add_argument("--rate", type=float, default=None)


def _allowed(args: argparse.Namespace) -> DeadLetterFilter:
    ids = set(args.allowed)
    prefixes = tuple(args.allowed_prefixes)

    def allowed(letter: replay.DeadLetter) -> bool:
        key = (letter.record.key or b"").decode("utf-8", errors="replace")
        return letter.event_id in ids or bool(
            prefixes and (letter.event_id.startswith(prefixes) or key.startswith(prefixes))
        )

    return allowed


def run(args: argparse.Namespace, settings: Settings) -> int:
    if args.command == "check":
        report = checker.wait_for_books(
            settings,
            timeout=args.wait,
            order_ids=args.order_ids,
            since=args.since,
            in_flight_deadline_s=args.deadline,
            expected_dead_letters=_allowed(args),
        )
        print(report.summary())
        return 0 if report.ok else 1
    if args.command == "record":
        records = replay.record(settings, args.topics or replay.SAGA_TOPICS, args.order_ids)
        print(f"recorded {replay.save(records, args.file)} events to {args.file}")
        return 0
    if args.command == "replay":
        records = replay.load(args.file)
        if args.types:
            records = [r for r in records if r.event_type in set(args.types)]
        if args.http:
            results = replay.replay_to_http(args.http, records, args.rate)
            for result in results:
                print(f"  {result.status}  {result.event_id}  {result.body[:120]}")
            return 0 if all(200 <= r.status < 300 for r in results) else 1
        print(f"replayed {replay.replay_to_kafka(settings, records, args.rate)} events to Kafka")
        return 0
    if args.command == "deadletters":
        letters = replay.read_dead_letters(settings)
        for letter in letters:
            if args.json:
                print(json.dumps({"id": letter.event_id, "type": letter.event_type,
                                  "orderId": letter.order_id, "code": letter.code,
                                  "destination": letter.destination, "data": letter.data,
                                  "time": letter.timestamp.isoformat()}))  # fmt: skip
            else:
                print(f"{letter.timestamp:%Y-%m-%d %H:%M:%S} {letter.event_id} "
                      f"{letter.event_type}: {letter.reason}")  # fmt: skip
        print(f"{len(letters)} dead letters", file=sys.stderr)
        return 0
    if args.command == "redrive":
        letters = replay.read_dead_letters(settings)
        if args.ids:
            letters = [x for x in letters if x.event_id in set(args.ids)]
        for outcome in replay.redrive(settings, letters, args.rate):
            print(f"  {outcome.event_id} -> {outcome.topic or '-'}: {outcome.note}")
        return 0
    raise SystemExit(f"unknown command {args.command}")
