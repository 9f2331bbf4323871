"""Every deployment document validates strictly; broken copies and unknown kinds do not."""

from __future__ import annotations

import copy
import importlib.util
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.deploy import kube, upstream

pytestmark = pytest.mark.usefixtures("schemas")

Mutation = Callable[[dict[str, Any]], None]
_CONTAINER = "spec.template.spec.containers.0"


def _add(path: str, key: str, value: Any) -> Mutation:
    return lambda doc: kube.get_path(doc, path).__setitem__(key, value)


def _set(path: str, value: Any) -> Mutation:
    return lambda doc: kube.set_path(doc, path, value)


def _rename(path: str, old: str, new: str) -> Mutation:
    def mutate(doc: dict[str, Any]) -> None:
        node = kube.get_path(doc, path)
        node[new] = node.pop(old)

    return mutate


def _move(path: str, key: str, to: str) -> Mutation:
    def mutate(doc: dict[str, Any]) -> None:
        kube.get_path(doc, to)[key] = kube.get_path(doc, path).pop(key)

    return mutate


# For each (API group, kind) the repo uses, realistic mistakes the validation must catch: a
# typo'd field (strictness), a value of the wrong type, a misplaced block.
BROKEN: dict[tuple[str, str], list[tuple[str, Mutation]]] = {
    ("", "Namespace"): [
        ("label value not a string", _add("metadata.labels", "minimart.dev/tier", 1)),
        ("unknown top-level field", _add("", "specs", {})),
    ],
    ("", "ConfigMap"): [
        ("unquoted number in data", lambda d: d["data"].__setitem__(next(iter(d["data"])), 4)),
        ("typo data -> datas", _rename("", "data", "datas")),
    ],
    ("", "Service"): [
        ("port as a string", _set("spec.ports.0.port", "9092/tcp")),
        ("typo selector -> selectors", _rename("spec", "selector", "selectors")),
    ],
    ("", "ServiceAccount"): [
        (
            "automountServiceAccountToken as a string",
            _add("", "automountServiceAccountToken", "no"),
        ),
        ("typo secrets -> secret", _add("", "secret", [{"name": "prometheus-token"}])),
    ],
    ("apps", "Deployment"): [
        ("typo matchLabels -> matchlabels", _rename("spec.selector", "matchLabels", "matchlabels")),
        ("containerPort as a string", _set(f"{_CONTAINER}.ports.0.containerPort", "4318/tcp")),
        ("volumes on the Deployment, not the pod", _move("spec.template.spec", "volumes", "spec")),
    ],
    ("networking.k8s.io", "NetworkPolicy"): [
        ("typo podSelector -> podselector", _rename("spec", "podSelector", "podselector")),
        ("policyTypes as one string", _set("spec.policyTypes", "Ingress")),
    ],
    ("rbac.authorization.k8s.io", "ClusterRole"): [
        ("verbs as one string", _set("rules.0.verbs", "get,list,watch")),
        ("typo apiGroups -> apiGroup", _rename("rules.0", "apiGroups", "apiGroup")),
    ],
    ("rbac.authorization.k8s.io", "ClusterRoleBinding"): [
        ("roleRef without its name", lambda d: d["roleRef"].pop("name")),
        ("subjects as one mapping", lambda d: d.__setitem__("subjects", d["subjects"][0])),
        ("typo subjects -> subject", _rename("", "subjects", "subject")),
    ],
    ("apps", "StatefulSet"): [
        ("typo resources -> resource", _rename(_CONTAINER, "resources", "resource")),
        ("replicas as a string", _set("spec.replicas", "one")),
        ("unknown securityContext field", _add(f"{_CONTAINER}.securityContext", "rootless", True)),
    ],
    ("batch", "Job"): [
        ("typo backoffLimit -> backofflimit", _rename("spec", "backoffLimit", "backofflimit")),
        ("env value not a string", _set(f"{_CONTAINER}.env.1.value", 256)),
    ],
    ("serving.knative.dev", "Service"): [
        (
            "typo readinessProbe -> readynessProbe",
            _rename(_CONTAINER, "readinessProbe", "readynessProbe"),
        ),
        ("unknown container field", _add(_CONTAINER, "imagee", "minimart-order")),
        ("probe path not a string", _set(f"{_CONTAINER}.readinessProbe.httpGet.path", 1)),
        ("traffic not a list", _add("spec", "traffic", {"percent": 100})),
    ],
    ("sources.knative.dev", "KafkaSource"): [
        ("typo retry -> retries", _rename("spec.delivery", "retry", "retries")),
        ("topics as one string", _set("spec.topics", "minimart.order.created")),
        ("sink without ref or uri", _set("spec.sink", {"name": "inventory"})),
    ],
    ("eventing.knative.dev", "KafkaSink"): [
        ("topic as a list", _set("spec.topic", ["minimart.deadletter"])),
        ("unknown spec field", _add("spec", "partitions", 1)),
        # Its schema has no `metadata`: metadata is checked as an ObjectMeta (kube.py).
        ("typo labels -> label in metadata", _rename("metadata", "labels", "label")),
    ],
    ("skaffold", "Config"): [
        (
            "typo buildArgs -> buildArg",
            _rename("build.artifacts.0.docker", "buildArgs", "buildArg"),
        ),
        ("manifests.kustomize.paths as a string", _set("manifests.kustomize.paths", "k8s")),
    ],
    ("kind.x-k8s.io", "Cluster"): [
        (
            "typo hostPort -> hostport",
            _rename("nodes.0.extraPortMappings.0", "hostPort", "hostport"),
        ),
        ("unknown node role", _set("nodes.0.role", "master")),
    ],
    ("kustomize.config.k8s.io", "Kustomization"): [
        ("typo resources -> resource", _rename("", "resources", "resource")),
        ("a transformer the in-test build does not implement", _add("", "namePrefix", "x-")),
    ],
}


def _kinds(documents: list[dict[str, Any]]) -> set[tuple[str, str]]:
    return {(kube.group_of(d), str(d["kind"])) for d in documents}


def test_every_repo_document_validates(manifests: list[kube.Manifest]) -> None:
    assert manifests, "no manifests found"
    failures = []
    for manifest in manifests:
        try:
            kube.validate(manifest.doc)
        except kube.ManifestInvalid as exc:
            failures.append(f"{manifest.where}: {exc}")
    assert not failures, "\n".join(failures)


def test_every_rendered_document_validates(each_build: kube.Build) -> None:
    failures = []
    for doc in each_build.documents:
        try:
            kube.validate(doc)
        except kube.ManifestInvalid as exc:
            failures.append(str(exc))
    assert not failures, "\n".join(failures)


def test_custom_resources_are_checked_against_the_shared_schemas(
    manifests: list[kube.Manifest],
) -> None:
    used = {kube.validate(m.doc) for m in manifests}
    for expected in (
        "serving.knative.dev/service_v1.json",
        "sources.knative.dev/kafkasource_v1.json",
        "eventing.knative.dev/kafkasink_v1alpha1.json",
        "kind.x-k8s.io/cluster_v1alpha4.json",
    ):
        assert expected in used, used
    assert any(u.startswith("skaffold/") for u in used), used


@pytest.mark.parametrize(
    "doc",
    [
        {"apiVersion": "example.com/v1", "kind": "Widget", "metadata": {"name": "w"}},
        {"apiVersion": "v1", "kind": "Widget", "metadata": {"name": "w"}},
        {"apiVersion": "serving.knative.dev/v1", "kind": "Widget", "metadata": {"name": "w"}},
        {"apiVersion": "serving.knative.dev/v2", "kind": "Service", "metadata": {"name": "w"}},
        {"apiVersion": "skaffold/v1", "kind": "Config"},
        {"kind": "ConfigMap", "metadata": {"name": "w"}},
    ],
    ids=[
        "unknown-group",
        "unknown-core-kind",
        "unknown-knative-kind",
        "unknown-version",
        "unknown-skaffold-version",
        "no-apiVersion",
    ],
)
def test_a_kind_without_a_schema_fails(doc: dict[str, Any]) -> None:
    with pytest.raises(kube.ManifestInvalid):
        kube.validate(doc)


def test_every_kind_in_use_has_broken_copies(
    manifests: list[kube.Manifest], all_rendered: list[dict[str, Any]]
) -> None:
    used = _kinds([m.doc for m in manifests] + all_rendered)
    missing = used - set(BROKEN)
    assert not missing, f"add broken copies to BROKEN for {sorted(missing)}"


@pytest.mark.parametrize(
    ("kind", "mutation"),
    [(kind, m) for kind, mutations in BROKEN.items() for m in mutations],
    ids=[f"{k[1]}({k[0] or 'core'}): {d}" for k, ms in BROKEN.items() for d, _ in ms],
)
def test_a_broken_copy_fails(
    kind: tuple[str, str],
    mutation: tuple[str, Mutation],
    manifests: list[kube.Manifest],
    all_rendered: list[dict[str, Any]],
) -> None:
    description, mutate = mutation
    candidates = [m.doc for m in manifests] + all_rendered
    originals = [d for d in candidates if (kube.group_of(d), d["kind"]) == kind]
    if not originals:
        pytest.fail(f"{kind} is not used by the repo any more: remove it from BROKEN")
    # The first document of the kind that the mutation applies to.
    for original in originals:
        broken = copy.deepcopy(original)
        try:
            mutate(broken)
        except (KeyError, IndexError, TypeError, StopIteration):
            continue
        kube.validate(original)  # the original is fine ...
        with pytest.raises(kube.ManifestInvalid):  # ... the broken copy is not
            kube.validate(broken)
        return
    pytest.fail(f"{description}: applies to no {kind} document of the repo")


def test_a_broken_file_fails_when_loaded_from_disk(tmp_path: Any) -> None:
    """The whole path (file -> documents -> validate) fails on a typo made in a real file."""
    source = (kube.PROJECT_ROOT / "eventing" / "inventory-source.yaml").read_text()
    broken = tmp_path / "inventory-source.yaml"
    broken.write_text(source.replace("backoffPolicy:", "backoffPolcy:"))
    (manifest,) = kube.load_file(broken)
    with pytest.raises(kube.ManifestInvalid, match="backoffPolcy"):
        kube.validate(manifest.doc)


def test_every_manifest_file_is_in_a_kustomize_build(builds: dict[Any, kube.Build]) -> None:
    """Each file is read by exactly one root's build: none is forgotten, none applied twice.

    k8s/knative/ is no kustomization: scripts/kind-up.sh merges its ConfigMaps into the Knative
    releases' own (test_semantics checks that it does).
    """
    expected = {
        path.resolve()
        for folder in kube.MANIFEST_FOLDERS
        for pattern in ("*.yaml", "*.yml", "*.env")
        for path in (kube.PROJECT_ROOT / folder).rglob(pattern)
        if kube.KNATIVE_CONFIG not in path.parents
    }
    read = [path for b in builds.values() for path in b.files]
    assert expected - set(read) == set(), "files no kustomization lists"
    assert set(read) - expected == set(), "the build reads files outside k8s/ and eventing/"
    twice = sorted({str(path) for path in read if read.count(path) > 1})
    assert not twice, f"files in more than one kustomization root: {twice}"


def test_the_observability_manifests_are_those_the_generator_writes(
    tmp_path: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """k8s/observability/ is generated: an edit by hand is lost at the next render."""
    script = kube.PROJECT_ROOT / "scripts" / "render_observability_k8s.py"
    spec = importlib.util.spec_from_file_location("render_observability_k8s", script)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    monkeypatch.setattr(module, "OUT", tmp_path)
    module.main()
    written = {p.name: p.read_text() for p in tmp_path.iterdir()}
    committed = {p.name: p.read_text() for p in kube.OBSERVABILITY_ROOT.iterdir() if p.is_file()}
    assert sorted(written) == sorted(committed)
    for name, text in written.items():
        assert committed[name] == text, f"{name}: run make observability-manifests"


def test_the_roots_define_distinct_resources(builds: dict[Any, kube.Build]) -> None:
    idents = [kube.resource_id(d) for b in builds.values() for d in b.documents]
    assert len(idents) == len(set(idents)), "a resource defined by two roots"


@pytest.mark.timeout(upstream.BUILD_TIMEOUT_S + 120)
def test_the_in_test_build_equals_kubectl_kustomize(each_build: kube.Build, programs: Path) -> None:
    """kustomize as kubectl v1.35 embeds it (tests/knative-check/kustomize) builds the same."""
    output = upstream.kustomize(programs, each_build.root)
    theirs = {kube.resource_id(d): _unwrapped(d) for d in yaml.safe_load_all(output) if d}
    ours = {kube.resource_id(d): _unwrapped(d) for d in each_build.documents}
    assert sorted(theirs) == sorted(ours)
    for ident, doc in ours.items():
        assert doc == theirs[ident], ident


def _unwrapped(doc: dict[str, Any]) -> dict[str, Any]:
    """kubectl folds long base64 values of a Secret over lines: join them."""
    if doc.get("kind") != "Secret":
        return doc
    data = {k: "".join(v.split()) for k, v in (doc.get("data") or {}).items()}
    return {**doc, "data": data}
