"""The NetworkPolicies of k8s/infra/network-policies.yaml, evaluated for every pod pair.

The pods are those of the rendered manifests (the stores, the topics Job, one pod per Knative
Service with the labels and queue-proxy ports a revision's pod gets, the observability stack)
and the system pods of the releases kind-up.sh installs that talk to them, with the namespaces
and labels of those releases at knative-v1.23.0, plus two pods nobody vouches for (one in the
namespace, one elsewhere). ``netpol`` computes every admitted (source, destination, port); the
test compares it with EXPECTED, the design written out by hand (docs/security.md, "Kafka and
the stores locked down").
The mutation tests show the comparison fails when a policy goes or is widened.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Mapping
from typing import Any

import pytest

from tests.deploy import kube
from tests.deploy.netpol import Pod, Port, admits, selects, table
from tests.deploy.test_secrets import EXPECTED as CREDENTIALS

NAMESPACE = "minimart"

# A revision's pod: the template's labels plus serving's own (configuration/resources/
# revision.go, revision/resources/meta.go at knative-v1.23.0), the user container's port
# (renamed user-port) and the queue-proxy's (revision/resources/queue.go: queue-port 8012 for
# an http1 container, https-port 8112, the autoscaler's metrics 9090, user metrics 9091).
QUEUE_PROXY_PORTS = (
    Port(8012, "queue-port"),
    Port(8112, "https-port"),
    Port(9090, "http-autometric"),
    Port(9091, "http-usermetric"),
)

# The system pods that reach minimart's pods, by the labels of their releases' manifests at
# knative-v1.23.0 (serving config/core/deployments/, net-kourier config/300-gateway.yaml,
# eventing-kafka-broker data-plane/config/source|sink/, control-plane/config/.../500-controller).
SYSTEM_PODS = (
    Pod("knative-serving", "activator", {"app": "activator"}),
    Pod("knative-serving", "autoscaler", {"app": "autoscaler"}),
    Pod("knative-serving", "controller", {"app": "controller"}),
    Pod("kourier-system", "3scale-kourier-gateway", {"app": "3scale-kourier-gateway"}),
    Pod("knative-eventing", "kafka-source-dispatcher", {"app": "kafka-source-dispatcher"}),
    Pod("knative-eventing", "kafka-sink-receiver", {"app": "kafka-sink-receiver"}),
    Pod("knative-eventing", "kafka-controller", {"app": "kafka-controller"}),
    Pod("knative-eventing", "eventing-controller", {"app": "eventing-controller"}),
    # Nobody's: `kubectl run` in the namespace, and any pod of another namespace. They carry
    # labels a selector might be careless about.
    Pod(
        NAMESPACE,
        "intruder",
        {"run": "intruder", "app.kubernetes.io/part-of": "minimart"},
        (Port(8080, "http"),),
    ),
    Pod("default", "intruder", {"app.kubernetes.io/name": "order", "app": "activator"}),
)

FUNCTIONS = ("order", "order-status", "inventory", "payment", "shipping", "notification", "redrive")
# Who owns which store (README's saga table, minimart/bootstrap.py, the DSNs of k8s/functions/).
POSTGRES_USERS = ("order", "order-status", "inventory", "payment")
DATA_PATH = (
    "knative-serving/activator",
    "kourier-system/3scale-kourier-gateway",
    "knative-eventing/kafka-source-dispatcher",
)
KAFKA_DATA_PLANE = (
    "knative-eventing/kafka-source-dispatcher",
    "knative-eventing/kafka-sink-receiver",
    "knative-eventing/kafka-controller",
)


def _ns(*names: str) -> list[str]:
    return [f"{NAMESPACE}/{n}" for n in names]


# The design: destination -> port -> the sources admitted. Anything not here is refused.
EXPECTED: Mapping[str, Mapping[int, list[str]]] = {
    "minimart/postgres": {5432: _ns(*POSTGRES_USERS)},
    "minimart/mongo": {27017: _ns("shipping")},
    "minimart/redis": {6379: _ns("notification")},
    "minimart/kafka": {9092: [*_ns(*FUNCTIONS), *_ns("create-topics"), *KAFKA_DATA_PLANE]},
    "minimart/create-topics": {},
    # Any other pod started in the namespace: closed by default-deny-ingress.
    "minimart/intruder": {8080: []},
    **{
        f"{NAMESPACE}/{function}": {
            8012: list(DATA_PATH),
            9090: ["knative-serving/autoscaler"],
            8080: ["observability/prometheus"],
            8112: [],
            9091: [],
        }
        for function in FUNCTIONS
    },
}


def _pods_of(documents: list[dict[str, Any]]) -> list[Pod]:
    pods = []
    for doc in documents:
        for spec in kube.pod_specs(doc):
            meta = doc["metadata"]
            labels = dict(doc["spec"]["template"].get("metadata", {}).get("labels", {}))
            ports = [
                Port(p["containerPort"], p.get("name", ""), p.get("protocol", "TCP"))
                for c in spec["containers"]
                for p in c.get("ports", [])
            ]
            if doc["kind"] == "Service":  # Knative: what a revision's pod looks like
                labels["serving.knative.dev/service"] = meta["name"]
                labels["serving.knative.dev/configuration"] = meta["name"]
                labels.setdefault("app", f"{meta['name']}-00001")
                ports = [Port(p.number, "user-port") for p in ports] + list(QUEUE_PROXY_PORTS)
            # Named by app.kubernetes.io/name: the topics Job's name carries a hash.
            name = labels.get("app.kubernetes.io/name", meta["name"])
            pods.append(Pod(meta["namespace"], name, labels, tuple(ports)))
    return pods


@pytest.fixture(scope="module")
def policies(builds: dict[Any, kube.Build]) -> list[dict[str, Any]]:
    return [
        doc
        for build in builds.values()
        for doc in kube.of_kind(build.documents, "networking.k8s.io", "NetworkPolicy")
    ]


@pytest.fixture(scope="module")
def pods(all_rendered: list[dict[str, Any]]) -> list[Pod]:
    return _pods_of(all_rendered) + list(SYSTEM_PODS)


def _namespace_labels(pods: list[Pod]) -> dict[str, dict[str, str]]:
    """The label the API server puts on every namespace (kubernetes.io/metadata.name)."""
    return {p.namespace: {"kubernetes.io/metadata.name": p.namespace} for p in pods}


def _admitted(policies: list[dict[str, Any]], pods: list[Pod]) -> set[tuple[str, str, int]]:
    minimart = [p for p in pods if p.namespace == NAMESPACE]
    return table(policies, pods, minimart, _namespace_labels(pods))


def _expected() -> set[tuple[str, str, int]]:
    return {
        (source, destination, port)
        for destination, ports in EXPECTED.items()
        for port, sources in ports.items()
        for source in sources
    }


def _differences(admitted: set[tuple[str, str, int]]) -> list[str]:
    expected = _expected()
    return [f"admitted, not designed: {t}" for t in sorted(admitted - expected)] + [
        f"designed, refused: {t}" for t in sorted(expected - admitted)
    ]


def test_the_model_has_every_pod_of_minimart(pods: list[Pod]) -> None:
    """EXPECTED names every pod of the namespace and every port it listens on, so the table
    below covers all of them (a new store or function must be added to the design)."""
    ours = {p.ident: {port.number for port in p.ports} for p in pods if p.namespace == NAMESPACE}
    assert {d: set(ports) for d, ports in EXPECTED.items() if ports} == {
        d: ports for d, ports in ours.items() if ports
    }
    assert set(EXPECTED) == set(ours)


def test_every_pod_pair_is_admitted_exactly_as_designed(
    policies: list[dict[str, Any]], pods: list[Pod]
) -> None:
    assert len(pods) > 15 and policies
    assert _differences(_admitted(policies, pods)) == []


def test_every_selector_of_the_policies_names_a_pod(
    policies: list[dict[str, Any]], pods: list[Pod]
) -> None:
    """No selector is dead (a typo'd label would make a rule that admits nobody)."""
    namespaces = _namespace_labels(pods)
    for policy in policies:
        name = policy["metadata"]["name"]
        assert any(
            selects(policy["spec"]["podSelector"], p.labels)
            for p in pods
            if p.namespace == NAMESPACE
        ), name
        for rule in policy["spec"].get("ingress", []):
            for peer in rule.get("from", []):
                matched = [
                    p
                    for p in pods
                    if selects(peer.get("podSelector"), p.labels)
                    and (
                        selects(peer["namespaceSelector"], namespaces[p.namespace])
                        if "namespaceSelector" in peer
                        else p.namespace == NAMESPACE
                    )
                ]
                assert matched, f"{name}: {peer} selects no pod"


def test_the_functions_that_reach_kafka_are_those_that_produce(
    all_rendered: list[dict[str, Any]],
) -> None:
    """Every function publishes (minimart.dev/produces), so every one needs Kafka."""
    producers = {
        d["metadata"]["name"]
        for d in kube.of_kind(all_rendered, "serving.knative.dev", "Service")
        if d["metadata"].get("annotations", {}).get("minimart.dev/produces")
    }
    assert producers == set(FUNCTIONS)


# --- the table test fails when the policies change ------------------------------------------

Mutation = Callable[[list[dict[str, Any]]], None]


def _named(policies: list[dict[str, Any]], name: str) -> dict[str, Any]:
    (policy,) = [p for p in policies if p["metadata"]["name"] == name]
    return policy


def _widen_from(name: str) -> Mutation:
    def mutate(policies: list[dict[str, Any]]) -> None:
        _named(policies, name)["spec"]["ingress"][0].pop("from")

    return mutate


def _any_namespace_peer(name: str) -> Mutation:
    def mutate(policies: list[dict[str, Any]]) -> None:
        _named(policies, name)["spec"]["ingress"][0]["from"].append({"namespaceSelector": {}})

    return mutate


def _all_ports(name: str) -> Mutation:
    def mutate(policies: list[dict[str, Any]]) -> None:
        _named(policies, name)["spec"]["ingress"][0].pop("ports")

    return mutate


def _whole_namespace(name: str) -> Mutation:
    def mutate(policies: list[dict[str, Any]]) -> None:
        _named(policies, name)["spec"]["ingress"][0]["from"] = [{"podSelector": {}}]

    return mutate


def _split_peer(name: str) -> Mutation:
    """The classic slip: namespaceSelector and podSelector as two peers (OR), not one (AND)."""

    def mutate(policies: list[dict[str, Any]]) -> None:
        rule = _named(policies, name)["spec"]["ingress"][0]
        peer = rule["from"][0]
        rule["from"][0:1] = [
            {"namespaceSelector": peer["namespaceSelector"]},
            {"podSelector": peer["podSelector"]},
        ]

    return mutate


WIDENINGS: dict[str, Mutation] = {
    "postgres from every pod": _widen_from("postgres-from-its-functions"),
    "mongo from any namespace": _any_namespace_peer("mongo-from-shipping"),
    "redis from the whole namespace": _whole_namespace("redis-from-notification"),
    "the data path to every port of a function": _all_ports("functions-from-the-knative-data-path"),
    "kafka from every pod": _widen_from("kafka-from-functions-and-data-plane"),
    "functions from all of knative-serving": _split_peer("functions-from-the-knative-data-path"),
}


def test_removing_any_policy_breaks_the_table(
    policies: list[dict[str, Any]], pods: list[Pod]
) -> None:
    for policy in policies:
        rest = [p for p in policies if p is not policy]
        assert _differences(_admitted(rest, pods)), f"removing {policy['metadata']['name']}"


@pytest.mark.parametrize("mutation", list(WIDENINGS), ids=list(WIDENINGS))
def test_widening_a_policy_breaks_the_table(
    policies: list[dict[str, Any]], pods: list[Pod], mutation: str
) -> None:
    widened = copy.deepcopy(policies)
    WIDENINGS[mutation](widened)
    differences = _differences(_admitted(widened, pods))
    assert differences and all(d.startswith("admitted, not designed") for d in differences)


# --- the evaluator itself -------------------------------------------------------------------


def _policy(spec: dict[str, Any], namespace: str = "a") -> dict[str, Any]:
    return {"metadata": {"name": "p", "namespace": namespace}, "spec": spec}


WEB = Pod("a", "web", {"app": "web"}, (Port(80, "http"), Port(9000, "admin")))
CLIENT = Pod("a", "client", {"app": "client"})
REMOTE = Pod("b", "remote", {"app": "client"})
NAMESPACES = {"a": {"team": "a"}, "b": {"team": "b"}}


def _ok(policies: list[dict[str, Any]], source: Pod, port: int) -> bool:
    (match,) = [p for p in WEB.ports if p.number == port]
    return admits(policies, source, WEB, match, NAMESPACES)


def test_a_pod_no_policy_selects_admits_everything() -> None:
    other = _policy({"podSelector": {"matchLabels": {"app": "db"}}, "ingress": []})
    assert _ok([], REMOTE, 80) and _ok([other], REMOTE, 9000)
    egress_only = _policy({"podSelector": {}, "policyTypes": ["Egress"]})
    with pytest.raises(ValueError, match="egress"):
        _ok([egress_only], CLIENT, 80)


def test_a_selected_pod_admits_only_what_a_rule_admits() -> None:
    deny = _policy({"podSelector": {}, "policyTypes": ["Ingress"]})
    assert not _ok([deny], CLIENT, 80)
    same_namespace = _policy(
        {
            "podSelector": {"matchLabels": {"app": "web"}},
            "ingress": [
                {
                    "from": [{"podSelector": {"matchLabels": {"app": "client"}}}],
                    "ports": [{"port": "http"}],
                }
            ],
        }
    )
    assert _ok([deny, same_namespace], CLIENT, 80)
    assert not _ok([deny, same_namespace], CLIENT, 9000), "a named port is that port only"
    assert not _ok([deny, same_namespace], REMOTE, 80), "a bare podSelector is the own namespace"


def test_both_selectors_in_one_peer_are_and_in_two_peers_or() -> None:
    both = {
        "namespaceSelector": {"matchLabels": {"team": "b"}},
        "podSelector": {"matchLabels": {"app": "x"}},
    }
    one = _policy({"podSelector": {}, "ingress": [{"from": [both]}]})
    assert not _ok([one], REMOTE, 80)
    two = _policy(
        {
            "podSelector": {},
            "ingress": [
                {
                    "from": [
                        {"namespaceSelector": both["namespaceSelector"]},
                        {"podSelector": both["podSelector"]},
                    ]
                }
            ],
        }
    )
    assert _ok([two], REMOTE, 80)


def test_expressions_ranges_and_protocols() -> None:
    rule = {
        "from": [
            {
                "podSelector": {
                    "matchExpressions": [{"key": "app", "operator": "NotIn", "values": ["web"]}]
                }
            }
        ],
        "ports": [{"port": 8000, "endPort": 9000}],
    }
    policy = _policy(
        {
            "podSelector": {"matchExpressions": [{"key": "app", "operator": "Exists"}]},
            "ingress": [rule],
        }
    )
    assert _ok([policy], CLIENT, 9000) and not _ok([policy], CLIENT, 80)
    udp = _policy({"podSelector": {}, "ingress": [{"ports": [{"port": 80, "protocol": "UDP"}]}]})
    assert not _ok([udp], CLIENT, 80)
    everyone = _policy({"podSelector": {}, "ingress": [{}]})
    assert _ok([everyone], REMOTE, 9000)


def test_a_store_admits_exactly_the_functions_that_hold_its_credentials() -> None:
    """The two designs agree: the network reaches a store from the functions that own it
    (EXPECTED here), the same functions that get its credentials (test_secrets.EXPECTED)."""
    store_keys = {
        "minimart/postgres": {
            "MINIMART_ORDERS_DB_PASSWORD",
            "MINIMART_INVENTORY_DB_PASSWORD",
            "MINIMART_PAYMENTS_DB_PASSWORD",
        },
        "minimart/mongo": {"MINIMART_SHIPPING_MONGO_PASSWORD"},
        "minimart/redis": {"REDIS_PASSWORD"},
    }
    for store, keys in store_keys.items():
        holders = {f"{NAMESPACE}/{f}" for f in FUNCTIONS if CREDENTIALS[f] & keys}
        (admitted,) = EXPECTED[store].values()
        assert set(admitted) == holders, store
