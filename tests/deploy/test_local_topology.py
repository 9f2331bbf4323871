"""The local runner is driven by the same manifests a cluster deploy applies.

The YAML of eventing/ and k8s/ is parsed here on its own, without minimart.manifests,
and compared with what the local runner reads (load_topology) and plans (plan_stack).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from minimart.local.stack import plan_stack
from minimart.manifests import load_topology
from minimart.settings import PROJECT_ROOT, Settings
from tests.deploy import kube

_DURATION = re.compile(r"^PT(?:(\d+(?:\.\d+)?)M)?(?:(\d+(?:\.\d+)?)S)?$")


def _seconds(value: str) -> float:
    match = _DURATION.match(value)
    assert match and any(match.groups()), f"not a PT..M..S duration: {value!r}"
    minutes, seconds = (float(g) if g else 0.0 for g in match.groups())
    return minutes * 60 + seconds


def _declared(rendered: list[dict[str, Any]]) -> dict[str, Any]:
    sinks = {
        d["metadata"]["name"]: d["spec"]["topic"] for d in rendered if d["kind"] == "KafkaSink"
    }
    (topics,) = (
        d
        for d in rendered
        if d["kind"] == "ConfigMap" and d["metadata"]["name"] == "minimart-topics"
    )
    sources = {}
    for doc in kube.of_kind(rendered, "sources.knative.dev", "KafkaSource"):
        spec, delivery = doc["spec"], doc["spec"]["delivery"]
        sources[doc["metadata"]["name"]] = {
            "consumer_group": spec["consumerGroup"],
            "topics": tuple(spec["topics"]),
            "sink_service": spec["sink"]["ref"]["name"],
            "initial_offset": spec["initialOffset"],
            "ordering": spec["ordering"],
            "retry": delivery["retry"],
            "backoff_policy": delivery["backoffPolicy"],
            "backoff_delay_s": _seconds(delivery["backoffDelay"]),
            "timeout_s": _seconds(delivery["timeout"]),
            "dead_letter_topic": sinks[delivery["deadLetterSink"]["ref"]["name"]],
        }
    services = {
        d["metadata"]["name"]: (
            d["metadata"]["annotations"]["minimart.dev/function"],
            "networking.knative.dev/visibility" not in d["metadata"].get("labels", {}),
        )
        for d in kube.of_kind(rendered, "serving.knative.dev", "Service")
    }
    return {
        "topics": {t: int(n) for t, n in topics["data"].items()},
        "sinks": sinks,
        "sources": sources,
        "services": services,
    }


def test_local_topology_equals_the_manifests(rendered: list[dict[str, Any]]) -> None:
    declared = _declared(rendered)
    topology = load_topology(PROJECT_ROOT)
    assert dict(topology.topics) == declared["topics"]
    assert dict(topology.dead_letter_sinks) == declared["sinks"]
    local_sources = {
        s.name: {
            "consumer_group": s.consumer_group,
            "topics": s.topics,
            "sink_service": s.sink_service,
            "initial_offset": s.initial_offset,
            "ordering": s.ordering,
            "retry": s.delivery.retry,
            "backoff_policy": s.delivery.backoff_policy,
            "backoff_delay_s": s.delivery.backoff_delay_s,
            "timeout_s": s.delivery.timeout_s,
            "dead_letter_topic": s.delivery.dead_letter_topic,
        }
        for s in topology.sources
    }
    assert len(local_sources) == len(topology.sources), "two KafkaSources share a name"
    assert local_sources == declared["sources"]
    local_services = {n: (s.function, s.public) for n, s in topology.services.items()}
    assert local_services == declared["services"]


def test_local_stack_plan_follows_the_manifests(
    rendered: list[dict[str, Any]], tmp_path: Path
) -> None:
    topology = load_topology(PROJECT_ROOT)
    plan = plan_stack(Settings.from_env({"MINIMART_STATE_DIR": str(tmp_path)}), topology)
    functions = {fn.service: fn for fn in plan.functions}
    assert set(functions) == set(_declared(rendered)["services"])
    assert len({fn.port for fn in plan.functions}) == len(plan.functions), "ports collide"
    by_source: dict[str, list[Any]] = {}
    for dispatcher in plan.dispatchers:
        by_source.setdefault(dispatcher.source.name, []).append(dispatcher)
    assert set(by_source) == {s.name for s in topology.sources}
    for source in topology.sources:
        (dispatcher,) = by_source[source.name]  # exactly one dispatcher per KafkaSource
        assert dispatcher.source == source
        port = functions[source.sink_service].port
        assert re.match(rf"^http://[^/:]+:{port}(/.*)?$", dispatcher.sink_url), (
            source.name,
            dispatcher.sink_url,
        )
