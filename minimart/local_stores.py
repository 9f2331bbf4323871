"""The local stack's store logins: who logs in to which store, with which password.

The cluster's stores take their passwords from the Secret ``minimart-secrets`` that
``scripts/kind-up.sh`` generates (its ``SECRET_KEYS``); the local stack keeps a Secret of the
same name and keys in its state dir (``minimart/local_secrets.py``: made once, mode 0600, never
in the repository) and provisions its servers with it (``minimart/local/servers``):

- PostgreSQL: one login role per database, named as its database and owning it alone
  (``k8s/infra/postgres.yaml``); the superuser ``postgres`` is the runner's, for provisioning;
- MongoDB-wire store: the user ``shipping`` (readWrite on ``minimart``) and the runner's
  ``root`` (``k8s/infra/mongo.yaml``);
- Redis: ``requirepass`` (``k8s/infra/redis.yaml``).

Who gets which login is read from the manifests, as everything else the local runner runs: a
function is told the address of each store whose password its Knative Service reads from
``minimart-secrets`` in ``k8s/functions/`` (``store_environment``), with that login, and no
other. Whatever else reads the local stores -- the ops console (``minimart check``, ``order``,
``demo``), the tests' fixtures, the benchmarks -- gets its settings from one function,
``local_store_settings``: every store address still at its local default, with the login of the
role that owns the store (the function's own: what the console or a test writes stays the
function's, which a superuser's writes would not). Nothing else spells a store credential.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, urlsplit

from minimart.local_secrets import LocalSecrets
from minimart.manifests import STORE_SECRET as SECRET
from minimart.settings import Settings

# The keys of minimart-secrets: scripts/kind-up.sh's SECRET_KEYS (tests/deploy/test_secrets.py).
POSTGRES_ADMIN_KEY = "POSTGRES_PASSWORD"
MONGO_ADMIN_KEY = "MONGO_ROOT_PASSWORD"
SECRET_KEYS = (
    POSTGRES_ADMIN_KEY,
    "MINIMART_ORDERS_DB_PASSWORD",
    "MINIMART_INVENTORY_DB_PASSWORD",
    "MINIMART_PAYMENTS_DB_PASSWORD",
    MONGO_ADMIN_KEY,
    "MINIMART_SHIPPING_MONGO_PASSWORD",
    "REDIS_PASSWORD",
)
POSTGRES_ADMIN = "postgres"  # the superuser: the runner's, never a function's
MONGO_ADMIN = "root"  # in database admin, role root: the runner's, never a function's


@dataclass(frozen=True)
class Login:
    """The login of a store's owner: its user (empty: Redis' requirepass, no user) and the key
    of its password in minimart-secrets."""

    user: str
    key: str


# Each store address of ``Settings`` and the login that owns it (k8s/functions/ log in as the
# same user with the same key: tests/deploy/test_secrets.py).
LOGINS: Mapping[str, Login] = {
    "orders_dsn": Login("minimart_orders", "MINIMART_ORDERS_DB_PASSWORD"),
    "inventory_dsn": Login("minimart_inventory", "MINIMART_INVENTORY_DB_PASSWORD"),
    "payments_dsn": Login("minimart_payments", "MINIMART_PAYMENTS_DB_PASSWORD"),
    "mongo_url": Login("shipping", "MINIMART_SHIPPING_MONGO_PASSWORD"),
    "redis_url": Login("", "REDIS_PASSWORD"),
}
# PostgreSQL: each database and its owner (the role of the same name).
DATABASES = {LOGINS[f].user: LOGINS[f] for f in ("orders_dsn", "inventory_dsn", "payments_dsn")}
MONGO_DATABASE = "minimart"


def local_secret(settings: Settings) -> dict[str, str]:
    """The state dir's minimart-secrets, generated the first time it is asked for."""
    return LocalSecrets(settings.state_dir / "secrets").ensure(SECRET, {}, SECRET_KEYS)


def with_login(url: str, user: str, password: str) -> str:
    """``url`` (``scheme://host:port/...``) logging in as ``user`` with ``password``."""
    parts = urlsplit(url)
    host = parts.netloc.rpartition("@")[2]
    login = f"{quote(user, safe='')}:{quote(password, safe='')}@"
    return parts._replace(netloc=login + host).geturl()


def _local_default(settings: Settings, field: str) -> str:
    """The address ``field`` has when not given: derived from the host and the ports."""
    unset: dict[str, Any] = {field: ""}
    return str(getattr(dataclasses.replace(settings, **unset), field))


def local_store_settings(settings: Settings, fields: Iterable[str] = tuple(LOGINS)) -> Settings:
    """``settings`` with each store address of ``fields`` that is still the local stack's
    default given the login of the store's owner; an address given otherwise (a flag, a
    ``MINIMART_*`` variable: a cluster's) is kept as it is. The one way in for whatever reads
    the local stores besides their functions: the console, the tests, the benchmarks."""
    local = [f for f in fields if getattr(settings, f) == _local_default(settings, f)]
    if not local:
        return settings
    secret = local_secret(settings)
    logins: dict[str, Any] = {
        f: with_login(getattr(settings, f), LOGINS[f].user, secret[LOGINS[f].key]) for f in local
    }
    return dataclasses.replace(settings, **logins)


def without_store_logins(settings: Settings) -> Settings:
    """``settings`` with the local logins ``local_store_settings`` gave taken off again: what
    the local runner is handed (it gives each function its own login, and no process other)."""
    unset: dict[str, Any] = {f: "" for f in LOGINS}
    given = local_store_settings(dataclasses.replace(settings, **unset))
    logged_in: dict[str, Any] = {f: "" for f in LOGINS if getattr(settings, f) == getattr(given, f)}
    return dataclasses.replace(settings, **logged_in)


def store_environment(settings: Settings, secret_keys: Iterable[str]) -> dict[str, str]:
    """The store variables of a local function whose manifest reads ``secret_keys`` of
    minimart-secrets: the address of each store it logs in to, with that login, and every
    other store's variable empty (its ``Settings`` then derive an address with no password)."""
    keys = set(secret_keys)
    declarations = Settings.declarations()
    own = [field for field, login in LOGINS.items() if login.key in keys]
    given = local_store_settings(settings, own)
    return {
        declarations[field].env: getattr(given, field) if field in own else "" for field in LOGINS
    }
