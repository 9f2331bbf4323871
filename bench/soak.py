"""The chaos soak: steady open-loop load while random processes of the stack are SIGKILLed.

``python -m bench.soak [--seconds 300] [--baseline 60]`` (``make soak``) on the running local
stack (``up`` first):

1. a baseline: open-loop orders at ``--rate`` (mixing every saga path, ``bench.load``) with
   nothing killed;
2. the chaos run: the same load for ``--seconds`` while a chaos loop SIGKILLs a random
   program of the stack (any server, function or dispatcher; the process group of what
   supervisord runs) every 5-20 s, at most ``--max-kills`` times; each kill is timed until the
   program answers again (supervisord restarts it: nothing here starts anything);
3. then, with no manual step: every accepted order must reach a final state, the books must
   balance (``check`` over the run) and no dead letter may remain but poison (the transient
   ones were re-driven by the redrive function).

Beside the orders, ``--junk-rate`` bad records a second (``bench.junk``: every kind a producer
could write) go onto the saga topics during both phases. Each must become one dead letter per
KafkaSource reading its topic (a kill mid-delivery may deliver one twice: at-least-once), none
parked; the dead-letter topics' end offsets are read once the redrive source has caught up,
and again after: flat.

Writes ``--out`` (JSON) and the same name with ``.png``: throughput, p99 end-to-end latency and
the kills over time, kills per kind, restarts per program, orders accepted and completed, p50
and p99 end to end during chaos against the baseline. Exit status 0 only if every promise held.
Loopback only: the stack's own ports on 127.0.0.1.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import logging
import random
import sys
import threading
import time
import uuid
from collections import Counter
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from bench import junk, load
from bench.run import machine, summary
from minimart import kafka_clients, local_secrets
from minimart.catalog import DEAD_LETTER_TOPIC, DEAD_LETTER_TOPICS, EventType
from minimart.console import checker, replay
from minimart.handlers.redrive import transient
from minimart.local import stack
from minimart.local.servers.process import kill_group
from minimart.local.servers.supervision import Supervisor
from minimart.local_stores import local_store_settings
from minimart.manifests import load_topology
from minimart.settings import PROJECT_ROOT, Settings

log = logging.getLogger("soak")

DEFAULT_OUT = PROJECT_ROOT / "bench" / "soak.json"
BIN_S = 10.0
SETTLE_TIMEOUT_S = 600.0
BACK_TIMEOUT_S = 300.0


@dataclass
class Kill:
    at_s: float  # seconds since the chaos run began
    program: str
    kind: str  # server, function, dispatcher
    pid: int
    back_after_s: float | None = None  # until it answered again (None: not within the timeout)


def kind_of(program: str) -> str:
    if program.startswith("fn-"):
        return "function"
    if program.startswith("dispatch-"):
        return "dispatcher"
    return "server"


class Chaos:
    """Kills a random program every ``gap_s`` (uniform) seconds until stopped or ``max_kills``."""

    def __init__(self, settings: Settings, gap_s: tuple[float, float], max_kills: int,
                 seed: int) -> None:  # fmt: skip
        self.settings = settings
        self.gap_s = gap_s
        self.max_kills = max_kills
        self.rng = random.Random(seed)  # noqa: S311 (chaos, not secrets)
        self.kills: list[Kill] = []
        self._stop = threading.Event()
        self._watchers: list[threading.Thread] = []
        self._thread = threading.Thread(target=self._run, name="chaos", daemon=True)

    def start(self) -> None:
        self.began = time.monotonic()
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()
        for watcher in self._watchers:
            watcher.join(BACK_TIMEOUT_S)

    def _run(self) -> None:
        sup = Supervisor(self.settings)
        plan = stack.plan_stack(self.settings)
        names = stack.programs(plan)  # supervisord and its listener are the kubelet: spared
        while len(self.kills) < self.max_kills and not self._stop.wait(
            self.rng.uniform(*self.gap_s)
        ):
            program = self.rng.choice(names)
            pid = sup.pid(program)
            if pid is None:  # still coming back from an earlier kill: pick again next time
                continue
            kill_group(pid)  # its process group (PostgreSQL's backends left to notice)
            kill = Kill(round(time.monotonic() - self.began, 2), program, kind_of(program), pid)
            self.kills.append(kill)
            log.info("t=%5.1fs SIGKILL %s (pid %d)", kill.at_s, program, pid)
            watcher = threading.Thread(target=self._time_back, args=(kill, sup, plan, pid))
            watcher.start()
            self._watchers.append(watcher)

    def _time_back(self, kill: Kill, sup: Supervisor, plan: stack.StackPlan, pid: int) -> None:
        killed = time.monotonic()
        while time.monotonic() - killed < BACK_TIMEOUT_S:
            now = sup.pid(kill.program)
            if now not in (None, pid) and stack.answers(self.settings, kill.program, plan):
                kill.back_after_s = round(time.monotonic() - killed, 2)
                return
            time.sleep(0.2)


def _e2e_ms(completed: dict[str, load.Completion]) -> list[float]:
    return [
        (c.final_at - c.created_at) * 1000 for c in completed.values() if c.final_at is not None
    ]


def _bins(result: load.LoadResult, completed: dict[str, load.Completion], began: float,
          seconds: float) -> list[dict[str, Any]]:  # fmt: skip
    """Per ``BIN_S`` of the run: accepted/s, completed/s and the p99 of what completed."""
    finished = [(c.final_at, (c.final_at - c.created_at) * 1000)
                for c in completed.values() if c.final_at is not None]  # fmt: skip
    last = max([began + seconds, *(at for at, _ in finished)])
    rows = []
    for start in range(0, int(last - began) + 1, int(BIN_S)):
        lo, hi = began + start, began + start + BIN_S
        done = [ms for at, ms in finished if lo <= at < hi]
        accepted = [p for p in result.posted if p.status == 202 and lo <= p.sent_at < hi]
        rows.append({
            "t_s": start,
            "accepted_per_s": round(len(accepted) / BIN_S, 2),
            "completed_per_s": round(len(done) / BIN_S, 2),
            "p99_ms": summary(done)["p99"],
        })  # fmt: skip
    return rows


class JunkProducer:
    """Bad records at ``rate`` a second onto the saga topics a KafkaSource reads, on a thread
    of its own, until stopped; each keyed ``junk-<uuid>`` so its dead letters can be counted."""

    def __init__(self, settings: Settings, rate: float, seed: int) -> None:
        self.settings, self.rate = settings, rate
        self.rng = random.Random(seed)  # noqa: S311 (junk, not secrets)
        topology = load_topology(PROJECT_ROOT)
        saga = {t.topic for t in EventType}
        self.readers: dict[str, list[str]] = {}
        for source in topology.sources:
            for topic in source.topics:
                if topic in saga:
                    self.readers.setdefault(topic, []).append(source.name)
        self.partitions = dict(topology.topics)
        self.sent: list[tuple[bytes, str, str]] = []  # key, topic, kind
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="junk", daemon=True)

    def start(self) -> None:
        if self.rate > 0:
            self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=60)

    def _run(self) -> None:
        producer = replay.new_producer(self.settings, client_id="soak-junk")
        topics = sorted(self.readers)
        began = time.monotonic()
        try:
            while not self._stop.is_set():
                topic = self.rng.choice(topics)
                bad = junk.draw(self.rng, EventType.for_topic(topic))
                key = f"junk-{uuid.UUID(int=self.rng.getrandbits(128))}".encode()
                partition = self.rng.randrange(self.partitions[topic])
                try:
                    producer.send(topic, key=key, value=bad.value, headers=bad.headers,
                                  partition=partition).get(timeout=30)  # fmt: skip
                    self.sent.append((key, topic, bad.kind))
                except Exception:  # the broker may be the one just killed: count what landed
                    log.warning("junk record not produced (broker away?)", exc_info=True)
                next_at = began + len(self.sent) / self.rate
                self._stop.wait(max(0.0, next_at - time.monotonic()))
        finally:
            producer.close(timeout=10)

    def expected_letters(self) -> int:
        return sum(len(self.readers[topic]) for _, topic, _ in self.sent)


def _redrive_caught_up(settings: Settings, timeout_s: float) -> bool:
    """Wait until the source reading the dead-letter topic has committed up to its end."""
    sources = [s for s in load_topology(PROJECT_ROOT).sources if DEAD_LETTER_TOPIC in s.topics]
    admin = kafka_clients.admin(
        settings.kafka_bootstrap, kafka_clients.credentials_of(settings), client_id="soak-drain"
    )
    consumer = kafka_clients.consumer(
        settings.kafka_bootstrap, kafka_clients.credentials_of(settings), group_id=None
    )
    try:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if not replay.partitions_behind(admin, consumer, sources):
                return True
            time.sleep(1.0)
        return False
    finally:
        consumer.close()
        admin.close()


def junk_report(settings: Settings, producer: JunkProducer) -> dict[str, Any]:
    """What became of the junk: letters per record and source (one each), none parked, and the
    dead-letter topics flat once the redrive source has read them all."""
    keys = {key for key, _, _ in producer.sent}
    deadline = time.monotonic() + SETTLE_TIMEOUT_S
    while True:
        letters = [x for x in replay.read_dead_letters(settings) if x.record.key in keys]
        pairs = {(x.record.key, x.destination) for x in letters}
        if len(pairs) >= producer.expected_letters() or time.monotonic() > deadline:
            break
        time.sleep(2.0)
    caught_up = _redrive_caught_up(settings, timeout_s=300.0)
    ends = replay.end_offsets(settings, DEAD_LETTER_TOPICS)
    caught_up_again = _redrive_caught_up(settings, timeout_s=60.0)
    ends_again = replay.end_offsets(settings, DEAD_LETTER_TOPICS)
    codes = Counter(x.code or "none" for x in letters)
    return {
        "sent": len(producer.sent),
        "kinds": dict(Counter(kind for _, _, kind in producer.sent)),
        "letters_expected": producer.expected_letters(),
        "letters_made": len(pairs),
        "letters_duplicated": len(letters) - len(pairs),  # a kill mid-delivery: at-least-once
        "parked": sum(1 for x in letters if x.parked),
        "codes": dict(codes),
        "all_4xx": all(code[:1] == "4" for code in codes),
        "dead_letter_ends": ends,
        "dead_letter_ends_later": ends_again,
        "flat": caught_up and caught_up_again and ends == ends_again,
        "passed": (
            len(pairs) == producer.expected_letters()
            and not any(x.parked for x in letters)
            and all(code[:1] == "4" for code in codes)
            and caught_up
            and ends == ends_again
        ),
    }


def phase(settings: Settings, rate: float, seconds: float, seed: int,
          chaos: Chaos | None = None) -> dict[str, Any]:  # fmt: skip
    """One open-loop run (with chaos alongside when given), then its orders settled."""
    if chaos is not None:
        chaos.start()
    began = time.time()
    result = load.run_open_loop(settings.host, settings.ingress_port, rate, seconds, seed=seed)
    if chaos is not None:
        chaos.stop()
    accepted = [p.order_id for p in result.posted if p.status == 202 and p.order_id]
    completed = load.wait_complete(settings, accepted, SETTLE_TIMEOUT_S)
    finals = Counter(c.status for c in completed.values())
    return {
        "rate": rate,
        "seconds": seconds,
        "sent": len(result.posted),
        "accepted": len(accepted),
        "refused": dict(Counter(p.status for p in result.posted if p.status != 202)),
        "completed": sum(1 for c in completed.values() if c.final_at is not None),
        "final": dict(finals),
        "e2e_ms": summary(_e2e_ms(completed)),
        "post_ms": summary([p.latency_ms for p in result.posted if p.status == 202]),
        "bins": _bins(result, completed, began, seconds),
        "_ids": accepted,
    }


def run(settings: Settings, args: argparse.Namespace) -> dict[str, Any]:
    stack.up(settings)
    stack.wait_ready(settings)
    sup = Supervisor(settings)
    began_at = dt.datetime.now(dt.UTC)
    restarts_before = {n: i.restarts for n, i in sup.infos().items()}
    log.info("warm-up, then a %.0fs baseline at %.0f orders/s", args.baseline, args.rate)
    load.warm_up(settings, rate=args.rate, seconds=10)
    junk_producer = JunkProducer(settings, args.junk_rate, args.seed)
    junk_producer.start()
    baseline = phase(settings, args.rate, args.baseline, seed=args.seed)
    log.info("baseline: %s", baseline["e2e_ms"])
    chaos = Chaos(settings, (args.min_gap, args.max_gap), args.max_kills, args.seed)
    log.info("chaos for %.0fs", args.seconds)
    under_chaos = phase(settings, args.rate, args.seconds, seed=args.seed + 1, chaos=chaos)
    junk_producer.stop()
    stack.wait_ready(settings, timeout=BACK_TIMEOUT_S)
    ids = baseline.pop("_ids") + under_chaos.pop("_ids")
    report = checker.wait_for_books(
        local_store_settings(settings),
        timeout=SETTLE_TIMEOUT_S,
        order_ids=ids,
        expected_dead_letters=lambda letter: not transient(letter.code),  # poison may stay
    )
    mine = set(ids)
    letters = [x for x in replay.read_dead_letters(settings) if x.order_id in mine]
    junk_result = junk_report(settings, junk_producer)
    restarts_after = {n: i.restarts for n, i in sup.infos().items()}
    restarts = {n: c - restarts_before.get(n, 0) for n, c in restarts_after.items()}
    kills = [asdict(k) for k in chaos.kills]
    backs = [k.back_after_s for k in chaos.kills if k.back_after_s is not None]
    every_final = all(
        phase_["completed"] == phase_["accepted"] for phase_ in (baseline, under_chaos)
    )
    return {
        "date": began_at.isoformat(timespec="seconds"),
        "machine": machine(),
        "args": vars(args) | {"out": str(args.out)},
        "baseline": baseline,
        "chaos": under_chaos,
        "kills": kills,
        "kills_per_kind": dict(Counter(k.kind for k in chaos.kills)),
        "kills_per_program": dict(Counter(k.program for k in chaos.kills)),
        "back_after_s": summary(backs),
        "all_back": len(backs) == len(chaos.kills),
        "restarts": {n: c for n, c in sorted(restarts.items()) if c},
        "check": {
            "ok": report.ok,
            "settled": report.settled,
            "summary": report.summary(),
            "dead_letters_in_scope": report.dead_letters,
        },
        # Dead letters of the soak's own orders: transient ones must have been re-driven
        # (the check fails otherwise), poison ones may stay.
        "dead_letters": {
            "transient": sum(1 for x in letters if transient(x.code)),
            "poison": sum(1 for x in letters if not transient(x.code)),
            "by_code": dict(Counter(x.code for x in letters)),
        },
        "junk": junk_result,
        "every_accepted_order_final": every_final,
        "passed": every_final
        and report.settled
        and len(backs) == len(chaos.kills)
        and junk_result["passed"],
    }


def draw(results: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    bins = results["chaos"]["bins"]
    ts = [b["t_s"] for b in bins]
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(12, 8), sharex=True)
    top.plot(ts, [b["accepted_per_s"] for b in bins], label="accepted/s", color="tab:blue")
    top.plot(ts, [b["completed_per_s"] for b in bins], label="completed/s", color="tab:green")
    top.set_ylabel(f"orders/s ({BIN_S:.0f} s bins)")
    base = results["baseline"]["e2e_ms"]
    bottom.plot(ts, [b["p99_ms"] for b in bins], label="p99 end to end (completed in bin)",
                color="tab:red")  # fmt: skip
    if base["p99"] is not None:
        bottom.axhline(base["p99"], color="grey", linestyle="--", label="baseline p99")
    bottom.set_ylabel("ms")
    bottom.set_yscale("log")
    bottom.set_xlabel("seconds since the chaos run began")
    colors = {"server": "tab:purple", "function": "tab:orange", "dispatcher": "tab:brown"}
    for kill in results["kills"]:
        for ax in (top, bottom):
            ax.axvline(kill["at_s"], color=colors[kill["kind"]], alpha=0.5, linewidth=1)
        top.annotate(kill["program"], (kill["at_s"], top.get_ylim()[1]), rotation=90,
                     fontsize=7, va="top", ha="right")  # fmt: skip
    for ax in (top, bottom):
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=8, loc="lower right")
    verdict = "PASSED" if results["passed"] else "FAILED"
    fig.suptitle(f"chaos soak {results['date']}: {len(results['kills'])} kills "
                 f"({results['kills_per_kind']}), {verdict}")  # fmt: skip
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.soak", description=__doc__)
    parser.add_argument("--seconds", type=float, default=300.0, help="length of the chaos run")
    parser.add_argument("--baseline", type=float, default=60.0, help="length of the baseline")
    parser.add_argument("--rate", type=float, default=10.0, help="orders per second")
    parser.add_argument("--min-gap", type=float, default=5.0, help="seconds between kills, min")
    parser.add_argument("--max-gap", type=float, default=20.0, help="seconds between kills, max")
    parser.add_argument("--max-kills", type=int, default=40, help="at most this many kills")
    parser.add_argument("--junk-rate", type=float, default=2.0,
                        help="bad records a second beside the orders (0: none)")  # fmt: skip
    parser.add_argument("--seed", type=int, default=12)
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    logging.getLogger("kafka").setLevel(logging.ERROR)
    # The console's Kafka principal: it writes the junk (to topics a function writes) and
    # reads the dead letters, as an operator's replay would.
    results = run(local_secrets.with_console_credentials(Settings.from_env()), args)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2, default=str) + "\n")
    draw(results, args.out.with_suffix(".png"))
    print(json.dumps({k: results[k] for k in ("kills_per_kind", "restarts", "junk", "passed")}))
    print(
        f"baseline e2e {results['baseline']['e2e_ms']}\nchaos    e2e {results['chaos']['e2e_ms']}"
    )
    print(results["check"]["summary"])
    print(f"wrote {args.out} and {args.out.with_suffix('.png')}")
    return 0 if results["passed"] else 1


if __name__ == "__main__":
    sys.exit(main())
