"""Fetch size limits shared by every Kafka consumer of the local runner.

kafka-python 2.3 refuses a response frame larger than ``receive_message_max_bytes`` (1 MB by
default) while letting a fetch ask for up to ``fetch_max_bytes`` (50 MB by default), so a
consumer far behind on many partitions would fail the same fetch forever. A fetch answer is at
most ``fetch_max_bytes`` plus one record batch (``max_partition_fetch_bytes``).
"""

from __future__ import annotations

FETCH_MAX_BYTES = 8 * 1024 * 1024
MAX_PARTITION_FETCH_BYTES = 1024 * 1024
FETCH_LIMITS = {
    "fetch_max_bytes": FETCH_MAX_BYTES,
    "max_partition_fetch_bytes": MAX_PARTITION_FETCH_BYTES,
    "receive_message_max_bytes": FETCH_MAX_BYTES + 2 * MAX_PARTITION_FETCH_BYTES,
}
