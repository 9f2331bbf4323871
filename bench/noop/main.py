"""The transport floor's function: does no work, publishes the next hop's event, answers.

Type ``bench.floor.hN`` (on topic ``<prefix>.hN``) leads to ``bench.floor.h(N+1)``; the last
hop's event carries ``doneAt`` (when the last function handled it), read by the benchmark.
Same producer settings as the saga's functions (``make_producer``), acks=all, publish before
answering.
"""

import threading
import time
import uuid
from typing import Any

import functions_framework
from cloudevents.http import CloudEvent
from cloudevents.kafka import to_binary

from minimart import kafka_clients
from minimart.adapters.kafka_publisher import make_producer
from minimart.settings import Settings

_lock = threading.Lock()
_producer: Any = None


def _get_producer() -> Any:
    global _producer
    with _lock:
        if _producer is None:
            settings = Settings.from_env()
            _producer = make_producer(
                settings.kafka_bootstrap,
                settings.service_name,
                kafka_clients.credentials_of(settings),
            )
        return _producer


@functions_framework.cloud_event
def handle(cloud_event: CloudEvent) -> None:
    data = dict(cloud_event.get_data() or {})
    hop = int(cloud_event["type"].rsplit(".h", 1)[1]) + 1
    if hop >= data["hops"]:
        data["doneAt"] = time.time()
    next_event = CloudEvent(
        {
            "type": f"bench.floor.h{hop}",
            "source": "/bench/floor",
            "id": str(uuid.uuid4()),
            "datacontenttype": "application/json",
            "partitionkey": data["chain"],
        },
        data,
    )
    message = to_binary(next_event)
    key = message.key.encode() if isinstance(message.key, str) else message.key
    future = _get_producer().send(
        f"{data['prefix']}.h{hop}",
        value=message.value,
        key=key,
        headers=list(message.headers.items()),
    )
    future.get(timeout=15)
