"""Redis from Debian, with an append-only file so that data survives a restart.

A client must authenticate: ``requirepass`` is minimart-secrets' ``REDIS_PASSWORD``, as in the
cluster (``k8s/infra/redis.yaml``), and protected mode stays on. The password goes in a config
file of the data dir (mode 0600) rather than on the command line, which every account of the
machine may read.
"""

from __future__ import annotations

import os

import redis

from minimart import local_stores
from minimart.local.servers.base import ManagedServer, require_binary

_AUTH_CONF = "auth.conf"


class Redis(ManagedServer):
    name = "redis"

    @property
    def port(self) -> int:
        return self.settings.redis_port

    def check_installed(self) -> None:
        require_binary("redis-server", "the Debian package redis-server")

    def _password(self) -> str:
        return local_stores.local_secret(self.settings)[local_stores.LOGINS["redis_url"].key]

    def prepare(self) -> None:
        path = self.data_dir / _AUTH_CONF
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as conf:
            conf.write(f"requirepass {self._password()}\n")
        os.chmod(path, 0o600)

    def command(self) -> list[str]:
        return [
            require_binary("redis-server", "the Debian package redis-server"),
            str(self.data_dir / _AUTH_CONF),
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
        client = redis.Redis(
            host=self.host, port=self.port, password=self._password(), socket_timeout=2
        )
        try:
            return bool(client.ping())  # a server still loading its AOF answers LOADING
        finally:
            client.close()
