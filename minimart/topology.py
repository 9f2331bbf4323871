"""The saga's event topology as a Graphviz picture, drawn from the manifests.

Functions (Knative Services of ``k8s/``, with the topics their ``minimart.dev/produces``
annotation names), topics (``eventing/topics.yaml``, with their partitions), KafkaSources
(topics -> function, with their delivery) and the dead-letter path (every source's
``deadLetterSink`` -> the KafkaSink -> its topic). ``python -m minimart.topology`` (``make
topology``) writes ``docs/topology.dot`` and renders ``docs/topology.png`` with Graphviz's
``dot``; tests/deploy/test_topology_picture.py fails when the committed DOT is stale.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

from minimart.manifests import Topology, load_topology
from minimart.settings import PROJECT_ROOT

DOT_FILE = PROJECT_ROOT / "docs" / "topology.dot"
PNG_FILE = PROJECT_ROOT / "docs" / "topology.png"
CLIENT = "client"


def _id(kind: str, name: str) -> str:
    return f'"{kind}:{name}"'


def _delivery(topology: Topology, source_name: str) -> str:
    delivery = topology.source(source_name).delivery
    timeout = f", timeout {delivery.timeout_s:g}s" if delivery.timeout_s else ""
    return (
        f"retry {delivery.retry}, {delivery.backoff_policy} {delivery.backoff_delay_s:g}s{timeout}"
    )


def to_dot(topology: Topology) -> str:
    """The graph in the DOT language; the same manifests give the same text."""
    lines = [
        "// The saga's event topology, drawn from eventing/ and k8s/ by minimart/topology.py.",
        "// Regenerate with `make topology`; tests/deploy/test_topology_picture.py checks it.",
        "digraph minimart {",
        "  rankdir=TB;",
        '  graph [fontname="Helvetica", fontsize=11, nodesep=0.3, ranksep=0.5];',
        '  node [fontname="Helvetica", fontsize=10];',
        '  edge [fontname="Helvetica", fontsize=8, color="#555555"];',
        f'  {_id("ext", CLIENT)} [label="client", shape=plaintext];',
    ]
    dead_letter_topics = set(topology.dead_letter_sinks.values())
    for name, partitions in sorted(topology.topics.items()):
        color = "#f8d7da" if name in dead_letter_topics else "#fff3cd"
        plural = "s" if partitions != 1 else ""
        lines.append(
            f'  {_id("topic", name)} [label="{name}\\n{partitions} partition{plural}",'
            f' shape=cylinder, style=filled, fillcolor="{color}"];'
        )
    for service in sorted(topology.services.values(), key=lambda s: s.name):
        lines.append(
            f'  {_id("fn", service.name)} [label="{service.name}", shape=box,'
            ' style="rounded,filled", fillcolor="#d1e7ff"];'
        )
    for sink, topic in sorted(topology.dead_letter_sinks.items()):
        lines.append(
            f'  {_id("sink", sink)} [label="{sink}\\n(KafkaSink)", shape=box,'
            ' style="filled,dashed", fillcolor="#f8d7da"];'
        )
        lines.append(f'  {_id("sink", sink)} -> {_id("topic", topic)} [color="#b02a37"];')
    for source in sorted(topology.sources, key=lambda s: s.name):
        lines.append(
            f'  {_id("source", source.name)} [label="{source.name}\\n'
            f'{_delivery(topology, source.name)}", shape=component, style=filled,'
            ' fillcolor="#e2e3e5"];'
        )
        for topic in sorted(source.topics):
            lines.append(f"  {_id('topic', topic)} -> {_id('source', source.name)};")
        lines.append(
            f"  {_id('source', source.name)} -> {_id('fn', source.sink_service)}"
            ' [label="CloudEvent", penwidth=1.5];'
        )
        dead_letter = source.delivery.dead_letter_topic
        for sink, topic in sorted(topology.dead_letter_sinks.items()):
            if topic == dead_letter:
                lines.append(
                    f"  {_id('source', source.name)} -> {_id('sink', sink)}"
                    ' [style=dashed, color="#b02a37", label="dead letter"];'
                )
    for service in sorted(topology.services.values(), key=lambda s: s.name):
        if service.public:
            lines.append(f'  {_id("ext", CLIENT)} -> {_id("fn", service.name)} [label="HTTP"];')
        for topic in sorted(service.produces):
            lines.append(f"  {_id('fn', service.name)} -> {_id('topic', topic)};")
    lines.append("}")
    return "\n".join(lines) + "\n"


def render(dot_source: str, png: Path) -> None:
    """Render with Graphviz's ``dot`` (Debian's ``graphviz``, installed by scripts/install.sh)."""
    dot = shutil.which("dot")
    if dot is None:
        raise SystemExit("Graphviz's `dot` is missing: run `make install` (Debian's graphviz)")
    subprocess.run([dot, "-Tpng", "-Gdpi=110", "-o", str(png)], input=dot_source.encode(),
                   check=True)  # fmt: skip


def main() -> int:
    source = to_dot(load_topology(PROJECT_ROOT))
    DOT_FILE.write_text(source)
    render(source, PNG_FILE)
    print(f"wrote {DOT_FILE.relative_to(PROJECT_ROOT)} and {PNG_FILE.relative_to(PROJECT_ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
