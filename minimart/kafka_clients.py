"""Kafka clients as minimart's tools build them (the console, the runner's consumers), the
fetch size limits every consumer shares, and the SASL credentials every client presents (the
broker refuses a client without them: minimart/kafka_access.py).

kafka-python 2.3 refuses a response frame larger than ``receive_message_max_bytes`` (1 MB by
default) while letting a fetch ask for up to ``fetch_max_bytes`` (50 MB by default), so a
consumer far behind on many partitions would fail the same fetch forever. A fetch answer is at
most ``fetch_max_bytes`` plus one record batch (``max_partition_fetch_bytes``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer

from minimart.settings import Settings

FETCH_MAX_BYTES = 8 * 1024 * 1024
MAX_PARTITION_FETCH_BYTES = 1024 * 1024
FETCH_LIMITS = {
    "fetch_max_bytes": FETCH_MAX_BYTES,
    "max_partition_fetch_bytes": MAX_PARTITION_FETCH_BYTES,
    "receive_message_max_bytes": FETCH_MAX_BYTES + 2 * MAX_PARTITION_FETCH_BYTES,
}


@dataclass(frozen=True)
class KafkaCredentials:
    """Who a client is to the broker: a SASL user, its password and the mechanism (over
    SASL_PLAINTEXT; the broker listens on nothing else)."""

    user: str
    password: str = ""
    mechanism: str = "SCRAM-SHA-512"

    def __repr__(self) -> str:  # never print a password
        return f"KafkaCredentials(user={self.user!r}, mechanism={self.mechanism!r})"

    def kafka_python(self) -> dict[str, Any]:
        """The configuration kafka-python's clients take."""
        return {
            "security_protocol": "SASL_PLAINTEXT",
            "sasl_mechanism": self.mechanism,
            "sasl_plain_username": self.user,
            "sasl_plain_password": self.password,
        }

    def librdkafka(self) -> dict[str, str]:
        """The configuration librdkafka's (confluent-kafka's) clients take."""
        return {
            "security.protocol": "SASL_PLAINTEXT",
            "sasl.mechanism": self.mechanism,
            "sasl.username": self.user,
            "sasl.password": self.password,
        }


def credentials_of(settings: Settings) -> KafkaCredentials | None:
    """This process's own principal (``MINIMART_KAFKA_USER``...), if it was given one."""
    if not settings.kafka_user:
        return None
    return KafkaCredentials(
        settings.kafka_user, settings.kafka_password, settings.kafka_sasl_mechanism
    )


def dead_letter_credentials_of(settings: Settings) -> KafkaCredentials | None:
    """The dead-letter sink's principal a local dispatcher writes dead letters as."""
    if not settings.dead_letter_kafka_user:
        return None
    return KafkaCredentials(
        settings.dead_letter_kafka_user,
        settings.dead_letter_kafka_password,
        settings.kafka_sasl_mechanism,
    )


def auth(credentials: KafkaCredentials | None) -> dict[str, Any]:
    """kafka-python's SASL configuration for ``credentials`` (None: none, which the broker
    refuses; kept so a test can show it)."""
    return credentials.kafka_python() if credentials is not None else {}


def librdkafka_auth(credentials: KafkaCredentials | None) -> dict[str, str]:
    """librdkafka's SASL configuration for ``credentials`` (None: none)."""
    return credentials.librdkafka() if credentials is not None else {}


def consumer(bootstrap: str, credentials: KafkaCredentials | None, **config: Any) -> KafkaConsumer:
    """A consumer with the fetch limits; ``config`` adds to (or overrides) kafka-python's."""
    return KafkaConsumer(
        bootstrap_servers=bootstrap, **{**FETCH_LIMITS, **auth(credentials), **config}
    )


def producer(
    bootstrap: str, credentials: KafkaCredentials | None, client_id: str, **config: Any
) -> KafkaProducer:
    """A producer that returns from a send only once every replica has it (acks=all)."""
    return KafkaProducer(
        bootstrap_servers=bootstrap,
        client_id=client_id,
        **{"acks": "all", **auth(credentials), **config},
    )


def admin(
    bootstrap: str, credentials: KafkaCredentials | None, client_id: str, **config: Any
) -> KafkaAdminClient:
    return KafkaAdminClient(
        bootstrap_servers=bootstrap, client_id=client_id, **{**auth(credentials), **config}
    )
