"""Upstream's own Go code, run on the manifests: build once (cached), run, read the answers.

``tests/knative-check`` is a Go module pinned to the Knative release line the cluster installs;
it builds two programs: ``knative-check`` (serving's webhook and route code, eventing's delivery
validation, kind's config decoding) and ``kustomize`` (the kustomize kubectl v1.35 embeds).
The binaries are cached under ``~/.cache/minimart/knative-check/<key>``, the key a hash of the Go
sources, go.mod, go.sum and the Go version, so a change to any of them rebuilds. The first build
downloads the modules (GOFLAGS=-mod=readonly: go.sum is the pin) and takes a minute or more.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from minimart.settings import PROJECT_ROOT

SOURCE = PROJECT_ROOT / "tests" / "knative-check"
CACHE = Path.home() / ".cache" / "minimart" / "knative-check"
PROGRAMS = ("knative-check", "kustomize")
BUILD_TIMEOUT_S = 1500


class UpstreamCheckError(AssertionError):
    """Go is missing, the programs do not build, or a program could not run."""


@dataclass(frozen=True)
class Result:
    """What knative-check says about one document (one line of its output)."""

    file: str
    index: int
    api_version: str
    kind: str
    name: str
    checks: tuple[str, ...]
    domains: tuple[str, ...] = ()
    ignored: str = ""
    error: str = ""

    @classmethod
    def from_line(cls, line: str) -> Result:
        raw: dict[str, Any] = json.loads(line)
        return cls(
            file=raw["file"],
            index=raw["index"],
            api_version=raw["apiVersion"],
            kind=raw["kind"],
            name=raw["name"],
            checks=tuple(raw["checks"]),
            domains=tuple(raw.get("domains", ())),
            ignored=raw.get("ignored", ""),
            error=raw.get("error", ""),
        )

    @property
    def where(self) -> str:
        return f"{self.file}#{self.index} ({self.kind} {self.name})"


@dataclass(frozen=True)
class Report:
    """One run of knative-check over some files."""

    returncode: int
    results: list[Result] = field(default_factory=list)

    @property
    def failures(self) -> list[Result]:
        return [r for r in self.results if r.error]

    def explain(self) -> str:
        """Each failure: the file and document, then the upstream error."""
        return "\n".join(f"{r.where}: {r.error}" for r in self.failures)


def _go() -> str:
    go = shutil.which("go")
    if go is None:
        raise UpstreamCheckError(
            "the Knative manifest check needs Go (>= the version of tests/knative-check/go.mod) "
            "on PATH: install it (https://go.dev/dl/ or your distribution's golang package); "
            "this check is part of the test suite and is never skipped"
        )
    return go


def go_root() -> str:
    """GOROOT of the Go on PATH (its gofmt is there)."""
    result = subprocess.run(
        [_go(), "env", "GOROOT"], capture_output=True, text=True, check=True, timeout=60
    )
    return result.stdout.strip()


def _key(go: str) -> str:
    version = subprocess.run(
        [go, "env", "GOVERSION"], capture_output=True, text=True, check=True, timeout=60
    ).stdout.strip()
    digest = hashlib.sha256(version.encode())
    for path in sorted(SOURCE.rglob("*")):
        if path.is_file() and (path.suffix == ".go" or path.name in {"go.mod", "go.sum"}):
            digest.update(str(path.relative_to(SOURCE)).encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()[:16]


def build() -> Path:
    """The folder holding the built programs (built now unless the cache has them)."""
    go = _go()
    target = CACHE / _key(go)
    if all((target / program).is_file() for program in PROGRAMS):
        return target
    CACHE.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix="build-", dir=CACHE))
    env = {**os.environ, "GOFLAGS": "-mod=readonly", "CGO_ENABLED": "0"}
    result = subprocess.run(
        [go, "build", "-trimpath", "-o", f"{staging}{os.sep}", "./..."],
        cwd=SOURCE,
        env=env,
        capture_output=True,
        text=True,
        timeout=BUILD_TIMEOUT_S,
        check=False,
    )
    if result.returncode != 0:
        shutil.rmtree(staging, ignore_errors=True)
        raise UpstreamCheckError(f"go build in {SOURCE} failed:\n{result.stderr}")
    try:
        staging.rename(target)
    except OSError:  # built meanwhile by another session: keep that one
        shutil.rmtree(staging, ignore_errors=True)
    return target


def knative_check(programs: Path, paths: list[Path]) -> Report:
    """Run knative-check over files (relative paths in its answers, as the repo names them)."""
    arguments = [str(p.relative_to(PROJECT_ROOT)) if p.is_absolute() else str(p) for p in paths]
    result = subprocess.run(
        [str(programs / "knative-check"), *arguments],
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    if result.returncode not in (0, 1):
        raise UpstreamCheckError(f"knative-check could not run: {result.stderr}")
    results = [Result.from_line(line) for line in result.stdout.splitlines() if line.strip()]
    return Report(result.returncode, results)


def kustomize(programs: Path, folder: Path) -> str:
    """``kubectl kustomize folder`` (kubectl v1.35's kustomize)."""
    result = subprocess.run(
        [str(programs / "kustomize"), str(folder)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    if result.returncode != 0:
        raise UpstreamCheckError(f"kustomize {folder}: {result.stderr}")
    return result.stdout
