"""Settings: one declaration per key, read and written back by one loop each."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from minimart.settings import Settings, SettingsError

# Keys that take one of a few values: another than the default.
OTHER_CHOICE = {"kafka_client": "librdkafka"}


def every_key_changed() -> dict[str, str]:
    """An environment giving every key a value that differs from its default."""
    env = {}
    for field in dataclasses.fields(Settings):
        key = field.metadata["key"]
        default = getattr(Settings(), field.name)
        if isinstance(default, bool) or not isinstance(default, (int, float, str, Path)):
            raise AssertionError(f"{field.name}: a type this test does not know")
        if field.name in OTHER_CHOICE:
            value = OTHER_CHOICE[field.name]
        elif isinstance(default, float):
            value = "0.25" if default != 0.25 else "0.5"
        elif isinstance(default, int):
            value = str(default + 7)
        else:
            value = f"/elsewhere/{field.name}"
        env[key.env] = value
    return env


def test_every_field_is_declared_with_its_variable() -> None:
    keys = Settings.declarations()
    assert set(keys) == {f.name for f in dataclasses.fields(Settings)}
    variables = [key.env for key in keys.values()]
    assert len(set(variables)) == len(variables)


def test_every_key_is_read_and_written_back() -> None:
    env = every_key_changed()

    settings = Settings.from_env(env)

    defaults = Settings()
    for field in dataclasses.fields(Settings):
        assert getattr(settings, field.name) != getattr(defaults, field.name), field.name
    assert settings.to_env() == env  # nothing read is lost on the way to a child process
    assert Settings.from_env(settings.to_env()) == settings


def test_the_service_name_reaches_a_child_process() -> None:
    settings = dataclasses.replace(Settings(), service_name="payment")

    assert Settings.from_env(settings.to_env()).service_name == "payment"


def test_the_service_name_falls_back_to_knatives_variable() -> None:
    assert Settings.from_env({"K_SERVICE": "shipping"}).service_name == "shipping"
    both = {"K_SERVICE": "shipping", "MINIMART_SERVICE_NAME": "inventory"}
    assert Settings.from_env(both).service_name == "inventory"
    assert Settings.from_env({}).service_name == "minimart"


def test_addresses_follow_host_and_ports_unless_given() -> None:
    settings = Settings.from_env({"MINIMART_HOST": "10.0.0.5", "MINIMART_POSTGRES_PORT": "5432"})

    assert settings.orders_dsn == "postgresql://postgres@10.0.0.5:5432/minimart_orders"
    assert settings.kafka_bootstrap == "10.0.0.5:19092"
    given = Settings.from_env({"MINIMART_KAFKA_BOOTSTRAP": "kafka:9092"})
    assert given.kafka_bootstrap == "kafka:9092"


def test_an_empty_variable_keeps_the_default() -> None:
    assert Settings.from_env({"MINIMART_INGRESS_PORT": ""}).ingress_port == 8080


@pytest.mark.parametrize(
    ("key", "raw"),
    [
        ("MINIMART_INGRESS_PORT", "eighty"),
        ("MINIMART_PAYMENT_DECLINE_RATE", "1.5"),
        ("MINIMART_TRACE_SAMPLE_RATIO", "lots"),
    ],
)
def test_a_malformed_value_names_its_key(key: str, raw: str) -> None:
    with pytest.raises(SettingsError, match=key):
        Settings.from_env({key: raw})
