"""secantusdb (PyPI, in the venv): a MongoDB-wire-compatible server for pymongo."""

from __future__ import annotations

from pymongo import MongoClient

from minimart.local.servers.base import ManagedServer, require_binary

_PROGRAM = "secantusd-py"
_PACKAGE = "the PyPI package secantusdb into the venv"


class Mongo(ManagedServer):
    name = "mongo"
    stop_timeout = 20.0  # SIGTERM shutdown takes a few seconds

    @property
    def port(self) -> int:
        return self.settings.mongo_port

    def check_installed(self) -> None:
        require_binary(_PROGRAM, _PACKAGE)

    def command(self) -> list[str]:
        return [
            require_binary(_PROGRAM, _PACKAGE),
            "--host",
            self.host,
            "--port",
            str(self.port),
            "--storage-path",
            str(self.data_dir),
        ]

    def is_ready(self) -> bool:
        client: MongoClient[dict[str, object]] = MongoClient(
            self.host, self.port, serverSelectionTimeoutMS=1000, connectTimeoutMS=1000
        )
        try:
            client.admin.command("ping")
            return True
        finally:
            client.close()
