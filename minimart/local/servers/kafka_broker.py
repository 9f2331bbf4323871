"""A single-node Apache Kafka broker in KRaft mode (broker and controller in one JVM).

The jars come from Maven Central through ``infra/kafka/pom.xml`` (pinned version) into
``<state_dir>/kafka/jars``; the storage is formatted once with a cluster id kept in
``<state_dir>/kafka/cluster-id``; the topics and their partition counts come from the
manifests (``load_topology``), never from code.
"""

from __future__ import annotations

import base64
import logging
import re
import shutil
import subprocess
import uuid
from collections.abc import Callable, Mapping
from pathlib import Path

# confluent-kafka's package re-exports these without declaring it (its stubs lag its API).
from confluent_kafka.admin import (  # type: ignore[attr-defined]
    AclBinding,
    AclBindingFilter,
    AclOperation,
    AclPermissionType,
    AdminClient,
    ResourcePatternType,
    ResourceType,
    ScramCredentialInfo,
    ScramMechanism,
    UserScramCredentialUpsertion,
)
from kafka import KafkaAdminClient
from kafka.admin import NewPartitions, NewTopic
from kafka.errors import KafkaError, TopicAlreadyExistsError

from minimart import kafka_clients, local_secrets
from minimart.kafka_access import (
    ADMIN,
    ADMIN_MECHANISM,
    GROUP,
    TOPIC,
    Grant,
    KafkaAccess,
    access_of,
)
from minimart.kafka_clients import KafkaCredentials
from minimart.local.servers.base import (
    ManagedServer,
    MissingBinaryError,
    ServerError,
    require_binary,
)
from minimart.manifests import Topology, load_topology
from minimart.settings import PROJECT_ROOT, Settings

log = logging.getLogger(__name__)

POM = PROJECT_ROOT / "infra" / "kafka" / "pom.xml"
HEAP = ("-Xmx512m", "-Xms256m")
_JAVA_PACKAGE = "a Java runtime (Debian package default-jre-headless)"
_MVN_PACKAGE = "the Debian package maven"

_LOG4J = """\
log4j.rootLogger=WARN, stdout
log4j.appender.stdout=org.apache.log4j.ConsoleAppender
log4j.appender.stdout.layout=org.apache.log4j.PatternLayout
log4j.appender.stdout.layout.ConversionPattern=[%d] %p %m (%c)%n
log4j.logger.kafka=WARN
log4j.logger.org.apache.kafka=WARN
log4j.logger.org.apache.zookeeper=WARN
log4j.logger.state.change.logger=WARN
log4j.logger.kafka.server.KafkaRaftServer=INFO
"""

SCRAM_ITERATIONS = 8192
_RESOURCE_TYPES = {TOPIC: ResourceType.TOPIC, GROUP: ResourceType.GROUP}
_TIMEOUT_S = 30.0


def kafka_version() -> str:
    """The broker version pinned in ``infra/kafka/pom.xml``."""
    match = re.search(r"<kafka\.version>([^<]+)</kafka\.version>", POM.read_text())
    if match is None:
        raise ServerError(f"no <kafka.version> in {POM}")
    return match.group(1).strip()


def jars_present(jars: Path) -> bool:
    """Whether ``jars`` holds the pinned broker version (a version bump fetches again)."""
    return (jars / f"kafka_2.13-{kafka_version()}.jar").exists()


def fetch_jars(jars: Path) -> None:
    """Copy the broker's runtime jars from Maven Central (or ~/.m2) into ``jars``."""
    mvn = require_binary("mvn", _MVN_PACKAGE)
    if jars.is_symlink():
        jars.unlink()
    shutil.rmtree(jars, ignore_errors=True)
    jars.mkdir(parents=True)
    result = subprocess.run(
        [
            mvn,
            "-q",
            "-B",
            "-f",
            str(POM),
            "dependency:copy-dependencies",
            f"-DoutputDirectory={jars}",
        ],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        check=False,
    )
    if result.returncode != 0 or not jars_present(jars):
        raise ServerError(f"mvn could not fetch the Kafka jars:\n{result.stdout}\n{result.stderr}")


def new_cluster_id(random_uuid: Callable[[], uuid.UUID] = uuid.uuid4) -> str:
    """A KRaft cluster id: a random UUID in URL-safe base64, never beginning with ``-``
    (``kafka-storage format -t -x...`` would read it as an option; one random id in 64 does),
    as Kafka's own ``Uuid.randomUuid()`` draws again until it does not."""
    while True:
        text = base64.urlsafe_b64encode(random_uuid().bytes).rstrip(b"=").decode()
        if not text.startswith("-"):
            return text


class Kafka(ManagedServer):
    name = "kafka"
    start_timeout = 180.0  # generous: a loaded 2-core machine starts a JVM slowly
    stop_timeout = 30.0

    def __init__(
        self,
        settings: Settings,
        topics: Mapping[str, int] | None = None,
        topology: Topology | None = None,
    ) -> None:
        super().__init__(settings)
        self._topics = topics
        self._topology = topology
        self._secrets = local_secrets.of(settings)

    @property
    def port(self) -> int:
        return self.settings.kafka_port

    @property
    def controller_port(self) -> int:
        return self.settings.kafka_controller_port

    @property
    def bootstrap(self) -> str:
        return f"{self.host}:{self.port}"

    @property
    def jars(self) -> Path:
        return self.data_dir / "jars"

    @property
    def log_dirs(self) -> Path:
        return self.data_dir / "data"

    @property
    def properties(self) -> Path:
        return self.data_dir / "server.properties"

    def topology(self) -> Topology:
        if self._topology is None:
            self._topology = load_topology(PROJECT_ROOT)
        return self._topology

    def topics(self) -> Mapping[str, int]:
        """Topic -> partition count, from the manifests unless given explicitly."""
        if self._topics is None:
            self._topics = dict(self.topology().topics)
        return self._topics

    def access(self) -> KafkaAccess:
        return access_of(self.topology())

    def admin_credentials(self) -> KafkaCredentials:
        """The super user's (made in the state dir the first time)."""
        return local_secrets.admin_credentials(self._secrets)

    def check_installed(self) -> None:
        require_binary("java", _JAVA_PACKAGE)
        if not jars_present(self.jars):
            try:
                require_binary("mvn", _MVN_PACKAGE)
            except MissingBinaryError as exc:
                raise MissingBinaryError(f"no Kafka jars in {self.jars} and {exc}") from exc

    def _java(self, main: str, *args: str) -> list[str]:
        return [
            require_binary("java", _JAVA_PACKAGE),
            *HEAP,
            "-XX:+UseG1GC",
            "-XX:MaxGCPauseMillis=20",
            "-Djava.awt.headless=true",
            "-Djava.net.preferIPv4Stack=true",
            f"-Dlog4j.configuration=file:{self.data_dir / 'log4j.properties'}",
            f"-Dkafka.logs.dir={self.data_dir / 'logs'}",
            "-cp",
            f"{self.jars}/*",
            main,
            *args,
        ]

    def _server_properties(self) -> str:
        admin = self.admin_credentials()
        # The administrator logs in with these, and they are the only PLAIN user there is.
        plain = _jaas(
            "org.apache.kafka.common.security.plain.PlainLoginModule",
            {
                "username": admin.user,
                "password": admin.password,
                f"user_{admin.user}": admin.password,
            },
        )
        values = {
            "process.roles": "broker,controller",
            "node.id": "1",
            "controller.quorum.voters": f"1@{self.host}:{self.controller_port}",
            "listeners": f"SASL_PLAINTEXT://{self.host}:{self.port},"
            f"CONTROLLER://{self.host}:{self.controller_port}",
            "advertised.listeners": f"SASL_PLAINTEXT://{self.host}:{self.port}",
            "controller.listener.names": "CONTROLLER",
            "inter.broker.listener.name": "SASL_PLAINTEXT",
            "listener.security.protocol.map": "CONTROLLER:SASL_PLAINTEXT,"
            "SASL_PLAINTEXT:SASL_PLAINTEXT",
            "sasl.enabled.mechanisms": f"SCRAM-SHA-512,{ADMIN_MECHANISM}",
            "sasl.mechanism.inter.broker.protocol": ADMIN_MECHANISM,
            "sasl.mechanism.controller.protocol": ADMIN_MECHANISM,
            "listener.name.controller.sasl.enabled.mechanisms": ADMIN_MECHANISM,
            "listener.name.controller.plain.sasl.jaas.config": plain,
            "listener.name.sasl_plaintext.plain.sasl.jaas.config": plain,
            "listener.name.sasl_plaintext.scram-sha-512.sasl.jaas.config": (
                "org.apache.kafka.common.security.scram.ScramLoginModule required;"
            ),
            "authorizer.class.name": "org.apache.kafka.metadata.authorizer.StandardAuthorizer",
            "super.users": f"User:{admin.user}",
            "allow.everyone.if.no.acl.found": "false",
            "log.dirs": str(self.log_dirs),
            "num.partitions": "4",
            "default.replication.factor": "1",
            "min.insync.replicas": "1",
            "auto.create.topics.enable": "false",
            "offsets.topic.replication.factor": "1",
            "offsets.topic.num.partitions": "10",
            "transaction.state.log.replication.factor": "1",
            "transaction.state.log.min.isr": "1",
            "transaction.state.log.num.partitions": "10",
            "group.initial.rebalance.delay.ms": "0",
            # A restart after a crash waits for the dead incarnation's session to expire.
            "broker.session.timeout.ms": "3000",
            "broker.heartbeat.interval.ms": "500",
            "num.network.threads": "2",
            "num.io.threads": "4",
            "num.recovery.threads.per.data.dir": "1",
            "log.retention.hours": "168",
            "log.segment.bytes": str(64 * 1024 * 1024),
        }
        body = "\n".join(f"{key}={value}" for key, value in values.items())
        return f"# written by minimart.local.servers at each start\n{body}\n"

    def _cluster_id(self) -> str:
        """The id the storage is formatted with: kept, unless it is one an option parser
        misreads (an id written before ids beginning with ``-`` were refused)."""
        path = self.data_dir / "cluster-id"
        if path.exists() and not path.read_text().startswith("-"):
            return path.read_text().strip()
        cluster_id = new_cluster_id()
        path.write_text(cluster_id + "\n")
        return cluster_id

    def prepare(self) -> None:
        if not jars_present(self.jars):
            fetch_jars(self.jars)
        (self.data_dir / "log4j.properties").write_text(_LOG4J)
        # It holds the administrator's password: this user's only.
        self.properties.touch(mode=0o600)
        self.properties.chmod(0o600)
        self.properties.write_text(self._server_properties())
        if (self.log_dirs / "meta.properties").exists():
            return
        argv = self._java(
            "kafka.tools.StorageTool",
            "format",
            "--ignore-formatted",
            "-t",
            self._cluster_id(),
            "-c",
            str(self.properties),
        )
        self.run_tool(argv, "kafka storage format")

    def command(self) -> list[str]:
        return self._java("kafka.Kafka", str(self.properties))

    def admin(self) -> KafkaAdminClient:
        return kafka_clients.admin(
            self.bootstrap,
            self.admin_credentials(),
            "minimart-servers",
            request_timeout_ms=10_000,
        )

    def is_ready(self) -> bool:
        client = self.admin()
        try:
            client.list_topics()
            return True
        finally:
            client.close()

    def provision(self) -> None:
        """Create every topic of the manifests with its partition count (idempotent); add
        partitions to a topic that has fewer than the manifest asks for."""
        wanted = self.topics()
        client = self.admin()
        try:
            existing = {
                item["topic"]: len(item["partitions"])
                for item in client.describe_topics(list(set(client.list_topics()) & set(wanted)))
            }
            missing = [
                NewTopic(name=topic, num_partitions=count, replication_factor=1)
                for topic, count in wanted.items()
                if topic not in existing
            ]
            for topic in missing:  # one request each: an error names its topic
                try:
                    client.create_topics([topic], timeout_ms=30_000)
                except TopicAlreadyExistsError:
                    pass  # another `up` created it meanwhile
                except KafkaError as exc:
                    raise ServerError(f"cannot create topic {topic.name}: {exc}") from exc
            grow = {
                topic: NewPartitions(total_count=wanted[topic])
                for topic, count in existing.items()
                if count < wanted[topic]
            }
            if grow:
                client.create_partitions(grow, timeout_ms=30_000)
            for topic, count in existing.items():
                if count > wanted[topic]:
                    log.warning(
                        "topic %s has %d partitions, manifests say %d",
                        topic,
                        count,
                        wanted[topic],
                    )
        finally:
            client.close()
        self.provision_access()

    def provision_access(self) -> None:
        """Each principal's SCRAM credential (its password from the state dir's Secrets),
        then the ACLs brought to exactly the manifests' grants (stale ones deleted)."""
        access = self.access()
        client = AdminClient(
            {"bootstrap.servers": self.bootstrap, **self.admin_credentials().librdkafka()}
        )
        upserts = [
            UserScramCredentialUpsertion(
                principal,
                ScramCredentialInfo(ScramMechanism.SCRAM_SHA_512, SCRAM_ITERATIONS),
                local_secrets.kafka_secret(self._secrets, secret)["password"].encode(),
            )
            for principal, secret in access.principals.items()
            if principal != ADMIN
        ]
        for future in client.alter_user_scram_credentials(upserts).values():  # type: ignore[arg-type]
            future.result(timeout=_TIMEOUT_S)
        wanted = {_binding(grant) for grant in access.grants}
        everything = AclBindingFilter(  # None matches any name, principal and host
            ResourceType.ANY, None, ResourcePatternType.ANY, None, None,  # type: ignore[arg-type]
            AclOperation.ANY, AclPermissionType.ANY,
        )  # fmt: skip
        held = set(client.describe_acls(everything).result(timeout=_TIMEOUT_S))
        if wanted - held:
            for future in client.create_acls(sorted(wanted - held, key=str)).values():
                future.result(timeout=_TIMEOUT_S)
        stale = sorted(held - wanted, key=str)
        if stale:
            for future in client.delete_acls([_exactly(b) for b in stale]).values():
                future.result(timeout=_TIMEOUT_S)
            log.info("kafka: deleted %d ACLs the manifests no longer grant", len(stale))


def _jaas(module: str, options: Mapping[str, str]) -> str:
    """A JAAS configuration entry (the values are the state dir's URL-safe passwords: nothing
    to escape)."""
    pairs = " ".join(f'{key}="{value}"' for key, value in options.items())
    return f"{module} required {pairs};"


def _binding(grant: Grant) -> AclBinding:
    return AclBinding(
        _RESOURCE_TYPES[grant.resource],
        grant.name,
        ResourcePatternType.LITERAL,
        f"User:{grant.principal}",
        "*",
        getattr(AclOperation, grant.operation),
        AclPermissionType.ALLOW,
    )


def _exactly(binding: AclBinding) -> AclBindingFilter:
    return AclBindingFilter(
        binding.restype, binding.name, binding.resource_pattern_type, binding.principal,
        binding.host, binding.operation, binding.permission_type,
    )  # fmt: skip
