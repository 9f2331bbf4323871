"""The local stand-ins for the cluster's Secrets (minimart/local_secrets.py)."""

from __future__ import annotations

import stat
import threading
from pathlib import Path

import pytest

from minimart import local_secrets
from minimart.kafka_access import ADMIN, ADMIN_MECHANISM, CONSOLE, MECHANISM
from minimart.local_secrets import LocalSecrets
from minimart.settings import Settings


def test_a_secret_is_made_once_readable_by_its_owner_only_and_then_kept(tmp_path: Path) -> None:
    secrets = LocalSecrets(tmp_path / "secrets")
    made = secrets.ensure("kafka-fn-payment", {"user": "fn-payment"}, ("password",))
    assert made["user"] == "fn-payment" and len(made["password"]) >= 24
    assert secrets.ensure("kafka-fn-payment", {"user": "fn-payment"}, ("password",)) == made
    assert stat.S_IMODE(secrets.path("kafka-fn-payment").stat().st_mode) == 0o600
    assert stat.S_IMODE(secrets.folder.stat().st_mode) == 0o700
    assert secrets.read("kafka-fn-order") is None


def test_a_key_added_later_is_added_without_changing_the_others(tmp_path: Path) -> None:
    secrets = LocalSecrets(tmp_path)
    first = secrets.ensure("s", {"user": "u"}, ("password",))
    second = secrets.ensure("s", {"user": "u"}, ("password", "token"))
    assert second["password"] == first["password"] and second["token"]
    assert stat.S_IMODE(secrets.path("s").stat().st_mode) == 0o600


def test_processes_asking_at_once_for_a_new_secret_all_get_the_same(tmp_path: Path) -> None:
    secrets = LocalSecrets(tmp_path)
    got: list[dict[str, str]] = []
    barrier = threading.Barrier(8)

    def ask() -> None:
        barrier.wait()
        got.append(secrets.ensure("race", {}, ("password",)))

    threads = [threading.Thread(target=ask) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(got) == 8 and all(value == got[0] for value in got)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["race.json"]


@pytest.mark.parametrize("name", ["", "../x", ".hidden", "a/b"])
def test_a_name_that_is_not_a_secret_name_is_refused(tmp_path: Path, name: str) -> None:
    with pytest.raises(ValueError, match="not a Secret name"):
        LocalSecrets(tmp_path).path(name)


def test_kafka_principals_have_the_keys_a_cluster_secret_has(tmp_path: Path) -> None:
    settings = Settings(state_dir=tmp_path)
    secrets = local_secrets.of(settings)
    secret = local_secrets.kafka_secret(secrets, "kafka-payment-source")
    assert secret.keys() == {"user", "password", "sasl.mechanism", "protocol"}
    assert (secret["user"], secret["sasl.mechanism"]) == ("payment-source", MECHANISM)
    admin = local_secrets.admin_credentials(secrets)
    assert (admin.user, admin.mechanism) == (ADMIN, ADMIN_MECHANISM)
    assert admin.password not in repr(admin)


def test_the_console_takes_its_principal_only_when_none_was_given(tmp_path: Path) -> None:
    settings = Settings(state_dir=tmp_path)
    assert local_secrets.with_console_credentials(settings) == settings  # no stack made it
    console = local_secrets.kafka_credentials(local_secrets.of(settings), CONSOLE)
    local = local_secrets.with_console_credentials(settings)
    assert (local.kafka_user, local.kafka_password) == (CONSOLE, console.password)
    assert console.password not in repr(local)
    given = Settings(state_dir=tmp_path, kafka_user="someone", kafka_password="theirs")
    assert local_secrets.with_console_credentials(given) == given
