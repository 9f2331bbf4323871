"""The Job's kafka-users script, run by bash against stand-ins of Kafka's command-line tools.

No broker runs here: kafka-acls.sh and kafka-configs.sh are stubs that record their arguments
and answer ``--list`` / ``--describe`` as Kafka 3.9's AclCommand and ConfigCommand print them
(core/src/main/scala/kafka/admin/). The script must add exactly the model's ACLs, remove every
other one (a stale grant, a DENY, a prefixed pattern), set one SCRAM-SHA-512 credential per
principal with its password piped in (never on a command line), delete the credentials of
users the manifests no longer name, and settle the ACLs before anyone can log in.
"""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import pytest

from minimart.kafka_access import ADMIN, Grant, access_of
from minimart.manifests import load_topology
from minimart.settings import PROJECT_ROOT
from tests.deploy import generated, kube

ACCESS = access_of(load_topology(PROJECT_ROOT))
STUB = r"""#!/usr/bin/env bash
tool="$(basename "$0")"
echo "$tool $*" >> "$STUB_LOG"
entity="" list="" describe=""
while (( $# )); do
  case "$1" in
    --command-config) cp "$2" "$STUB_DIR/command-config.$tool"; shift ;;
    --entity-name) entity="$2"; shift ;;
    --add-config-file) cat "$2" >> "$STUB_DIR/scram.$entity"; shift ;;
    --list) list=1 ;;
    --describe) describe=1 ;;
  esac
  shift
done
if [ "$tool" = kafka-acls.sh ] && [ -n "$list" ]; then cat "$STUB_DIR/acls.held"; fi
if [ "$tool" = kafka-configs.sh ] && [ -n "$describe" ]; then cat "$STUB_DIR/users.held"; fi
exit 0
"""
# What the broker holds before the Job: one of the model's ACLs, a stale one, a DENY on a
# prefixed pattern (AclCommand.printResourceAcls: a header, then one tab-indented entry each).
ACLS_HELD = (
    "Current ACLs for resource `ResourcePattern(resourceType=TOPIC, name=minimart.order.created,"
    " patternType=LITERAL)`: \n"
    " \t(principal=User:fn-order, host=*, operation=WRITE, permissionType=ALLOW)\n"
    "\t(principal=User:intruder, host=*, operation=WRITE, permissionType=ALLOW) \n"
    "\n"
    "Current ACLs for resource `ResourcePattern(resourceType=GROUP, name=minimart-pay,"
    " patternType=PREFIXED)`: \n"
    " \t(principal=User:old-source, host=10.0.0.1, operation=READ, permissionType=DENY) \n"
    "\n"
)
# ConfigMap.describeClientQuotaAndUserScramCredentialConfigs: one line per user.
USERS_HELD = (
    "SCRAM credential configs for user-principal 'fn-payment' are SCRAM-SHA-512=iterations=4096\n"
    "SCRAM credential configs for user-principal 'old-user' are "
    "SCRAM-SHA-256=iterations=8192, SCRAM-SHA-512=iterations=4096\n"
)
ADMIN_STAND_IN = "adminstandin"


def _job(builds: dict[Path, kube.Build]) -> dict[str, Any]:
    (job,) = kube.of_kind(builds[kube.KUSTOMIZE_ROOT].documents, "batch", "Job")
    return job


@pytest.fixture(scope="module")
def run(builds: dict[Path, kube.Build], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The kafka-users container's script, run once; its folder of records."""
    tmp = tmp_path_factory.mktemp("kafka-users")
    job = _job(builds)
    pod = job["spec"]["template"]["spec"]
    (container,) = pod["initContainers"]
    (access,) = [
        d for d in builds[kube.KUSTOMIZE_ROOT].documents if d["metadata"]["name"] == "kafka-access"
    ]
    bin_dir, access_dir, users_dir, stub_dir = (tmp / n for n in ("bin", "access", "users", "rec"))
    for folder in (bin_dir, access_dir, users_dir, stub_dir, tmp / "tmp"):
        folder.mkdir()
    for tool in ("kafka-acls.sh", "kafka-configs.sh"):
        (bin_dir / tool).write_text(STUB)
        (bin_dir / tool).chmod(0o755)
    (access_dir / "acls").write_text(access["data"]["acls"])
    (volume,) = [v for v in pod["volumes"] if v["name"] == "kafka-passwords"]
    for source in volume["projected"]["sources"]:
        (item,) = source["secret"]["items"]
        (users_dir / item["path"]).write_text(_password(item["path"]))
    (stub_dir / "acls.held").write_text(ACLS_HELD)
    (stub_dir / "users.held").write_text(USERS_HELD)
    env = {
        "PATH": "/usr/bin:/bin",
        "BOOTSTRAP": "kafka:9092",
        "KAFKA_ADMIN_USER": ADMIN,
        "KAFKA_ADMIN_PASSWORD": ADMIN_STAND_IN,
        "KAFKA_BIN": str(bin_dir),
        "ACCESS_DIR": str(access_dir),
        "SCRAM_USERS_DIR": str(users_dir),
        "TMPDIR": str(tmp / "tmp"),
        "STUB_LOG": str(stub_dir / "calls.log"),
        "STUB_DIR": str(stub_dir),
    }
    result = subprocess.run(
        [*container["command"], *container["args"]],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return stub_dir


def _password(principal: str) -> str:
    return generated.stand_in_value(f"scram{principal}")


def _calls(run: Path) -> list[list[str]]:
    return [line.split() for line in (run / "calls.log").read_text().splitlines()]


def _value(call: list[str], flag: str) -> str:
    return call[call.index(flag) + 1]


def _values(call: list[str], flag: str) -> list[str]:
    return [call[i + 1] for i, arg in enumerate(call) if arg == flag]


def test_it_adds_exactly_the_models_acls(run: Path) -> None:
    added = set()
    for call in _calls(run):
        if call[0] == "kafka-acls.sh" and "--add" in call:
            assert _value(call, "--resource-pattern-type") == "literal", call
            principal = _value(call, "--allow-principal").removeprefix("User:")
            for operation in _values(call, "--operation"):
                for resource in ("topic", "group"):
                    added |= {
                        Grant(principal, resource, name, operation)
                        for name in _values(call, f"--{resource}")
                    }
    assert added == set(ACCESS.grants)


def test_it_removes_every_acl_the_model_does_not_hold(run: Path) -> None:
    removed = [c for c in _calls(run) if c[0] == "kafka-acls.sh" and "--remove" in c]
    flags = [
        (
            _value(c, "--allow-principal" if "--allow-principal" in c else "--deny-principal"),
            _value(c, "--allow-host" if "--allow-host" in c else "--deny-host"),
            _value(c, "--operation"),
            _value(c, "--topic") if "--topic" in c else _value(c, "--group"),
            _value(c, "--resource-pattern-type"),
        )
        for c in removed
    ]
    assert sorted(flags) == [
        ("User:intruder", "*", "WRITE", "minimart.order.created", "literal"),
        ("User:old-source", "10.0.0.1", "READ", "minimart-pay", "prefixed"),
    ]
    assert all("--force" in c for c in removed)
    assert all("--deny-principal" in c for c in removed if "User:old-source" in c)


def test_it_sets_one_scram_credential_per_principal_off_the_command_line(run: Path) -> None:
    scram = {p for p in ACCESS.principals if p != ADMIN}
    for principal in scram:
        content = (run / f"scram.{principal}").read_text()
        # ConfigCommand reads a file's value as is: `password=...`, no brackets.
        assert content == f"SCRAM-SHA-512=password={_password(principal)}\n"
    assert not (run / f"scram.{ADMIN}").exists(), "the administrator logs in with PLAIN only"
    log = (run / "calls.log").read_text()
    for principal in [*scram, ADMIN]:
        assert _password(principal) not in log
    assert ADMIN_STAND_IN not in log
    config = (run / "command-config.kafka-acls.sh").read_text()
    assert ADMIN_STAND_IN not in config
    reference = "${env:KAFKA_ADMIN_PASSWORD}"  # resolved by Kafka's EnvVarConfigProvider
    assert 'password="' + reference + '"' in config
    assert "sasl.mechanism=PLAIN" in config and "security.protocol=SASL_PLAINTEXT" in config


def test_it_deletes_the_credentials_of_users_the_manifests_do_not_name(run: Path) -> None:
    deleted = [
        (_value(c, "--entity-name"), _value(c, "--delete-config"))
        for c in _calls(run)
        if c[0] == "kafka-configs.sh" and "--delete-config" in c
    ]
    assert sorted(deleted) == [("old-user", "SCRAM-SHA-256"), ("old-user", "SCRAM-SHA-512")]


def test_the_acls_are_settled_before_anyone_can_log_in(run: Path) -> None:
    calls = _calls(run)
    acl_changes = [i for i, c in enumerate(calls) if "--add" in c or "--remove" in c]
    credentials = [i for i, c in enumerate(calls) if "--add-config-file" in c]
    assert acl_changes and credentials
    assert max(acl_changes) < min(credentials)
    assert all(_value(c, "--bootstrap-server") == "kafka:9092" for c in calls)
