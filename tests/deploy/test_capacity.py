"""The capacity table of docs/deploy.md: the project's rows recomputed from the manifests.

The rows of Kubernetes, Knative and Kourier come from the release manifests at the pinned tags
(no copy of them is in the repository); the rows of k8s/ are summed here from the manifests
the cluster gets, so a change of requests, replicas or min-scale that the table misses fails.
The total must be the sum of the rows and fit the CPUs and memory the docs ask for, with room
for a redeploy's second revision of every function.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from typing import Any

import pytest

from minimart.settings import PROJECT_ROOT
from tests.deploy import kube

DOCS = PROJECT_ROOT / "docs" / "deploy.md"
# Knative's queue-proxy sidecar in every Knative Service pod: requests 25m CPU and no memory
# (serving pkg/deployment/config.go, QueueSidecarCPURequestDefault at knative-v1.23.0; as at 1.16).
QUEUE_PROXY_CPU_M = 25
MIN_SCALE = "autoscaling.knative.dev/min-scale"


def _cpu_m(quantity: str) -> int:
    return int(quantity[:-1]) if quantity.endswith("m") else int(float(quantity) * 1000)


def _memory_mi(quantity: str) -> int:
    units = {"Mi": 1, "Gi": 1024}
    match = re.fullmatch(r"(\d+)(Mi|Gi)", quantity)
    assert match, f"memory request {quantity!r}: write it in Mi or Gi"
    return int(match.group(1)) * units[match.group(2)]


def _table() -> dict[str, tuple[int, int]]:
    """component -> (CPU millicores, memory MiB), from the Capacity table of docs/deploy.md."""
    text = DOCS.read_text()
    section = text[text.index("### Capacity") :]
    section = section[: section.index("\n### ", 1)]
    rows = {}
    for line in section.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) != 4 or not cells[2].strip("*").endswith("m"):
            continue
        name, cpu, memory = cells[0].strip("*"), cells[2].strip("*"), cells[3].strip("*")
        rows[name] = (_cpu_m(cpu), _memory_mi(memory))
    return rows


def _replicas(doc: Mapping[str, Any]) -> int:
    if doc["kind"] == "Service":  # Knative: the pods min-scale keeps
        annotations = doc["spec"]["template"]["metadata"].get("annotations", {})
        # A Service scaled to zero (redrive) still runs a pod whenever it has work (a dead
        # letter): the node must have room for it then, so it counts as one.
        return max(1, int(annotations.get(MIN_SCALE, "0")))
    return int(doc["spec"].get("replicas", 1))


def _requests(docs: list[dict[str, Any]]) -> Iterator[tuple[str, int, int]]:
    """(file, CPU millicores, memory MiB) of every workload, pods counted."""
    for doc in docs:
        for pod in kube.pod_specs(doc):
            replicas = _replicas(doc)
            cpu = memory = 0
            for container in pod["containers"]:
                requests = container["resources"]["requests"]
                cpu += _cpu_m(requests["cpu"])
                memory += _memory_mi(requests["memory"])
            if doc["kind"] == "Service":
                cpu += QUEUE_PROXY_CPU_M
            yield doc["metadata"]["name"], cpu * replicas, memory * replicas


def _summed(docs: list[dict[str, Any]]) -> tuple[int, int]:
    requests = list(_requests(docs))
    assert requests
    return sum(r[1] for r in requests), sum(r[2] for r in requests)


@pytest.fixture(scope="module")
def table() -> dict[str, tuple[int, int]]:
    rows = _table()
    assert len(rows) >= 9, rows
    return rows


def test_the_project_rows_are_the_manifests_requests(
    table: dict[str, tuple[int, int]], builds: dict[Any, kube.Build]
) -> None:
    minimart = builds[kube.KUSTOMIZE_ROOT].documents + builds[kube.INFRA_ROOT].documents
    functions = kube.of_kind(minimart, "serving.knative.dev", "Service")
    stores = [d for d in minimart if d["kind"] in {"StatefulSet", "Job", "Deployment"}]
    expected = {
        "minimart functions (`k8s/functions`)": _summed(functions),
        "minimart stores (`k8s/infra`, the Job of `k8s/jobs`)": _summed(stores),
        "observability (`k8s/observability`)": _summed(builds[kube.OBSERVABILITY_ROOT].documents),
    }
    for name, requests in expected.items():
        assert table.get(name) == requests, f"{name}: the manifests request {requests}"
    counted = {id(d) for d in functions + stores}
    assert all(id(d) in counted for d in minimart if list(kube.pod_specs(d))), "a workload left out"


def test_the_total_is_the_sum_and_fits_the_machine_the_docs_ask_for(
    table: dict[str, tuple[int, int]], builds: dict[Any, kube.Build]
) -> None:
    total = table.pop("total")
    assert total == (sum(r[0] for r in table.values()), sum(r[1] for r in table.values()))
    text = DOCS.read_text()
    match = re.search(r"- (\d+) CPUs and (\d+) GiB of memory for Docker", text)
    assert match, "docs/deploy.md: the machine it asks for"
    cpus, gib = int(match.group(1)), int(match.group(2))
    functions = kube.of_kind(
        builds[kube.KUSTOMIZE_ROOT].documents, "serving.knative.dev", "Service"
    )
    redeploy_cpu = _summed(functions)[0]  # a second revision of each, until the new is Ready
    assert total[0] + redeploy_cpu <= cpus * 1000, (total, redeploy_cpu, cpus)
    assert total[1] <= gib * 1024 * 0.8, "leave the node and Docker a fifth of the memory"
    assert f"the pods request {total[0] / 1000:.1f} CPUs" in text
    assert f"{total[1] / 1024:.1f} GiB" in text
