"""Which pod may open a TCP connection to which pod and port, under a set of NetworkPolicies.

A small evaluator of the ingress half of ``networking.k8s.io/v1`` NetworkPolicy, as the API
reference states it (Kubernetes 1.35, "NetworkPolicy" and "Network Policies"):

- a pod is isolated for ingress if some policy of its namespace selects it (``podSelector``)
  and lists ``Ingress`` in ``policyTypes`` (absent: ``Ingress``, plus ``Egress`` when the policy
  has egress rules); a pod no such policy selects admits every connection;
- an isolated pod admits a connection if some rule of some policy that selects it admits it:
  a rule admits a source if ``from`` is absent or empty, or one of its peers matches, and a
  port if ``ports`` is absent or empty, or one of its entries matches (number, or a name
  resolved against the destination's container ports, ``endPort`` for a range, protocol TCP by
  default);
- a peer with ``podSelector`` only matches pods of the policy's own namespace; with
  ``namespaceSelector`` only, every pod of the namespaces it matches; with both, pods matching
  the first in namespaces matching the second; ``ipBlock`` names no pod here (none is used);
- a label selector: ``matchLabels`` and every ``matchExpressions`` entry (``In``, ``NotIn``,
  ``Exists``, ``DoesNotExist``) must hold; the empty selector matches everything.

Egress is not evaluated: no policy of minimart restricts it (the evaluator refuses one that does).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Port:
    number: int
    name: str = ""
    protocol: str = "TCP"


@dataclass(frozen=True)
class Pod:
    """A pod as the policies see it: where it runs, its labels, its container ports."""

    namespace: str
    name: str
    labels: Mapping[str, str] = field(default_factory=dict)
    ports: tuple[Port, ...] = ()

    @property
    def ident(self) -> str:
        return f"{self.namespace}/{self.name}"


def selects(selector: Mapping[str, Any] | None, labels: Mapping[str, str]) -> bool:
    """Whether a LabelSelector matches ``labels`` (the empty selector matches all)."""
    selector = selector or {}
    for key, value in (selector.get("matchLabels") or {}).items():
        if labels.get(key) != value:
            return False
    for expression in selector.get("matchExpressions") or []:
        key, operator = expression["key"], expression["operator"]
        values = set(expression.get("values") or [])
        if operator == "In":
            held = key in labels and labels[key] in values
        elif operator == "NotIn":
            held = key not in labels or labels[key] not in values
        elif operator == "Exists":
            held = key in labels
        elif operator == "DoesNotExist":
            held = key not in labels
        else:
            raise ValueError(f"unknown selector operator {operator!r}")
        if not held:
            return False
    return True


def _policy_types(policy: Mapping[str, Any]) -> list[str]:
    spec = policy["spec"]
    if "policyTypes" in spec:
        return list(spec["policyTypes"])
    return ["Ingress", *(["Egress"] if spec.get("egress") else [])]


def _peer_matches(
    peer: Mapping[str, Any],
    policy_namespace: str,
    source: Pod,
    namespace_labels: Mapping[str, Mapping[str, str]],
) -> bool:
    if "ipBlock" in peer:
        return False
    pod_selector, ns_selector = peer.get("podSelector"), peer.get("namespaceSelector")
    if ns_selector is None:
        in_namespace = source.namespace == policy_namespace
    else:
        in_namespace = selects(ns_selector, namespace_labels.get(source.namespace, {}))
    return in_namespace and (pod_selector is None or selects(pod_selector, source.labels))


def _port_matches(entry: Mapping[str, Any], destination: Pod, port: Port) -> bool:
    if entry.get("protocol", "TCP") != port.protocol:
        return False
    if "port" not in entry:
        return True  # every port of that protocol
    wanted = entry["port"]
    if isinstance(wanted, str):
        # A named port: the destination's container port of that name and protocol.
        return port.name == wanted
    return wanted <= port.number <= entry.get("endPort", wanted)


def admits(
    policies: Iterable[Mapping[str, Any]],
    source: Pod,
    destination: Pod,
    port: Port,
    namespace_labels: Mapping[str, Mapping[str, str]],
) -> bool:
    """Whether ``policies`` let ``source`` connect to ``destination`` on ``port`` (ingress)."""
    selecting = []
    for policy in policies:
        if policy["metadata"]["namespace"] != destination.namespace:
            continue
        types = _policy_types(policy)
        if "Egress" in types:
            raise ValueError(f"{policy['metadata']['name']}: egress is not evaluated here")
        if "Ingress" in types and selects(policy["spec"].get("podSelector"), destination.labels):
            selecting.append(policy)
    if not selecting:
        return True
    for policy in selecting:
        for rule in policy["spec"].get("ingress") or []:
            peers = rule.get("from") or []
            entries = rule.get("ports") or []
            peer_ok = not peers or any(
                _peer_matches(p, destination.namespace, source, namespace_labels) for p in peers
            )
            port_ok = not entries or any(_port_matches(e, destination, port) for e in entries)
            if peer_ok and port_ok:
                return True
    return False


def table(
    policies: list[Mapping[str, Any]],
    sources: Iterable[Pod],
    destinations: Iterable[Pod],
    namespace_labels: Mapping[str, Mapping[str, str]],
) -> set[tuple[str, str, int]]:
    """Every admitted (source, destination, port) over all pairs (a pod to itself excluded:
    a pod's own traffic to itself is never filtered)."""
    sources = list(sources)
    admitted = set()
    for destination in destinations:
        for port in destination.ports:
            for source in sources:
                if source.ident == destination.ident:
                    continue
                if admits(policies, source, destination, port, namespace_labels):
                    admitted.add((source.ident, destination.ident, port.number))
    return admitted
