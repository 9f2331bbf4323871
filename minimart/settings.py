"""The one place that reads the environment.

Every process builds one ``Settings`` with ``Settings.from_env()``; nothing else reads
``os.environ``. Each key is declared once, on its field: the environment variable, how its
text is parsed, the default. ``from_env`` and ``to_env`` are one loop each over those
declarations, so a child process started with ``to_env()`` gets exactly these settings.
Defaults describe the embedded local stack (everything on 127.0.0.1); the addresses of the
stores and of Kafka default to ``host`` and the ports when not given.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from minimart.limits import MAX_LINE_QUANTITY, MAX_ORDER_LINES

PROJECT_ROOT = Path(__file__).resolve().parent.parent


class SettingsError(ValueError):
    """A configuration value is missing or malformed; the message names the key."""


Parser = Callable[[str, str], Any]  # (environment variable, its text) -> the value


def _text(key: str, raw: str) -> str:
    return raw


def _path(key: str, raw: str) -> Path:
    return Path(raw)


def _int(key: str, raw: str) -> int:
    try:
        return int(raw)
    except ValueError as exc:
        raise SettingsError(f"{key} must be an integer, got {raw!r}") from exc


def _float(key: str, raw: str) -> float:
    try:
        return float(raw)
    except ValueError as exc:
        raise SettingsError(f"{key} must be a number, got {raw!r}") from exc


def _count_upto(ceiling: int) -> Parser:
    """An integer from 1 to ``ceiling`` (a bound the code relies on, see minimart.limits)."""

    def parse(key: str, raw: str) -> int:
        value = _int(key, raw)
        if not 1 <= value <= ceiling:
            raise SettingsError(f"{key} must be from 1 to {ceiling}, got {value}")
        return value

    return parse


KAFKA_CLIENTS = ("kafka-python", "librdkafka")


def _kafka_client(key: str, raw: str) -> str:
    if raw not in KAFKA_CLIENTS:
        raise SettingsError(f"{key} must be one of {', '.join(KAFKA_CLIENTS)}, got {raw!r}")
    return raw


def _rate(key: str, raw: str) -> float:
    value = _float(key, raw)
    if not 0.0 <= value <= 1.0:
        raise SettingsError(f"{key} must be between 0 and 1, got {value}")
    return value


@dataclass(frozen=True)
class Key:
    """Where a setting comes from: its variable (then ``fallbacks``, in order) and parser."""

    env: str
    parse: Parser = _text
    fallbacks: tuple[str, ...] = ()


def setting(
    env: str,
    default: Any,
    parse: Parser = _text,
    fallbacks: tuple[str, ...] = (),
    secret: bool = False,
) -> Any:
    """A field of ``Settings`` read from ``env`` (unset or empty: ``default``); a ``secret``
    one is left out of the settings' repr (and so out of logs and tracebacks)."""
    return dataclasses.field(
        default=default, repr=not secret, metadata={"key": Key(env, parse, fallbacks)}
    )


@dataclass(frozen=True)
class Settings:
    """Configuration of one minimart process (a function, a dispatcher or the local runner)."""

    state_dir: Path = setting("MINIMART_STATE_DIR", PROJECT_ROOT / ".minimart", _path)
    host: str = setting("MINIMART_HOST", "127.0.0.1")
    postgres_port: int = setting("MINIMART_POSTGRES_PORT", 15432, _int)
    redis_port: int = setting("MINIMART_REDIS_PORT", 16379, _int)
    mongo_port: int = setting("MINIMART_MONGO_PORT", 17017, _int)
    kafka_port: int = setting("MINIMART_KAFKA_PORT", 19092, _int)
    kafka_controller_port: int = setting("MINIMART_KAFKA_CONTROLLER_PORT", 19093, _int)
    prometheus_port: int = setting("MINIMART_PROMETHEUS_PORT", 19090, _int)
    ingress_port: int = setting("MINIMART_INGRESS_PORT", 8080, _int)
    function_port_base: int = setting("MINIMART_FUNCTION_PORT_BASE", 18081, _int)
    # Empty: derived from host and the ports (``__post_init__``).
    orders_dsn: str = setting("MINIMART_ORDERS_DSN", "")
    inventory_dsn: str = setting("MINIMART_INVENTORY_DSN", "")
    payments_dsn: str = setting("MINIMART_PAYMENTS_DSN", "")
    mongo_url: str = setting("MINIMART_MONGO_URL", "")
    redis_url: str = setting("MINIMART_REDIS_URL", "")
    kafka_bootstrap: str = setting("MINIMART_KAFKA_BOOTSTRAP", "")
    # The functions' Kafka client: kafka-python (the design's) or, chosen, librdkafka
    # (minimart/adapters/rdkafka_publisher.py: the same guarantees, less CPU per send).
    kafka_client: str = setting("MINIMART_KAFKA_CLIENT", "kafka-python", _kafka_client)
    payment_decline_rate: float = setting("MINIMART_PAYMENT_DECLINE_RATE", 0.0, _rate)
    shipping_failure_rate: float = setting("MINIMART_SHIPPING_FAILURE_RATE", 0.0, _rate)
    default_credit_limit_cents: int = setting("MINIMART_DEFAULT_CREDIT_LIMIT_CENTS", 100_000, _int)
    max_items_per_order: int = setting(
        "MINIMART_MAX_ITEMS_PER_ORDER", 50, _count_upto(MAX_ORDER_LINES)
    )
    max_quantity_per_line: int = setting(
        "MINIMART_MAX_QUANTITY_PER_LINE", 1_000, _count_upto(MAX_LINE_QUANTITY)
    )
    # Body limits (minimart.bounds; a 413 above them, before the body is read). The largest
    # order the API takes at the default 50 lines (64-character SKUs, every address field
    # full of escaped non-ASCII) is ~10 KiB of JSON: 64 KiB leaves 6x room (raise it with
    # max_items_per_order). The largest event, a structured payment.captured at the ceiling
    # of MAX_ORDER_LINES lines, is ~140 KiB: 256 KiB fits it, is far below Kafka's default
    # 1 MiB record and bounds a function's memory per request (x 8 gunicorn threads).
    max_request_bytes: int = setting("MINIMART_MAX_REQUEST_BYTES", 64 * 1024, _count_upto(2**30))
    max_event_bytes: int = setting("MINIMART_MAX_EVENT_BYTES", 256 * 1024, _count_upto(2**30))
    otlp_endpoint: str = setting("OTEL_EXPORTER_OTLP_ENDPOINT", "")
    trace_file: str = setting("MINIMART_TRACE_FILE", "")
    # Share of orders traced (decided once, where the order enters; every hop follows it).
    trace_sample_ratio: float = setting("MINIMART_TRACE_SAMPLE_RATIO", 1.0, _rate)
    # The redrive function's sinks, declared by the manifests (eventing/ and k8s/): which URL
    # a dead letter may go back through and whose /healthz is asked. "service=url,...": the
    # local runner derives it from the plan, k8s/functions/redrive.yaml spells it out.
    redrive_sinks: str = setting("MINIMART_REDRIVE_SINKS", "")
    # Sender identity (minimart/identity.py): the token issuer and where its keys are (a URL,
    # or a file: empty is the local issuer's, in the state dir), the subjects allowed to
    # deliver to this function ("sub,..."; the local runner derives them from the manifests,
    # k8s/functions/ spell them out), and in a cluster the pod's token and CA to fetch the keys.
    oidc_issuer: str = setting("MINIMART_OIDC_ISSUER", "minimart-local-issuer")
    oidc_jwks: str = setting("MINIMART_OIDC_JWKS", "")
    oidc_subjects: str = setting("MINIMART_OIDC_SUBJECTS", "")
    oidc_jwks_bearer_file: str = setting("MINIMART_OIDC_JWKS_BEARER_FILE", "")
    oidc_ca_file: str = setting("MINIMART_OIDC_CA_FILE", "")
    # This process's Kafka principal (SASL, minimart/kafka_access.py): a function's comes from
    # its own Secret (k8s/functions/), a local process's from the runner (the state dir's
    # secrets). Empty user: no SASL, which the broker refuses.
    kafka_user: str = setting("MINIMART_KAFKA_USER", "")
    kafka_password: str = setting("MINIMART_KAFKA_PASSWORD", "", secret=True)
    kafka_sasl_mechanism: str = setting("MINIMART_KAFKA_SASL_MECHANISM", "SCRAM-SHA-512")
    # The local dispatcher writes its source's dead letters as the KafkaSink would, under the
    # sink's principal (in a cluster, the sink's own data plane holds that Secret).
    dead_letter_kafka_user: str = setting("MINIMART_DEAD_LETTER_KAFKA_USER", "")
    dead_letter_kafka_password: str = setting(
        "MINIMART_DEAD_LETTER_KAFKA_PASSWORD", "", secret=True
    )
    # Knative sets K_SERVICE in every function's container.
    service_name: str = setting("MINIMART_SERVICE_NAME", "minimart", fallbacks=("K_SERVICE",))

    def __post_init__(self) -> None:
        pg = f"postgresql://postgres@{self.host}:{self.postgres_port}"
        derived = {
            "orders_dsn": f"{pg}/minimart_orders",
            "inventory_dsn": f"{pg}/minimart_inventory",
            "payments_dsn": f"{pg}/minimart_payments",
            "mongo_url": f"mongodb://{self.host}:{self.mongo_port}/minimart",
            "redis_url": f"redis://{self.host}:{self.redis_port}/0",
            "kafka_bootstrap": f"{self.host}:{self.kafka_port}",
            "oidc_jwks": str(self.identity_dir / "jwks.json"),
        }
        for name, value in derived.items():
            if not getattr(self, name):
                object.__setattr__(self, name, value)

    @property
    def identity_dir(self) -> Path:
        """Where the local issuer keeps its key pair (made by ``up``; never committed)."""
        return self.state_dir / "identity"

    @property
    def redrive_sink_urls(self) -> dict[str, str]:
        """``redrive_sinks`` as service -> URL."""
        urls = {}
        for item in filter(None, (part.strip() for part in self.redrive_sinks.split(","))):
            service, sep, url = item.partition("=")
            if (
                not sep
                or not service.strip()
                or not url.strip().startswith(("http://", "https://"))
            ):
                raise SettingsError(
                    f"MINIMART_REDRIVE_SINKS: expected service=http://host:port, got {item!r}"
                )
            urls[service.strip()] = url.strip()
        return urls

    @staticmethod
    def declarations() -> dict[str, Key]:
        """Each field's declaration, by field name."""
        return {f.name: f.metadata["key"] for f in dataclasses.fields(Settings)}

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        """Settings from ``env`` (default: the process environment); unset or empty keys keep
        the defaults above."""
        env = os.environ if env is None else env
        values: dict[str, Any] = {}
        for name, key in cls.declarations().items():
            raw = next((env[k] for k in (key.env, *key.fallbacks) if env.get(k)), None)
            if raw is not None:
                values[name] = key.parse(key.env, raw)
        return cls(**values)

    def to_env(self) -> dict[str, str]:
        """The environment that reproduces these settings in a child process."""
        return {key.env: str(getattr(self, name)) for name, key in self.declarations().items()}
