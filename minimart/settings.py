"""The one place that reads the environment.

Every process builds one ``Settings`` with ``Settings.from_env()``; nothing else reads
``os.environ``. Defaults describe the embedded local stack (everything on 127.0.0.1).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parent.parent


class SettingsError(ValueError):
    """A configuration value is missing or malformed; the message names the key."""


def _int(env: Mapping[str, str], key: str, default: int) -> int:
    raw = env.get(key)
    if raw is None or raw == "":
        return default
    try:
        return int(raw)
    except ValueError as exc:
        raise SettingsError(f"{key} must be an integer, got {raw!r}") from exc


def _float(env: Mapping[str, str], key: str, default: float) -> float:
    raw = env.get(key)
    if raw is None or raw == "":
        return default
    try:
        value = float(raw)
    except ValueError as exc:
        raise SettingsError(f"{key} must be a number, got {raw!r}") from exc
    return value


def _rate(env: Mapping[str, str], key: str, default: float = 0.0) -> float:
    value = _float(env, key, default)
    if not 0.0 <= value <= 1.0:
        raise SettingsError(f"{key} must be between 0 and 1, got {value}")
    return value


@dataclass(frozen=True)
class Settings:
    """Configuration of one minimart process (a function, a dispatcher or the local runner)."""

    state_dir: Path = PROJECT_ROOT / ".minimart"
    host: str = "127.0.0.1"
    postgres_port: int = 15432
    redis_port: int = 16379
    mongo_port: int = 17017
    kafka_port: int = 19092
    kafka_controller_port: int = 19093
    prometheus_port: int = 19090
    ingress_port: int = 8080
    function_port_base: int = 18081
    orders_dsn: str = ""
    inventory_dsn: str = ""
    payments_dsn: str = ""
    mongo_url: str = ""
    redis_url: str = ""
    kafka_bootstrap: str = ""
    payment_decline_rate: float = 0.0
    shipping_failure_rate: float = 0.0
    default_credit_limit_cents: int = 100_000
    max_items_per_order: int = 50
    max_quantity_per_line: int = 1_000
    otlp_endpoint: str = ""
    trace_file: str = ""
    # Share of orders traced (decided once, where the order enters; every hop follows it).
    trace_sample_ratio: float = 1.0
    service_name: str = "minimart"

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        """Settings from ``env`` (default: the process environment); unset keys keep the
        field defaults above."""
        env = os.environ if env is None else env
        host = env.get("MINIMART_HOST", cls.host)
        state_dir = Path(env.get("MINIMART_STATE_DIR", str(cls.state_dir)))
        pg_port = _int(env, "MINIMART_POSTGRES_PORT", cls.postgres_port)
        redis_port = _int(env, "MINIMART_REDIS_PORT", cls.redis_port)
        mongo_port = _int(env, "MINIMART_MONGO_PORT", cls.mongo_port)
        kafka_port = _int(env, "MINIMART_KAFKA_PORT", cls.kafka_port)

        def dsn(key: str, database: str) -> str:
            return env.get(key) or f"postgresql://postgres@{host}:{pg_port}/{database}"

        return cls(
            state_dir=state_dir,
            host=host,
            postgres_port=pg_port,
            redis_port=redis_port,
            mongo_port=mongo_port,
            kafka_port=kafka_port,
            kafka_controller_port=_int(
                env, "MINIMART_KAFKA_CONTROLLER_PORT", cls.kafka_controller_port
            ),
            prometheus_port=_int(env, "MINIMART_PROMETHEUS_PORT", cls.prometheus_port),
            ingress_port=_int(env, "MINIMART_INGRESS_PORT", cls.ingress_port),
            function_port_base=_int(env, "MINIMART_FUNCTION_PORT_BASE", cls.function_port_base),
            orders_dsn=dsn("MINIMART_ORDERS_DSN", "minimart_orders"),
            inventory_dsn=dsn("MINIMART_INVENTORY_DSN", "minimart_inventory"),
            payments_dsn=dsn("MINIMART_PAYMENTS_DSN", "minimart_payments"),
            mongo_url=env.get("MINIMART_MONGO_URL") or f"mongodb://{host}:{mongo_port}/minimart",
            redis_url=env.get("MINIMART_REDIS_URL") or f"redis://{host}:{redis_port}/0",
            kafka_bootstrap=env.get("MINIMART_KAFKA_BOOTSTRAP") or f"{host}:{kafka_port}",
            payment_decline_rate=_rate(env, "MINIMART_PAYMENT_DECLINE_RATE"),
            shipping_failure_rate=_rate(env, "MINIMART_SHIPPING_FAILURE_RATE"),
            default_credit_limit_cents=_int(
                env, "MINIMART_DEFAULT_CREDIT_LIMIT_CENTS", cls.default_credit_limit_cents
            ),
            max_items_per_order=_int(env, "MINIMART_MAX_ITEMS_PER_ORDER", cls.max_items_per_order),
            max_quantity_per_line=_int(
                env, "MINIMART_MAX_QUANTITY_PER_LINE", cls.max_quantity_per_line
            ),
            otlp_endpoint=env.get("OTEL_EXPORTER_OTLP_ENDPOINT", ""),
            trace_file=env.get("MINIMART_TRACE_FILE", ""),
            trace_sample_ratio=_rate(env, "MINIMART_TRACE_SAMPLE_RATIO", cls.trace_sample_ratio),
            service_name=env.get("MINIMART_SERVICE_NAME") or env.get("K_SERVICE", "minimart"),
        )

    def to_env(self) -> dict[str, str]:
        """The environment that reproduces these settings in a child process."""
        return {
            "MINIMART_STATE_DIR": str(self.state_dir),
            "MINIMART_HOST": self.host,
            "MINIMART_POSTGRES_PORT": str(self.postgres_port),
            "MINIMART_REDIS_PORT": str(self.redis_port),
            "MINIMART_MONGO_PORT": str(self.mongo_port),
            "MINIMART_KAFKA_PORT": str(self.kafka_port),
            "MINIMART_KAFKA_CONTROLLER_PORT": str(self.kafka_controller_port),
            "MINIMART_PROMETHEUS_PORT": str(self.prometheus_port),
            "MINIMART_INGRESS_PORT": str(self.ingress_port),
            "MINIMART_FUNCTION_PORT_BASE": str(self.function_port_base),
            "MINIMART_ORDERS_DSN": self.orders_dsn,
            "MINIMART_INVENTORY_DSN": self.inventory_dsn,
            "MINIMART_PAYMENTS_DSN": self.payments_dsn,
            "MINIMART_MONGO_URL": self.mongo_url,
            "MINIMART_REDIS_URL": self.redis_url,
            "MINIMART_KAFKA_BOOTSTRAP": self.kafka_bootstrap,
            "MINIMART_PAYMENT_DECLINE_RATE": str(self.payment_decline_rate),
            "MINIMART_SHIPPING_FAILURE_RATE": str(self.shipping_failure_rate),
            "MINIMART_DEFAULT_CREDIT_LIMIT_CENTS": str(self.default_credit_limit_cents),
            "MINIMART_MAX_ITEMS_PER_ORDER": str(self.max_items_per_order),
            "MINIMART_MAX_QUANTITY_PER_LINE": str(self.max_quantity_per_line),
            "OTEL_EXPORTER_OTLP_ENDPOINT": self.otlp_endpoint,
            "MINIMART_TRACE_FILE": self.trace_file,
            "MINIMART_TRACE_SAMPLE_RATIO": str(self.trace_sample_ratio),
        }
