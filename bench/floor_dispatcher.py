"""The floor's dispatcher: minimart's KafkaSource dispatcher code on a throwaway topic."""

from __future__ import annotations

import argparse
import logging
import signal
from types import FrameType

from minimart.local.dispatcher import KafkaSourceDispatcher
from minimart.manifests import Delivery, KafkaSourceSpec
from minimart.settings import Settings


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.floor_dispatcher")
    parser.add_argument("--topic", required=True)
    parser.add_argument("--sink-url", required=True)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    logging.getLogger("kafka").setLevel(logging.WARNING)
    spec = KafkaSourceSpec(
        name=f"floor-{args.topic}",
        consumer_group=f"bench-{args.topic}",
        topics=(args.topic,),
        sink_service="noop",
        initial_offset="earliest",
        ordering="ordered",
        delivery=Delivery(retry=3, backoff_delay_s=0.2, timeout_s=10.0),
    )
    dispatcher = KafkaSourceDispatcher(spec, args.sink_url, Settings.from_env())

    def on_signal(signum: int, frame: FrameType | None) -> None:
        dispatcher.stop()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    dispatcher.run()


if __name__ == "__main__":
    main()
