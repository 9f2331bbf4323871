"""Redeploys lose nothing: checked on the rendered manifests, offline.

- skaffold deploys k8s/ and, when `skaffold dev` ends, deletes it: no namespace, no store, no
  volume, no Secret is in it (they are k8s/infra, applied by scripts/kind-up.sh);
- two `skaffold run`s label what they apply with two run ids (tests/deploy/skaffold_labels.py,
  skaffold's label transform at v2.24.0): the two renders differ in no pod template, so nothing
  that did not change restarts and no Knative Service gets a new Revision;
- the Job that creates the topics is named after its spec and the topics: a change to either
  is a new Job (which runs), no change is the same finished Job (left alone).
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import yaml

from minimart.settings import PROJECT_ROOT
from tests.deploy import generated, kube
from tests.deploy import skaffold_labels as skaffold

RUN_ID_PATH = f".metadata.labels.{skaffold.RUN_ID}"
HOLDS_DATA = {"Namespace", "StatefulSet", "PersistentVolumeClaim", "Secret"}


def _skaffold_yaml() -> dict[str, Any]:
    (doc,) = (m.doc for m in kube.load_file(PROJECT_ROOT / "skaffold.yaml"))
    return doc


def _render(docs: list[dict[str, Any]], run_id: str, config: dict[str, Any]) -> list[Any]:
    return skaffold.label(docs, {skaffold.RUN_ID: run_id}, config)


def _changes(docs: list[dict[str, Any]], config: dict[str, Any]) -> dict[tuple[str, ...], set[str]]:
    """(kind, name) -> the paths two runs with different run ids apply differently."""
    first, second = _render(docs, "run-1", config), _render(docs, "run-2", config)
    changes: dict[tuple[str, ...], set[str]] = {}
    for a, b in zip(first, second, strict=True):
        paths = set(skaffold.differences(a, b))
        if paths:
            changes[(a["kind"], a["metadata"]["name"])] = paths
    return changes


def test_skaffold_deploys_k8s_and_nothing_that_holds_data(builds: dict[Any, kube.Build]) -> None:
    assert _skaffold_yaml()["manifests"]["kustomize"]["paths"] == ["k8s"]
    deployed = builds[kube.KUSTOMIZE_ROOT].documents
    assert deployed, "skaffold deploys the functions"
    assert not [(d["kind"], d["metadata"]["name"]) for d in deployed if d["kind"] in HOLDS_DATA]
    infra = builds[kube.INFRA_ROOT].documents
    # The Secret is generated in the cluster by scripts/kind-up.sh (tests/deploy/test_secrets.py).
    assert {d["kind"] for d in infra} >= HOLDS_DATA - {"PersistentVolumeClaim", "Secret"}
    stores = {d["metadata"]["name"] for d in kube.of_kind(infra, "apps", "StatefulSet")}
    assert stores == {"kafka", "postgres", "mongo", "redis"}
    for store in kube.of_kind(infra, "apps", "StatefulSet"):
        assert store["spec"].get("volumeClaimTemplates"), f"{store['metadata']['name']}: no volume"


def test_two_skaffold_runs_change_no_pod_template(build: kube.Build) -> None:
    """Only the run-id label of a resource's own metadata differs: nothing rolls."""
    changes = _changes(build.documents, _skaffold_yaml())
    assert changes, "skaffold labels what it deploys (or the model lost its allowlist)"
    for resource, paths in changes.items():
        assert paths == {RUN_ID_PATH}, (resource, sorted(paths))
    # Every function and the Job are among them (the check above is not vacuous).
    services = {
        d["metadata"]["name"]
        for d in kube.of_kind(build.documents, "serving.knative.dev", "Service")
    }
    assert {name for kind, name in changes if kind == "Service"} == services
    assert any(kind == "Job" for kind, _ in changes)


def test_without_its_resource_selector_every_run_would_make_new_revisions(
    build: kube.Build,
) -> None:
    config = copy.deepcopy(_skaffold_yaml())
    assert config.pop("resourceSelector"), "skaffold.yaml filters the Knative Services' labels"
    changes = _changes(build.documents, config)
    template = f".spec.template{RUN_ID_PATH}"
    services = kube.of_kind(build.documents, "serving.knative.dev", "Service")
    assert services
    for service in services:
        assert template in changes[("Service", service["metadata"]["name"])]


def test_the_stores_would_restart_at_every_run_if_skaffold_deployed_them(
    builds: dict[Any, kube.Build],
) -> None:
    """Why k8s/infra is not skaffold's: a StatefulSet's pod template gets the run id."""
    changes = _changes(builds[kube.INFRA_ROOT].documents, _skaffold_yaml())
    for name in ("kafka", "postgres", "mongo", "redis"):
        assert f".spec.template{RUN_ID_PATH}" in changes[("StatefulSet", name)], name
        assert not any("volumeClaimTemplates" in p for p in changes[("StatefulSet", name)])


def _doc(text: str) -> dict[str, Any]:
    return dict(yaml.safe_load(text))


DEPLOYMENT = """
apiVersion: apps/v1
kind: Deployment
metadata: {name: d, labels: {app: d, skaffold.dev/run-id: old}}
spec:
  template:
    metadata: {labels: {app: d}}
    spec: {containers: [{name: c, image: i}]}
"""
JOB = """
apiVersion: batch/v1
kind: Job
metadata: {name: j}
spec:
  template:
    metadata: {labels: {app: j}}
    spec: {containers: [{name: c, image: i}]}
"""


def test_the_model_labels_as_skaffold_does() -> None:
    """The cases of skaffold's transform the tests above rely on."""
    labels = {skaffold.RUN_ID: "new", "app": "other"}
    deployment, job, configmap = skaffold.label(
        [_doc(DEPLOYMENT), _doc(JOB), {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {}}],
        labels,
        {},
    )
    # Every metadata of an allowlisted kind; an existing label kept, the run id replaced.
    assert deployment["metadata"]["labels"] == {"app": "d", skaffold.RUN_ID: "new"}
    assert deployment["spec"]["template"]["metadata"]["labels"] == {
        "app": "d",
        skaffold.RUN_ID: "new",
    }
    # A Job's pod template is spared (denylist); a ConfigMap is no allowlisted kind.
    assert job["metadata"]["labels"] == labels
    assert job["spec"]["template"]["metadata"]["labels"] == {"app": "j"}
    assert configmap == {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {}}
    # A deny entry takes the kind out of the allowlist altogether.
    deny = {"resourceSelector": {"deny": [{"groupKind": "Deployment.apps", "labels": [".*"]}]}}
    assert skaffold.label([_doc(DEPLOYMENT)], labels, deny) == [_doc(DEPLOYMENT)]
    with pytest.raises(skaffold.UnmodelledKind):
        skaffold.label([{"apiVersion": "example.com/v1", "kind": "Widget"}], labels, {})


def test_every_kind_of_minimart_is_modelled(rendered: list[dict[str, Any]]) -> None:
    allow, _ = skaffold.selectors(_skaffold_yaml())
    for doc in rendered:
        skaffold.transformed_kind(doc, allow)  # raises for a kind the model does not know


# --- the Job that creates the topics --------------------------------------------------------


def test_the_topics_job_is_named_after_its_spec_and_the_topics(build: kube.Build) -> None:
    namer = generated.script("name_topics_job")
    job_text, topics_text = Path(namer.JOB).read_text(), Path(namer.TOPICS).read_text()
    access_text = Path(namer.ACCESS).read_text()
    expected = namer.expected_name(job_text, topics_text, access_text)
    (job,) = kube.of_kind(build.documents, "batch", "Job")
    assert job["metadata"]["name"] == expected, "stale: run `make topics-job`"
    # Another topic, another partition count, another script or other Kafka ACLs: another Job,
    # which runs.
    more_topics = topics_text.replace("\ndata:\n", '\ndata:\n  minimart.new.topic: "3"\n', 1)
    assert more_topics != topics_text
    assert namer.expected_name(job_text, more_topics, access_text) != expected
    script = job_text.replace("--replication-factor 1", "--replication-factor 2")
    assert script != job_text
    assert namer.expected_name(script, topics_text, access_text) != expected
    more_acls = access_text.replace("  acls: |\n", "  acls: |\n    someone topic READ t\n", 1)
    assert more_acls != access_text
    assert namer.expected_name(job_text, topics_text, more_acls) != expected
    # The name does not feed its own hash, and the Job's immutable template mounts the topics.
    renamed = job_text.replace(expected, "create-topics-0000000000")
    assert namer.expected_name(renamed, topics_text, access_text) == expected
    assert job["metadata"]["labels"]["app.kubernetes.io/name"] == "create-topics"
    assert job["spec"]["ttlSecondsAfterFinished"] > 0, "finished Jobs go away"


def test_the_docs_find_the_topics_job_by_label_not_by_name() -> None:
    docs = (PROJECT_ROOT / "docs" / "deploy.md").read_text()
    assert "job/create-topics" not in docs
    assert "-l app.kubernetes.io/name=create-topics" in docs
    makefile = (PROJECT_ROOT / "mk" / "deploy.mk").read_text()
    assert "scripts/name_topics_job.py" in makefile
