"""The image's command serves the function and opens no gunicorn control socket.

gunicorn (requirements.lock) opens a control socket under ``$HOME/.gunicorn/`` unless told not
to; functions-framework's command line cannot tell it. The image runs ``python -m
minimart.serve`` instead: both are started here on a throwaway function with a HOME of their
own, and only functions-framework's leaves a socket there.
"""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from minimart.settings import PROJECT_ROOT

FUNCTION = "def handle(request):\n    return 'served'\n"
DEADLINE_S = 30


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _until(condition, what: str) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + DEADLINE_S
    while not condition():
        assert time.monotonic() < deadline, f"not within {DEADLINE_S} s: {what}"
        time.sleep(0.05)


def _answers(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=1) as response:
            return bool(response.read() == b"served")
    except OSError:
        return False


@pytest.fixture
def serve(tmp_path: Path) -> Iterator:  # type: ignore[type-arg]
    processes: list[subprocess.Popen[bytes]] = []

    def start(command: list[str], home: Path) -> int:
        home.mkdir()
        source = tmp_path / "main.py"
        source.write_text(FUNCTION)
        port = _free_port()
        env = {k: v for k, v in os.environ.items() if k != "XDG_RUNTIME_DIR"}
        env.update(HOME=str(home), WORKERS="1", THREADS="1")
        args = ["--target", "handle", "--source", str(source), "--signature-type", "http"]
        args += ["--host", "127.0.0.1", "--port", str(port)]
        process = subprocess.Popen([*command, *args], env=env, cwd=tmp_path)
        processes.append(process)
        _until(lambda: _answers(port) or process.poll() is not None, "the function answers")
        assert process.poll() is None, "the server exited"
        return port

    yield start
    for process in processes:
        process.terminate()
        process.wait(timeout=DEADLINE_S)


def test_the_image_command_opens_no_control_socket(serve, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    venv_bin = Path(sys.executable).parent
    # functions-framework's own command line: gunicorn's control socket appears in HOME.
    serve([str(venv_bin / "functions-framework")], tmp_path / "cli-home")
    control = tmp_path / "cli-home" / ".gunicorn" / "gunicorn.ctl"
    _until(control.exists, "functions-framework's gunicorn opens its control socket")
    # The image's command: served, and nothing in HOME.
    port = serve([sys.executable, "-m", "minimart.serve"], tmp_path / "image-home")
    assert _answers(port)
    assert list((tmp_path / "image-home").iterdir()) == []


def test_the_dockerfile_runs_minimart_serve() -> None:
    dockerfile = (PROJECT_ROOT / "Dockerfile").read_text()
    command = re.findall(r"^CMD (.*)$", dockerfile, re.M)[-1]
    assert "python -m minimart.serve" in command


def test_the_images_stay_on_loopback_and_build_from_skaffolds_artifacts() -> None:
    """scripts/images.sh: a dockerd with no bridge and no iptables rules; the base stand-in
    under the Dockerfile's own base name; one build per skaffold artifact."""
    script = (PROJECT_ROOT / "scripts" / "images.sh").read_text()
    dockerd = script[script.index("  dockerd ") : script.index("&\n", script.index("  dockerd "))]
    for flag in ("--bridge=none", "--iptables=false", "--ip-masq=false"):
        assert flag in dockerd, flag
    base = re.findall(r"^FROM (\S+)", (PROJECT_ROOT / "Dockerfile").read_text(), re.M)
    assert set(base) == {"python:3.11-slim"}
    assert 'BASE_IMAGE="python:3.11-slim"' in script
    assert 'yaml.safe_load(open("skaffold.yaml"))' in script
    assert '--build-arg "FUNCTION=$function" --build-arg "SIGNATURE=$signature"' in script
    test = (PROJECT_ROOT / "tests" / "e2e" / "test_images.py").read_text()
    assert '"--network", "host"' in test and "pytest.mark.slow" in test
