"""Sender identity in the cluster (docs/security.md), checked offline: Knative Eventing's
``authentication-oidc`` is on, every KafkaSource sends its tokens for the audience its
function verifies, and every function allows exactly the senders the local runner allows
(the KafkaSources the manifests declare for it, and the console), with the issuer's keys
readable from its pod."""

from __future__ import annotations

from typing import Any

import yaml

from minimart import identity
from minimart.local.stack import allowed_senders
from minimart.manifests import load_topology
from minimart.settings import PROJECT_ROOT, Settings
from tests.deploy import kube


def _env(container: dict[str, Any]) -> dict[str, str]:
    return {e["name"]: e.get("value", "") for e in container.get("env", [])}


def _services(rendered: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {
        d["metadata"]["name"]: d for d in kube.of_kind(rendered, "serving.knative.dev", "Service")
    }


def _config(rendered: list[dict[str, Any]]) -> dict[str, str]:
    [config] = [d for d in kube.of_kind(rendered, "", "ConfigMap")
                if d["metadata"]["name"] == "minimart-config"]  # fmt: skip
    data: dict[str, str] = config["data"]
    return data


def test_the_oidc_feature_is_on() -> None:
    features = yaml.safe_load((kube.KNATIVE_CONFIG / "eventing-config-features.yaml").read_text())

    assert features["data"]["authentication-oidc"] == "enabled"


def test_every_kafka_source_sends_tokens_for_the_audience_its_function_verifies(
    rendered: list[dict[str, Any]],
) -> None:
    sources = kube.of_kind(rendered, "sources.knative.dev", "KafkaSource")
    assert sources
    for source in sources:
        sink = source["spec"]["sink"]
        assert sink["ref"]["kind"] == "Service"
        assert sink["audience"] == identity.audience_of(sink["ref"]["name"]), source["metadata"]
        # Knative would hash a longer name (kmeta.ChildName): ours stay readable.
        assert len(identity.source_account(source["metadata"]["name"])) <= identity.MAX_NAME


def test_every_fed_function_allows_the_senders_the_local_runner_allows(
    rendered: list[dict[str, Any]],
) -> None:
    allowed = allowed_senders(load_topology(PROJECT_ROOT))
    services = _services(rendered)
    assert set(allowed) <= set(services)
    for name, service in services.items():
        [container] = service["spec"]["template"]["spec"]["containers"]
        subjects = _env(container).get("MINIMART_OIDC_SUBJECTS")
        if name not in allowed:  # the public ingress: no KafkaSource feeds it
            assert subjects is None, name
            continue
        assert subjects is not None, name
        assert identity.parse_subjects(subjects) == set(allowed[name]), name
        assert _env(container).get("MINIMART_SERVICE_NAME") == name


def test_every_fed_function_can_read_the_issuers_keys(rendered: list[dict[str, Any]]) -> None:
    settings = Settings.from_env(_config(rendered))
    assert settings.oidc_issuer.startswith("https://")
    assert settings.oidc_jwks == settings.oidc_issuer + "/openid/v1/jwks"
    allowed = allowed_senders(load_topology(PROJECT_ROOT))
    for name, service in _services(rendered).items():
        if name not in allowed:
            continue
        pod = service["spec"]["template"]["spec"]
        [container] = pod["containers"]
        mounts = {m["name"]: m["mountPath"] for m in container.get("volumeMounts", [])}
        [volume] = [v for v in pod["volumes"] if v["name"] == "oidc-keys"]
        paths = {
            next(iter(s.values())).get("path") or next(iter(s.values()))["items"][0]["path"]
            for s in volume["projected"]["sources"]
        }
        assert settings.oidc_jwks_bearer_file == f"{mounts['oidc-keys']}/token", name
        assert settings.oidc_ca_file == f"{mounts['oidc-keys']}/ca.crt", name
        assert paths == {"token", "ca.crt"}, name
