"""The local stack's stand-ins for the cluster's Secrets: generated once in the state dir.

A cluster's Secrets are made by ``make kind-up``; the local runner makes the same Secrets (same
names, same keys) as files under ``<state_dir>/secrets``, readable by this user only, never in
the repository. A Secret, once made, is kept: the servers were provisioned with it. Two
processes asking for the same new Secret at once get the same one (the file is created
whole, by a hard link that fails if it exists; the loser reads the winner's).
"""

from __future__ import annotations

import dataclasses
import json
import os
import secrets
import tempfile
from collections.abc import Mapping
from pathlib import Path

from minimart.kafka_access import (
    ADMIN,
    ADMIN_MECHANISM,
    CONSOLE,
    MECHANISM,
    PROTOCOL,
    principal_of,
    secret_of,
)
from minimart.kafka_clients import KafkaCredentials
from minimart.settings import Settings

PASSWORD_BYTES = 24


def random_password() -> str:
    """A password safe in a URL, a JAAS config and a shell word (URL-safe base64)."""
    return secrets.token_urlsafe(PASSWORD_BYTES)


class LocalSecrets:
    """Secrets as JSON files (``<name>.json``, mode 0600) in ``folder`` (mode 0700)."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder

    def path(self, name: str) -> Path:
        if not name or "/" in name or name.startswith("."):
            raise ValueError(f"not a Secret name: {name!r}")
        return self.folder / f"{name}.json"

    def read(self, name: str) -> dict[str, str] | None:
        """The Secret ``name``, or None if it was never made."""
        try:
            data = json.loads(self.path(name).read_text())
        except FileNotFoundError:
            return None
        return {str(k): str(v) for k, v in data.items()}

    def ensure(
        self, name: str, fixed: Mapping[str, str], generated: tuple[str, ...]
    ) -> dict[str, str]:
        """The Secret ``name``, made now if missing with ``fixed`` values and a random password
        for each key of ``generated``; keys added since it was made are added to it."""
        wanted = {**fixed, **{key: "" for key in generated}}
        current = self.read(name)
        if current is not None and wanted.keys() <= current.keys():
            return current
        self.folder.mkdir(parents=True, exist_ok=True, mode=0o700)
        os.chmod(self.folder, 0o700)
        value = {**fixed, **{key: random_password() for key in generated}, **(current or {})}
        path = self.path(name)
        fd, name_of_temporary = tempfile.mkstemp(dir=self.folder, prefix=f".{path.name}.")
        temporary = Path(name_of_temporary)  # mode 0600, a name no other maker has
        with os.fdopen(fd, "w") as handle:
            json.dump(value, handle, indent=1, sort_keys=True)
        if current is not None:
            os.replace(temporary, path)
            return value
        try:  # a link appears whole or not at all, and never replaces another process's
            os.link(temporary, path)
        except FileExistsError:
            return self.ensure(name, fixed, generated)
        finally:
            temporary.unlink()
        return value


def of(settings: Settings) -> LocalSecrets:
    """The Secrets of the local stack of ``settings`` (its state dir)."""
    return LocalSecrets(settings.state_dir / "secrets")


def kafka_secret(secrets: LocalSecrets, name: str) -> dict[str, str]:
    """The Kafka Secret ``name`` (``kafka-<principal>``, the keys a cluster's has), made now if
    missing."""
    user = principal_of(name, f"Secret {name}")
    fixed = {
        "user": user,
        "sasl.mechanism": ADMIN_MECHANISM if user == ADMIN else MECHANISM,
        "protocol": PROTOCOL,
    }
    return secrets.ensure(name, fixed, ("password",))


def kafka_credentials(secrets: LocalSecrets, principal: str) -> KafkaCredentials:
    """What ``principal`` presents to the local broker."""
    secret = kafka_secret(secrets, secret_of(principal))
    return KafkaCredentials(secret["user"], secret["password"], secret["sasl.mechanism"])


def admin_credentials(secrets: LocalSecrets) -> KafkaCredentials:
    """The local broker's super user's (PLAIN, checked against the broker's JAAS entry)."""
    secret = kafka_secret(secrets, secret_of(ADMIN))
    return KafkaCredentials(secret["user"], secret["password"], ADMIN_MECHANISM)


def presenting(
    settings: Settings, credentials: KafkaCredentials, *, dead_letters: bool = False
) -> Settings:
    """``settings`` whose Kafka principal is ``credentials`` (``dead_letters``: the principal
    it writes dead letters as, too)."""
    presented = dataclasses.replace(
        settings,
        kafka_user=credentials.user,
        kafka_password=credentials.password,
        kafka_sasl_mechanism=credentials.mechanism,
    )
    if not dead_letters:
        return presented
    return dataclasses.replace(
        presented,
        dead_letter_kafka_user=credentials.user,
        dead_letter_kafka_password=credentials.password,
    )


def with_console_credentials(settings: Settings) -> Settings:
    """``settings`` as the ops console uses them on the local stack: when no Kafka user was
    given, the console's principal from the state dir (if the stack made one)."""
    if settings.kafka_user:
        return settings
    secret = of(settings).read(secret_of(CONSOLE))
    if secret is None:
        return settings
    console = KafkaCredentials(secret["user"], secret["password"], secret["sasl.mechanism"])
    return presenting(settings, console)


def with_admin_credentials(settings: Settings) -> Settings:
    """``settings`` whose Kafka principals (its own and its dead letters') are the local
    broker's super user: for benchmarks and tests that run minimart's clients on throwaway
    topics no manifest declares."""
    return presenting(settings, admin_credentials(of(settings)), dead_letters=True)
