"""Who gets which credential: the Secret kind-up.sh generates, read key by key by the manifests.

Each function gets the credentials of the stores it owns and no other; each store gets its
administrator's and those of the roles it creates; every key a manifest reads is one kind-up.sh
generates, and every key it generates is read. (The Kafka credentials, one Secret
``kafka-<principal>`` each, are checked against the Kafka access model in test_kafka_access.py.)
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

from minimart import local_stores
from minimart.kafka_access import SECRET_PREFIX as KAFKA_SECRET_PREFIX
from minimart.settings import Settings
from tests.deploy import generated, kube

# The design (README's saga table, minimart/bootstrap.py): workload -> the keys it reads.
EXPECTED = {
    "order": {"MINIMART_ORDERS_DB_PASSWORD"},
    "order-status": {"MINIMART_ORDERS_DB_PASSWORD"},
    "inventory": {"MINIMART_INVENTORY_DB_PASSWORD"},
    "payment": {"MINIMART_PAYMENTS_DB_PASSWORD"},
    "shipping": {"MINIMART_SHIPPING_MONGO_PASSWORD"},
    "notification": {"REDIS_PASSWORD"},
    "redrive": set(),
    "postgres": {
        "POSTGRES_PASSWORD",
        "MINIMART_ORDERS_DB_PASSWORD",
        "MINIMART_INVENTORY_DB_PASSWORD",
        "MINIMART_PAYMENTS_DB_PASSWORD",
    },
    "mongo": {"MONGO_ROOT_PASSWORD", "MINIMART_SHIPPING_MONGO_PASSWORD"},
    "redis": {"REDIS_PASSWORD"},
    "kafka": set(),
    "create-topics": set(),
}


def _reads(doc: dict[str, Any]) -> set[str]:
    keys = set()
    for spec in kube.pod_specs(doc):
        for container in [*spec["containers"], *spec.get("initContainers", [])]:
            for env in container.get("env", []):
                ref = env.get("valueFrom", {}).get("secretKeyRef")
                if ref and not ref["name"].startswith(KAFKA_SECRET_PREFIX):
                    assert ref["name"] == generated.SECRET_NAME, ref
                    keys.add(ref["key"])
            assert not any("secretRef" in s for s in container.get("envFrom", [])), doc
        assert not [v for v in spec.get("volumes", []) if "secret" in v], "name keys instead"
        for volume in spec.get("volumes", []):
            for source in volume.get("projected", {}).get("sources", []):
                if "secret" in source:
                    assert source["secret"]["name"].startswith(KAFKA_SECRET_PREFIX), volume
                    assert source["secret"].get("items"), "name keys instead"
    return keys


def test_each_workload_reads_the_credentials_of_its_own_stores_only(
    rendered: list[dict[str, Any]],
) -> None:
    reads = {}
    for doc in rendered:
        if any(True for _ in kube.pod_specs(doc)):
            labels = doc["spec"]["template"].get("metadata", {}).get("labels", {})
            reads[labels.get("app.kubernetes.io/name", doc["metadata"]["name"])] = _reads(doc)
    assert reads == EXPECTED


def test_kind_up_generates_exactly_the_keys_the_manifests_read() -> None:
    keys = generated.secret_keys()
    assert len(keys) == len(set(keys))
    assert set(keys) == set().union(*EXPECTED.values())


def test_the_local_stack_keeps_the_same_secret_and_logs_in_as_the_cluster_does(
    rendered: list[dict[str, Any]],
) -> None:
    """minimart/local_stores.py: the local Secret has kind-up.sh's name and keys, and each
    store address a function is given in the cluster logs in as the local login of that store
    (same user, the password of the same key), so the local stack runs what the cluster runs."""
    assert local_stores.SECRET == generated.SECRET_NAME
    assert tuple(generated.secret_keys()) == local_stores.SECRET_KEYS
    variables = {Settings.declarations()[f].env: f for f in local_stores.LOGINS}
    seen = set()
    for doc in rendered:
        for spec in kube.pod_specs(doc):
            for container in spec["containers"]:
                keys = {  # $(VARIABLE) -> the key of minimart-secrets it holds
                    f"$({e['name']})": e["valueFrom"]["secretKeyRef"]["key"]
                    for e in container.get("env", [])
                    if "secretKeyRef" in e.get("valueFrom", {})
                }
                for env in container.get("env", []):
                    if env["name"] not in variables or "value" not in env:
                        continue
                    login = local_stores.LOGINS[variables[env["name"]]]
                    url = urlsplit(env["value"])
                    password = keys.get(url.password or "")
                    assert (url.username or "", password) == (login.user, login.key), env
                    seen.add(env["name"])
    assert seen == set(variables), "a store no function logs in to"
