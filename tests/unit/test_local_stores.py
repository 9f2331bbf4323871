"""The one way in to the local stores' logins (minimart/local_stores.py): made once in the
state dir, put on the addresses that are still the local stack's, taken off for the runner."""

from __future__ import annotations

import stat
from pathlib import Path
from urllib.parse import urlsplit

from minimart import local_stores
from minimart.local_secrets import random_password
from minimart.local_stores import local_store_settings, with_login, without_store_logins
from minimart.settings import Settings


def test_each_local_address_gets_its_owners_login_once_made_in_the_state_dir(
    tmp_path: Path,
) -> None:
    bare = Settings(state_dir=tmp_path, postgres_port=61132)
    settings = local_store_settings(bare)
    secret = local_stores.local_secret(bare)

    assert set(secret) == set(local_stores.SECRET_KEYS)
    folder = tmp_path / "secrets"
    assert stat.S_IMODE(folder.stat().st_mode) == 0o700
    assert stat.S_IMODE((folder / "minimart-secrets.json").stat().st_mode) == 0o600
    for field, login in local_stores.LOGINS.items():
        url = urlsplit(getattr(settings, field))
        assert (url.username or "", url.password) == (login.user, secret[login.key]), field
        assert (url.hostname, url.port, url.path) == (
            urlsplit(getattr(bare, field)).hostname,
            urlsplit(getattr(bare, field)).port,
            urlsplit(getattr(bare, field)).path,
        )
    assert local_store_settings(bare) == settings  # the same Secret every time
    assert local_store_settings(settings) == settings


def test_an_address_given_otherwise_is_kept_as_it_is(tmp_path: Path) -> None:
    cluster = "postgresql://postgres@127.0.0.1:5432/minimart_orders"
    settings = local_store_settings(Settings(state_dir=tmp_path, orders_dsn=cluster))
    assert settings.orders_dsn == cluster
    assert "minimart_payments:" in settings.payments_dsn

    given = {field: "x://elsewhere/" for field in local_stores.LOGINS}
    elsewhere = tmp_path / "elsewhere"
    assert local_store_settings(Settings(state_dir=elsewhere, **given)) == Settings(
        state_dir=elsewhere, **given
    )
    assert not elsewhere.exists(), "no Secret made when no local store is read"


def test_the_runner_is_handed_the_addresses_without_the_logins(tmp_path: Path) -> None:
    bare = Settings(state_dir=tmp_path)
    cluster = with_login("redis://redis:6379/0", "", random_password())
    settings = local_store_settings(Settings(state_dir=tmp_path, redis_url=cluster))
    assert without_store_logins(settings) == Settings(state_dir=tmp_path, redis_url=cluster)
    assert without_store_logins(bare) == bare


def test_a_login_is_quoted_into_the_url_and_replaces_any_other() -> None:
    assert with_login("redis://h:1/0", "", "p/w@") == "redis://:p%2Fw%40@h:1/0"
    old = with_login("mongodb://h:1/db", "u", random_password())
    new = random_password()
    url = urlsplit(with_login(old, "shipping", new))
    assert (url.username, url.password, url.hostname, url.port) == ("shipping", new, "h", 1)
