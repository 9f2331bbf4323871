"""Reads the deployment manifests the local runner interprets.

``eventing/`` and ``k8s/`` are the single source of truth: the topics and their partition
counts, the KafkaSources (topics, consumer group, sink, delivery) and the dead-letter sinks
come from there, never from code.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

_ISO_DURATION = re.compile(
    r"^P(?:(?P<days>\d+(?:\.\d+)?)D)?"
    r"(?:T(?:(?P<hours>\d+(?:\.\d+)?)H)?(?:(?P<minutes>\d+(?:\.\d+)?)M)?"
    r"(?:(?P<seconds>\d+(?:\.\d+)?)S)?)?$"
)

# Knative's defaults when a KafkaSource has no `delivery` block at all.
DEFAULT_RETRY = 10
DEFAULT_BACKOFF_POLICY = "exponential"
DEFAULT_BACKOFF_DELAY_S = 0.3
# Knative's KafkaSource sets no delivery timeout by default; a hung sink must not hang forever.
DEFAULT_ATTEMPT_TIMEOUT_S = 30.0
# The Secret of the stores' passwords (scripts/kind-up.sh; locally minimart/local_stores.py).
STORE_SECRET = "minimart-secrets"  # noqa: S105 (a Secret's name, not a password)


class ManifestError(ValueError):
    """A manifest is missing, malformed, or refers to something that is not defined."""


def parse_duration(value: str) -> float:
    """Seconds in an ISO-8601 duration such as ``PT0.3S`` or ``PT1M30S``."""
    match = _ISO_DURATION.match(value)
    if not match or value in ("P", "PT"):
        raise ManifestError(f"not an ISO-8601 duration: {value!r}")
    parts = {k: float(v) for k, v in match.groupdict().items() if v}
    return float(
        parts.get("days", 0.0) * 86400
        + parts.get("hours", 0.0) * 3600
        + parts.get("minutes", 0.0) * 60
        + parts.get("seconds", 0.0)
    )


@dataclass(frozen=True)
class Delivery:
    """A KafkaSource's ``spec.delivery``: how failed deliveries are retried and dead-lettered."""

    retry: int = DEFAULT_RETRY
    backoff_policy: str = DEFAULT_BACKOFF_POLICY
    backoff_delay_s: float = DEFAULT_BACKOFF_DELAY_S
    timeout_s: float | None = None
    dead_letter_topic: str | None = None

    @property
    def attempt_timeout_s(self) -> float:
        """How long one delivery attempt may take: the manifest's ``timeout``, else ours."""
        return self.timeout_s or DEFAULT_ATTEMPT_TIMEOUT_S

    def backoff(self, attempt: int) -> float:
        """Delay before retry number ``attempt`` (1-based), as Knative computes it."""
        if self.backoff_policy == "linear":
            return self.backoff_delay_s * attempt
        return float(self.backoff_delay_s * 2**attempt)


@dataclass(frozen=True)
class KafkaSourceSpec:
    name: str
    consumer_group: str
    topics: tuple[str, ...]
    sink_service: str
    initial_offset: str
    ordering: str
    delivery: Delivery
    # ``spec.sink.audience``: the audience of the tokens the source sends (None: no token).
    sink_audience: str | None = None
    # The Secret of its Kafka principal (``spec.net.sasl.user``; None: it has none).
    kafka_secret: str | None = None


@dataclass(frozen=True)
class FunctionService:
    """A Knative Service of ``k8s/``: the function it runs, whether it is public, and the topics
    it publishes to (its ``minimart.dev/produces`` annotation)."""

    name: str
    function: str
    public: bool
    produces: tuple[str, ...] = ()
    # The Secret its container's MINIMART_KAFKA_USER comes from (None: it has none).
    kafka_secret: str | None = None
    # The keys of the Secret minimart-secrets its containers read (its stores' passwords).
    store_secret_keys: tuple[str, ...] = ()


@dataclass(frozen=True)
class Topology:
    topics: Mapping[str, int]
    sources: tuple[KafkaSourceSpec, ...]
    services: Mapping[str, FunctionService]
    dead_letter_sinks: Mapping[str, str]
    # KafkaSink name -> the Secret of its Kafka principal (``spec.auth.secret.ref``).
    sink_secrets: Mapping[str, str] = field(default_factory=dict)

    def source(self, name: str) -> KafkaSourceSpec:
        for spec in self.sources:
            if spec.name == name:
                return spec
        raise ManifestError(f"no KafkaSource named {name!r}")


def iter_documents(folder: Path) -> Iterator[tuple[Path, dict[str, Any]]]:
    """Every YAML document under ``folder`` (sorted by path), with the file it came from."""
    for path in sorted(folder.rglob("*.yaml")):
        for document in yaml.safe_load_all(path.read_text()):
            if isinstance(document, dict):
                yield path, document


def _delivery(spec: Mapping[str, Any], sinks: Mapping[str, str], where: str) -> Delivery:
    block = spec.get("delivery")
    if block is None:
        return Delivery()
    dead_letter = None
    ref = (block.get("deadLetterSink") or {}).get("ref")
    if ref is not None:
        if ref.get("kind") != "KafkaSink" or ref.get("name") not in sinks:
            raise ManifestError(f"{where}: deadLetterSink names no KafkaSink defined in eventing/")
        dead_letter = sinks[ref["name"]]
    timeout = block.get("timeout")
    # A delivery block replaces Knative's defaults entirely: no `retry` means no retries.
    return Delivery(
        retry=int(block.get("retry", 0)),
        backoff_policy=block.get("backoffPolicy", DEFAULT_BACKOFF_POLICY),
        backoff_delay_s=parse_duration(block["backoffDelay"])
        if "backoffDelay" in block
        else DEFAULT_BACKOFF_DELAY_S,
        timeout_s=parse_duration(timeout) if timeout else None,
        dead_letter_topic=dead_letter,
    )


def _secret_refs(document: Mapping[str, Any]) -> Iterator[tuple[str, Mapping[str, Any]]]:
    """Each variable a Knative Service's containers read from a Secret, with its reference."""
    containers = (((document.get("spec") or {}).get("template") or {}).get("spec") or {}).get(
        "containers"
    ) or []
    for container in containers:
        for item in container.get("env") or []:
            ref = (item.get("valueFrom") or {}).get("secretKeyRef")
            if ref:
                yield str(item.get("name")), ref


def _secret_of_env(document: Mapping[str, Any], variable: str) -> str | None:
    """The Secret a Knative Service's containers read ``variable`` from, if any."""
    return next((str(ref["name"]) for name, ref in _secret_refs(document) if name == variable),
                None)  # fmt: skip


def _sasl_secret(spec: Mapping[str, Any]) -> str | None:
    """The Secret a KafkaSource's ``net.sasl.user`` comes from, when SASL is enabled."""
    sasl = (spec.get("net") or {}).get("sasl") or {}
    if not sasl.get("enable"):
        return None
    return str(sasl["user"]["secretKeyRef"]["name"])


def _function_service(document: Mapping[str, Any]) -> FunctionService:
    metadata = document["metadata"]
    labels = metadata.get("labels") or {}
    annotations = metadata.get("annotations") or {}
    return FunctionService(
        name=metadata["name"],
        function=annotations.get("minimart.dev/function", metadata["name"]),
        public=labels.get("networking.knative.dev/visibility") != "cluster-local",
        produces=tuple(t for t in annotations.get("minimart.dev/produces", "").split(",") if t),
        kafka_secret=_secret_of_env(document, "MINIMART_KAFKA_USER"),
        store_secret_keys=tuple(
            str(ref["key"]) for _, ref in _secret_refs(document) if ref["name"] == STORE_SECRET
        ),
    )


def load_topology(root: Path) -> Topology:
    """The topology declared by ``root/eventing`` and ``root/k8s``."""
    topics: dict[str, int] = {}
    sinks: dict[str, str] = {}
    sink_secrets: dict[str, str] = {}
    raw_sources: list[tuple[Path, dict[str, Any]]] = []
    services: dict[str, FunctionService] = {}
    for folder in (root / "eventing", root / "k8s"):
        if not folder.is_dir():
            continue
        for path, document in iter_documents(folder):
            kind = document.get("kind")
            name = str((document.get("metadata") or {}).get("name"))
            if kind == "ConfigMap" and name == "minimart-topics":
                topics.update({t: int(n) for t, n in (document.get("data") or {}).items()})
            elif kind == "KafkaSink":
                sinks[name] = document["spec"]["topic"]
                auth = ((document["spec"].get("auth") or {}).get("secret") or {}).get("ref")
                if auth:
                    sink_secrets[name] = str(auth["name"])
            elif kind == "KafkaSource":
                raw_sources.append((path, document))
            elif kind == "Service" and document.get("apiVersion", "").startswith("serving.knative"):
                services[name] = _function_service(document)
    if not topics:
        raise ManifestError(f"{root}/eventing: no ConfigMap minimart-topics with topic partitions")
    sources = []
    for path, document in raw_sources:
        spec = document["spec"]
        where = f"{path.name}: {document['metadata']['name']}"
        sink = spec["sink"]["ref"]
        unknown = [t for t in spec["topics"] if t not in topics]
        if unknown:
            raise ManifestError(f"{where}: topics {unknown} are not declared in minimart-topics")
        sources.append(
            KafkaSourceSpec(
                name=document["metadata"]["name"],
                consumer_group=spec["consumerGroup"],
                topics=tuple(spec["topics"]),
                sink_service=sink["name"],
                initial_offset=spec.get("initialOffset", "latest"),
                ordering=spec.get("ordering", "ordered"),
                delivery=_delivery(spec, sinks, where),
                sink_audience=spec["sink"].get("audience"),
                kafka_secret=_sasl_secret(spec),
            )
        )
    return Topology(
        topics=topics,
        sources=tuple(sources),
        services=services,
        dead_letter_sinks=sinks,
        sink_secrets=sink_secrets,
    )
