"""What the schemas cannot see: references, topics, names, selectors, exposure, hardening."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator, Mapping
from typing import Any
from urllib.parse import urlsplit

import yaml

from minimart import bootstrap
from minimart.catalog import DEAD_LETTER_TOPICS, PARKED_TOPIC, EventType
from minimart.settings import PROJECT_ROOT, Settings
from tests.deploy import generated, kube

KNATIVE = "serving.knative.dev"
INGRESS = "order"
PRODUCES = "minimart.dev/produces"
FUNCTION = "minimart.dev/function"
VISIBILITY = "networking.knative.dev/visibility"
RBAC = "rbac.authorization.k8s.io"
BINDINGS = ((RBAC, "RoleBinding"), (RBAC, "ClusterRoleBinding"))
# The Service (name, namespace) the functions send their spans to.
OTEL_COLLECTOR = ("otel-collector", "observability")
# The pod annotations observability/prometheus-k8s.yml relabels with, and the functions' values.
SCRAPE_ANNOTATIONS = {
    "prometheus.io/scrape": "true",
    "prometheus.io/port": "8080",
    "prometheus.io/path": "/metrics",
}

# Which function emits which events (the saga's design; topics come from the catalog).
EMITS: Mapping[str, frozenset[EventType]] = {
    "order": frozenset({EventType.ORDER_CREATED}),
    "inventory": frozenset(
        {EventType.INVENTORY_RESERVED, EventType.INVENTORY_REJECTED, EventType.INVENTORY_RELEASED}
    ),
    "payment": frozenset(
        {EventType.PAYMENT_CAPTURED, EventType.PAYMENT_DECLINED, EventType.PAYMENT_REFUNDED}
    ),
    "shipping": frozenset({EventType.SHIPPING_PREPARED, EventType.SHIPPING_FAILED}),
    "order-status": frozenset({EventType.ORDER_CONFIRMED, EventType.ORDER_CANCELLED}),
    "notification": frozenset({EventType.NOTIFICATION_SENT}),
    # It publishes dead letters again to their own topic, whichever that is.
    "redrive": frozenset(EventType),
}

DNS1123_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
DNS1035_LABEL = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")
DNS1123_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
IANA_SVC_NAME = re.compile(r"^(?=.*[a-z])[a-z0-9]([a-z0-9-]*[a-z0-9])?$")
SECRET_LIKE = re.compile(r"(DSN|PASSWORD|PASSWD|SECRET|TOKEN|CREDENTIAL|_KEY$)", re.I)
CREDENTIALS_IN_URL = re.compile(r"://[^/@\s:]+:[^/@\s]+@")


def _ksvcs(rendered: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {d["metadata"]["name"]: d for d in kube.of_kind(rendered, KNATIVE, "Service")}


def _by_name(rendered: list[dict[str, Any]], group: str, kind: str) -> dict[str, dict[str, Any]]:
    return {d["metadata"]["name"]: d for d in kube.of_kind(rendered, group, kind)}


def _containers(doc: Mapping[str, Any]) -> Iterator[dict[str, Any]]:
    for spec in kube.pod_specs(doc):
        yield from spec.get("initContainers", [])
        yield from spec["containers"]


def _workloads(rendered: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [d for d in rendered if (kube.group_of(d), d["kind"]) in kube.WORKLOADS]


def _where(doc: Mapping[str, Any]) -> str:
    return f"{doc['kind']} {doc['metadata']['name']}"


def _topics_configmap(rendered: list[dict[str, Any]]) -> dict[str, str]:
    return _by_name(rendered, "", "ConfigMap")["minimart-topics"]["data"]


def _produces(ksvc: Mapping[str, Any]) -> set[str]:
    raw = ksvc["metadata"].get("annotations", {}).get(PRODUCES, "")
    return {t.strip() for t in raw.split(",") if t.strip()}


def _functions() -> dict[str, str]:
    """functions/<name>/main.py -> its signature type, read from the decorator it uses."""
    found = {}
    for main in sorted((PROJECT_ROOT / "functions").glob("*/main.py")):
        source = main.read_text()
        http = "@functions_framework.http" in source
        cloudevent = "@functions_framework.cloud_event" in source
        assert http != cloudevent, f"{main}: one functions_framework decorator expected"
        found[main.parent.name] = "http" if http else "cloudevent"
    return found


# --- names and references -------------------------------------------------------------------


def test_names_are_dns_1123(each_build: kube.Build) -> None:
    rendered = each_build.documents
    bad = []
    for doc in rendered:
        name = doc["metadata"]["name"]
        is_service = doc["kind"] == "Service"
        pattern = DNS1035_LABEL if is_service else DNS1123_SUBDOMAIN
        if not pattern.match(name) or len(name) > (63 if is_service else 253):
            bad.append(f"{doc['kind']} name {name!r}")
        namespace = doc["metadata"].get("namespace", each_build.namespace)
        if not DNS1123_LABEL.match(namespace):
            bad.append(f"{_where(doc)}: namespace {namespace!r}")
        for spec in kube.pod_specs(doc):
            for item in [*spec["containers"], *spec.get("volumes", [])]:
                if not DNS1123_LABEL.match(item["name"]) or len(item["name"]) > 63:
                    bad.append(f"{_where(doc)}: container/volume {item['name']!r}")
            for container in spec["containers"]:
                for port in container.get("ports", []):
                    if "name" in port and (
                        not IANA_SVC_NAME.match(port["name"]) or len(port["name"]) > 15
                    ):
                        bad.append(f"{_where(doc)}: port name {port['name']!r}")
    for source in kube.of_kind(rendered, "sources.knative.dev", "KafkaSource"):
        group = source["spec"]["consumerGroup"]
        if not DNS1123_SUBDOMAIN.match(group):
            bad.append(f"{_where(source)}: consumer group {group!r}")
    assert not bad, bad


def test_everything_is_in_the_namespace_of_its_root(each_build: kube.Build) -> None:
    """minimart's resources in `minimart`, the observability stack's in `observability`."""
    rendered, namespace = each_build.documents, each_build.namespace
    namespaced = [d for d in rendered if d["kind"] not in kube.CLUSTER_SCOPED_KINDS]
    assert {d["metadata"].get("namespace") for d in namespaced} == {namespace}
    for doc in rendered:
        if doc["kind"] in kube.CLUSTER_SCOPED_KINDS:
            assert "namespace" not in doc["metadata"], _where(doc)
    # The namespace is made with what lives in it for good (k8s/infra), never by skaffold's k8s/.
    expected = [] if each_build.root == kube.KUSTOMIZE_ROOT else [namespace]
    assert [d["metadata"]["name"] for d in kube.of_kind(rendered, "", "Namespace")] == expected


def test_selectors_match_template_labels(each_build: kube.Build) -> None:
    rendered = each_build.documents
    templates = {}
    for doc in rendered:
        if (kube.group_of(doc), doc["kind"]) in {("apps", "StatefulSet"), ("apps", "Deployment")}:
            labels = doc["spec"]["template"]["metadata"]["labels"]
            selector = doc["spec"]["selector"]["matchLabels"]
            assert selector.items() <= labels.items(), f"{_where(doc)}: selector {selector}"
            assert not doc["spec"]["selector"].get("matchExpressions"), _where(doc)
            templates[doc["metadata"]["name"]] = doc
    services = _by_name(rendered, "", "Service")
    for name, service in services.items():
        selector = service["spec"].get("selector")
        assert selector, f"Service {name} selects no pods"
        matched = [
            w
            for w in templates.values()
            if selector.items() <= w["spec"]["template"]["metadata"]["labels"].items()
        ]
        assert matched, f"Service {name}: selector {selector} matches no pod template"
        port_names = {
            p.get("name") for w in matched for c in _containers(w) for p in c.get("ports", [])
        }
        port_numbers = {
            p["containerPort"] for w in matched for c in _containers(w) for p in c.get("ports", [])
        }
        for port in service["spec"]["ports"]:
            target = port.get("targetPort", port["port"])
            known = port_names if isinstance(target, str) else port_numbers
            assert target in known, f"Service {name}: targetPort {target} is no container port"
    for name, statefulset in _by_name(rendered, "apps", "StatefulSet").items():
        governing = services.get(statefulset["spec"]["serviceName"])
        assert governing, f"StatefulSet {name}: serviceName names no Service"
        assert governing["spec"].get("clusterIP") == "None", f"{name}: headless Service expected"


def test_volumes_configmaps_and_secrets_resolve(
    each_build: kube.Build, builds: dict[Any, kube.Build]
) -> None:
    rendered = each_build.documents
    # What the other roots of the namespace apply resolves too (k8s/infra's ConfigMaps for
    # k8s/), and the Secrets scripts/kind-up.sh generates in the namespace minimart.
    neighbours = [
        d for b in builds.values() if b.namespace == each_build.namespace for d in b.documents
    ]
    if each_build.namespace == "minimart":
        neighbours += generated.generated_secrets()
    configmaps = _by_name(neighbours, "", "ConfigMap")
    secrets = _by_name(neighbours, "", "Secret")
    data = {
        **{("ConfigMap", n): set(d.get("data", {})) for n, d in configmaps.items()},
        **{("Secret", n): set(d.get("data", {})) for n, d in secrets.items()},
        # Kubernetes publishes the cluster's CA in every namespace (root-ca-cert-publisher).
        ("ConfigMap", "kube-root-ca.crt"): {"ca.crt"},
    }
    for doc in _workloads(rendered):
        claims = {t["metadata"]["name"] for t in doc["spec"].get("volumeClaimTemplates", [])}
        for spec in kube.pod_specs(doc):
            volumes = {v["name"] for v in spec.get("volumes", [])}
            for volume in spec.get("volumes", []):
                if "configMap" in volume:
                    assert ("ConfigMap", volume["configMap"]["name"]) in data, _where(doc)
                if "secret" in volume:
                    assert ("Secret", volume["secret"]["secretName"]) in data, _where(doc)
                for projected in volume.get("projected", {}).get("sources", []):
                    for kind, key in (("ConfigMap", "configMap"), ("Secret", "secret")):
                        if key in projected:
                            keys = data.get((kind, projected[key]["name"]))
                            assert keys is not None, f"{_where(doc)}: {projected[key]['name']}"
                            for item in projected[key].get("items", []):
                                assert item["key"] in keys, f"{_where(doc)}: {item['key']}"
            for container in [*spec["containers"], *spec.get("initContainers", [])]:
                for mount in container.get("volumeMounts", []):
                    assert mount["name"] in volumes | claims, f"{_where(doc)}: {mount['name']}"
                for source in container.get("envFrom", []):
                    for kind, key in (("ConfigMap", "configMapRef"), ("Secret", "secretRef")):
                        if key in source:
                            assert (kind, source[key]["name"]) in data, _where(doc)
                for env in container.get("env", []):
                    ref = env.get("valueFrom", {})
                    for kind, key in (("ConfigMap", "configMapKeyRef"), ("Secret", "secretKeyRef")):
                        if key in ref:
                            keys = data.get((kind, ref[key]["name"]))
                            assert keys is not None, f"{_where(doc)}: {kind} {ref[key]['name']}"
                            assert ref[key]["key"] in keys, f"{_where(doc)}: {ref[key]['key']}"


def test_sinks_and_dead_letter_sinks_name_resources_of_the_repo(
    rendered: list[dict[str, Any]],
) -> None:
    ksvcs = _ksvcs(rendered)
    kafka_sinks = _by_name(rendered, "eventing.knative.dev", "KafkaSink")
    sources = kube.of_kind(rendered, "sources.knative.dev", "KafkaSource")
    assert sources
    for source in sources:
        where, spec = _where(source), source["spec"]
        sink = spec["sink"]["ref"]
        assert (sink["apiVersion"], sink["kind"]) == (f"{KNATIVE}/v1", "Service"), where
        assert sink["name"] in ksvcs, f"{where}: sink {sink['name']} is no Knative Service"
        assert sink.get("namespace", "minimart") == source["metadata"]["namespace"], where
        delivery = spec.get("delivery")
        assert delivery, f"{where}: no delivery block"
        for key in ("retry", "backoffPolicy", "backoffDelay", "timeout", "deadLetterSink"):
            assert key in delivery, f"{where}: delivery has no {key}"
        dead = delivery["deadLetterSink"]["ref"]
        assert dead["kind"] == "KafkaSink", where
        assert dead["apiVersion"] == kafka_sinks[dead["name"]]["apiVersion"], where
    assert {s["spec"]["topic"] for s in kafka_sinks.values()} == set(DEAD_LETTER_TOPICS)


def test_kafka_addresses_resolve_to_the_kafka_service(rendered: list[dict[str, Any]]) -> None:
    services = _services(rendered)
    addresses = [
        *(
            a
            for kind in ("KafkaSource", "KafkaSink")
            for d in rendered
            if d["kind"] == kind
            for a in d["spec"]["bootstrapServers"]
        ),
        _by_name(rendered, "", "ConfigMap")["minimart-config"]["data"]["MINIMART_KAFKA_BOOTSTRAP"],
    ]
    for address in addresses:
        _assert_resolves(services, f"kafka://{address}")


def _services(rendered: list[dict[str, Any]]) -> dict[tuple[str, str], dict[str, Any]]:
    """The Services of the documents by (namespace, name)."""
    return {
        (d["metadata"]["namespace"], d["metadata"]["name"]): d
        for d in kube.of_kind(rendered, "", "Service")
    }


def _assert_resolves(
    services: Mapping[tuple[str, str], Any], url: str, namespace: str = "minimart"
) -> dict[str, Any]:
    """The port of the Service the URL names (``namespace``: the one of the caller)."""
    parts = urlsplit(url)
    host, port = parts.hostname or "", parts.port
    match = re.match(r"^([a-z0-9-]+)(?:\.([a-z0-9-]+)(?:\.svc(?:\.cluster\.local)?)?)?$", host)
    assert match, f"{url}: not a cluster Service address"
    ident = (match.group(2) or namespace, match.group(1))
    assert ident in services, f"{url}: no Service {ident[1]} in namespace {ident[0]}"
    ports = {p["port"]: p for p in services[ident]["spec"]["ports"]}
    assert port in ports, f"{url}: the Service has no port {port}"
    return ports[port]


# --- topics ---------------------------------------------------------------------------------


def test_produced_topics_are_those_of_the_catalog(rendered: list[dict[str, Any]]) -> None:
    ksvcs = _ksvcs(rendered)
    assert set(EMITS) == set(ksvcs)
    assert frozenset().union(*EMITS.values()) == set(EventType), "an event type no one emits"
    for name, ksvc in ksvcs.items():
        assert _produces(ksvc) == {t.topic for t in EMITS[name]}, f"{name}: {PRODUCES}"


def test_every_consumed_topic_is_produced_and_the_reverse(rendered: list[dict[str, Any]]) -> None:
    dead_letters = {
        s["spec"]["topic"] for s in kube.of_kind(rendered, "eventing.knative.dev", "KafkaSink")
    }
    # A KafkaSink produces its topic (the dead letters the redrive function reads).
    produced = set().union(*(_produces(k) for k in _ksvcs(rendered).values())) | dead_letters
    consumed = {
        topic
        for source in kube.of_kind(rendered, "sources.knative.dev", "KafkaSource")
        for topic in source["spec"]["topics"]
    }
    assert consumed - produced == set(), "consumed, but no function produces them"
    # The parked topic is for people (`minimart deadletters`): no source may read it
    # (test_dead_letter_paths.py).
    assert produced - consumed == {PARKED_TOPIC}, "produced, but no KafkaSource consumes them"
    topics = _topics_configmap(rendered)
    assert set(topics) == produced, "minimart-topics differs from the wiring"
    assert all(re.fullmatch(r"[1-9][0-9]*", n) for n in topics.values()), topics


def test_a_function_does_not_consume_what_it_produces(rendered: list[dict[str, Any]]) -> None:
    ksvcs = _ksvcs(rendered)
    for source in kube.of_kind(rendered, "sources.knative.dev", "KafkaSource"):
        sink = source["spec"]["sink"]["ref"]["name"]
        assert not set(source["spec"]["topics"]) & _produces(ksvcs[sink]), _where(source)


# --- exposure -------------------------------------------------------------------------------


def test_only_the_order_service_is_public(rendered: list[dict[str, Any]]) -> None:
    ksvcs = _ksvcs(rendered)
    public = {
        n
        for n, k in ksvcs.items()
        if k["metadata"].get("labels", {}).get(VISIBILITY) != "cluster-local"
    }
    assert public == {INGRESS}
    assert INGRESS in ksvcs and VISIBILITY not in ksvcs[INGRESS]["metadata"].get("labels", {})


def test_nothing_else_is_exposed_outside_the_cluster(each_build: kube.Build) -> None:
    """No NodePort/LoadBalancer, ingress, host network or host port (port-forward instead)."""
    rendered = each_build.documents
    for service in kube.of_kind(rendered, "", "Service"):
        assert service["spec"].get("type", "ClusterIP") == "ClusterIP", _where(service)
    for doc in rendered:
        assert doc["kind"] not in {"Ingress", "Gateway", "HTTPRoute", "DomainMapping"}, _where(doc)
        for spec in kube.pod_specs(doc):
            assert not spec.get("hostNetwork"), _where(doc)
            for container in spec["containers"]:
                for port in container.get("ports", []):
                    assert "hostPort" not in port, _where(doc)


# --- functions, images, configuration -------------------------------------------------------


def test_each_function_has_one_service_image_and_artifact(rendered: list[dict[str, Any]]) -> None:
    functions = _functions()
    ksvcs = _ksvcs(rendered)
    assert set(ksvcs) == set(functions)
    (skaffold,) = (m.doc for m in kube.load_file(PROJECT_ROOT / "skaffold.yaml"))
    artifacts = {a["image"]: a for a in skaffold["build"]["artifacts"]}
    assert set(artifacts) == {f"minimart-{name}" for name in functions}
    for name, signature in functions.items():
        ksvc = ksvcs[name]
        assert ksvc["metadata"]["annotations"][FUNCTION] == name
        (container,) = ksvc["spec"]["template"]["spec"]["containers"]
        assert container["image"] == f"minimart-{name}"
        assert [p["containerPort"] for p in container["ports"]] == [8080]
        artifact = artifacts[f"minimart-{name}"]
        assert artifact["context"] == "."
        assert artifact["docker"]["dockerfile"] == "Dockerfile"
        assert artifact["docker"]["buildArgs"] == {"FUNCTION": name, "SIGNATURE": signature}


def test_the_dockerfile_runs_the_function_as_a_non_root_user() -> None:
    dockerfile = (PROJECT_ROOT / "Dockerfile").read_text()
    assert re.search(r"^FROM python:3\.11-slim", dockerfile, re.M)
    assert re.search(r"^ARG FUNCTION$", dockerfile, re.M)
    assert re.search(r"^ARG SIGNATURE", dockerfile, re.M)
    assert "requirements.lock" in dockerfile and "requirements.in" in dockerfile
    users = re.findall(r"^USER (\d+):(\d+)$", dockerfile, re.M)
    assert users and int(users[-1][0]) > 0, "the image must end with a numeric non-root USER"
    command = re.findall(r"^CMD (.*)$", dockerfile, re.M)[-1]
    for part in ("minimart.serve", "--target handle", "--signature-type", "--port 8080"):
        assert part in command
    assert "--host 0.0.0.0" in command


def test_configuration_is_what_settings_reads(
    rendered: list[dict[str, Any]], all_rendered: list[dict[str, Any]]
) -> None:
    config = _by_name(rendered, "", "ConfigMap")["minimart-config"]["data"]
    secrets = generated.secret_values()
    services = _services(all_rendered)
    for name, ksvc in _ksvcs(rendered).items():
        (container,) = ksvc["spec"]["template"]["spec"]["containers"]
        env: dict[str, str] = {}
        for source in container.get("envFrom", []):
            if "configMapRef" in source:
                env.update(
                    _by_name(rendered, "", "ConfigMap")[source["configMapRef"]["name"]]["data"]
                )
            assert "secretRef" not in source, f"{name}: name the secret keys it needs instead"
        expanded: set[str] = set()  # variables only there to be expanded into others
        for item in container.get("env", []):
            if "value" in item:
                env[item["name"]] = _expand(item["value"], env, expanded)
            else:
                ref = item["valueFrom"]["secretKeyRef"]
                env[item["name"]] = secrets[ref["name"]][ref["key"]]
        recorder = _RecordingEnv(env)
        settings = Settings.from_env(recorder)
        unread = set(env) - recorder.read - expanded
        assert not unread, f"{name}: settings.py reads no {sorted(unread)}"
        assert settings.service_name == name
        _assert_resolves(services, f"kafka://{settings.kafka_bootstrap}")
        _assert_resolves(services, settings.mongo_url)
        _assert_resolves(services, settings.redis_url)
        for key, dsn in (
            ("MINIMART_ORDERS_DSN", settings.orders_dsn),
            ("MINIMART_INVENTORY_DSN", settings.inventory_dsn),
            ("MINIMART_PAYMENTS_DSN", settings.payments_dsn),
        ):
            if key in env:
                _assert_resolves(services, dsn)
        # Spans go to the collector of k8s/observability over OTLP/HTTP (tracing.py adds
        # /v1/traces to the endpoint).
        endpoint = urlsplit(settings.otlp_endpoint)
        assert endpoint.scheme == "http" and endpoint.path in {"", "/"}, f"{name}: {endpoint}"
        assert (endpoint.hostname or "").split(".")[:2] == list(OTEL_COLLECTOR), name
        port = _assert_resolves(services, settings.otlp_endpoint)
        assert port["name"] == "otlp-http", f"{name}: {settings.otlp_endpoint} is not OTLP/HTTP"
        _assert_builds_only_what_it_is_given(name, env)
    for key in (
        "MINIMART_KAFKA_BOOTSTRAP",
        "MINIMART_MONGO_URL",
        "MINIMART_REDIS_URL",
        "OTEL_EXPORTER_OTLP_ENDPOINT",
    ):
        assert key in config, f"minimart-config has no {key}"


def _expand(value: str, env: Mapping[str, str], used: set[str]) -> str:
    """The kubelet's $(VAR) expansion of an env value: a variable defined earlier in the
    container's env is replaced (and noted in ``used``), $$ is a literal $, others stay."""

    def replace(match: re.Match[str]) -> str:
        if match.group(0) == "$$":
            return "$"
        name = match.group(1)
        if name in env:
            used.add(name)
            return env[name]
        return match.group(0)

    return re.sub(r"\$\$|\$\(([A-Za-z_][A-Za-z0-9_.-]*)\)", replace, value)


def _relabel(rules: list[dict[str, Any]], labels: dict[str, str]) -> dict[str, str] | None:
    """Prometheus' relabelling (the keep/replace actions) of one target; None: dropped."""
    labels = dict(labels)
    for rule in rules:
        value = rule.get("separator", ";").join(labels.get(s, "") for s in rule["source_labels"])
        match = re.fullmatch(rule.get("regex", "(.*)"), value)
        action = rule.get("action", "replace")
        if action == "keep":
            if not match:
                return None
        elif action == "replace":
            if match:
                template = re.sub(r"\$(\d+)", r"\\g<\1>", rule.get("replacement", "$1"))
                labels[rule["target_label"]] = match.expand(template)
        else:
            raise AssertionError(f"relabel action {action} is not simulated here")
    return labels


def test_the_cluster_prometheus_scrapes_every_function(rendered: list[dict[str, Any]]) -> None:
    """The pod annotations of the functions are the ones prometheus-k8s.yml relabels with."""
    config = yaml.safe_load((PROJECT_ROOT / "observability" / "prometheus-k8s.yml").read_text())
    (job,) = [j for j in config["scrape_configs"] if j.get("kubernetes_sd_configs")]
    (discovery,) = job["kubernetes_sd_configs"]
    assert discovery["role"] == "pod" and "minimart" in discovery["namespaces"]["names"]
    prefix = "__meta_kubernetes_pod_annotation_"
    read = {
        label
        for rule in job["relabel_configs"]
        for label in rule.get("source_labels", [])
        if label.startswith(prefix)
    }
    assert read == {prefix + re.sub(r"[^A-Za-z0-9_]", "_", k) for k in SCRAPE_ANNOTATIONS}
    for name, ksvc in _ksvcs(rendered).items():
        annotations = ksvc["spec"]["template"]["metadata"].get("annotations", {})
        assert SCRAPE_ANNOTATIONS.items() <= annotations.items(), f"{name}: scrape annotations"
        (container,) = ksvc["spec"]["template"]["spec"]["containers"]
        assert [str(p["containerPort"]) for p in container["ports"]] == [
            SCRAPE_ANNOTATIONS["prometheus.io/port"]
        ]
        # A target per container port (the queue-proxy's too): each becomes the function's.
        for address in ("10.244.0.7:8012", "10.244.0.7"):
            target = {
                "__address__": address,
                "__metrics_path__": "/metrics-of-the-job",
                **{prefix + re.sub(r"[^A-Za-z0-9_]", "_", k): v for k, v in annotations.items()},
            }
            scraped = _relabel(job["relabel_configs"], target)
            assert scraped, f"{name}: dropped by the relabelling"
            assert scraped["__address__"] == "10.244.0.7:8080", f"{name}: {scraped}"
            assert scraped["__metrics_path__"] == "/metrics", f"{name}: {scraped}"
        unannotated = {"__address__": "10.244.0.7:8080"}
        assert _relabel(job["relabel_configs"], unannotated) is None


def test_the_observability_stack_addresses_resolve(all_rendered: list[dict[str, Any]]) -> None:
    """Collector -> Jaeger, Prometheus -> collector, Grafana -> Prometheus: Services and ports."""
    services = _services(all_rendered)
    observability = kube.KUSTOMIZE_ROOTS[kube.OBSERVABILITY_ROOT]
    folder = PROJECT_ROOT / "observability"
    collector = yaml.safe_load((folder / "otel-collector-config.yaml").read_text())
    jaeger = collector["exporters"]["otlp/jaeger"]["endpoint"]
    assert _assert_resolves(services, f"grpc://{jaeger}", observability)["name"] == "otlp-grpc"
    # The collector listens (on every interface) on the ports its Service targets.
    listens = {
        "otlp-grpc": collector["receivers"]["otlp"]["protocols"]["grpc"]["endpoint"],
        "otlp-http": collector["receivers"]["otlp"]["protocols"]["http"]["endpoint"],
        "metrics": collector["exporters"]["prometheus"]["endpoint"],
    }
    for port in services[(observability, "otel-collector")]["spec"]["ports"]:
        assert listens[port["name"]] == f"0.0.0.0:{port['targetPort']}", port
    prometheus = yaml.safe_load((folder / "prometheus-k8s.yml").read_text())
    for job in prometheus["scrape_configs"]:
        for static in job.get("static_configs", []):
            for target in static["targets"]:
                if not target.startswith("localhost:"):
                    _assert_resolves(services, f"http://{target}", observability)
    grafana = _by_name(all_rendered, "apps", "Deployment")["grafana"]
    (container,) = grafana["spec"]["template"]["spec"]["containers"]
    env = {e["name"]: e.get("value", "") for e in container.get("env", [])}
    _assert_resolves(services, env["PROMETHEUS_URL"], observability)


class _RecordingEnv(dict[str, str]):
    """An environment that remembers which keys were looked up."""

    def __init__(self, values: Mapping[str, str]) -> None:
        super().__init__(values)
        self.read: set[str] = set()

    def get(self, key: str, default: Any = None) -> Any:  # type: ignore[override]
        self.read.add(key)
        return super().get(key, default)

    def __getitem__(self, key: str) -> str:
        self.read.add(key)
        return super().__getitem__(key)

    def __contains__(self, key: object) -> bool:
        self.read.add(str(key))
        return super().__contains__(key)


_POOL_DSN = {
    "orders_pool": "MINIMART_ORDERS_DSN",
    "inventory_pool": "MINIMART_INVENTORY_DSN",
    "payments_pool": "MINIMART_PAYMENTS_DSN",
}


def _assert_builds_only_what_it_is_given(name: str, env: Mapping[str, str]) -> None:
    """The databases a function warms up (minimart.bootstrap) are those it gets a DSN for."""
    warm_up = getattr(bootstrap, "WARM_UP", None)
    if warm_up is None:
        return
    needed = {_POOL_DSN[a] for a in warm_up[name] if a in _POOL_DSN}
    given = {k for k in env if k in _POOL_DSN.values()}
    assert needed == given, f"{name}: warms up {sorted(needed)} but is given {sorted(given)}"


def _blank_references(text: str, names: set[str]) -> str:
    """``text`` with each $(VAR) of ``names`` removed."""
    return re.sub(
        r"\$\(([A-Za-z_][A-Za-z0-9_.-]*)\)",
        lambda m: "" if m.group(1) in names else m.group(0),
        text,
    )


def test_no_secret_value_is_written_in_plain(each_build: kube.Build) -> None:
    rendered = each_build.documents
    for doc in _workloads(rendered):
        for container in _containers(doc):
            # Variables that hold a Secret's value: a value may name them as $(VAR), which the
            # kubelet expands in the pod (a DSN built around its password), never spell them.
            from_secret = {
                e["name"]
                for e in container.get("env", [])
                if "secretKeyRef" in e.get("valueFrom", {})
            }
            blanked = _blank_references(json.dumps(container), from_secret)
            for env in container.get("env", []):
                value = _blank_references(str(env.get("value", "")), from_secret)
                if SECRET_LIKE.search(env["name"]):
                    ref = env.get("valueFrom", {}).get("secretKeyRef")
                    built = "value" in env and value != env["value"]
                    assert ref or built, f"{_where(doc)}: {env['name']} must come from a Secret"
                assert not CREDENTIALS_IN_URL.search(value), _where(doc)
            assert not CREDENTIALS_IN_URL.search(blanked), _where(doc)
    for configmap in kube.of_kind(rendered, "", "ConfigMap"):
        for key, value in configmap.get("data", {}).items():
            assert not SECRET_LIKE.search(key), f"{_where(configmap)}: {key} belongs in a Secret"
            assert not CREDENTIALS_IN_URL.search(value), f"{_where(configmap)}: {key}"
    # No Secret is rendered: scripts/kind-up.sh generates the only one in the cluster.
    assert [s["metadata"]["name"] for s in kube.of_kind(rendered, "", "Secret")] == []
    for path in kube.manifest_files():
        for manifest in kube.load_file(path):
            assert manifest.kind != "Secret", f"{manifest.where}: commit no Secret"


# --- hardening ------------------------------------------------------------------------------


def _effective(pod: Mapping[str, Any], container: Mapping[str, Any], key: str) -> Any:
    return container.get("securityContext", {}).get(key, pod.get("securityContext", {}).get(key))


# The workload kinds of each kustomization root (the check below must not pass vacuously).
WORKLOAD_KINDS = {
    kube.KUSTOMIZE_ROOT: {"Job", "Service"},
    kube.INFRA_ROOT: {"StatefulSet"},
    kube.OBSERVABILITY_ROOT: {"Deployment"},
}


def _probe_ports(container: Mapping[str, Any]) -> Iterator[tuple[str, int | str]]:
    for key in ("readinessProbe", "livenessProbe", "startupProbe"):
        for handler in ("httpGet", "tcpSocket", "grpc"):
            port = container.get(key, {}).get(handler, {}).get("port")
            if port is not None:
                yield key, port


def _bound_service_accounts(rendered: list[dict[str, Any]]) -> set[tuple[str, str]]:
    """(namespace, name) of the ServiceAccounts some (Cluster)RoleBinding grants a role."""
    return {
        (subject.get("namespace", binding["metadata"].get("namespace", "")), subject["name"])
        for group, kind in BINDINGS
        for binding in kube.of_kind(rendered, group, kind)
        for subject in binding.get("subjects", [])
        if subject["kind"] == "ServiceAccount"
    }


# The volume types the "restricted" Pod Security Standard allows.
RESTRICTED_VOLUMES = frozenset(
    {"configMap", "csi", "downwardAPI", "emptyDir", "ephemeral", "persistentVolumeClaim"}
    | {"projected", "secret"}
)


def test_the_minimart_namespace_enforces_restricted(rendered: list[dict[str, Any]]) -> None:
    """Enforced, not just warned: the hardening test below is what lets every pod in."""
    (namespace,) = kube.of_kind(rendered, "", "Namespace")
    labels = namespace["metadata"]["labels"]
    assert labels["pod-security.kubernetes.io/enforce"] == "restricted"
    assert labels["pod-security.kubernetes.io/enforce-version"] == f"v{kube.KUBERNETES_VERSION}"
    for doc in _workloads(rendered):
        for pod in kube.pod_specs(doc):
            for volume in pod.get("volumes", []):
                kinds = set(volume) - {"name"}
                assert kinds <= RESTRICTED_VOLUMES, f"{_where(doc)}: volume {volume['name']}"
            assert not pod.get("hostPID") and not pod.get("hostIPC"), _where(doc)


def test_every_container_is_hardened_with_resources_and_probes(each_build: kube.Build) -> None:
    rendered = each_build.documents
    workloads = _workloads(rendered)
    assert {d["kind"] for d in workloads} >= WORKLOAD_KINDS[each_build.root]
    bound = _bound_service_accounts(rendered)
    for doc in workloads:
        long_running = doc["kind"] != "Job"
        for pod in kube.pod_specs(doc):
            for container in pod["containers"]:
                where = f"{_where(doc)}/{container['name']}"
                resources = container.get("resources", {})
                for part in ("requests", "limits"):
                    assert {"cpu", "memory"} <= set(resources.get(part, {})), f"{where}: {part}"
                if long_running:
                    assert "readinessProbe" in container, f"{where}: no readinessProbe"
                    assert "livenessProbe" in container, f"{where}: no livenessProbe"
                ports = container.get("ports", [])
                for probe, port in _probe_ports(container):
                    known = {
                        p.get("name") if isinstance(port, str) else p["containerPort"]
                        for p in ports
                    }
                    assert port in known, f"{where}: {probe} port {port} is no container port"
                context = container.get("securityContext", {})
                assert context.get("allowPrivilegeEscalation") is False, where
                assert context.get("readOnlyRootFilesystem") is True, where
                assert context.get("capabilities", {}).get("drop") == ["ALL"], where
                assert not context.get("privileged"), where
                assert _effective(pod, container, "runAsNonRoot") is True, where
                assert (_effective(pod, container, "runAsUser") or 1) > 0, where
                seccomp = _effective(pod, container, "seccompProfile") or {}
                assert seccomp.get("type") == "RuntimeDefault", where
                image = container["image"]
                if not image.startswith("minimart-"):
                    assert re.search(r":[\w][\w.-]*$", image) and not image.endswith(":latest"), (
                        f"{where}: pin {image}"
                    )
            # Only a pod whose ServiceAccount is granted a role talks to the API server; it
            # says so explicitly. Every other pod gets no token.
            account = (doc["metadata"]["namespace"], pod.get("serviceAccountName", "default"))
            expected = account in bound and account[1] != "default"
            assert pod.get("automountServiceAccountToken") is expected, (
                f"{_where(doc)}: automountServiceAccountToken must be {expected}"
            )


def test_service_accounts_and_roles_resolve(each_build: kube.Build) -> None:
    """Pods name ServiceAccounts of the build; bindings name its roles and ServiceAccounts."""
    rendered = each_build.documents
    accounts = {
        (d["metadata"]["namespace"], d["metadata"]["name"])
        for d in kube.of_kind(rendered, "", "ServiceAccount")
    }
    for doc in _workloads(rendered):
        for pod in kube.pod_specs(doc):
            if "serviceAccountName" in pod:
                account = (doc["metadata"]["namespace"], pod["serviceAccountName"])
                assert account in accounts, f"{_where(doc)}: no ServiceAccount {account}"
    for group, kind in BINDINGS:
        for binding in kube.of_kind(rendered, group, kind):
            ref = binding["roleRef"]
            assert ref["apiGroup"] == RBAC, _where(binding)
            roles = _by_name(rendered, RBAC, ref["kind"])
            assert ref["name"] in roles, f"{_where(binding)}: no {ref['kind']} {ref['name']}"
            assert binding.get("subjects"), f"{_where(binding)}: binds no one"
            for subject in binding["subjects"]:
                assert subject["kind"] == "ServiceAccount", f"{_where(binding)}: {subject}"
                account = (subject.get("namespace", ""), subject["name"])
                assert account in accounts, f"{_where(binding)}: no ServiceAccount {account}"
    # Roles only read (Prometheus' discovery): no write verb, no wildcard, no Secret.
    for kind in ("Role", "ClusterRole"):
        for role in kube.of_kind(rendered, RBAC, kind):
            for rule in role["rules"]:
                assert set(rule["verbs"]) <= {"get", "list", "watch"}, _where(role)
                assert "*" not in rule.get("resources", []) + rule.get("apiGroups", []), rule
                assert "secrets" not in rule.get("resources", []), _where(role)


def test_data_stores_keep_their_data_on_persistent_volumes(rendered: list[dict[str, Any]]) -> None:
    statefulsets = _by_name(rendered, "apps", "StatefulSet")
    assert set(statefulsets) == {"kafka", "postgres", "mongo", "redis"}
    for name, statefulset in statefulsets.items():
        claims = statefulset["spec"]["volumeClaimTemplates"]
        assert claims, name
        (container,) = statefulset["spec"]["template"]["spec"]["containers"]
        mounted = {m["name"] for m in container["volumeMounts"]}
        assert {c["metadata"]["name"] for c in claims} <= mounted, name
    redis_args = statefulsets["redis"]["spec"]["template"]["spec"]["containers"][0]["args"]
    assert redis_args[redis_args.index("--appendonly") + 1] == "yes"
    init = _by_name(rendered, "", "ConfigMap")["postgres-init"]["data"]
    script = "\n".join(init.values())
    for database in ("minimart_orders", "minimart_inventory", "minimart_payments"):
        password = f"{database.upper()}_DB_PASSWORD"
        assert f'minimart_database {database} "${password}"' in script


def test_the_topic_job_reads_the_topics_configmap(rendered: list[dict[str, Any]]) -> None:
    (job,) = kube.of_kind(rendered, "batch", "Job")
    pod = job["spec"]["template"]["spec"]
    volumes = {v["name"]: v for v in pod.get("volumes", [])}
    (container,) = pod["containers"]
    mounts = {
        m["mountPath"]: volumes[m["name"]]
        for m in container["volumeMounts"]
        if "configMap" in volumes[m["name"]]
    }
    assert [v["configMap"]["name"] for v in mounts.values()] == ["minimart-topics"]
    (path,) = mounts
    script = "\n".join(container["args"])
    assert f"{path}/*" in script and "--partitions" in script and "--if-not-exists" in script


# --- the cluster scripts --------------------------------------------------------------------


def _kind_up() -> str:
    return (PROJECT_ROOT / "scripts" / "kind-up.sh").read_text()


def _patches(script: str) -> list[dict[str, Any]]:
    return [json.loads(m) for m in re.findall(r"--patch '(\{.*?\})'", script, re.S)]


def test_kind_publishes_kourier_on_localhost_8080() -> None:
    (cluster,) = (m.doc for m in kube.load_file(PROJECT_ROOT / "kind-config.yaml"))
    mappings = [p for node in cluster["nodes"] for p in node.get("extraPortMappings", [])]
    (mapping,) = [p for p in mappings if p["hostPort"] == 8080]
    assert mapping["listenAddress"] == "127.0.0.1"
    node_ports = [
        port["nodePort"]
        for patch in _patches(_kind_up())
        for port in patch.get("spec", {}).get("ports", [])
        if port["name"] == "http2"
    ]
    assert node_ports == [mapping["containerPort"]]
    (skaffold,) = (m.doc for m in kube.load_file(PROJECT_ROOT / "skaffold.yaml"))
    (profile,) = [p for p in skaffold["profiles"] if p["name"] == "local-kind"]
    assert {"kubeContext": f"kind-{cluster['name']}"} in profile["activation"]
    assert profile["build"]["local"]["push"] is False
    assert skaffold["manifests"]["kustomize"]["paths"] == ["k8s"]
    assert f'CLUSTER_NAME="${{CLUSTER_NAME:-{cluster["name"]}}}"' in _kind_up()


_PORT_FORWARD = re.compile(r"kubectl\b[^\n]*\bport-forward\b[^\n]*")
_LOCAL_FORWARD = re.compile(
    r"kubectl -n ([a-z0-9-]+) port-forward --address 127\.0\.0\.1 svc/([a-z0-9-]+) (\d+):(\d+)"
)


def test_kind_up_applies_the_observability_stack_and_docs_forward_it(
    all_rendered: list[dict[str, Any]],
) -> None:
    script = _kind_up()
    apply = f"k apply -k {kube.root_name(kube.OBSERVABILITY_ROOT)}\n"
    assert apply in script, "kind-up.sh must apply the observability kustomization"
    assert script.index(apply) < script.index("skaffold run"), "the collector before the functions"
    assert "wait_deployments observability" in script
    services = _services(all_rendered)
    docs = (PROJECT_ROOT / "docs" / "deploy.md").read_text()
    for where, text in (("docs/deploy.md", docs), ("scripts/kind-up.sh", script)):
        commands = _PORT_FORWARD.findall(text)
        forwards = [_LOCAL_FORWARD.search(c) for c in commands]
        assert all(forwards), f"{where}: a port-forward not bound to 127.0.0.1: {commands}"
        named = {m.group(2) for m in forwards if m}
        assert named >= {"grafana", "jaeger", "prometheus"}, f"{where}: {named}"
        for match in forwards:
            assert match
            namespace, name, _, remote = match.groups()
            service = services.get((namespace, name))
            assert service, f"{where}: no Service {namespace}/{name}"
            ports = {p["port"] for p in service["spec"]["ports"]}
            assert int(remote) in ports, f"{where}: {name} has no port {remote}"


def _knative_versions() -> dict[str, str]:
    pattern = r'(KNATIVE_\w+_VERSION)="\$\{\w+:-(knative-v[\d.]+)\}"'
    return dict(re.findall(pattern, _kind_up()))


def _release(version: str) -> tuple[int, int]:
    """knative-v1.<line>.<patch> -> (line, patch)."""
    match = re.fullmatch(r"knative-v1\.(\d+)\.(\d+)", version)
    assert match, version
    return int(match.group(1)), int(match.group(2))


def test_kind_up_installs_pinned_consistent_knative_releases() -> None:
    script = _kind_up()
    versions = _knative_versions()
    assert set(versions) == {
        "KNATIVE_SERVING_VERSION",
        "KNATIVE_KOURIER_VERSION",
        "KNATIVE_EVENTING_VERSION",
        "KNATIVE_KAFKA_VERSION",
    }
    lines = {_release(v)[0] for v in versions.values()}
    assert len(lines) == 1, f"one release line for every component: {versions}"
    for repo in (
        "knative/serving",
        "knative-extensions/net-kourier",
        "knative/eventing",
        "knative-extensions/eventing-kafka-broker",
    ):
        assert f"https://github.com/{repo}/releases/download/${{" in script
    for artifact in (
        "serving-crds.yaml",
        "serving-core.yaml",
        "kourier.yaml",
        "eventing-crds.yaml",
        "eventing-core.yaml",
        "eventing-kafka-controller.yaml",
        "eventing-kafka-source.yaml",
        "eventing-kafka-sink.yaml",
    ):
        assert f'/{artifact}"' in script, artifact
    assert "skaffold run -p local-kind --default-repo=kind.local" in script


def _go_requirements() -> dict[str, str]:
    go_mod = (PROJECT_ROOT / "tests" / "knative-check" / "go.mod").read_text()
    return dict(re.findall(r"^\s+(\S+) (v\S+)(?: // indirect)?$", go_mod, re.M))


def test_the_go_check_is_pinned_to_the_release_line_the_cluster_installs() -> None:
    """The knative.dev modules v0.<N>.<P> are the releases knative-v1.<N-27>.<P>."""
    versions, required = _knative_versions(), _go_requirements()
    for component, module in (
        ("SERVING", "knative.dev/serving"),
        ("EVENTING", "knative.dev/eventing"),
    ):
        line, patch = _release(versions[f"KNATIVE_{component}_VERSION"])
        match = re.fullmatch(r"v0\.(\d+)\.(\d+)", required[module])
        assert match, required[module]
        assert int(match.group(1)) == line + 27, f"{module} {required[module]}: not 1.{line}"
        assert int(match.group(2)) <= patch, module
    # The check runs the very release the cluster installs: serving and eventing v0.50.0 are
    # knative-v1.23.0 (the module proxy serves no later v0.50 patch, and no 1.23 patch is tagged).
    assert required["knative.dev/serving"] == "v0.50.0"
    assert required["knative.dev/eventing"] == "v0.50.0"
    assert versions["KNATIVE_SERVING_VERSION"] == "knative-v1.23.0"
    assert versions["KNATIVE_EVENTING_VERSION"] == "knative-v1.23.0"
    # Every part of the cluster at one release (Kourier and the Kafka source/sink too).
    assert len(set(versions.values())) == 1, versions
    assert required["sigs.k8s.io/kind"] == "v0.31.0"
    assert "built for\n# kind v0.31.0" in (PROJECT_ROOT / "kind-config.yaml").read_text()


def _knative_config(namespace: str, name: str) -> dict[str, str]:
    """The data of a ConfigMap of k8s/knative/ (what kind-up.sh merges into the release's)."""
    (doc,) = [
        m.doc
        for path in sorted(kube.KNATIVE_CONFIG.glob("*.yaml"))
        for m in kube.load_file(path)
        if (m.doc["metadata"]["namespace"], m.name) == (namespace, name)
    ]
    return dict(doc["data"])


def _kafka_sources(rendered: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return kube.of_kind(rendered, "sources.knative.dev", "KafkaSource")


def test_knative_features_the_services_use_are_enabled(rendered: list[dict[str, Any]]) -> None:
    """A Service field behind a Knative feature flag is refused unless k8s/knative enables it."""
    schema_file = kube.SCHEMAS_DIR / "serving.knative.dev" / "service_v1.json"
    schema = json.loads(schema_file.read_text())
    features = _knative_config("knative-serving", "config-features")
    enabled = {key for key, value in features.items() if value == "enabled"}
    for ksvc in _ksvcs(rendered).values():
        for flag in _feature_flags(schema, ksvc):
            assert flag in enabled, f"{_where(ksvc)} uses {flag}: enable it in k8s/knative"
    # The KafkaSources' per-attempt timeouts need eventing's delivery-timeout.
    eventing = _knative_config("knative-eventing", "config-features")
    if any("timeout" in s["spec"]["delivery"] for s in _kafka_sources(rendered)):
        assert eventing.get("delivery-timeout") == "enabled"


def test_kind_up_merges_every_knative_config_file_after_its_release() -> None:
    """k8s/knative/<component>-config-*.yaml: a ConfigMap of knative-<component>, merged after
    that component is installed (the same files tests/knative-check reads)."""
    script = _kind_up()
    files = sorted(kube.KNATIVE_CONFIG.glob("*"))
    assert files
    for path in files:
        (manifest,) = kube.load_file(path)
        component = path.name.split("-", 1)[0]
        assert path.name.startswith(f"{component}-config-"), path.name
        assert manifest.kind == "ConfigMap", manifest.where
        assert manifest.doc["metadata"]["namespace"] == f"knative-{component}", manifest.where
    merge = 'k patch -f "$file" --type merge --patch-file "$file"'
    assert merge in script
    for component, release in (("serving", "serving-core.yaml"), ("eventing", "eventing-core")):
        call = f"configure k8s/knative/{component}-*.yaml\n"
        assert call in script, call
        assert script.index(f"/{release}") < script.index(call), f"{call} before {release}"


def test_kind_up_waits_for_the_knative_resources_to_be_ready() -> None:
    """skaffold's status check sees Deployments, StatefulSets and Pods only: kind-up.sh waits."""
    script = _kind_up()
    assert "for resource in ksvc route kafkasink kafkasource; do" in script
    assert 'k wait "$resource" --all --namespace minimart --for=condition=Ready' in script
    body = script[script.index("\ncase ") :]
    for step in ("all)", "deploy)"):
        start = body.index(step)
        branch = body[start : body.index(";;", start)]
        assert branch.index("deploy_minimart") < branch.index("wait_minimart"), step
    assert body.rstrip().endswith("print_access")
    # The stores are applied before skaffold (whose k8s/ needs their namespace and Secret), in
    # both branches; the Job is named after its spec, so nothing is deleted first, but for a
    # Kafka password made anew (a rotation: the Job must set it, tests/deploy/test_kind_up_script).
    for step in ("all)", "deploy)"):
        start = body.index(step)
        branch = body[start : body.index(";;", start)]
        assert branch.index("install_stores") < branch.index("deploy_minimart"), step
    assert "k apply -k k8s/infra\n" in script
    rotation = script[script.index("create_kafka_secrets() {") :]
    rotation = rotation[: rotation.index("\n}\n")]
    assert script.count("delete job") == rotation.count("delete job") == 1
    assert "if (( made && kept )); then" in rotation
    makefile = (PROJECT_ROOT / "mk" / "deploy.mk").read_text()
    assert "bash scripts/kind-up.sh deploy" in makefile


def test_the_dead_letter_sink_does_not_own_its_topic(rendered: list[dict[str, Any]]) -> None:
    """With numPartitions and replicationFactor the sink reconciler owns (and deletes) the topic."""
    topics = _topics_configmap(rendered)
    for sink in kube.of_kind(rendered, "eventing.knative.dev", "KafkaSink"):
        spec = sink["spec"]
        assert "numPartitions" not in spec and "replicationFactor" not in spec, _where(sink)
        assert spec["topic"] in topics, f"{_where(sink)}: the Job create-topics must make it"


def test_the_kind_node_image_is_pinned_to_what_the_knative_line_supports() -> None:
    """A Kubernetes minor the knative-v1.23 line is tested on, pinned by digest."""
    (cluster,) = (m.doc for m in kube.load_file(PROJECT_ROOT / "kind-config.yaml"))
    images = {node.get("image") for node in cluster["nodes"]}
    assert len(images) == 1, images
    (image,) = images
    match = re.fullmatch(r"kindest/node:v(1\.\d+)\.\d+@sha256:[0-9a-f]{64}", str(image))
    assert match, image
    assert match.group(1) in {"1.34", "1.35"}, "serving's e2e matrix at knative-v1.23.0"
    assert match.group(1) == kube.KUBERNETES_VERSION, "built-in kinds validate for that version"


# skaffold.yaml's apiVersion -> the first skaffold release that reads it (`const Version` in
# pkg/skaffold/schema/latest/config.go at v2.13.0, v2.14.0, v2.15.0, v2.18.0 and v2.19.0).
SKAFFOLD_READ_FROM = {
    "skaffold/v4beta11": "2.13",
    "skaffold/v4beta12": "2.14",
    "skaffold/v4beta13": "2.15",
    "skaffold/v4beta14": "2.19",
}


def test_the_skaffold_version_asked_for_reads_skaffold_yaml() -> None:
    (skaffold,) = (m.doc for m in kube.load_file(PROJECT_ROOT / "skaffold.yaml"))
    minimum = SKAFFOLD_READ_FROM[skaffold["apiVersion"]]
    assert f'SKAFFOLD_MINIMUM="{minimum}"' in _kind_up()
    docs = (PROJECT_ROOT / "docs" / "deploy.md").read_text()
    asked = re.findall(r"`skaffold` ≥ ([\d.]+)", docs)
    assert asked and set(asked) == {minimum}, asked


def _feature_flags(schema: Mapping[str, Any], value: Any) -> Iterator[str]:
    match = re.search(r"behind a feature flag - ([\w.-]+)", schema.get("description", ""))
    if match:
        yield match.group(1)
    if isinstance(value, dict):
        for key, item in value.items():
            sub = schema.get("properties", {}).get(key)
            if sub is not None:
                yield from _feature_flags(sub, item)
    elif isinstance(value, list) and "items" in schema:
        for item in value:
            yield from _feature_flags(schema["items"], item)


def test_make_targets_and_docs() -> None:
    makefile = (PROJECT_ROOT / "mk" / "deploy.mk").read_text()
    for target in ("kind-up", "kind-down", "deploy", "validate-manifests"):
        assert re.search(rf"^{target}:", makefile, re.M), target
    assert "bash scripts/kind-up.sh deploy" in makefile
    docs = (PROJECT_ROOT / "docs" / "deploy.md").read_text()
    for needle in ("make kind-up", "make kind-down", "http://127.0.0.1:8080/orders", "k6"):
        assert needle in docs, needle
    for doc in yaml.safe_load_all((PROJECT_ROOT / "kind-config.yaml").read_text()):
        assert doc["kind"] == "Cluster"
