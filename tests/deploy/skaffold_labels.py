"""What ``skaffold run``/``skaffold dev`` does to the labels of the rendered manifests.

A model, written from skaffold's source at the version docs/deploy.md asks for (v2.24.0), of
the one transform that decides whether a redeploy restarts anything: before applying, the
kubectl deployer sets its labels (``skaffold.dev/run-id=<a new uuid per run>``) on the
manifests (``pkg/skaffold/deploy/kubectl/kubectl.go``, ``manifests.SetLabels``; the kustomize
renderer does the same with the same lists, ``BaseTransform`` in
``pkg/skaffold/render/renderer/util/util.go``):

- only kinds of the allowlist are visited (``TransformAllowlist`` in
  ``pkg/skaffold/kubernetes/manifest/visitor.go``); a kind whose filter says ``labels: [".*"]``
  gets the labels on EVERY ``metadata`` mapping of the document, pod templates included;
- the default denylist (``TransformDenylist``) spares a StatefulSet's volumeClaimTemplates and
  a Job's pod template;
- ``resourceSelector.allow``/``deny`` of skaffold.yaml replace a kind's default filter; a deny
  entry also drops the kind from the allowlist, images and all
  (``ConsolidateTransformConfiguration`` in ``pkg/skaffold/render/renderer/util/util.go``);
- a label already present is kept, except ``skaffold.dev/run-id``, which is always replaced
  (``labelsSetter.Visit`` in ``pkg/skaffold/kubernetes/manifest/labels.go``).

Only the kinds this project could render are modelled; ``transformed_kind`` raises for a kind
it does not know, so a new kind in the manifests makes the tests ask for it to be modelled.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

RUN_ID = "skaffold.dev/run-id"
EVERYWHERE = ".*"


@dataclass(frozen=True)
class Filter:
    """A ResourceFilter's label paths (``.*`` = every metadata; else ``.a.b.labels``)."""

    labels: tuple[str, ...]


# (group, kind) -> its label filter, from TransformAllowlist at v2.24.0 (the kinds modelled).
ALLOWLIST: Mapping[tuple[str, str], Filter] = {
    ("", "Pod"): Filter((EVERYWHERE,)),
    ("", "Service"): Filter((EVERYWHERE,)),
    ("apps", "DaemonSet"): Filter((EVERYWHERE,)),
    ("apps", "Deployment"): Filter((EVERYWHERE,)),
    ("apps", "ReplicaSet"): Filter((EVERYWHERE,)),
    ("apps", "StatefulSet"): Filter((EVERYWHERE,)),
    ("batch", "CronJob"): Filter((EVERYWHERE,)),
    ("batch", "Job"): Filter((EVERYWHERE,)),
    ("serving.knative.dev", "Service"): Filter((EVERYWHERE,)),
}
# TransformDenylist at v2.24.0.
DENYLIST: Mapping[tuple[str, str], Filter] = {
    ("apps", "StatefulSet"): Filter((".spec.volumeClaimTemplates.metadata.labels",)),
    ("batch", "Job"): Filter((".spec.template.metadata.labels",)),
}
# Kinds that are in no list of v2.24.0: skaffold leaves them as rendered.
NOT_TRANSFORMED = frozenset(
    {
        ("", "ConfigMap"),
        ("", "Secret"),
        ("", "Namespace"),
        ("", "PersistentVolumeClaim"),
        ("", "ServiceAccount"),
        ("networking.k8s.io", "NetworkPolicy"),
        ("sources.knative.dev", "KafkaSource"),
        ("eventing.knative.dev", "KafkaSink"),
    }
)


class UnmodelledKind(AssertionError):
    """A rendered kind this model does not know: read visitor.go and add it."""


def _group_kind(doc: Mapping[str, Any]) -> tuple[str, str]:
    api_version = str(doc.get("apiVersion", ""))
    return api_version.rpartition("/")[0], str(doc.get("kind", ""))


def _parse_group_kind(text: str) -> tuple[str, str]:
    """``Service.serving.knative.dev`` -> (``serving.knative.dev``, ``Service``)."""
    kind, _, group = text.partition(".")
    return group, kind


def _converted(paths: list[str]) -> tuple[str, ...]:
    """ConvertJSONPathIndex: ``[*]``-style ``.*`` segments vanish, a lone ``.*`` stays."""
    return tuple(p if p == EVERYWHERE else p.replace(EVERYWHERE, "") for p in paths)


def selectors(skaffold: Mapping[str, Any]) -> tuple[dict[Any, Filter], dict[Any, Filter]]:
    """The allow and deny lists a deploy with this skaffold.yaml uses."""
    allow, deny = dict(ALLOWLIST), dict(DENYLIST)
    config = skaffold.get("resourceSelector") or {}
    for entry in config.get("allow", []):
        key = _parse_group_kind(entry["groupKind"])
        allow[key] = Filter(_converted(entry.get("labels", [])))
        deny.pop(key, None)
    for entry in config.get("deny", []):
        key = _parse_group_kind(entry["groupKind"])
        deny[key] = Filter(_converted(entry.get("labels", [])))
        allow.pop(key, None)
    return allow, deny


def transformed_kind(doc: Mapping[str, Any], allow: Mapping[Any, Filter]) -> bool:
    key = _group_kind(doc)
    if key in allow or key in ALLOWLIST:
        return key in allow
    if key in NOT_TRANSFORMED:
        return False
    raise UnmodelledKind(f"{key}: not modelled (skaffold visitor.go TransformAllowlist)")


def _allowed(
    key: Any, navpath: str, allow: Mapping[Any, Filter], deny: Mapping[Any, Filter]
) -> str | None:
    """allowByNavpath: the field of the metadata mapping at navpath to set labels on, or None."""
    for denied in deny[key].labels if key in deny else ():
        if denied == EVERYWHERE:
            return None
        if "." not in denied:
            break
        if navpath == denied[: denied.rindex(".")]:
            return None
    for allowed in allow[key].labels if key in allow else ():
        if allowed == EVERYWHERE:
            return "labels" if navpath.rpartition(".")[2] == "metadata" else None
        if "." in allowed and navpath == allowed[: allowed.rindex(".")]:
            return allowed[allowed.rindex(".") + 1 :]
    return None


def label(
    docs: list[dict[str, Any]], labels: Mapping[str, str], skaffold: Mapping[str, Any]
) -> list[dict[str, Any]]:
    """The documents as skaffold's deployer applies them with these labels."""
    allow, deny = selectors(skaffold)
    out = []
    for original in docs:
        doc = copy.deepcopy(original)
        if transformed_kind(doc, allow):
            denied_everywhere = EVERYWHERE in (deny.get(_group_kind(doc)) or Filter(())).labels
            if not denied_everywhere:
                _visit(_group_kind(doc), "", doc, labels, allow, deny)
        out.append(doc)
    return out


def _visit(
    key: Any, navpath: str, node: Any, labels: Mapping[str, str], allow: Any, deny: Any
) -> None:
    if isinstance(node, list):
        for item in node:
            _visit(key, navpath, item, labels, allow, deny)
        return
    if not isinstance(node, dict):
        return
    for field, value in node.items():
        path = f"{navpath}.{field}"
        target = _allowed(key, path, allow, deny)
        if target is None:
            _visit(key, path, value, labels, allow, deny)
        elif isinstance(value, dict):
            existing = value.setdefault(target, {})
            if isinstance(existing, dict):
                for name, text in labels.items():
                    if name not in existing or name == RUN_ID:
                        existing[name] = text
            # the labels setter does not descend below a metadata it labelled
        else:
            _visit(key, path, value, labels, allow, deny)


def differences(a: Any, b: Any, path: str = "") -> Iterator[str]:
    """The paths (``.spec.template.metadata.labels.x``) where two documents differ."""
    if isinstance(a, dict) and isinstance(b, dict):
        for field in sorted(set(a) | set(b)):
            yield from differences(a.get(field), b.get(field), f"{path}.{field}")
    elif isinstance(a, list) and isinstance(b, list) and len(a) == len(b):
        for index, (x, y) in enumerate(zip(a, b, strict=True)):
            yield from differences(x, y, f"{path}[{index}]")
    elif a != b:
        yield path
