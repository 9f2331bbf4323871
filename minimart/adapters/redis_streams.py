"""Redis stream of customer notifications, appended exactly once per (order, template)."""

from __future__ import annotations

from typing import Any

import redis

from minimart.handlers.ports import Notification

STREAM = "minimart:notifications"
_DEDUPE_PREFIX = "minimart:notified:"

# Atomic in Redis: append to the stream only if the dedupe key is new, and remember the entry.
_ENQUEUE_ONCE = """
local existing = redis.call('GET', KEYS[1])
if existing then return existing end
local id = redis.call('XADD', KEYS[2], '*', unpack(ARGV))
redis.call('SET', KEYS[1], id)
return id
"""


class RedisNotifications:
    def __init__(self, client: redis.Redis) -> None:
        self._client = client
        self._script: Any = client.register_script(_ENQUEUE_ONCE)

    def enqueue_once(self, dedupe_key: str, notification: Notification) -> str:
        fields = [
            "template", notification.template,
            "orderId", notification.order_id,
            "customerId", str(notification.customer_id),
            "reason", notification.reason,
        ]  # fmt: skip
        entry = self._script(keys=[_DEDUPE_PREFIX + dedupe_key, STREAM], args=fields)
        return entry.decode() if isinstance(entry, bytes) else str(entry)


def make_client(url: str) -> redis.Redis:
    return redis.Redis.from_url(url, socket_timeout=10, health_check_interval=30)
