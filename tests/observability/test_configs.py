"""The observability configs validate: Prometheus (promtool), Grafana dashboards, collector."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client import REGISTRY

import minimart.entrypoints
import minimart.ingress
import minimart.local.dispatcher
import minimart.observability.metrics  # noqa: F401  (registers the metrics)
from minimart.local.observe import COMMITTED_CONFIG, render_prometheus_config
from minimart.settings import PROJECT_ROOT, Settings

pytestmark = pytest.mark.e2e

OBSERVABILITY = PROJECT_ROOT / "observability"
DASHBOARDS = sorted((OBSERVABILITY / "grafana" / "dashboards").glob("*.json"))
_METRIC = re.compile(r"\b(minimart_[a-z0-9_]+)")


def promtool(config: Path) -> subprocess.CompletedProcess[str]:
    binary = shutil.which("promtool")
    if binary is None:
        pytest.skip("promtool not installed (Debian package prometheus; make install)")
    return subprocess.run(
        [binary, "check", "config", str(config)], capture_output=True, text=True, timeout=60
    )


def test_local_prometheus_config_passes_promtool() -> None:
    result = promtool(OBSERVABILITY / "prometheus.yml")
    assert result.returncode == 0, result.stdout + result.stderr


def test_cluster_prometheus_config_passes_promtool(tmp_path: Path) -> None:
    path = OBSERVABILITY / "prometheus-k8s.yml"
    result = promtool(path)
    if "kubernetes_sd_configs not found" in result.stdout + result.stderr:
        # Debian builds Prometheus without Kubernetes discovery: check everything else
        # (relabelling included) with the discovery swapped for a file-based one.
        config = yaml.safe_load(path.read_text())
        for job in config["scrape_configs"]:
            if job.pop("kubernetes_sd_configs", None) is not None:
                job["file_sd_configs"] = [{"files": [str(tmp_path / "targets.json")]}]
        swapped = tmp_path / "prometheus.yml"
        swapped.write_text(yaml.safe_dump(config))
        result = promtool(swapped)
    assert result.returncode == 0, result.stdout + result.stderr


def test_a_broken_prometheus_config_fails_promtool(tmp_path: Path) -> None:
    broken = tmp_path / "prometheus.yml"
    text = COMMITTED_CONFIG.read_text().replace("scrape_interval: 2s", "scrape_interval: soon")
    broken.write_text(text + "  - job_name: minimart-functions\n")
    result = promtool(broken)
    assert result.returncode != 0


def test_committed_prometheus_config_is_the_generated_one_for_default_ports() -> None:
    assert COMMITTED_CONFIG.read_text() == render_prometheus_config(Settings()), (
        "regenerate with: .venv/bin/python -m minimart.local.observe"
    )


def test_generated_config_for_other_ports_passes_promtool(tmp_path: Path) -> None:
    settings = Settings.from_env(
        {"MINIMART_INGRESS_PORT": "28080", "MINIMART_FUNCTION_PORT_BASE": "28081"}
    )
    path = tmp_path / "scrape.yml"
    path.write_text(render_prometheus_config(settings))
    assert "127.0.0.1:28080" in path.read_text()
    result = promtool(path)
    assert result.returncode == 0, result.stdout + result.stderr


def exported_metric_names() -> set[str]:
    names: set[str] = set()
    for metric in REGISTRY.collect():
        names.add(metric.name)
        if metric.type == "counter":
            names.update({metric.name + "_total", metric.name + "_created"})
        elif metric.type == "histogram":
            names.update(metric.name + s for s in ("_bucket", "_count", "_sum", "_created"))
    return names


def panels(dashboard: dict[str, Any]) -> list[dict[str, Any]]:
    found = []
    for panel in dashboard.get("panels", []):
        found.append(panel)
        found.extend(panel.get("panels", []))
    return found


def test_there_is_a_saga_dashboard() -> None:
    assert any(p.name == "saga-overview.json" for p in DASHBOARDS)


@pytest.mark.parametrize("path", DASHBOARDS, ids=lambda p: p.name)
def test_dashboard_queries_reference_existing_metrics(path: Path) -> None:
    dashboard = json.loads(path.read_text())
    known = exported_metric_names()
    queries = [t["expr"] for p in panels(dashboard) for t in p.get("targets", []) if "expr" in t]
    assert queries, f"{path.name} has no PromQL"
    for expr in queries:
        metrics = _METRIC.findall(expr)
        assert metrics, f"{path.name}: {expr!r} references no minimart metric"
        unknown = [m for m in metrics if m not in known]
        assert not unknown, f"{path.name}: {expr!r} references unknown metrics {unknown}"


def test_grafana_provisioning_points_at_the_dashboards() -> None:
    provisioning = OBSERVABILITY / "grafana" / "provisioning"
    datasources = yaml.safe_load((provisioning / "datasources" / "prometheus.yaml").read_text())
    assert datasources["datasources"][0]["type"] == "prometheus"
    providers = yaml.safe_load((provisioning / "dashboards" / "minimart.yaml").read_text())
    assert providers["providers"][0]["options"]["path"]


def test_collector_pipelines_use_defined_components() -> None:
    config = yaml.safe_load((OBSERVABILITY / "otel-collector-config.yaml").read_text())
    assert "otlp" in config["receivers"]
    pipelines = config["service"]["pipelines"]
    assert {"traces", "metrics"} <= set(pipelines)
    for pipeline in pipelines.values():
        for kind in ("receivers", "processors", "exporters"):
            for name in pipeline.get(kind, []):
                assert name in config[kind], f"{name} is not defined under {kind}"
    assert any(e.startswith("otlp") for e in pipelines["traces"]["exporters"])
    assert any(e.startswith("prometheus") for e in pipelines["metrics"]["exporters"])


def test_cluster_configmaps_embed_the_observability_files() -> None:
    documents = {}
    for path in (PROJECT_ROOT / "k8s" / "observability").glob("*.yaml"):
        for doc in yaml.safe_load_all(path.read_text()):
            if doc and doc.get("kind") == "ConfigMap":
                documents[doc["metadata"]["name"]] = doc["data"]
    assert (
        documents["prometheus-config"]["prometheus.yml"]
        == (OBSERVABILITY / "prometheus-k8s.yml").read_text()
    )
    assert (
        documents["otel-collector-config"]["config.yaml"]
        == (OBSERVABILITY / "otel-collector-config.yaml").read_text()
    )
    for path in DASHBOARDS:
        assert documents["grafana-dashboards"][path.name] == path.read_text()
