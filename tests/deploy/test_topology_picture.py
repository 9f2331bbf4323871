"""docs/topology.png is drawn from the manifests: the committed DOT source is what they give
today (regenerate with `make topology`), and it shows every function, topic and source."""

from __future__ import annotations

from minimart.manifests import load_topology
from minimart.settings import PROJECT_ROOT
from minimart.topology import DOT_FILE, PNG_FILE, to_dot


def test_the_committed_picture_is_drawn_from_the_current_manifests() -> None:
    current = to_dot(load_topology(PROJECT_ROOT))

    assert DOT_FILE.read_text() == current, "docs/topology.dot is stale: run `make topology`"
    assert PNG_FILE.stat().st_size > 10_000


def test_the_picture_shows_every_function_topic_source_and_the_dead_letter_path() -> None:
    topology = load_topology(PROJECT_ROOT)
    dot = to_dot(topology)

    for service in topology.services.values():
        assert f'"fn:{service.name}" [' in dot
        for topic in service.produces:
            assert f'"fn:{service.name}" -> "topic:{topic}"' in dot
    for topic in topology.topics:
        assert f'"topic:{topic}" [' in dot
    for source in topology.sources:
        assert f'"source:{source.name}" -> "fn:{source.sink_service}"' in dot
        for topic in source.topics:
            assert f'"topic:{topic}" -> "source:{source.name}"' in dot
        sink = next(
            name
            for name, topic in topology.dead_letter_sinks.items()
            if topic == source.delivery.dead_letter_topic
        )
        assert f'"source:{source.name}" -> "sink:{sink}"' in dot
    for sink, topic in topology.dead_letter_sinks.items():
        assert f'"sink:{sink}" -> "topic:{topic}"' in dot
