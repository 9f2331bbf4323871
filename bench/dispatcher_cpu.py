"""CPU per delivery of the KafkaSource dispatcher's delivery path (no Kafka, no functions).

A trivial HTTP sink runs in a child process (its CPU is not counted); this process delivers
synthetic binary-mode CloudEvent records (the headers a minimart event carries, with a
``traceparent``) one at a time through ``TracedDeliverer`` on one keep-alive connection, as a
partition worker does, and reports this process's CPU seconds per delivery: with tracing off,
with the spans written to the span file as the local stack writes them (``FileSpans``), and
with the same spans through the OpenTelemetry SDK (``SdkSpans``, as with an OTLP endpoint).
The modes alternate within each round to even out the machine's noise.

    python -m bench.dispatcher_cpu [--records 3000] [--rounds 5]

Prints the figures and writes them to bench/dispatcher_cpu.json.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import statistics
import tempfile
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric import rsa

from bench import labelled_results
from minimart import identity
from minimart.console.replay import RecordedEvent
from minimart.local.delivery import Deliverer
from minimart.local.delivery_spans import FileSpans, SdkSpans
from minimart.local.traced_delivery import TracedDeliverer, traced_deliverer
from minimart.manifests import Delivery, KafkaSourceSpec
from minimart.observability import tracing
from minimart.settings import Settings

OUT = Path(__file__).with_name("dispatcher_cpu.json")


def _serve(port_out: Any) -> None:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_POST(self) -> None:
            self.rfile.read(int(self.headers.get("Content-Length") or 0))
            self.send_response(200)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    port_out.put(server.server_address[1])
    server.serve_forever()


def records(count: int) -> list[RecordedEvent]:
    out = []
    for offset in range(count):
        order = str(uuid.uuid4())
        trace = f"00-{uuid.uuid4().hex}-{uuid.uuid4().hex[:16]}-01".encode()
        headers: list[tuple[str, bytes | None]] = [
            ("ce_specversion", b"1.0"),
            ("ce_id", str(uuid.uuid4()).encode()),
            ("ce_source", b"/minimart/inventory"),
            ("ce_type", b"com.minimart.inventory.reserved.v1"),
            ("ce_subject", order.encode()),
            ("ce_time", b"2026-11-25T01:00:00.000Z"),
            ("ce_partitionkey", order.encode()),
            ("ce_traceparent", trace),
            ("content-type", b"application/json"),
            ("traceparent", trace),
        ]
        body = json.dumps({"orderId": order, "amount": "25.00", "items": [{"sku": "SKU-42"}]})
        out.append(
            RecordedEvent(
                "minimart.inventory.reserved", 0, offset, 0, order.encode(), body.encode(), headers
            )
        )
    return out


def measure(deliverer: Deliverer | TracedDeliverer, batch: list[RecordedEvent]) -> float:
    conn = deliverer.new_connection()
    stop = threading.Event()
    for record in batch[:50]:  # warm the connection and caches
        deliverer.deliver(record, conn, stop)
    began = time.process_time()
    for record in batch:
        deliverer.deliver(record, conn, stop)
    spent = time.process_time() - began
    conn.close()
    return spent / len(batch)


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.dispatcher_cpu")
    parser.add_argument("--records", type=int, default=3000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--label", default="current")
    args = parser.parse_args()

    ports: Any = multiprocessing.Queue()
    sink = multiprocessing.Process(target=_serve, args=(ports,), daemon=True)
    sink.start()
    url = f"http://127.0.0.1:{ports.get(timeout=10)}/"
    spec = KafkaSourceSpec(
        name="bench-source",
        consumer_group="bench",
        topics=("minimart.inventory.reserved",),
        sink_service="noop",
        initial_offset="earliest",
        ordering="ordered",
        delivery=Delivery(retry=3, backoff_delay_s=0.2, timeout_s=10.0),
    )
    batch = records(args.records)
    samples: dict[str, list[float]] = {"off": [], "token": [], "file": [], "sdk": []}
    minter = identity.TokenMinter(
        identity.SigningKey(rsa.generate_private_key(65537, 2048), "https://issuer.bench"),
        identity.source_subject("inventory-source"),
        identity.audience_of("inventory"),
    )
    with tempfile.TemporaryDirectory() as tmp:
        env = {"MINIMART_STATE_DIR": tmp, "MINIMART_TRACE_FILE": f"{tmp}/spans.jsonl"}
        settings = Settings.from_env(env)
        tracing.configure(settings, instrument=())
        deliverers: dict[str, Deliverer | TracedDeliverer] = {
            "off": Deliverer(spec, url, None),
            # The same with the source's token on every delivery (minimart/identity.py).
            "token": Deliverer(spec, url, None, authorization=minter),
            "file": traced_deliverer(spec, url, None, FileSpans(Path(f"{tmp}/file.jsonl"), "b")),
            "sdk": traced_deliverer(spec, url, None, SdkSpans()),
        }
        for _ in range(args.rounds):  # the modes alternate within each round
            for mode, deliverer in deliverers.items():
                samples[mode].append(measure(deliverer, batch))
                tracing.flush()
    sink.terminate()

    def summary(samples: list[float]) -> dict[str, float]:
        return {
            "median_us": round(statistics.median(samples) * 1e6, 1),
            "min_us": round(min(samples) * 1e6, 1),
            "max_us": round(max(samples) * 1e6, 1),
        }

    result = {
        "label": args.label,
        "records_per_round": args.records,
        "rounds": args.rounds,
        "cpu_per_delivery_tracing_off": summary(samples["off"]),
        # Tracing off, the sender's token on every delivery (sender identity).
        "cpu_per_delivery_tracing_off_with_token": summary(samples["token"]),
        # The local stack's spans (delivery_spans.FileSpans, the span file written directly).
        "cpu_per_delivery_tracing_on": summary(samples["file"]),
        # The same spans through the OpenTelemetry SDK (as with an OTLP endpoint; before
        # FileSpans, the local stack's too).
        "cpu_per_delivery_tracing_sdk": summary(samples["sdk"]),
    }
    labelled_results.record(OUT, args.label, result)


if __name__ == "__main__":
    main()
