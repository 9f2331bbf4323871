"""CPU per event of sender identity (minimart/identity.py), on both sides of a delivery.

* verify, cold: a token never seen (decode, RS256 signature check, claims): what a function
  pays once per token of a sender (a KafkaSource's token lives an hour in the cluster, ten
  minutes locally);
* verify, cached: a token verified before (every other event): one dict lookup and a clock
  read;
* mint, cold: a dispatcher signing a new token (once per token lifetime);
* mint, cached: the header a dispatcher puts on every delivery.

Each figure is this process's CPU per call, the median of ``--rounds`` rounds. ``make bench``
runs it first and puts it in bench/results.json (``identity``); alone:

    python -m bench.identity_cpu [--calls 2000] [--rounds 5]

writes bench/identity_cpu.json (one entry per ``--label``).
"""

from __future__ import annotations

import argparse
import datetime as dt
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric import rsa

from bench import labelled_results
from minimart import identity

OUT = Path(__file__).with_name("identity_cpu.json")
SERVICE = "payment"


def _cpu_per_call(calls: int, run: Callable[[int], object]) -> float:
    began = time.process_time()
    for index in range(calls):
        run(index)
    return (time.process_time() - began) / calls


def _round(
    key: identity.SigningKey, policy: identity.Policy, subject: str, calls: int, cold_calls: int
) -> dict[str, float]:
    audience = identity.audience_of(SERVICE)
    public = key.key.public_key()
    now = time.time()
    headers = [
        identity.BEARER + key.mint(subject, audience, 600, now, jti=str(i))
        for i in range(cold_calls)
    ]
    verifier = identity.Verifier(identity.JwksKeys(lambda: identity.jwks_of([public])), policy)
    verifier.warm_up()
    minter = identity.TokenMinter(key, subject, audience)
    minter()
    one = headers[0]
    return {
        "verify_cold": _cpu_per_call(cold_calls, lambda i: verifier.verify(SERVICE, headers[i])),
        "verify_cached": _cpu_per_call(calls, lambda i: verifier.verify(SERVICE, one)),
        "mint_cold": _cpu_per_call(cold_calls, lambda i: key.mint(subject, audience, 600, now)),
        "mint_cached": _cpu_per_call(calls, lambda i: minter()),
    }


def measure(calls: int = 2000, rounds: int = 5) -> dict[str, Any]:
    """The four figures (µs of CPU per call: median, min, max over ``rounds``)."""
    key = identity.SigningKey(rsa.generate_private_key(65537, 2048), "https://issuer.bench")
    subject = identity.source_subject("payment-source")
    policy = identity.Policy(key.issuer, {SERVICE: frozenset({subject})})
    samples: dict[str, list[float]] = {"verify_cold": [], "verify_cached": [], "mint_cold": [],
                                       "mint_cached": []}  # fmt: skip
    cold_calls = max(1, calls // 10)  # RSA: ~100x the cached figure; fewer calls suffice
    for _ in range(rounds):
        for name, value in _round(key, policy, subject, calls, cold_calls).items():
            samples[name].append(value)

    def summary(values: list[float]) -> dict[str, float]:
        return {
            "median_us": round(statistics.median(values) * 1e6, 2),
            "min_us": round(min(values) * 1e6, 2),
            "max_us": round(max(values) * 1e6, 2),
        }

    return {
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "calls_per_round": calls,
        "cold_calls_per_round": cold_calls,
        "rounds": rounds,
        "key": "RSA 2048, RS256",
        **{f"cpu_per_event_{name}": summary(values) for name, values in samples.items()},
    }


def bench_machine() -> dict[str, Any]:
    """What ``make bench`` records of the machine (bench.run imports this module)."""
    from bench.run import machine

    return machine()


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.identity_cpu")
    parser.add_argument("--calls", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--label", default="current")
    args = parser.parse_args()

    result = {**measure(args.calls, args.rounds), "machine": bench_machine()}
    labelled_results.record(OUT, args.label, result)


if __name__ == "__main__":
    main()
