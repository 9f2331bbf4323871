"""Who may do what on Kafka, derived from the manifests: the principals and their ACLs.

One principal per component that talks to Kafka, named by the Secret its manifest points at
(``kafka-<principal>``, keys ``user``, ``password``, ``sasl.mechanism``, ``protocol``):

- a function (its Knative Service reads ``MINIMART_KAFKA_USER`` from that Secret) may write,
  and describe, only the topics of its ``minimart.dev/produces`` annotation;
- a KafkaSource (``spec.net.sasl``) may read, and describe, only its topics, and only as its
  ``consumerGroup``, which it may also delete (Knative's controller deletes a deleted
  source's group with the source's credentials: eventing-kafka-broker knative-v1.23.0
  control-plane/pkg/reconciler/consumergroup/consumergroup.go, FinalizeKind);
- a dead-letter KafkaSink (``spec.auth.secret.ref``) may write only its topic;
- the console (``minimart-console``) may read every topic, write the topics a function writes
  (a replay), and see the sources' committed offsets;
- the topics Job (``minimart-topics``) may create, describe and grow the declared topics;
- the administrator (``minimart-admin``) is the broker's super user: the broker itself, and
  whoever provisions the users and these ACLs.

Everything else is refused by the broker (``allow.everyone.if.no.acl.found=false``). The local
runner applies these grants to its broker (minimart/local/servers/kafka_broker.py); the cluster's
Job applies the same, rendered into k8s/jobs/ (tests/deploy check they agree).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass

from minimart.manifests import ManifestError, Topology

SECRET_PREFIX = "kafka-"  # noqa: S105 (a name prefix, not a password)
MECHANISM = "SCRAM-SHA-512"
PROTOCOL = "SASL_PLAINTEXT"
ADMIN = "minimart-admin"
# The administrator's mechanism: PLAIN, checked against the broker's own JAAS entry, so that
# it exists before any SCRAM credential (which only the administrator can make) does.
ADMIN_MECHANISM = "PLAIN"
CONSOLE = "minimart-console"
TOPICS_JOB = "minimart-topics"

TOPIC = "topic"
GROUP = "group"
READ, WRITE, DESCRIBE, CREATE, ALTER = "READ", "WRITE", "DESCRIBE", "CREATE", "ALTER"
DELETE = "DELETE"


def secret_of(principal: str) -> str:
    """The Secret holding ``principal``'s credentials (in the cluster, and locally)."""
    return SECRET_PREFIX + principal


def principal_of(secret: str, where: str) -> str:
    """The principal a manifest's Secret stands for (``kafka-<principal>``)."""
    if not secret.startswith(SECRET_PREFIX) or secret == SECRET_PREFIX:
        raise ManifestError(f"{where}: Kafka Secret {secret!r} is not named {SECRET_PREFIX}<user>")
    return secret.removeprefix(SECRET_PREFIX)


@dataclass(frozen=True, order=True)
class Grant:
    """One ALLOW ACL: ``principal`` may ``operation`` on the ``resource`` (literal) ``name``."""

    principal: str
    resource: str
    name: str
    operation: str


@dataclass(frozen=True)
class KafkaAccess:
    """Every principal (-> its Secret) and every grant; nothing else is allowed."""

    principals: Mapping[str, str]
    grants: tuple[Grant, ...]

    def allows(self, principal: str, operation: str, resource: str, name: str) -> bool:
        """Whether the broker, holding exactly these ACLs, lets ``principal`` do this (the
        administrator may do anything)."""
        return principal == ADMIN or Grant(principal, resource, name, operation) in self.grants


def _topics(principal: str, topics: tuple[str, ...] | list[str], *ops: str) -> Iterator[Grant]:
    for topic in topics:
        for operation in ops:
            yield Grant(principal, TOPIC, topic, operation)


def _principal(secret: str | None, where: str, missing: str, known: dict[str, str]) -> str:
    """The principal of a component's Secret, added to ``known`` (ManifestError: none)."""
    if secret is None:
        raise ManifestError(f"{where}: {missing}")
    principal = principal_of(secret, where)
    known[principal] = secret
    return principal


def access_of(topology: Topology) -> KafkaAccess:
    """The principals and grants the manifests declare (ManifestError: a component that talks
    to Kafka names no Secret)."""
    grants: list[Grant] = []
    principals = {p: secret_of(p) for p in (ADMIN, CONSOLE, TOPICS_JOB)}
    for service in topology.services.values():
        if service.produces:
            missing = f"writes {list(service.produces)} with no Kafka Secret"
            writer = _principal(
                service.kafka_secret, f"Knative Service {service.name}", missing, principals
            )
            grants += _topics(writer, service.produces, WRITE, DESCRIBE)
    for source in topology.sources:
        where = f"KafkaSource {source.name}"
        reader = _principal(source.kafka_secret, where, "no net.sasl Secret", principals)
        grants += _topics(reader, source.topics, READ, DESCRIBE)
        grants += [
            Grant(reader, GROUP, source.consumer_group, op) for op in (READ, DESCRIBE, DELETE)
        ]
        grants.append(Grant(CONSOLE, GROUP, source.consumer_group, DESCRIBE))
    for sink, topic in topology.dead_letter_sinks.items():
        secret = topology.sink_secrets.get(sink)
        writer = _principal(secret, f"KafkaSink {sink}", "no auth Secret", principals)
        grants += _topics(writer, [topic], WRITE, DESCRIBE)
    written = sorted({t for s in topology.services.values() for t in s.produces})
    grants += _topics(CONSOLE, sorted(topology.topics), READ, DESCRIBE)
    grants += _topics(CONSOLE, written, WRITE)
    grants += _topics(TOPICS_JOB, sorted(topology.topics), CREATE, DESCRIBE, ALTER)
    return KafkaAccess(
        principals=dict(sorted(principals.items())), grants=tuple(sorted(set(grants)))
    )
