"""Offline checks of the deployment files: load, resolve (kustomize) and validate manifests.

Custom resources (Knative, the Kafka source/sink, skaffold, kind) are validated against the
project's strict JSON schemas in ``tests/deploy/schemas`` (``<group>/<kind>_<version>.json``, with
their provenance in its README); built-in kinds with ``kubernetes_validate`` in strict mode;
kustomization files against the schema below, which allows only what ``kustomize_build``
implements. A document whose kind has no schema is invalid: nothing passes unchecked.
Knative's own Go code checks the Knative resources too (tests/knative-check, knative_check.py).
"""

from __future__ import annotations

import base64
import copy
import functools
import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import yaml

from minimart.settings import PROJECT_ROOT

SCHEMAS_DIR = PROJECT_ROOT / "tests" / "deploy" / "schemas"
# The Kubernetes of the kind node image (kind-config.yaml): built-in kinds are checked against it.
KUBERNETES_VERSION = "1.35"
MANIFEST_FOLDERS = ("k8s", "eventing")
TOP_LEVEL_FILES = ("skaffold.yaml", "kind-config.yaml")
KUSTOMIZE_ROOT = PROJECT_ROOT / "k8s"
# ConfigMaps scripts/kind-up.sh merges into the Knative releases' own (not a kustomization:
# they patch resources the releases create, in the releases' namespaces).
KNATIVE_CONFIG = KUSTOMIZE_ROOT / "knative"
KNATIVE_NAMESPACES = frozenset({"knative-serving", "knative-eventing"})
OBSERVABILITY_ROOT = KUSTOMIZE_ROOT / "observability"
# The namespace and the stores: applied by scripts/kind-up.sh, not by skaffold (k8s/ is what
# skaffold deploys and deletes, skaffold.yaml's manifests.kustomize.paths).
INFRA_ROOT = KUSTOMIZE_ROOT / "infra"
# Every kustomization a deploy applies (scripts/kind-up.sh), and the namespace of its resources.
# k8s/observability and k8s/infra are roots of their own (`kubectl apply -k`): they are not
# listed under k8s/kustomization.yaml.
KUSTOMIZE_ROOTS: Mapping[Path, str] = {
    KUSTOMIZE_ROOT: "minimart",
    INFRA_ROOT: "minimart",
    OBSERVABILITY_ROOT: "observability",
}
# Schemas of config files (not Kubernetes resources): no ObjectMeta to add.
CONFIG_FILE_GROUPS = frozenset({"skaffold", "kind.x-k8s.io"})

CLUSTER_SCOPED_KINDS = frozenset(
    {
        "Namespace",
        "CustomResourceDefinition",
        "ClusterRole",
        "ClusterRoleBinding",
        "PersistentVolume",
        "StorageClass",
        "PriorityClass",
        "ClusterDomainClaim",
    }
)

_GENERATOR = {
    "type": "object",
    "additionalProperties": False,
    "required": ["name"],
    "properties": {
        "name": {"type": "string", "minLength": 1},
        "envs": {"type": "array", "items": {"type": "string"}},
        "literals": {"type": "array", "items": {"type": "string", "pattern": "^[^=]+=.*$"}},
        "type": {"type": "string"},
    },
}
_STRING_MAP = {"type": "object", "additionalProperties": {"type": "string"}}

# The subset of kustomize's Kustomization that kustomize_build() resolves; anything else in a
# kustomization.yaml is rejected (it would make the in-test build differ from kustomize's).
KUSTOMIZATION_SCHEMA: Mapping[str, Any] = {
    "$schema": "http://json-schema.org/draft-07/schema#",
    "type": "object",
    "additionalProperties": False,
    "required": ["apiVersion", "kind", "resources"],
    "properties": {
        "apiVersion": {"enum": ["kustomize.config.k8s.io/v1beta1"]},
        "kind": {"enum": ["Kustomization"]},
        "namespace": {"type": "string", "minLength": 1},
        "resources": {"type": "array", "minItems": 1, "items": {"type": "string"}},
        "configMapGenerator": {"type": "array", "items": _GENERATOR},
        "secretGenerator": {"type": "array", "items": _GENERATOR},
        "generatorOptions": {
            "type": "object",
            "additionalProperties": False,
            "properties": {
                "disableNameSuffixHash": {"enum": [True]},
                "labels": _STRING_MAP,
                "annotations": _STRING_MAP,
            },
        },
    },
}


class ManifestInvalid(AssertionError):
    """A document breaks its schema, or has no schema at all."""


@dataclass(frozen=True)
class Manifest:
    """One YAML document and where it came from."""

    path: Path
    index: int
    doc: dict[str, Any] = field(compare=False)

    @property
    def kind(self) -> str:
        return str(self.doc.get("kind", ""))

    @property
    def group(self) -> str:
        return group_of(self.doc)

    @property
    def name(self) -> str:
        return str((self.doc.get("metadata") or {}).get("name", ""))

    @property
    def where(self) -> str:
        return f"{self.path.relative_to(PROJECT_ROOT)}#{self.index} ({self.kind} {self.name})"


def group_of(doc: Mapping[str, Any]) -> str:
    """The API group of a document: "" for the core group, "skaffold" for skaffold.yaml."""
    return str(doc.get("apiVersion", "")).rpartition("/")[0]


def load_file(path: Path) -> list[Manifest]:
    manifests = []
    for index, doc in enumerate(yaml.safe_load_all(path.read_text())):
        if doc is None:
            continue
        if not isinstance(doc, dict):
            raise ManifestInvalid(f"{path}#{index}: a YAML document that is not a mapping")
        manifests.append(Manifest(path, index, doc))
    return manifests


def manifest_files() -> list[Path]:
    """Every YAML file the deployment consists of."""
    files = [PROJECT_ROOT / name for name in TOP_LEVEL_FILES]
    for folder in MANIFEST_FOLDERS:
        files += sorted((PROJECT_ROOT / folder).rglob("*.yaml"))
        files += sorted((PROJECT_ROOT / folder).rglob("*.yml"))
    return files


def repo_manifests() -> list[Manifest]:
    return [m for path in manifest_files() for m in load_file(path)]


# --- validation -----------------------------------------------------------------------------


def schema_path(doc: Mapping[str, Any]) -> Path | None:
    """The JSON schema file of a custom resource or config file; None for a built-in kind."""
    api_version = str(doc.get("apiVersion", ""))
    group, _, version = api_version.rpartition("/")
    folder = SCHEMAS_DIR / group
    if not group or not folder.is_dir():
        return None
    if group == "skaffold":
        return folder / f"{version}.json"
    return folder / f"{str(doc.get('kind', '')).lower()}_{version}.json"


@functools.cache
def _validator(path: Path | None) -> Any:
    """A checked validator for a schema file (None: the kustomization schema)."""
    schema = KUSTOMIZATION_SCHEMA if path is None else json.loads(path.read_text())
    validator_class = jsonschema.validators.validator_for(schema)
    validator_class.check_schema(schema)
    return validator_class(schema)


def _raise_first_error(path: Path | None, doc: Mapping[str, Any], what: str) -> None:
    error = jsonschema.exceptions.best_match(_validator(path).iter_errors(doc))
    if error is not None:
        location = "/".join(str(p) for p in error.absolute_path) or "(document)"
        raise ManifestInvalid(f"{what}: at {location}: {error.message}")


def _validate_custom_resource(path: Path, doc: Mapping[str, Any], what: str) -> None:
    """A custom resource: its schema, plus ``metadata`` as the API server checks it.

    The API server gives every custom resource an ObjectMeta whatever the CRD says; the
    schemas declare a root ``metadata`` of type object only (README of the schemas), so
    ``metadata`` is validated strictly as an ObjectMeta here, the rest by the schema.
    """
    _raise_first_error(path, doc, what)
    metadata = doc.get("metadata")
    if metadata is None:
        raise ManifestInvalid(f"{what}: no metadata")
    carrier = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": metadata}
    try:
        kubernetes_validate.validate(carrier, KUBERNETES_VERSION, strict=True)
    except kubernetes_validate.ValidationError as exc:
        location = "/".join(str(p) for p in exc.absolute_path)
        raise ManifestInvalid(f"{what}: at {location}: {exc.message}") from exc


def validate(doc: Mapping[str, Any]) -> str:
    """Validate one document strictly; what it was validated against. Raises ManifestInvalid."""
    ok, result = _validate_cached(json.dumps(doc, sort_keys=True, default=str))
    if not ok:
        raise ManifestInvalid(result)
    return result


@functools.lru_cache(maxsize=1024)
def _validate_cached(text: str) -> tuple[bool, str]:
    """(valid, what it was checked against | why not): each distinct document checked once."""
    try:
        return True, _validate(json.loads(text))
    except ManifestInvalid as exc:
        return False, str(exc)


def _validate(doc: Mapping[str, Any]) -> str:
    api_version, kind = doc.get("apiVersion"), doc.get("kind")
    if not isinstance(api_version, str) or not isinstance(kind, str) or not api_version:
        raise ManifestInvalid(f"no apiVersion/kind: {dict(doc)!r:.200}")
    what = f"{api_version} {kind}"
    if group_of(doc) == "kustomize.config.k8s.io":
        _raise_first_error(None, doc, what)
        return "kustomization schema (tests/deploy/kube.py)"
    path = schema_path(doc)
    if path is not None:
        if not path.is_file():
            raise ManifestInvalid(f"{what}: no schema {path.relative_to(SCHEMAS_DIR)}")
        if group_of(doc) in CONFIG_FILE_GROUPS:
            _raise_first_error(path, doc, what)
        else:
            _validate_custom_resource(path, doc, what)
        return str(path.relative_to(SCHEMAS_DIR))
    try:
        kubernetes_validate.validate(dict(doc), KUBERNETES_VERSION, strict=True)
    except kubernetes_validate.SchemaNotFoundError as exc:
        raise ManifestInvalid(f"{what}: no schema for this kind (built-in or custom)") from exc
    except kubernetes_validate.ValidationError as exc:
        location = "/".join(str(p) for p in exc.absolute_path) or "(document)"
        raise ManifestInvalid(f"{what}: at {location}: {exc.message}") from exc
    return f"kubernetes {KUBERNETES_VERSION} (kubernetes-validate, strict)"


# --- kustomize ------------------------------------------------------------------------------


@dataclass
class Build:
    """The output of a kustomize build and the files it read."""

    documents: list[dict[str, Any]]
    files: set[Path]
    root: Path = PROJECT_ROOT

    @property
    def name(self) -> str:
        """The root folder relative to the repo (``k8s``, ``k8s/observability``)."""
        return root_name(self.root)

    @property
    def namespace(self) -> str:
        """The namespace of the root's namespaced resources (KUSTOMIZE_ROOTS)."""
        return KUSTOMIZE_ROOTS[self.root]


def _env_file(path: Path) -> dict[str, str]:
    data = {}
    for number, raw in enumerate(path.read_text().splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        key, sep, value = line.partition("=")
        if not sep or not key.strip():
            raise ManifestInvalid(f"{path}:{number}: not KEY=VALUE")
        data[key.strip()] = value
    return data


def _generated(
    kind: str, generator: Mapping[str, Any], options: Mapping[str, Any], folder: Path, build: Build
) -> dict[str, Any]:
    data: dict[str, str] = {}
    for env in generator.get("envs", []):
        path = (folder / env).resolve()
        build.files.add(path)
        data.update(_env_file(path))
    for literal in generator.get("literals", []):
        key, _, value = literal.partition("=")
        data[key] = value
    metadata: dict[str, Any] = {"name": generator["name"]}
    for key in ("labels", "annotations"):
        if options.get(key):
            metadata[key] = dict(options[key])
    doc: dict[str, Any] = {"apiVersion": "v1", "kind": kind, "metadata": metadata}
    if kind == "Secret":
        doc["type"] = generator.get("type", "Opaque")
        doc["data"] = {k: base64.b64encode(v.encode()).decode() for k, v in data.items()}
    else:
        doc["data"] = data
    return doc


def kustomize_build(folder: Path = KUSTOMIZE_ROOT) -> Build:
    """What ``kubectl kustomize folder`` renders, for the subset of kustomize in use."""
    path = folder / "kustomization.yaml"
    if not path.is_file():
        raise ManifestInvalid(f"{folder}: no kustomization.yaml")
    (kustomization,) = (m.doc for m in load_file(path))
    validate(kustomization)
    build = Build([], {path.resolve()}, folder)
    for entry in kustomization["resources"]:
        target = (folder / entry).resolve()
        if target.is_dir():
            sub = kustomize_build(target)
            build.documents += sub.documents
            build.files |= sub.files
        elif target.is_file():
            if target.parent != folder.resolve() and folder.resolve() not in target.parents:
                raise ManifestInvalid(f"{path}: {entry} is a file outside the kustomization")
            build.files.add(target)
            build.documents += [copy.deepcopy(m.doc) for m in load_file(target)]
        else:
            raise ManifestInvalid(f"{path}: resource {entry} does not exist")
    options = kustomization.get("generatorOptions", {})
    for kind, key in (("ConfigMap", "configMapGenerator"), ("Secret", "secretGenerator")):
        for generator in kustomization.get(key, []):
            build.documents.append(_generated(kind, generator, options, folder, build))
    namespace = kustomization.get("namespace")
    if namespace:
        for doc in build.documents:
            if doc.get("kind") not in CLUSTER_SCOPED_KINDS:
                doc.setdefault("metadata", {})["namespace"] = namespace
    seen: set[tuple[str, str, str, str]] = set()
    for doc in build.documents:
        ident = resource_id(doc)
        if ident in seen:
            raise ManifestInvalid(f"{path}: {ident} is defined twice")
        seen.add(ident)
    return build


def kustomize_builds() -> dict[Path, Build]:
    """The build of every root of KUSTOMIZE_ROOTS."""
    return {root: kustomize_build(root) for root in KUSTOMIZE_ROOTS}


def root_name(root: Path) -> str:
    return str(root.relative_to(PROJECT_ROOT))


def resource_id(doc: Mapping[str, Any]) -> tuple[str, str, str, str]:
    metadata = doc.get("metadata") or {}
    return (
        group_of(doc),
        str(doc.get("kind")),
        str(metadata.get("namespace", "")),
        str(metadata.get("name")),
    )


# --- walking documents ----------------------------------------------------------------------


def of_kind(docs: list[dict[str, Any]], group: str, kind: str) -> list[dict[str, Any]]:
    return [d for d in docs if group_of(d) == group and d.get("kind") == kind]


WORKLOADS = frozenset(
    {
        ("apps", "Deployment"),
        ("apps", "StatefulSet"),
        ("batch", "Job"),
        ("serving.knative.dev", "Service"),
    }
)


def pod_specs(doc: Mapping[str, Any]) -> Iterator[dict[str, Any]]:
    """The pod spec of a workload (Deployment, StatefulSet, Job, Knative Service)."""
    kind, group = doc.get("kind"), group_of(doc)
    if (group, kind) in WORKLOADS:
        yield doc["spec"]["template"]["spec"]


def set_path(doc: Any, path: str, value: Any) -> None:
    """Set ``a.b.0.c`` in nested dicts/lists (the broken copies of the schema tests)."""
    *parents, last = path.split(".")
    node = doc
    for part in parents:
        node = node[int(part)] if isinstance(node, list) else node[part]
    if isinstance(node, list):
        node[int(last)] = value
    else:
        node[last] = value


def get_path(doc: Any, path: str) -> Any:
    """The node at ``a.b.0.c`` ("" is the document itself)."""
    node = doc
    for part in path.split(".") if path else []:
        node = node[int(part)] if isinstance(node, list) else node[part]
    return node
