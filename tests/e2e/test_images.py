"""An order completes through minimart's images, each run with its pod's security settings.

`bash scripts/images.sh build` (make images) starts a dockerd of the project's own (no bridge,
no iptables), builds the stand-in for the Dockerfile's base by debootstrap and every function's
image from the Dockerfile as skaffold does. Here the local stack's function processes give way
to those images: each container runs on the host's network (127.0.0.1 only) on its function's
port, as the user, with the read-only root, the dropped capabilities, no privilege escalation
and the /tmp emptyDir of its pod in k8s/functions/, and with the environment the stack gives
the function it replaces. The stack's dispatchers then deliver to the containers.
Slow (a first build takes minutes): not in the default run; `make test-images`.
"""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Iterator
from functools import partial
from pathlib import Path
from typing import Any

import pytest
import requests
import yaml

from minimart.console.client import OrderClient
from minimart.local import stack
from minimart.local.servers.supervision import Supervisor
from minimart.settings import PROJECT_ROOT, Settings
from tests.stack import eventually, new_sku

pytestmark = [pytest.mark.slow, pytest.mark.e2e]

IMAGES_DIR = Path(os.environ.get("IMAGES_DIR", PROJECT_ROOT / ".minimart" / "images"))
DOCKER_ENV = {**os.environ, "DOCKER_HOST": f"unix://{IMAGES_DIR / 'docker.sock'}"}
BUILD_TIMEOUT_S = 3600
# What the stack tells its own processes that means nothing in a container (host paths).
HOST_ONLY = {"PYTHONPATH", "MINIMART_TRACE_FILE"}


def _docker(*args: str, timeout: float = 120) -> str:
    result = subprocess.run(
        ["docker", *args], env=DOCKER_ENV, capture_output=True, text=True, timeout=timeout
    )
    assert result.returncode == 0, f"docker {' '.join(args)}: {result.stderr}"
    return result.stdout


@pytest.fixture(scope="module")
def images() -> None:
    result = subprocess.run(
        ["bash", str(PROJECT_ROOT / "scripts" / "images.sh"), "build"],
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
        timeout=BUILD_TIMEOUT_S,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]


def _pod_container(service: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """The pod spec and the function container of k8s/functions/<service>.yaml."""
    text = (PROJECT_ROOT / "k8s" / "functions" / f"{service}.yaml").read_text()
    (ksvc,) = [d for d in yaml.safe_load_all(text) if d]
    pod = ksvc["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    return pod, container


def run_options(service: str) -> list[str]:
    """`docker run` options for what the pod asks of its container."""
    pod, container = _pod_container(service)
    security = container["securityContext"]
    assert security["runAsNonRoot"] and security["runAsUser"] > 0
    options = ["--user", f"{security['runAsUser']}:{security['runAsGroup']}"]
    assert security["readOnlyRootFilesystem"] is True
    options.append("--read-only")
    assert security["capabilities"]["drop"] == ["ALL"] and "add" not in security["capabilities"]
    options += ["--cap-drop", "ALL"]
    assert security["allowPrivilegeEscalation"] is False
    options += ["--security-opt", "no-new-privileges"]
    volumes = {v["name"]: v for v in pod.get("volumes", [])}
    for mount in container.get("volumeMounts", []):
        if "projected" in volumes[mount["name"]]:  # the issuer's keys: keys_options
            continue
        empty_dir = volumes[mount["name"]]["emptyDir"]
        size = empty_dir.get("sizeLimit", "64Mi").replace("Mi", "m")
        uid = security["runAsUser"]
        options += ["--tmpfs", f"{mount['mountPath']}:rw,size={size},uid={uid},gid={uid}"]
    return options


def keys_options(service: str, settings: Settings) -> tuple[list[str], dict[str, str]]:
    """Where the pod reads the token issuer's keys (its projected ``oidc-keys`` volume: in a
    cluster the pod's token and CA to ask the API server), the local issuer's public keys
    (never its private key), read-only; ``docker run`` options and the environment."""
    pod, container = _pod_container(service)
    projected = {v["name"] for v in pod.get("volumes", []) if "projected" in v}
    for mount in container.get("volumeMounts", []):
        if mount["name"] in projected:
            inside = f"{mount['mountPath']}/jwks.json"
            jwks = settings.identity_dir / "jwks.json"
            return ["--volume", f"{jwks}:{inside}:ro"], {"MINIMART_OIDC_JWKS": inside}
    return [], {}


@pytest.fixture(scope="module")
def containers(images: None, running_stack: Settings) -> Iterator[dict[str, str]]:
    """Each function of the stack replaced by its image; name -> container."""
    settings = running_stack
    plan = stack.plan_stack(settings)
    supervisor = Supervisor(settings)
    code = stack.code_hash()
    names = [fn.process_name for fn in plan.functions]
    supervisor.stop(names)
    started: dict[str, str] = {}
    try:
        for fn in plan.functions:
            env = {
                k: v
                for k, v in stack.function_program(fn, settings, code).env.items()
                if k not in HOST_ONLY and (k.startswith(("MINIMART_", "OTEL_")) or k == "HOME")
            }
            keys, keys_env = keys_options(fn.service, settings)
            env.update(keys_env)
            env_args = [arg for k, v in sorted(env.items()) for arg in ("--env", f"{k}={v}")]
            name = f"minimart-{fn.service}"
            _docker("rm", "-f", name)
            _docker(
                "run", "--detach", "--name", name, "--network", "host",
                *run_options(fn.service), *keys, *env_args, f"minimart-{fn.service}:local",
                "python", "-m", "minimart.serve", "--target", "handle",
                "--source", f"functions/{fn.service}/main.py", "--signature-type", fn.signature,
                "--host", "127.0.0.1", "--port", str(fn.port),
            )  # fmt: skip
            started[fn.service] = name
        for fn in plan.functions:
            eventually(partial(_healthy, fn.url), timeout=60, what=f"{fn.service} in a container")
        yield started
    finally:
        for name in started.values():
            subprocess.run(["docker", "rm", "-f", name], env=DOCKER_ENV, capture_output=True)
        for name in names:
            supervisor.start(name)


def _healthy(url: str) -> bool:
    try:
        return requests.get(url + "/healthz", timeout=2).status_code == 200
    except requests.RequestException:
        return False


def test_each_container_runs_as_its_pod_says(containers: dict[str, str]) -> None:
    for service, name in containers.items():
        (info,) = json.loads(_docker("inspect", name))
        host, config = info["HostConfig"], info["Config"]
        assert info["State"]["Running"], service
        assert config["User"] == "10001:10001", service
        assert host["ReadonlyRootfs"] is True, service
        assert host["CapDrop"] == ["ALL"] and not host["CapAdd"], service
        assert host["NetworkMode"] == "host", service
        # The root really is read-only, and the user is not root.
        assert _docker("exec", name, "id", "-u").strip() == "10001"
        refused = subprocess.run(
            ["docker", "exec", name, "touch", "/probe"], env=DOCKER_ENV, capture_output=True
        )
        assert refused.returncode != 0, service


def test_an_order_completes_through_the_containers(
    containers: dict[str, str], running_stack: Settings
) -> None:
    client = OrderClient(f"http://127.0.0.1:{running_stack.ingress_port}")
    sku = new_sku(running_stack, stock=3, price_cents=990)
    address = {"name": "Ada", "line1": "1 Loop Rd", "city": "Springfield",
               "postalCode": "12345", "country": "US"}  # fmt: skip
    response = client.place(7, [{"sku": sku, "quantity": 1}], address)
    assert response.status_code == 202, response.text
    order = client.wait_final(response.json()["orderId"])
    assert order["status"] == "CONFIRMED", order
    # Served by the images: none of the stack's own function processes was running meanwhile.
    supervisor = Supervisor(running_stack)
    for fn in stack.plan_stack(running_stack).functions:
        assert supervisor.state(fn.process_name) != "RUNNING", fn.process_name
