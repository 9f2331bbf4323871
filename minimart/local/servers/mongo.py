"""secantusdb (PyPI, in the venv): a MongoDB-wire-compatible server for pymongo.

It runs with ``--auth`` (SCRAM-SHA-256, roles checked): the shipping function's user
``shipping`` may read and write database ``minimart`` only, and the runner's ``root`` may do
anything, as ``k8s/infra/mongo.yaml`` provisions them in the cluster; the passwords are
minimart-secrets'. secantusdb has no localhost exception: users are made by a server without
``--auth``, which ``prepare`` runs for the purpose on a port of its own (the store's port never
answers an unauthenticated client), once per data dir, and again only if the Secret changed.
"""

from __future__ import annotations

import hashlib
import json
import socket
import subprocess
from typing import Any

from pymongo import MongoClient
from pymongo.errors import OperationFailure

from minimart import local_stores
from minimart.local.servers.base import ManagedServer, ServerError, child_env, poll, require_binary

_PROGRAM = "secantusd-py"
_PACKAGE = "the PyPI package secantusdb into the venv"
# A digest of the users (and passwords) the data dir was provisioned with.
_PROVISIONED = ".minimart-users"
_USER_EXISTS = 51003


class Mongo(ManagedServer):
    name = "mongo"
    stop_timeout = 20.0  # SIGTERM shutdown takes a few seconds

    @property
    def port(self) -> int:
        return self.settings.mongo_port

    def check_installed(self) -> None:
        require_binary(_PROGRAM, _PACKAGE)

    def _argv(self, port: int) -> list[str]:
        return [
            require_binary(_PROGRAM, _PACKAGE),
            "--host",
            self.host,
            "--port",
            str(port),
            "--storage-path",
            str(self.data_dir),
        ]

    def command(self) -> list[str]:
        # --sync-on-commit: secantusdb honours a write's j=True only with it (its log is
        # fsynced at each commit), as mongod's journal does (minimart/adapters/mongo.py).
        return [*self._argv(self.port), "--auth", "--sync-on-commit"]

    def users(self) -> dict[tuple[str, str], dict[str, Any]]:
        """(database, user) -> what createUser is given: the function's, then the runner's."""
        secret = local_stores.local_secret(self.settings)
        shipping = local_stores.LOGINS["mongo_url"]
        return {
            (local_stores.MONGO_DATABASE, shipping.user): {
                "pwd": secret[shipping.key],
                "roles": [{"role": "readWrite", "db": local_stores.MONGO_DATABASE}],
            },
            ("admin", local_stores.MONGO_ADMIN): {
                "pwd": secret[local_stores.MONGO_ADMIN_KEY],
                "roles": [{"role": "root", "db": "admin"}],
            },
        }

    def admin_url(self) -> str:
        """The runner's login (root, in database admin)."""
        password = local_stores.local_secret(self.settings)[local_stores.MONGO_ADMIN_KEY]
        url = f"mongodb://{self.host}:{self.port}/admin"
        return local_stores.with_login(url, local_stores.MONGO_ADMIN, password)

    def prepare(self) -> None:
        users = self.users()
        digest = hashlib.sha256(json.dumps(sorted(users.items()), sort_keys=True).encode())
        marker = self.data_dir / _PROVISIONED
        if marker.exists() and marker.read_text() == digest.hexdigest():
            return
        port = _free_port(self.host)
        server = subprocess.Popen(
            self._argv(port),
            cwd=self.data_dir,
            env=child_env(self.settings),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.STDOUT,
        )
        client: MongoClient[dict[str, Any]] = MongoClient(
            self.host, port, serverSelectionTimeoutMS=1000, connectTimeoutMS=1000
        )
        try:
            poll(lambda: bool(client.admin.command("ping")), self.start_timeout,
                 f"{self.name}: the server that provisions the users")  # fmt: skip
            for (database, user), spec in users.items():
                try:
                    client[database].command("createUser", user, **spec)
                except OperationFailure as exc:
                    if exc.code != _USER_EXISTS:
                        raise
                    client[database].command("updateUser", user, **spec)
        except (OperationFailure, TimeoutError) as exc:
            raise ServerError(f"{self.name}: provisioning the users failed: {exc}") from exc
        finally:
            client.close()
            server.terminate()
            try:
                server.wait(self.stop_timeout)
            except subprocess.TimeoutExpired:
                server.kill()
                server.wait()
                raise ServerError(f"{self.name}: the provisioning server did not stop") from None
        marker.write_text(digest.hexdigest())

    def is_ready(self) -> bool:
        client: MongoClient[dict[str, object]] = MongoClient(
            self.admin_url(), serverSelectionTimeoutMS=1000, connectTimeoutMS=1000
        )
        try:
            client.admin.command("ping")  # authenticated first: a wrong password fails here
            return True
        finally:
            client.close()


def _free_port(host: str) -> int:
    """A port free on ``host`` now (the kernel's pick)."""
    with socket.socket() as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])
