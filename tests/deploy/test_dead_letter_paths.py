"""No record can cycle through the dead-letter sinks.

A KafkaSource that gives up on a record writes it to its dead-letter KafkaSink's topic. If a
source read that topic and its own dead letters led back to a topic it reads, a letter its
sink refuses would go round for ever (it once did: redrive-source dead-lettered into the very
topic it reads, ~700 records/s). Read from the rendered manifests alone (not through
minimart.manifests): the graph "source -> the sources that read its dead-letter topic" has
no cycle, and every dead-letter chain ends in a topic that no source reads.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any

from tests.deploy import kube


def _dead_letter_graph(rendered: list[dict[str, Any]]) -> dict[str, set[str]]:
    """Each KafkaSource -> the KafkaSources that read the topic it dead-letters into."""
    sink_topics = {
        d["metadata"]["name"]: d["spec"]["topic"] for d in rendered if d["kind"] == "KafkaSink"
    }
    sources = kube.of_kind(rendered, "sources.knative.dev", "KafkaSource")
    readers: dict[str, set[str]] = {}
    for doc in sources:
        for topic in doc["spec"]["topics"]:
            readers.setdefault(topic, set()).add(doc["metadata"]["name"])
    graph: dict[str, set[str]] = {}
    for doc in sources:
        ref = ((doc["spec"].get("delivery") or {}).get("deadLetterSink") or {}).get("ref") or {}
        topic = sink_topics.get(ref.get("name", ""))
        graph[doc["metadata"]["name"]] = set(readers.get(topic, ())) if topic else set()
    return graph


def _cycle(graph: Mapping[str, set[str]]) -> list[str] | None:
    """A cycle of ``graph`` as the list of its nodes (first == last), or None."""
    state: dict[str, str] = {}  # "open" while on the current path, "done" once explored

    def visit(node: str, path: list[str]) -> list[str] | None:
        state[node] = "open"
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == "open":
                return [*path[path.index(nxt) :], nxt]
            if nxt not in state:
                found = visit(nxt, [*path, nxt])
                if found:
                    return found
        state[node] = "done"
        return None

    for start in sorted(graph):
        if start not in state:
            found = visit(start, [start])
            if found:
                return found
    return None


def test_no_dead_letter_path_leads_back_to_a_source(rendered: list[dict[str, Any]]) -> None:
    graph = _dead_letter_graph(rendered)
    assert graph, "no KafkaSources rendered"
    assert _cycle(graph) is None, f"dead letters cycle: {' -> '.join(_cycle(graph) or [])}"


def test_every_dead_letter_chain_ends_in_a_topic_no_source_reads(
    rendered: list[dict[str, Any]],
) -> None:
    graph = _dead_letter_graph(rendered)
    ends = [name for name, readers in graph.items() if not readers]
    assert ends, "every source's dead letters are read by another source: nowhere to park"
    # The source that reads the saga's dead letters (redrive-source) parks what it gives up on.
    readers_of_letters = {r for readers in graph.values() for r in readers}
    assert readers_of_letters <= set(ends), (
        f"a source reading dead letters has its own read again: {sorted(readers_of_letters)}"
    )


def test_the_check_catches_a_source_that_dead_letters_into_its_own_topic(
    rendered: list[dict[str, Any]],
) -> None:
    """The detector itself: redrive-source pointed back at the topic it reads (the bug)."""
    broken = copy.deepcopy(rendered)
    (redrive,) = (
        d
        for d in kube.of_kind(broken, "sources.knative.dev", "KafkaSource")
        if d["metadata"]["name"] == "redrive-source"
    )
    redrive["spec"]["delivery"]["deadLetterSink"]["ref"]["name"] = "minimart-deadletter"
    assert _cycle(_dead_letter_graph(broken)) == ["redrive-source", "redrive-source"]


def test_the_redrive_function_knows_exactly_the_declared_sinks(
    rendered: list[dict[str, Any]],
) -> None:
    """MINIMART_REDRIVE_SINKS of the redrive Service: the sink of every KafkaSource but its
    own, each at the address Knative gives a cluster-local Service (what a KafkaSource writes
    as knativeerrordest)."""
    sources = kube.of_kind(rendered, "sources.knative.dev", "KafkaSource")
    (redrive,) = (
        d
        for d in kube.of_kind(rendered, "serving.knative.dev", "Service")
        if d["metadata"]["name"] == "redrive"
    )
    namespace = redrive["metadata"]["namespace"]
    (container,) = redrive["spec"]["template"]["spec"]["containers"]
    env = {e["name"]: e.get("value") for e in container.get("env", [])}
    declared = dict(item.split("=", 1) for item in env["MINIMART_REDRIVE_SINKS"].split(","))
    expected = {
        name: f"http://{name}.{namespace}.svc.cluster.local"
        for name in {s["spec"]["sink"]["ref"]["name"] for s in sources} - {"redrive"}
    }
    assert declared == expected
