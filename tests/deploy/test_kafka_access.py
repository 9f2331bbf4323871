"""Kafka in the cluster: who may write which topic, checked offline on what a deploy applies.

The broker (k8s/infra/kafka.yaml) lets no client in without SASL and allows nothing without an
ACL; the ACLs (ConfigMap kafka-access, rendered from the manifests by
scripts/render_kafka_access.py) are the access model's (minimart/kafka_access.py); every
KafkaSource, KafkaSink and function logs in with a Secret of its own. The table test asks the
broker's rules, over the rendered ACLs and broker config, whether each principal may read or
write each topic, and compares with what the manifests say each one does.

Each check is a function of the rendered documents. Every check passes on the repository and
fails on at least one mutated copy (MUTATIONS): a check that cannot fail proves nothing.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from minimart.kafka_access import (
    ADMIN,
    CONSOLE,
    DESCRIBE,
    GROUP,
    MECHANISM,
    READ,
    SECRET_PREFIX,
    TOPIC,
    TOPICS_JOB,
    WRITE,
    Grant,
    access_of,
)
from minimart.manifests import ManifestError, load_topology
from minimart.settings import PROJECT_ROOT
from tests.deploy import generated, kube

Docs = list[dict[str, Any]]
ACCESS = access_of(load_topology(PROJECT_ROOT))
KNATIVE_KAFKA_KEYS = {"type": "sasl.mechanism", "user": "user", "password": "password"}
SASL_PROTOCOLS = {"SASL_PLAINTEXT", "SASL_SSL"}
LOOPBACK = {"127.0.0.1", "localhost", "[::1]"}
ANONYMOUS = "ANONYMOUS"  # Kafka's principal of a client that did not log in


@pytest.fixture(scope="module")
def docs(builds: dict[Path, kube.Build]) -> Docs:
    """What skaffold deploys (k8s/) and the stores (k8s/infra/)."""
    return builds[kube.KUSTOMIZE_ROOT].documents + builds[kube.INFRA_ROOT].documents


# --- reading the rendered documents ----------------------------------------------------------


def _one(docs: Docs, kind: str, name: str) -> dict[str, Any]:
    (doc,) = [d for d in docs if d["kind"] == kind and d["metadata"]["name"] == name]
    return doc


def _containers(doc: Mapping[str, Any]) -> Iterator[dict[str, Any]]:
    for spec in kube.pod_specs(doc):
        yield from spec.get("initContainers", [])
        yield from spec["containers"]


def _secret_refs(container: Mapping[str, Any]) -> dict[str, tuple[str, str]]:
    """env name -> (Secret, key) of the variables a container reads from a Secret."""
    return {
        e["name"]: (ref["name"], ref["key"])
        for e in container.get("env", [])
        if (ref := e.get("valueFrom", {}).get("secretKeyRef"))
    }


def broker_properties(docs: Docs) -> dict[str, str]:
    """server.properties of ConfigMap kafka-config."""
    text = _one(docs, "ConfigMap", "kafka-config")["data"]["server.properties"]
    props = {}
    for raw in text.splitlines():
        line = raw.strip()
        if line and not line.startswith("#"):
            key, sep, value = line.partition("=")
            assert sep, f"server.properties: not key=value: {line!r}"
            assert key.strip() not in props, f"server.properties: {key} twice"
            props[key.strip()] = value.strip()
    return props


def rendered_grants(docs: Docs) -> set[Grant]:
    """The ACLs the Job adds: every line of ConfigMap kafka-access's ``acls``, expanded."""
    grants = set()
    for line in _one(docs, "ConfigMap", "kafka-access")["data"]["acls"].splitlines():
        principal, resource, operations, *names = line.split()
        for operation in operations.split(","):
            grants |= {Grant(principal, resource, name, operation) for name in names}
    return grants


@dataclass(frozen=True)
class Broker:
    """Kafka's StandardAuthorizer over literal ALLOW ACLs (the only kind the Job adds): a super
    user may do anything; READ and WRITE imply DESCRIBE; a resource with no ACL is open only if
    allow.everyone.if.no.acl.found; ``*`` as a name or principal matches all."""

    grants: frozenset[Grant]
    super_users: frozenset[str]
    allow_everyone: bool

    @classmethod
    def of(cls, docs: Docs) -> Broker:
        props = broker_properties(docs)
        users = {u.strip() for u in props.get("super.users", "").split(";") if u.strip()}
        return cls(
            grants=frozenset(rendered_grants(docs)),
            super_users=frozenset(u.removeprefix("User:") for u in users),
            allow_everyone=props.get("allow.everyone.if.no.acl.found", "false") == "true",
        )

    def allows(self, principal: str, operation: str, resource: str, name: str) -> bool:
        if principal in self.super_users:
            return True
        acls = [g for g in self.grants if g.resource == resource and g.name in (name, "*")]
        if not acls:
            return self.allow_everyone
        implied = {operation, "ALL"} | (
            {READ, WRITE, "DELETE", "ALTER"} if operation == DESCRIBE else set()
        )
        return any(g.principal in (principal, "*") and g.operation in implied for g in acls)


# --- what the manifests say each one does (independent of the access model) ------------------


def intended(docs: Docs) -> dict[str, dict[str, set[str]]]:
    """principal -> {READ: topics, WRITE: topics}, from the rendered manifests alone: a
    function writes its minimart.dev/produces, a source reads its topics, a dead-letter sink
    writes its topic, the console reads all and replays what functions write; the topics Job
    only creates; the administrator may do anything."""
    topics = set(_one(docs, "ConfigMap", "minimart-topics")["data"])
    want: dict[str, dict[str, set[str]]] = {}

    def add(principal: str, operation: str, names: set[str]) -> None:
        want.setdefault(principal, {READ: set(), WRITE: set()})[operation] |= names

    written: set[str] = set()
    for service in kube.of_kind(docs, "serving.knative.dev", "Service"):
        produces = service["metadata"].get("annotations", {}).get("minimart.dev/produces", "")
        names = {t for t in produces.split(",") if t}
        written |= names
        for container in _containers(service):
            secret = _secret_refs(container).get("MINIMART_KAFKA_USER")
            if secret:
                add(secret[0].removeprefix(SECRET_PREFIX), WRITE, names)
    for source in kube.of_kind(docs, "sources.knative.dev", "KafkaSource"):
        secret = source["spec"]["net"]["sasl"]["user"]["secretKeyRef"]["name"]
        add(secret.removeprefix(SECRET_PREFIX), READ, set(source["spec"]["topics"]))
    for sink in kube.of_kind(docs, "eventing.knative.dev", "KafkaSink"):
        secret = sink["spec"]["auth"]["secret"]["ref"]["name"]
        add(secret.removeprefix(SECRET_PREFIX), WRITE, {sink["spec"]["topic"]})
    add(CONSOLE, READ, topics)
    add(CONSOLE, WRITE, written)
    add(TOPICS_JOB, READ, set())
    add(ADMIN, READ, topics)
    add(ADMIN, WRITE, topics)
    return want


# --- the checks ------------------------------------------------------------------------------


def check_sources_log_in_with_their_own_secret(docs: Docs) -> None:
    sources = kube.of_kind(docs, "sources.knative.dev", "KafkaSource")
    assert sources
    for source in sources:
        name, net = source["metadata"]["name"], source["spec"].get("net", {})
        sasl = net.get("sasl", {})
        assert sasl.get("enable") is True, f"KafkaSource {name}: no SASL"
        # TLS off: the protocol Knative derives is SASL_PLAINTEXT, the broker's (secret.go).
        assert net.get("tls", {}).get("enable") is False, f"KafkaSource {name}: TLS"
        secret = SECRET_PREFIX + name
        assert ACCESS.principals.get(name) == secret, f"KafkaSource {name}: not in the model"
        for field, key in KNATIVE_KAFKA_KEYS.items():
            ref = sasl.get(field, {}).get("secretKeyRef", {})
            assert (ref.get("name"), ref.get("key")) == (secret, key), f"{name}: sasl.{field}"


def check_sinks_log_in_with_their_own_secret(docs: Docs) -> None:
    sinks = kube.of_kind(docs, "eventing.knative.dev", "KafkaSink")
    assert sinks
    for sink in sinks:
        name = sink["metadata"]["name"]
        ref = sink["spec"].get("auth", {}).get("secret", {}).get("ref", {})
        assert ref.get("name") == SECRET_PREFIX + name, f"KafkaSink {name}: auth {ref}"
        assert ACCESS.principals.get(name) == ref["name"], f"KafkaSink {name}: not in the model"


def check_each_workload_reads_its_own_kafka_secret_only(docs: Docs) -> None:
    """A function reads its own Secret (user and password); the broker the administrator's; the
    Job the administrator's, minimart-topics' and the SCRAM passwords; nothing else any."""
    read: dict[str, set[tuple[str, str]]] = {}
    for doc in docs:
        for spec in kube.pod_specs(doc):
            name = doc["metadata"]["name"]
            refs = read.setdefault(name, set())
            for container in [*spec.get("initContainers", []), *spec["containers"]]:
                refs |= {
                    r for r in _secret_refs(container).values() if r[0].startswith(SECRET_PREFIX)
                }
            for volume in spec.get("volumes", []):
                for source in volume.get("projected", {}).get("sources", []):
                    if "secret" in source:
                        s = source["secret"]
                        refs |= {(s["name"], item["key"]) for item in s["items"]}
    # The functions that publish (minimart.dev/produces); one that did not would need no Secret.
    services = {
        s["metadata"]["name"]
        for s in kube.of_kind(docs, "serving.knative.dev", "Service")
        if s["metadata"].get("annotations", {}).get("minimart.dev/produces")
    }
    assert services
    (job,) = [n for n in read if n.startswith("create-topics-")]
    scram = {s for p, s in ACCESS.principals.items() if p != ADMIN}
    admin, topics = ACCESS.principals[ADMIN], ACCESS.principals[TOPICS_JOB]
    expected: dict[str, set[tuple[str, str]]] = {name: set() for name in read}
    for name in services:
        expected[name] = {
            (f"{SECRET_PREFIX}fn-{name}", "user"),
            (f"{SECRET_PREFIX}fn-{name}", "password"),
        }
    expected["kafka"] = {(admin, "user"), (admin, "password")}
    expected[job] = {
        (admin, "user"),
        (admin, "password"),
        (topics, "user"),
        (topics, "password"),
    } | {(s, "password") for s in scram}
    assert read == expected
    for name in services:
        assert ACCESS.principals.get(f"fn-{name}") == f"{SECRET_PREFIX}fn-{name}", name


def check_broker_lets_no_one_in_without_sasl_and_nothing_without_an_acl(docs: Docs) -> None:
    props = broker_properties(docs)
    protocols = dict(p.split(":", 1) for p in props["listener.security.protocol.map"].split(","))
    ports = set()
    for listener in props["listeners"].split(","):
        name, host_port = listener.split("://", 1)
        host, _, port = host_port.rpartition(":")
        assert protocols.get(name) in SASL_PROTOCOLS, f"listener {listener} without SASL"
        if name in props["controller.listener.names"].split(","):
            assert host in LOOPBACK, f"controller listener {listener} reachable from outside"
        else:
            ports.add(int(port))
    for listener in props["advertised.listeners"].split(","):
        assert protocols.get(listener.split("://")[0]) in SASL_PROTOCOLS, listener
    assert props["inter.broker.listener.name"] in protocols
    assert (
        props["authorizer.class.name"] == "org.apache.kafka.metadata.authorizer.StandardAuthorizer"
    )
    assert props["allow.everyone.if.no.acl.found"] == "false"
    assert props["super.users"] == f"User:{ADMIN}"
    assert MECHANISM in props["sasl.enabled.mechanisms"].split(",")
    # PLAIN knows the administrator alone, whose password comes from its Secret via the
    # environment (EnvVarConfigProvider): no password is written in the ConfigMap.
    (pod,) = kube.pod_specs(_one(docs, "StatefulSet", "kafka"))
    (container,) = pod["containers"]
    env = _secret_refs(container)
    for key, value in props.items():
        if key.endswith("plain.sasl.jaas.config"):
            users = re.findall(r'\buser_([^=\s]+)="([^"]*)"', value)
            assert [u for u, _ in users] == [ADMIN], f"{key}: PLAIN users {users}"
            for variable in re.findall(r'(?:password|user_[^=\s]+)="([^"]*)"', value):
                match = re.fullmatch(r"\$\{env:([A-Z_]+)\}", variable)
                assert match, f"{key}: a password written in the ConfigMap"
                assert env.get(match[1]) == (ACCESS.principals[ADMIN], "password"), key
    assert props["config.providers.env.class"].endswith(".EnvVarConfigProvider")
    # The Service and the NetworkPolicy's port name reach exactly the SASL listener.
    (service_port,) = _one(docs, "Service", "kafka")["spec"]["ports"]
    (container_port,) = container["ports"]
    assert service_port["targetPort"] == container_port["name"] == "kafka"
    assert {container_port["containerPort"], service_port["port"]} == ports == {9092}


def check_rendered_grants_are_the_model(docs: Docs) -> None:
    assert rendered_grants(docs) == set(ACCESS.grants)


def check_who_may_read_and_write_each_topic(docs: Docs) -> None:
    """principal x topic x (READ, WRITE): what the broker allows is what the manifests say."""
    broker = Broker.of(docs)
    want = intended(docs)
    topics = sorted(_one(docs, "ConfigMap", "minimart-topics")["data"])
    assert set(want) == set(ACCESS.principals), "a principal the manifests do not explain"
    wrong = [
        (principal, operation, topic)
        for principal in [*sorted(want), ANONYMOUS, "intruder"]
        for topic in topics
        for operation in (READ, WRITE)
        if broker.allows(principal, operation, TOPIC, topic)
        != (topic in want.get(principal, {}).get(operation, set()))
    ]
    assert not wrong, f"allowed != intended for (principal, operation, topic): {wrong}"
    # A source's group is its own: no other principal reads (commits) it.
    for source in kube.of_kind(docs, "sources.knative.dev", "KafkaSource"):
        group, own = source["spec"]["consumerGroup"], source["metadata"]["name"]
        readers = {p for p in want if broker.allows(p, READ, GROUP, group)}
        assert readers == {own, ADMIN}, f"group {group}: {readers}"


def check_the_job_sets_every_credential_and_makes_topics_as_minimart_topics(docs: Docs) -> None:
    (job,) = kube.of_kind(docs, "batch", "Job")
    pod = job["spec"]["template"]["spec"]
    (users,) = pod["initContainers"]
    (topics,) = pod["containers"]
    volumes = {v["name"]: v for v in pod["volumes"]}
    mounted = {m["name"]: m["mountPath"] for m in users["volumeMounts"]}
    env = {e["name"]: e.get("value") for e in users["env"]}
    sources = volumes["kafka-passwords"]["projected"]["sources"]
    files = {item["path"]: s["secret"]["name"] for s in sources for item in s["secret"]["items"]}
    assert files == {p: s for p, s in ACCESS.principals.items() if p != ADMIN}
    assert env["SCRAM_USERS_DIR"] == mounted["kafka-passwords"]
    assert volumes["access"]["configMap"]["name"] == "kafka-access"
    assert env["ACCESS_DIR"] == mounted["access"]
    assert _secret_refs(users)["KAFKA_ADMIN_PASSWORD"] == (ACCESS.principals[ADMIN], "password")
    assert "kafka-passwords" not in {m["name"] for m in topics["volumeMounts"]}
    assert set(_secret_refs(topics).values()) == {
        (ACCESS.principals[TOPICS_JOB], "user"),
        (ACCESS.principals[TOPICS_JOB], "password"),
    }
    assert "sasl.mechanism=SCRAM-SHA-512" in "\n".join(topics["args"])


CHECKS: dict[str, Callable[[Docs], None]] = {
    f.__name__.removeprefix("check_"): f
    for f in (
        check_sources_log_in_with_their_own_secret,
        check_sinks_log_in_with_their_own_secret,
        check_each_workload_reads_its_own_kafka_secret_only,
        check_broker_lets_no_one_in_without_sasl_and_nothing_without_an_acl,
        check_rendered_grants_are_the_model,
        check_who_may_read_and_write_each_topic,
        check_the_job_sets_every_credential_and_makes_topics_as_minimart_topics,
    )
}


@pytest.mark.parametrize("check", sorted(CHECKS))
def test_the_deploy_passes(docs: Docs, check: str) -> None:
    CHECKS[check](docs)


# --- mutations: each must make its check fail -------------------------------------------------


def _source(docs: Docs, name: str) -> dict[str, Any]:
    return _one(docs, "KafkaSource", name)


def _env(docs: Docs, service: str) -> list[dict[str, Any]]:
    (container,) = _one(docs, "Service", service)["spec"]["template"]["spec"]["containers"]
    return list(container["env"])


def _set_property(docs: Docs, key: str, value: str) -> None:
    data = _one(docs, "ConfigMap", "kafka-config")["data"]
    lines = [ln for ln in data["server.properties"].splitlines() if not ln.startswith(f"{key}=")]
    data["server.properties"] = "\n".join([*lines, f"{key}={value}"]) + "\n"


def _set_properties(docs: Docs, listeners: str, protocols: str) -> None:
    _set_property(docs, "listeners", listeners)
    _set_property(docs, "listener.security.protocol.map", protocols)


def _add_acl(docs: Docs, line: str) -> None:
    _one(docs, "ConfigMap", "kafka-access")["data"]["acls"] += line + "\n"


def _drop_acl(docs: Docs, prefix: str) -> None:
    data = _one(docs, "ConfigMap", "kafka-access")["data"]
    data["acls"] = "".join(
        ln + "\n" for ln in data["acls"].splitlines() if not ln.startswith(prefix)
    )


def _read_secret(docs: Docs, service: str, variable: str, secret: str) -> None:
    for item in _env(docs, service):
        if item["name"] == variable:
            item["valueFrom"]["secretKeyRef"]["name"] = secret


def _add_env(docs: Docs, service: str, item: dict[str, Any]) -> None:
    (container,) = _one(docs, "Service", service)["spec"]["template"]["spec"]["containers"]
    container["env"].append(item)


def _also_produces(docs: Docs, service: str, topic: str) -> None:
    annotations = _one(docs, "Service", service)["metadata"]["annotations"]
    annotations["minimart.dev/produces"] += f",{topic}"


def _drop_password_file(docs: Docs, principal: str) -> None:
    (job,) = kube.of_kind(docs, "batch", "Job")
    (volume,) = [v for v in job["spec"]["template"]["spec"]["volumes"] if "projected" in v]
    sources = volume["projected"]["sources"]
    volume["projected"]["sources"] = [
        s for s in sources if s["secret"]["items"][0]["path"] != principal
    ]


def _topics_as_admin(docs: Docs) -> None:
    (job,) = kube.of_kind(docs, "batch", "Job")
    (container,) = job["spec"]["template"]["spec"]["containers"]
    for item in container["env"]:
        if "valueFrom" in item and "secretKeyRef" in item["valueFrom"]:
            item["valueFrom"]["secretKeyRef"]["name"] = "kafka-minimart-admin"


def _plain_jaas(options: dict[str, str]) -> str:
    """A PlainLoginModule JAAS line with these options (each value quoted)."""
    quoted = " ".join(f'{key}="{value}"' for key, value in options.items())
    return f"org.apache.kafka.common.security.plain.PlainLoginModule required {quoted};"


PAYMENT = "minimart.payment.captured"
# Config-provider references, as the broker's JAAS config holds them (no value).
USER_REF, PASSWORD_REF = "${env:KAFKA_ADMIN_USER}", "${env:KAFKA_ADMIN_PASSWORD}"
MUTATIONS: dict[str, tuple[str, Callable[[Docs], None]]] = {
    # The issue's example: fn-payment may write a topic shipping owns.
    "fn-payment-writes-shipping.failed": (
        "who_may_read_and_write_each_topic",
        lambda d: _add_acl(d, "fn-payment topic WRITE minimart.shipping.failed"),
    ),
    "the-same-grant-in-the-model-check": (
        "rendered_grants_are_the_model",
        lambda d: _add_acl(d, "fn-payment topic WRITE minimart.shipping.failed"),
    ),
    "a-grant-dropped": (
        "rendered_grants_are_the_model",
        lambda d: _drop_acl(d, "fn-order topic"),
    ),
    "fn-order-refused-its-own-topic": (
        "who_may_read_and_write_each_topic",
        lambda d: _drop_acl(d, "fn-order topic"),
    ),
    "a-wildcard-write": (
        "who_may_read_and_write_each_topic",
        lambda d: _add_acl(d, "fn-notification topic WRITE *"),
    ),
    "anyone-may-read": (
        "who_may_read_and_write_each_topic",
        lambda d: _add_acl(d, f"* topic READ {PAYMENT}"),
    ),
    "a-source-reads-another-sources-topic": (
        "who_may_read_and_write_each_topic",
        lambda d: _add_acl(d, "payment-source topic READ minimart.shipping.prepared"),
    ),
    "a-source-commits-another-sources-group": (
        "who_may_read_and_write_each_topic",
        lambda d: _add_acl(d, "payment-source group READ minimart-shipping"),
    ),
    "a-function-publishes-what-its-acls-refuse": (
        "who_may_read_and_write_each_topic",
        lambda d: _also_produces(d, "payment", "minimart.shipping.failed"),
    ),
    "the-console-a-super-user": (
        "who_may_read_and_write_each_topic",
        lambda d: _set_property(d, "super.users", f"User:{ADMIN};User:{CONSOLE}"),
    ),
    "sasl-dropped-from-a-source": (
        "sources_log_in_with_their_own_secret",
        lambda d: _source(d, "payment-source")["spec"].pop("net"),
    ),
    "sasl-disabled-on-a-source": (
        "sources_log_in_with_their_own_secret",
        lambda d: _source(d, "payment-source")["spec"]["net"]["sasl"].update(enable=False),
    ),
    "a-source-with-anothers-password": (
        "sources_log_in_with_their_own_secret",
        lambda d: _source(d, "payment-source")["spec"]["net"]["sasl"]["password"][
            "secretKeyRef"
        ].update(name="kafka-shipping-source"),
    ),
    "tls-on-a-source-the-broker-does-not-speak": (
        "sources_log_in_with_their_own_secret",
        lambda d: _source(d, "payment-source")["spec"]["net"]["tls"].update(enable=True),
    ),
    "auth-dropped-from-a-sink": (
        "sinks_log_in_with_their_own_secret",
        lambda d: _one(d, "KafkaSink", "minimart-deadletter")["spec"].pop("auth"),
    ),
    "a-sink-with-the-admins-secret": (
        "sinks_log_in_with_their_own_secret",
        lambda d: _one(d, "KafkaSink", "minimart-deadletter")["spec"]["auth"]["secret"][
            "ref"
        ].update(name="kafka-minimart-admin"),
    ),
    "a-function-with-anothers-password": (
        "each_workload_reads_its_own_kafka_secret_only",
        lambda d: _read_secret(d, "payment", "MINIMART_KAFKA_PASSWORD", "kafka-fn-shipping"),
    ),
    "a-function-also-reading-the-admin": (
        "each_workload_reads_its_own_kafka_secret_only",
        lambda d: _add_env(
            d,
            "order",
            {
                "name": "X",
                "valueFrom": {"secretKeyRef": {"name": "kafka-minimart-admin", "key": "password"}},
            },
        ),
    ),
    "a-plaintext-listener": (
        "broker_lets_no_one_in_without_sasl_and_nothing_without_an_acl",
        lambda d: _set_properties(
            d,
            listeners="SASL_PLAINTEXT://0.0.0.0:9092,PLAINTEXT://0.0.0.0:9094,"
            "CONTROLLER://127.0.0.1:9093",
            protocols="SASL_PLAINTEXT:SASL_PLAINTEXT,PLAINTEXT:PLAINTEXT,CONTROLLER:SASL_PLAINTEXT",
        ),
    ),
    "the-controller-reachable": (
        "broker_lets_no_one_in_without_sasl_and_nothing_without_an_acl",
        lambda d: _set_property(
            d, "listeners", "SASL_PLAINTEXT://0.0.0.0:9092,CONTROLLER://0.0.0.0:9093"
        ),
    ),
    "everyone-allowed-without-acls": (
        "broker_lets_no_one_in_without_sasl_and_nothing_without_an_acl",
        lambda d: _set_property(d, "allow.everyone.if.no.acl.found", "true"),
    ),
    "a-second-super-user": (
        "broker_lets_no_one_in_without_sasl_and_nothing_without_an_acl",
        lambda d: _set_property(d, "super.users", f"User:{ADMIN};User:fn-order"),
    ),
    "no-authorizer": (
        "broker_lets_no_one_in_without_sasl_and_nothing_without_an_acl",
        lambda d: _set_property(d, "authorizer.class.name", ""),
    ),
    "a-password-in-the-configmap": (
        "broker_lets_no_one_in_without_sasl_and_nothing_without_an_acl",
        lambda d: _set_property(
            d,
            "listener.name.sasl_plaintext.plain.sasl.jaas.config",
            _plain_jaas({"username": ADMIN, "password": "hunter2", f"user_{ADMIN}": "hunter2"}),
        ),
    ),
    "a-second-plain-user": (
        "broker_lets_no_one_in_without_sasl_and_nothing_without_an_acl",
        lambda d: _set_property(
            d,
            "listener.name.sasl_plaintext.plain.sasl.jaas.config",
            _plain_jaas(
                {
                    "username": USER_REF,
                    "password": PASSWORD_REF,
                    f"user_{ADMIN}": PASSWORD_REF,
                    "user_fn-order": PASSWORD_REF,
                }
            ),
        ),
    ),
    "a-principal-without-its-credential": (
        "the_job_sets_every_credential_and_makes_topics_as_minimart_topics",
        lambda d: _drop_password_file(d, "fn-payment"),
    ),
    "topics-made-as-the-admin": (
        "the_job_sets_every_credential_and_makes_topics_as_minimart_topics",
        _topics_as_admin,
    ),
}


def test_every_check_has_a_mutation() -> None:
    assert {check for check, _ in MUTATIONS.values()} == set(CHECKS)


@pytest.mark.parametrize("mutation", sorted(MUTATIONS))
def test_a_mutated_deploy_fails_its_check(docs: Docs, mutation: str) -> None:
    check, mutate = MUTATIONS[mutation]
    mutated = copy.deepcopy(docs)
    mutate(mutated)
    assert mutated != docs, "the mutation changed nothing"
    with pytest.raises(AssertionError):
        CHECKS[check](mutated)


# --- the model refuses manifests it cannot give an identity ----------------------------------


def _copy_manifests(tmp_path: Path) -> Path:
    for folder in ("eventing", "k8s"):
        for path in (PROJECT_ROOT / folder).rglob("*.yaml"):
            target = tmp_path / path.relative_to(PROJECT_ROOT)
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(path.read_text())
    return tmp_path


@pytest.mark.parametrize(
    ("file", "old", "new", "error"),
    [
        ("eventing/payment-source.yaml", "enable: true", "enable: false", "no net.sasl Secret"),
        (
            "eventing/deadletter-sink.yaml",
            "name: kafka-minimart-deadletter",
            "name: minimart-deadletter-credentials",
            "is not named kafka-<user>",
        ),
        ("k8s/functions/payment.yaml", "name: MINIMART_KAFKA_USER", "name: X", "no Kafka Secret"),
    ],
    ids=["source-without-sasl", "sink-secret-misnamed", "function-without-credentials"],
)
def test_the_model_refuses_a_component_without_its_own_secret(
    tmp_path: Path, file: str, old: str, new: str, error: str
) -> None:
    root = _copy_manifests(tmp_path)
    path = root / file
    assert old in path.read_text()
    path.write_text(path.read_text().replace(old, new, 1))
    with pytest.raises(ManifestError, match=re.escape(error)):
        access_of(load_topology(root))


# --- the generated files are fresh --------------------------------------------------------------


def test_the_rendered_access_and_job_volume_are_fresh() -> None:
    renderer = generated.script("render_kafka_access")
    topology = load_topology(PROJECT_ROOT)
    assert renderer.ACCESS.read_text() == renderer.render_access(topology), "make kafka-access"
    job = renderer.JOB.read_text()
    assert job == renderer.render_job(job, topology), "make kafka-access"
    makefile = (PROJECT_ROOT / "mk" / "deploy.mk").read_text()
    assert "scripts/render_kafka_access.py" in makefile


def test_a_manifest_change_makes_the_rendered_files_stale(tmp_path: Path) -> None:
    """The freshness check above can fail: a new topic for payment changes both files."""
    renderer = generated.script("render_kafka_access")
    root = _copy_manifests(tmp_path)
    service = root / "k8s" / "functions" / "shipping.yaml"
    service.write_text(
        service.read_text().replace(
            "minimart.dev/produces: ", "minimart.dev/produces: minimart.order.created,", 1
        )
    )
    topology = load_topology(root)
    assert renderer.render_access(topology) != renderer.ACCESS.read_text()
    payment = root / "eventing" / "payment-source.yaml"
    payment.write_text(payment.read_text().replace("kafka-payment-source", "kafka-payment-in"))
    job = renderer.JOB.read_text()
    assert renderer.render_job(job, load_topology(root)) != job


def test_the_rendered_principals_are_the_models_and_say_how_each_logs_in() -> None:
    principals = generated.kafka_principals()
    assert {p.principal: p.secret for p in principals} == dict(ACCESS.principals)
    for p in principals:
        assert p.mechanism == ("PLAIN" if p.principal == ADMIN else MECHANISM), p
        assert p.reader, p
