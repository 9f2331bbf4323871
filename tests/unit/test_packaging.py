"""An installable console: ``pip install .[console]`` runs every console command without the
local runtime's dependencies, which only the runtime's commands import (when they run); each
extra is pinned to the versions the suite runs (requirements-dev.lock)."""

from __future__ import annotations

import re
import subprocess
import sys
import textwrap
import tomllib

import pytest

from minimart.settings import PROJECT_ROOT

# What the `local` extra brings and the console must do without.
RUNTIME_ONLY = ("psutil", "supervisor", "confluent_kafka", "secantusdb", "watchfiles")
# The runtime's modules the console and the command line must not load for a console command.
RUNTIME_MODULES = (
    "minimart.local.commands",
    "minimart.local.stack",
    "minimart.local.servers",
    "minimart.local.observe",
    "minimart.local.dispatcher",
    "minimart.local.reload",
)

# Runs the code after it with imports of ``BLOCKED`` refused, as if they were not installed.
_BLOCKER = """
import importlib.abc, sys

BLOCKED = {blocked!r}

class NotInstalled(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in BLOCKED:
            raise ModuleNotFoundError(f"No module named {{name!r}} (blocked)", name=name)
        return None

sys.meta_path.insert(0, NotInstalled())
"""


def run_without(blocked: tuple[str, ...], code: str) -> subprocess.CompletedProcess[str]:
    program = _BLOCKER.format(blocked=set(blocked)) + textwrap.dedent(code)
    return subprocess.run(
        [sys.executable, "-c", program],
        cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip


def run_command_without(blocked: tuple[str, ...], *argv: str) -> subprocess.CompletedProcess[str]:
    return run_without(
        blocked,
        f"""
        import runpy
        sys.argv = ["minimart", *{list(argv)!r}]
        runpy.run_module("minimart", run_name="__main__")
        """,
    )


def test_the_blocker_blocks() -> None:
    result = run_without(("json",), "import json")
    assert result.returncode != 0
    assert "No module named 'json' (blocked)" in result.stderr


@pytest.mark.parametrize("command", ["check", "deadletters", "redrive", "record", "replay"])
def test_console_commands_start_without_the_runtimes_dependencies(command: str) -> None:
    result = run_command_without(RUNTIME_ONLY, command, "--help")
    assert result.returncode == 0, result.stderr
    assert "--kafka-bootstrap" in result.stdout


def test_the_console_and_the_command_line_load_no_runtime_module() -> None:
    result = run_without(
        RUNTIME_ONLY,
        f"""
        import minimart.cli, minimart.console.commands, minimart.console.checker
        minimart.cli.build_parser().parse_args(["check"])
        loaded = sorted(m for m in sys.modules if m.startswith({RUNTIME_MODULES!r}))
        print("loaded:", loaded)
        """,
    )
    assert result.returncode == 0, result.stderr
    assert "loaded: []" in result.stdout


def test_the_console_starts_without_the_runtimes_http_parser() -> None:
    result = run_command_without(("httptools",), "deadletters", "--help")
    assert result.returncode == 0, result.stderr


def test_a_runtime_command_without_the_local_extra_says_what_to_install() -> None:
    result = run_command_without(("psutil",), "status")
    assert result.returncode != 0
    assert "the local runtime needs 'psutil': install the `local` extra" in result.stderr


def _pins(lock: str) -> dict[str, str]:
    pins = {}
    for line in (PROJECT_ROOT / lock).read_text().splitlines():
        if match := re.match(r"^([A-Za-z0-9_.-]+)==(\S+)", line):
            pins[_canonical(match[1])] = match[2]
    return pins


def _canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


@pytest.mark.parametrize("extra", ["console", "local"])
def test_each_extra_is_pinned_to_the_lock(extra: str) -> None:
    project = tomllib.loads((PROJECT_ROOT / "pyproject.toml").read_text())["project"]
    locked = _pins("requirements-dev.lock")
    requirements = project["optional-dependencies"][extra]
    assert requirements
    for requirement in requirements:
        match = re.fullmatch(r"([A-Za-z0-9_.-]+)(\[[^\]]+\])?==(\S+)", requirement)
        assert match, f"{extra}: {requirement} is not pinned (==)"
        name, version = _canonical(match[1]), match[3]
        assert locked.get(name) == version, (
            f"{extra}: {requirement} but the lock has {name}=={locked.get(name)}"
        )


def test_the_runtime_only_dependencies_are_in_the_local_extra_not_the_core() -> None:
    project = tomllib.loads((PROJECT_ROOT / "pyproject.toml").read_text())["project"]
    local = {
        _canonical(re.split(r"[\[=<>]", r)[0]) for r in project["optional-dependencies"]["local"]
    }
    core = {_canonical(re.split(r"[\[=<>]", r)[0]) for r in project["dependencies"]}
    for package in ("psutil", "supervisor", "httptools", "confluent-kafka"):
        assert package in local and package not in core, package
