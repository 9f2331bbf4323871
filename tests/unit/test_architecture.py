"""The arrows of docs/architecture.md hold: import-linter's contracts (pyproject.toml), and
the functions' entrypoints import only what those contracts watch."""

from __future__ import annotations

import ast
import subprocess
import sys
import tomllib
from pathlib import Path

from minimart.settings import PROJECT_ROOT

CONTRACTS = {
    "core-layers",
    "domain-pure",
    "handlers-use-ports",
    "functions-not-runtime",
    "console-not-process-management",
    "runtime-not-console",
}


def contracts() -> list[dict[str, object]]:
    config = tomllib.loads((PROJECT_ROOT / "pyproject.toml").read_text())
    found: list[dict[str, object]] = config["tool"]["importlinter"]["contracts"]
    return found


def test_every_rule_of_the_architecture_page_is_a_contract() -> None:
    assert {c["id"] for c in contracts()} == CONTRACTS


def test_the_import_contracts_are_kept() -> None:
    lint_imports = Path(sys.executable).parent / "lint-imports"

    result = subprocess.run(
        [lint_imports, "--no-cache", "--no-logo"],
        cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip

    assert result.returncode == 0, result.stdout + result.stderr
    assert f"Contracts: {len(CONTRACTS)} kept, 0 broken." in result.stdout, result.stdout


def minimart_imports(source: Path) -> set[str]:
    tree = ast.parse(source.read_text(), str(source))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
    return {name for name in names if name.split(".")[0] == "minimart"}


def test_the_functions_import_only_modules_the_contracts_watch() -> None:
    """functions/ is not a package import-linter can read: each main.py may import only the
    modules the "functions-not-runtime" contract checks (so, transitively, no runtime)."""
    [contract] = [c for c in contracts() if c["id"] == "functions-not-runtime"]
    watched = tuple(str(m) for m in contract["source_modules"])  # type: ignore[attr-defined]
    mains = sorted((PROJECT_ROOT / "functions").glob("*/main.py"))
    assert len(mains) >= 6
    for main in mains:
        for name in minimart_imports(main):
            assert name.startswith(watched), f"{main.parent.name} imports {name}"
