"""Redis from Debian, with an append-only file so that data survives a restart."""

from __future__ import annotations

import redis

from minimart.local.servers.base import ManagedServer, require_binary


class Redis(ManagedServer):
    name = "redis"

    @property
    def port(self) -> int:
        return self.settings.redis_port

    def check_installed(self) -> None:
        require_binary("redis-server", "the Debian package redis-server")

    def command(self) -> list[str]:
        return [
            require_binary("redis-server", "the Debian package redis-server"),
            "--bind",
            self.host,
            "--port",
            str(self.port),
            "--protected-mode",
            "yes",
            "--daemonize",
            "no",
            "--appendonly",
            "yes",
            "--appendfsync",
            "everysec",
            "--dir",
            str(self.data_dir),
            "--loglevel",
            "warning",
        ]

    def is_ready(self) -> bool:
        client = redis.Redis(host=self.host, port=self.port, socket_timeout=2)
        try:
            return bool(client.ping())  # a server still loading its AOF answers LOADING
        finally:
            client.close()
