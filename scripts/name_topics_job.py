"""Name the Job that creates the topics after what it does: ``create-topics-<hash>``.

A Job runs once; applying a changed pod template to an existing Job is refused (immutable). So
k8s/jobs/create-topics.yaml carries a name derived from its own spec, from the topics it
creates (ConfigMap minimart-topics, eventing/topics.yaml) and from the Kafka ACLs it sets
(ConfigMap kafka-access, k8s/jobs/kafka-access.yaml): an unchanged Job keeps its name and
is left alone by every `skaffold run`/`skaffold dev` iteration; a change to either makes a new
name, so the next deploy creates (and runs) a new Job. The finished ones go after their TTL.

    python scripts/name_topics_job.py           rewrite the name in k8s/jobs/create-topics.yaml
    python scripts/name_topics_job.py --check   exit 1 if the name is stale (make topics-job)
"""

from __future__ import annotations

import argparse
import hashlib
import json
import re
import sys
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parent.parent
JOB = ROOT / "k8s" / "jobs" / "create-topics.yaml"
TOPICS = ROOT / "eventing" / "topics.yaml"
ACCESS = ROOT / "k8s" / "jobs" / "kafka-access.yaml"
PREFIX = "create-topics-"
NAME_LINE = re.compile(r"^(  name: )create-topics(-[0-9a-f]+)?$", re.M)


def configmap_data(text: str, name: str) -> dict[str, Any]:
    """The data of ConfigMap ``name`` in a YAML stream."""
    for doc in yaml.safe_load_all(text):
        if doc and doc.get("kind") == "ConfigMap" and doc["metadata"]["name"] == name:
            return dict(doc.get("data") or {})
    raise ValueError(f"no ConfigMap {name}")


def topics_data(text: str) -> dict[str, Any]:
    """The data of ConfigMap minimart-topics in a YAML stream."""
    return configmap_data(text, "minimart-topics")


def spec_hash(job: dict[str, Any], topics: dict[str, Any], access: dict[str, Any]) -> str:
    """10 hex digits of SHA-256 over the Job (its name left out), the topics and the ACLs."""
    unnamed = json.loads(json.dumps(job))
    unnamed.get("metadata", {}).pop("name", None)
    text = json.dumps(
        {"job": unnamed, "topics": topics, "access": access},
        sort_keys=True,
        separators=(",", ":"),
    )
    return hashlib.sha256(text.encode()).hexdigest()[:10]


def expected_name(job_text: str, topics_text: str, access_text: str) -> str:
    (job,) = [d for d in yaml.safe_load_all(job_text) if d]
    access = configmap_data(access_text, "kafka-access")
    return PREFIX + spec_hash(job, topics_data(topics_text), access)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="only check the name")
    args = parser.parse_args()
    job_text = JOB.read_text()
    name = expected_name(job_text, TOPICS.read_text(), ACCESS.read_text())
    (job,) = [d for d in yaml.safe_load_all(job_text) if d]
    current = job["metadata"]["name"]
    if current == name:
        return 0
    if args.check:
        print(f"{JOB.relative_to(ROOT)}: Job {current} should be {name}: make topics-job")
        return 1
    updated, count = NAME_LINE.subn(rf"\g<1>{name}", job_text, count=1)
    if count != 1:
        print(f"{JOB.relative_to(ROOT)}: no line '  name: create-topics...'", file=sys.stderr)
        return 2
    JOB.write_text(updated)
    print(f"{JOB.relative_to(ROOT)}: Job {name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
