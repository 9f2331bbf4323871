"""One parser for the console and the runtime: every command dispatches one way, and a flag
named after a setting overrides it."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from minimart.cli import build_parser, settings_for
from minimart.settings import PROJECT_ROOT, Settings

OPS_VERBS = ("record", "replay", "deadletters", "redrive", "check", "trace")


def commands() -> list[str]:
    parser = build_parser()
    [sub] = [a for a in parser._actions if a.dest == "command"]
    return list(sub.choices)  # type: ignore[arg-type]


def test_every_command_has_its_run() -> None:
    names = commands()
    assert {"record", "replay", "deadletters", "redrive", "check", "trace"} <= set(names)
    assert {"up", "down", "status", "dev", "servers", "order", "demo"} <= set(names)
    for name in names:
        argv = {"record": [name, "x"], "replay": [name, "x"], "trace": [name, "x"],
                "servers": [name, "status"]}.get(name, [name])  # fmt: skip
        assert callable(build_parser().parse_args(argv).run), name


def test_address_flags_override_the_environment() -> None:
    args = build_parser().parse_args(
        ["check", "--orders-dsn", "postgresql://ops@db:5432/orders", "--kafka-bootstrap", "k:1"]
    )
    env = Settings.from_env({"MINIMART_KAFKA_BOOTSTRAP": "elsewhere:9092"})

    settings = settings_for(args, env)

    assert settings.orders_dsn == "postgresql://ops@db:5432/orders"
    assert settings.kafka_bootstrap == "k:1"
    assert settings.redis_url == env.redis_url  # not given: unchanged


def test_no_flag_keeps_the_settings() -> None:
    env = Settings()
    assert settings_for(build_parser().parse_args(["deadletters"]), env) is env


def test_an_unknown_command_is_refused() -> None:
    with pytest.raises(SystemExit):
        build_parser().parse_args(["frobnicate"])


def test_the_help_lists_every_ops_verb() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "minimart", "--help"],
        cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip

    assert result.returncode == 0, result.stderr
    listed = set(re.findall(r"^    (\w+)", result.stdout, re.M))
    assert set(OPS_VERBS) <= listed, result.stdout
    script = Path(sys.executable).parent / "minimart"  # [project.scripts], `make install`
    if script.exists():
        installed = subprocess.run([script, "--help"], capture_output=True, text=True, check=False)
        assert installed.stdout == result.stdout


def test_the_servers_command_names_the_servers_the_runtime_runs() -> None:
    from minimart.local import servers
    from minimart.local.cli import SERVERS

    assert servers.ALL == SERVERS
