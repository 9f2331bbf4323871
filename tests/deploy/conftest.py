"""Fixtures of the deployment checks: the repo's manifests, rendered and validated offline."""

from __future__ import annotations

from typing import Any

import pytest

from tests.deploy import kube


@pytest.fixture(scope="session")
def schemas() -> None:
    """The shared JSON schemas; CI has shared/ beside the clone, so this only skips elsewhere."""
    if not kube.SCHEMAS_DIR.is_dir():
        pytest.skip(f"no k8s schemas at {kube.SCHEMAS_DIR} (shared/ is not beside the repo)")


@pytest.fixture(scope="session")
def manifests() -> list[kube.Manifest]:
    return kube.repo_manifests()


@pytest.fixture(scope="session")
def build() -> kube.Build:
    return kube.kustomize_build()


@pytest.fixture(scope="session")
def rendered(build: kube.Build) -> list[dict[str, Any]]:
    """The documents a deploy applies (the kustomize build of k8s/, which includes eventing/)."""
    return build.documents
