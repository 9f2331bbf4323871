"""scripts/kind-up.sh runs its steps in order: bash runs the real script with recording stubs.

No cluster can run here, so docker, kind, kubectl and skaffold are stand-ins that record their
arguments and answer what the script reads from them (versions, the order Service's URL). This
checks the script itself, its order of steps, its version checks and what it prints; what the
cluster does with the manifests is the business of test_knative_check.py.
"""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

import pytest

from minimart.kafka_access import ADMIN, MECHANISM, PROTOCOL, access_of
from minimart.manifests import load_topology
from minimart.settings import PROJECT_ROOT
from tests.deploy import generated

SCRIPT = PROJECT_ROOT / "scripts" / "kind-up.sh"
STUB = """#!/usr/bin/env bash
echo "{name} $*" >> "$KIND_UP_LOG"
case "{name} $*" in
  "kind version") echo "kind $KIND_STUB_VERSION go1.25.5 linux/amd64" ;;
  "skaffold version") echo "$SKAFFOLD_STUB_VERSION" ;;
  *"get ksvc order"*) echo "http://order.minimart.localhost" ;;
  *"get secret minimart-secrets"*) printf '%s' "$KIND_STUB_SECRET_KEYS" ;;
  *"get secrets --namespace minimart"*) printf '%s' "$KIND_STUB_SECRETS" ;;
  *"create secret generic minimart-secrets"*)
    # What kubectl would read: the env file it is given (a pipe), kept for the test to read.
    for arg in "$@"; do
      case "$arg" in --from-env-file=*) cat "${arg#--from-env-file=}" >> "$KIND_UP_SECRETS" ;; esac
    done ;;
  *"create secret generic kafka-"*)
    for arg in "$@"; do
      case "$arg" in --from-env-file=*) cat "${arg#--from-env-file=}" > "$KIND_UP_KAFKA/$6" ;; esac
    done ;;
esac
"""


def _run(
    tmp_path: Path,
    *args: str,
    skaffold: str = "v2.24.0",
    kind: str = "v0.31.0",
    secret_keys: str = "",
    secrets: str = "",
) -> tuple[int, str, list[str]]:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    for name in ("docker", "kind", "kubectl", "skaffold"):
        stub = bin_dir / name
        stub.write_text(STUB.replace("{name}", name))
        stub.chmod(0o755)
    log = tmp_path / "calls.log"
    log.write_text("")
    env = {
        "PATH": f"{bin_dir}{os.pathsep}/usr/bin{os.pathsep}/bin",
        "HOME": str(tmp_path),
        "KIND_UP_LOG": str(log),
        "SKAFFOLD_STUB_VERSION": skaffold,
        "KIND_STUB_VERSION": kind,
        "KIND_STUB_SECRET_KEYS": secret_keys,
        "KIND_UP_SECRETS": str(tmp_path / "secrets.env"),
        "KIND_STUB_SECRETS": secrets,
        "KIND_UP_KAFKA": str(tmp_path / "kafka"),
    }
    (tmp_path / "kafka").mkdir(exist_ok=True)
    result = subprocess.run(
        ["bash", str(SCRIPT), *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    return result.returncode, result.stdout + result.stderr, log.read_text().splitlines()


def _position(calls: list[str], needle: str) -> int:
    matches = [i for i, call in enumerate(calls) if needle in call]
    assert matches, f"no call with {needle!r} in {calls}"
    return matches[0]


def test_kind_up_runs_every_step_in_order_and_prints_the_way_in(tmp_path: Path) -> None:
    code, output, calls = _run(tmp_path)
    assert code == 0, output
    order = [
        "kind create cluster --name minimart --config kind-config.yaml",
        "knative-v1.23.0/serving-core.yaml",
        "knative-v1.23.0/kourier.yaml",
        "patch -f k8s/knative/serving-config-domain.yaml --type merge",
        "patch -f k8s/knative/serving-config-network.yaml --type merge",
        "knative-v1.23.0/eventing-core.yaml",
        "patch -f k8s/knative/eventing-config-features.yaml --type merge",
        "knative-v1.23.0/eventing-kafka-sink.yaml",
        "apply -k k8s/observability",
        "apply -f k8s/infra/namespace.yaml",
        "get secret minimart-secrets --namespace minimart --ignore-not-found",
        "create secret generic minimart-secrets --namespace minimart",
        "apply -k k8s/infra",
        "skaffold run -p local-kind --default-repo=kind.local",
        "wait ksvc --all --namespace minimart --for=condition=Ready",
        "wait route --all --namespace minimart --for=condition=Ready",
        "wait kafkasink --all",
        "wait kafkasource --all",
        "get ksvc order --namespace minimart",
    ]
    positions = [_position(calls, step) for step in order]
    assert positions == sorted(positions), list(zip(order, positions, strict=True))
    knative_files = sorted((PROJECT_ROOT / "k8s" / "knative").glob("*.yaml"))
    for path in knative_files:
        relative = path.relative_to(PROJECT_ROOT)
        assert any(f"patch -f {relative} --type merge --patch-file {relative}" in c for c in calls)
    assert "curl -s -H 'Host: order.minimart.localhost' http://127.0.0.1:8080/orders/" in output
    assert "-e HOST=order.minimart.localhost" in output


def test_deploy_only_rebuilds_and_waits(tmp_path: Path) -> None:
    code, output, calls = _run(tmp_path, "deploy")
    assert code == 0, output
    assert not any("kind create" in c or "serving-core" in c for c in calls), calls
    assert _position(calls, "apply -k k8s/infra") < _position(calls, "skaffold run")
    assert _position(calls, "skaffold run") < _position(calls, "wait kafkasource")
    assert not any("delete" in c for c in calls), calls


@pytest.mark.parametrize("version", ["v2.15.0", "v2.18.0"])
def test_a_skaffold_too_old_for_skaffold_yaml_stops_it(tmp_path: Path, version: str) -> None:
    code, output, calls = _run(tmp_path, skaffold=version)
    assert code != 0
    assert f"skaffold {version} cannot read skaffold.yaml" in output
    assert not any("kind create" in c for c in calls)


def test_a_kind_older_than_the_node_images_stops_it_a_newer_one_is_told(tmp_path: Path) -> None:
    code, output, calls = _run(tmp_path, kind="v0.25.0")
    assert code != 0
    assert "kind v0.25.0 is older than v0.31" in output
    assert not any("kind create" in c for c in calls)
    code, output, _ = _run(tmp_path, kind="v0.33.0")
    assert code == 0, output
    assert "best-effort" in output
    code, output, _ = _run(tmp_path, kind="v0.31.0")
    assert code == 0 and "best-effort" not in output and "older" not in output


def test_a_new_cluster_gets_random_secrets_off_the_command_line(tmp_path: Path) -> None:
    code, output, calls = _run(tmp_path)
    assert code == 0, output
    made = dict(line.split("=", 1) for line in (tmp_path / "secrets.env").read_text().splitlines())
    assert sorted(made) == sorted(generated.secret_keys())
    for value in made.values():
        assert re.fullmatch(r"[0-9a-f]{48}", value), value
        assert not any(value in call for call in calls), "a password on a command line"
    assert len(set(made.values())) == len(made), "one password per key"
    # A second cluster gets other passwords.
    again = tmp_path / "again"
    again.mkdir()
    _run(again)
    remade = dict(line.split("=", 1) for line in (again / "secrets.env").read_text().splitlines())
    assert not set(made.values()) & set(remade.values())


def test_an_existing_secret_is_kept(tmp_path: Path) -> None:
    code, output, calls = _run(
        tmp_path,
        "deploy",
        secret_keys=" ".join(generated.secret_keys()) + " ",
        secrets=" ".join(["minimart-secrets", *_kafka_secret_names()]) + " ",
    )
    assert code == 0, output
    assert "keeping it" in output
    assert not any("create secret" in c or "delete" in c for c in calls), calls
    assert not (tmp_path / "secrets.env").exists()


def test_a_secret_from_before_the_per_database_roles_stops_it(tmp_path: Path) -> None:
    old = "MINIMART_INVENTORY_DSN MINIMART_ORDERS_DSN MINIMART_PAYMENTS_DSN POSTGRES_PASSWORD "
    code, output, calls = _run(tmp_path, "deploy", secret_keys=old)
    assert code != 0
    assert "has no MINIMART_ORDERS_DB_PASSWORD" in output and "make kind-down" in output
    assert not any("create secret" in c or "skaffold run" in c for c in calls), calls


# --- the Kafka credentials ------------------------------------------------------------------


def _kafka_secret_names() -> list[str]:
    return [p.secret for p in generated.kafka_principals()]


def _made(tmp_path: Path) -> dict[str, dict[str, str]]:
    return {
        path.name: dict(line.split("=", 1) for line in path.read_text().splitlines())
        for path in sorted((tmp_path / "kafka").iterdir())
    }


def test_a_new_cluster_gets_one_kafka_secret_per_principal_of_the_model(tmp_path: Path) -> None:
    code, output, calls = _run(tmp_path)
    assert code == 0, output
    made = _made(tmp_path)
    access = access_of(load_topology(PROJECT_ROOT))
    assert sorted(made) == sorted(access.principals.values())
    for principal, secret in access.principals.items():
        values = made[secret]
        # The keys Knative's KafkaSink auth and KafkaSource net.sasl read (security/secret.go).
        assert sorted(values) == sorted(generated.KAFKA_SECRET_KEYS)
        assert values["user"] == principal
        assert values["protocol"] == PROTOCOL
        assert values["sasl.mechanism"] == ("PLAIN" if principal == ADMIN else MECHANISM)
        assert re.fullmatch(r"[0-9a-f]{48}", values["password"]), values["password"]
        assert not any(values["password"] in call for call in calls), "a password on a command line"
    assert len({v["password"] for v in made.values()}) == len(made), "one password per principal"
    labelled = [c for c in calls if "app.kubernetes.io/component=kafka-credentials" in c]
    assert len(labelled) == len(made)
    # Made before the stores (the broker reads the administrator's), and no Job deleted: a
    # new cluster has none.
    assert _position(calls, "create secret generic kafka-minimart-admin") < _position(
        calls, "apply -k k8s/infra"
    )
    assert not any("delete" in c or "rollout restart" in c for c in calls), calls


def test_a_deleted_kafka_secret_is_made_anew_and_its_readers_pick_it_up(tmp_path: Path) -> None:
    """A rotation: delete the Secret, rerun; the Job sets the new password, readers restart."""
    keep = [
        s for s in _kafka_secret_names() if s not in {"kafka-fn-payment", "kafka-minimart-admin"}
    ]
    code, output, calls = _run(
        tmp_path,
        "deploy",
        secret_keys=" ".join(generated.secret_keys()) + " ",
        secrets=" ".join(["minimart-secrets", *keep]) + " ",
    )
    assert code == 0, output
    assert sorted(_made(tmp_path)) == ["kafka-fn-payment", "kafka-minimart-admin"]
    delete_job = _position(
        calls, "delete job --namespace minimart -l app.kubernetes.io/name=create-topics"
    )
    assert delete_job < _position(calls, "skaffold run")
    restart_broker = _position(calls, "rollout restart statefulset/kafka --namespace minimart")
    restart_payment = _position(
        calls, "delete pod --namespace minimart -l serving.knative.dev/service=payment"
    )
    assert _position(calls, "skaffold run") < min(restart_broker, restart_payment)
    assert not any("service=inventory" in c for c in calls), "only what reads a new Secret"


def test_kind_up_reads_the_principals_the_model_renders() -> None:
    """kind-up.sh's awk over kafka-access.yaml gives the lines the ConfigMap holds."""
    script = SCRIPT.read_text()
    start = script.index("kafka_principals() {")
    function = script[start : script.index("\n}\n", start) + 3]
    result = subprocess.run(
        ["bash", "-c", f"{function}\nKAFKA_ACCESS={generated.KAFKA_ACCESS}\nkafka_principals"],
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )
    lines = [" ".join(vars(p).values()) for p in generated.kafka_principals()]
    assert result.stdout.splitlines() == lines
