"""Knative's own code on every Knative resource of k8s/ and eventing/ (tests/knative-check).

The Go program decodes each resource strictly into the upstream type of the release line the
cluster installs, defaults and validates it as the admission webhooks do, renders the Services'
route domains with the config-network and config-domain of k8s/knative/ (the files
scripts/kind-up.sh applies), validates the KafkaSources' sinks and delivery blocks with the
eventing feature flags, and decodes kind-config.yaml as kind does. Each broken copy under
fixtures/knative-broken/ must fail, naming its file and upstream's error.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from minimart.settings import PROJECT_ROOT
from tests.deploy import kube, upstream

# The first build of the Go programs (a fresh machine downloads the modules) runs inside the
# first test that needs them.
pytestmark = pytest.mark.timeout(upstream.BUILD_TIMEOUT_S + 120)

FIXTURES = PROJECT_ROOT / "tests" / "deploy" / "fixtures" / "knative-broken"
ORDER_HOST = "order.minimart.localhost"
KNATIVE_V1 = "serving.knative.dev/v1"
# Each kind of check, a broken copy that must fail it: (file that fails, upstream's message).
BROKEN = {
    # serving's DomainNameFromTemplate (route reconciler): the host kind-up.sh used to make.
    "public-host-localhost": ("order.yaml", 'invalid domain name "localhost"'),
    # eventing's DeliverySpec.Validate with the feature flags of config-features.
    "delivery-timeout-off": (
        "inventory-source.yaml",
        "must not set the field(s): spec.delivery.timeout",
    ),
    # strict decoding into serving's v1.Service.
    "unknown-field": ("order.yaml", 'unknown field "imagee"'),
    # duck/v1 SourceSpec / Destination validation.
    "bad-sink": ("inventory-source.yaml", "missing field(s): spec.sink.ref.apiVersion"),
    # kind's strict decoding of its v1alpha4 Cluster.
    "kind-unknown-field": ("kind-config.yaml", "field extraPortMapping not found"),
}
CHECKS_BY_KIND = {
    "Service": {"Service.Validate", "route domains.GetAllDomainsAndTags"},
    "KafkaSource": {
        "duck/v1 SourceSpec.Validate",
        "eventing DeliverySpec.Validate with the eventing feature flags",
    },
    "Cluster": {"strict decode into kind v1alpha4 Cluster"},
}


def _project_files() -> list[Path]:
    """The files of k8s/, eventing/ and kind-config.yaml (skaffold.yaml is no Knative file)."""
    return [p for p in kube.manifest_files() if p.name != "skaffold.yaml"]


def _is_upstream_checked(manifest: kube.Manifest) -> bool:
    group = manifest.group
    knative = group == "knative.dev" or group.endswith(".knative.dev")
    return knative or group == "kind.x-k8s.io" or manifest.path.parent == kube.KNATIVE_CONFIG


@pytest.fixture(scope="module")
def report(programs: Path) -> upstream.Report:
    return upstream.knative_check(programs, _project_files())


def test_every_knative_resource_passes_knatives_own_checks(report: upstream.Report) -> None:
    assert not report.failures, "\n" + report.explain()
    assert report.returncode == 0


def test_every_knative_resource_and_config_is_checked(report: upstream.Report) -> None:
    """Nothing Knative is left out: what Python finds is what the Go program checked."""
    expected = {
        (m.path.relative_to(PROJECT_ROOT).as_posix(), m.index)
        for path in _project_files()
        for m in kube.load_file(path)
        if _is_upstream_checked(m)
    }
    checked = {(r.file, r.index) for r in report.results if not r.ignored}
    assert checked == expected
    upstream_checked = [r for r in report.results if not r.ignored]
    kinds = {r.kind for r in upstream_checked}
    assert kinds >= {"Service", "KafkaSource", "KafkaSink", "Cluster", "ConfigMap"}, kinds
    for result in upstream_checked:
        required = CHECKS_BY_KIND.get(result.kind, set())
        assert required <= set(result.checks), f"{result.where}: ran {result.checks}"
    configs = [r for r in report.results if r.file.startswith("k8s/knative/")]
    assert configs and all(r.checks for r in configs), configs


def test_the_public_service_gets_a_host_knative_can_route(report: upstream.Report) -> None:
    services = {
        r.name: r for r in report.results if (r.api_version, r.kind) == (KNATIVE_V1, "Service")
    }
    functions = {p.parent.name for p in (PROJECT_ROOT / "functions").glob("*/main.py")}
    assert set(services) == functions, services
    assert services["order"].domains == (ORDER_HOST,)
    for name, result in services.items():
        if name != "order":
            assert result.domains == (f"{name}.minimart.svc.cluster.local",), result


def test_the_docs_and_scripts_name_the_host_knative_renders() -> None:
    """curl and k6 reach the ingress with this Host (README, docs/deploy.md, kind-up.sh)."""
    for relative in ("README.md", "docs/deploy.md"):
        text = (PROJECT_ROOT / relative).read_text()
        assert f"-H 'Host: {ORDER_HOST}' http://127.0.0.1:8080/orders" in text, relative
        assert f"-e HOST={ORDER_HOST}" in text, relative
    script = (PROJECT_ROOT / "scripts" / "kind-up.sh").read_text()
    assert "jsonpath={.status.url}" in script and "-H 'Host: $host'" in script


@pytest.mark.parametrize("case", sorted(BROKEN))
def test_a_broken_copy_fails_with_upstreams_error(programs: Path, case: str) -> None:
    folder = FIXTURES / case
    files = sorted(folder.glob("*.yaml"))
    assert files, folder
    report = upstream.knative_check(programs, files)
    assert report.returncode == 1
    (failure,) = report.failures
    name, message = BROKEN[case]
    assert failure.file == (folder / name).relative_to(PROJECT_ROOT).as_posix()
    assert message in failure.error, failure.error
    assert failure.where in report.explain() and message in report.explain()


def test_every_fixture_folder_is_a_case() -> None:
    assert sorted(p.name for p in FIXTURES.iterdir() if p.is_dir()) == sorted(BROKEN)


def test_without_go_the_check_fails_and_says_why(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(upstream.UpstreamCheckError, match="needs Go") as raised:
        upstream.build()
    assert "never skipped" in str(raised.value)
    assert os.environ["PATH"] == str(tmp_path)


def test_the_go_sources_are_gofmt_clean(programs: Path) -> None:
    """The Go of tests/knative-check is formatted as ruff formats the Python (gofmt -l)."""
    gofmt = Path(upstream.go_root()) / "bin" / "gofmt"
    result = subprocess.run(
        [str(gofmt), "-l", "."],
        cwd=upstream.SOURCE,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout == "", f"run gofmt -w on: {result.stdout}"
