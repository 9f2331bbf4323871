"""Fixtures of the deployment checks: the repo's manifests, rendered and validated offline."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.deploy import kube, upstream


@pytest.fixture(scope="session")
def schemas() -> None:
    """The project's JSON schemas: a clone without them is broken, so this fails, never skips."""
    if not (kube.SCHEMAS_DIR / "README.md").is_file():
        pytest.fail(f"no k8s schemas at {kube.SCHEMAS_DIR}: they are part of the repository")


@pytest.fixture(scope="session")
def manifests() -> list[kube.Manifest]:
    return kube.repo_manifests()


@pytest.fixture(scope="session")
def builds() -> dict[Path, kube.Build]:
    """The build of every kustomization root a deploy applies (k8s/, k8s/infra/,
    k8s/observability/)."""
    return kube.kustomize_builds()


@pytest.fixture(scope="session")
def build(builds: dict[Path, kube.Build]) -> kube.Build:
    """What skaffold deploys: the build of k8s/ (which includes eventing/)."""
    return builds[kube.KUSTOMIZE_ROOT]


@pytest.fixture(scope="session")
def rendered(builds: dict[Path, kube.Build]) -> list[dict[str, Any]]:
    """minimart's documents: what skaffold deploys (k8s/) and the stores (k8s/infra/)."""
    return builds[kube.KUSTOMIZE_ROOT].documents + builds[kube.INFRA_ROOT].documents


@pytest.fixture(scope="session")
def all_rendered(builds: dict[Path, kube.Build]) -> list[dict[str, Any]]:
    """Every document a deploy applies: the builds of all kustomization roots."""
    return [doc for b in builds.values() for doc in b.documents]


@pytest.fixture(
    scope="session",
    params=list(kube.KUSTOMIZE_ROOTS),
    ids=[kube.root_name(r) for r in kube.KUSTOMIZE_ROOTS],
)
def each_build(request: pytest.FixtureRequest, builds: dict[Path, kube.Build]) -> kube.Build:
    """One kustomization root's build (a check that holds for every root runs once per root)."""
    return builds[request.param]


@pytest.fixture(scope="session")
def programs() -> Path:
    """tests/knative-check built (cached): knative-check and kubectl's kustomize."""
    try:
        return upstream.build()
    except upstream.UpstreamCheckError as exc:
        pytest.fail(str(exc), pytrace=False)
