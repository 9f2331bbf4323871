"""The arrows of docs/architecture.md hold: its table of rooms covers every module of the
package, allows every import between rooms and no arrow a contract forbids; its table of
contracts is import-linter's (pyproject.toml), and those are kept; the functions' entrypoints
import only what those contracts watch."""

from __future__ import annotations

import ast
import re
import subprocess
import sys
import tomllib
from collections.abc import Iterator
from dataclasses import dataclass, replace
from functools import cache
from pathlib import Path
from typing import Any

import grimp

from minimart.settings import PROJECT_ROOT

PAGE = PROJECT_ROOT / "docs" / "architecture.md"


def contracts() -> list[dict[str, Any]]:
    config = tomllib.loads((PROJECT_ROOT / "pyproject.toml").read_text())
    found: list[dict[str, Any]] = config["tool"]["importlinter"]["contracts"]
    return found


def table(section: str, text: str | None = None) -> list[list[str]]:
    """The rows (cells stripped) of the first table under ``## section`` of the page."""
    text = PAGE.read_text() if text is None else text
    body = text.split(f"\n## {section}\n", 1)[1].split("\n## ", 1)[0]
    rows = [line for line in body.splitlines() if line.startswith("|")]
    return [[cell.strip() for cell in row.strip("|").split("|")] for row in rows[2:]]


@dataclass(frozen=True)
class Room:
    name: str
    specs: tuple[str, ...]  # dotted: "minimart.domain." (a package) or "minimart.cli"
    may_import: frozenset[str]

    def holds(self, module: str) -> bool:
        return any(
            module == spec.rstrip(".") or (spec.endswith(".") and module.startswith(spec))
            for spec in self.specs
        )


def _spec(path: str) -> str:
    if path.endswith("/"):
        return path.rstrip("/").replace("/", ".") + "."
    dotted = path.removesuffix(".py").replace("/", ".")
    return dotted.removesuffix(".__init__")


@cache
def rooms() -> dict[str, Room]:
    found = {}
    for name, modules, _what, may in table("The rooms"):
        specs = tuple(_spec(p) for p in re.findall(r"`(minimart/[^`]*)`", modules))
        allowed = {a.strip() for a in may.split(",")} - {"(nothing else)"}
        found[name] = Room(name, specs, frozenset(allowed))
    return found


@cache
def graph() -> Any:
    return grimp.build_graph("minimart", cache_dir=None)


def room_of(module: str, page: dict[str, Room] | None = None) -> Room:
    [room] = [r for r in (page or rooms()).values() if r.holds(module)]
    return room


def ignored() -> set[tuple[str, str]]:
    pairs = set()
    for contract in contracts():
        for line in contract.get("ignore_imports", []):
            importer, imported = (part.strip() for part in line.split("->"))
            pairs.add((importer, imported))
    return pairs


def test_the_rooms_allow_only_rooms_of_the_page() -> None:
    assert len(rooms()) >= 10
    for room in rooms().values():
        assert room.specs, f"room {room.name} names no module"
        assert room.may_import <= set(rooms()) - {room.name}, room.name


def test_every_module_of_the_package_is_in_exactly_one_room() -> None:
    for module in sorted(graph().modules):
        holders = [r.name for r in rooms().values() if r.holds(module)]
        assert len(holders) == 1, f"{module} is in rooms {holders} of docs/architecture.md"


def arrows() -> Iterator[tuple[str, str]]:
    """Every import between two modules of the package (the contracts' ignored ones aside)."""
    skip = ignored()
    for importer in sorted(graph().modules):
        for imported in sorted(graph().find_modules_directly_imported_by(importer)):
            if (importer, imported) not in skip:
                yield importer, imported


def not_allowed(page: dict[str, Room]) -> list[str]:
    """The imports between rooms that ``page`` does not allow."""
    wrong = []
    for importer, imported in arrows():
        source, target = room_of(importer, page), room_of(imported, page)
        if source != target and target.name not in source.may_import:
            wrong.append(f"{importer} ({source.name}) -> {imported} ({target.name})")
    return wrong


def covers(module: str, room: Room) -> bool:
    """Whether ``module`` is all of ``room`` (every module of it is ``module`` or below)."""
    held = [m for m in graph().modules if room.holds(m)]
    return all(m == module or m.startswith(module + ".") for m in held)


def forbidden_arrows() -> Iterator[tuple[str, str, str]]:
    """(contract, source module, forbidden module) of the package, layers included."""
    for contract in contracts():
        if contract["type"] == "layers":
            layers = contract["layers"]
            for index, upper in enumerate(layers):
                for lower in layers[index + 1 :]:
                    yield contract["id"], lower, upper
        elif contract["type"] == "forbidden":
            for source in contract["source_modules"]:
                for target in contract["forbidden_modules"]:
                    if target.split(".")[0] == "minimart":
                        yield contract["id"], source, target


def contradictions(page: dict[str, Room]) -> list[str]:
    """Arrows ``page`` allows that a contract forbids. A contract may be finer than the rooms
    (the console may import the runtime, not its process management): only where it forbids
    a whole room must the page not allow it."""
    found = []
    for contract, source, target in forbidden_arrows():
        origin, to = room_of(source, page), room_of(target, page)
        if covers(target, to) and to.name in origin.may_import:
            found.append(f"{origin.name} -> {to.name}: {contract} forbids {source} -> {target}")
    return found


def test_every_import_between_rooms_is_an_arrow_of_the_page() -> None:
    wrong = not_allowed(rooms())
    assert not wrong, "imports docs/architecture.md does not allow:\n" + "\n".join(wrong)


def test_the_page_allows_no_arrow_a_contract_forbids() -> None:
    found = contradictions(rooms())
    assert not found, "docs/architecture.md allows what a contract forbids:\n" + "\n".join(found)


def test_a_page_that_drifted_from_the_imports_or_the_contracts_is_caught() -> None:
    page = dict(rooms())
    page["domain"] = replace(page["domain"], may_import=page["domain"].may_import | {"adapters"})
    page["console"] = replace(page["console"], may_import=frozenset({"shared"}))

    assert contradictions(page) == [
        "domain -> adapters: core-layers forbids minimart.domain -> minimart.adapters",
        "domain -> adapters: domain-pure forbids minimart.domain -> minimart.adapters",
    ]
    assert any(w.startswith("minimart.console.books (console) -> ") for w in not_allowed(page))


def test_the_page_names_every_contract_and_no_other() -> None:
    on_page = {row[0].strip("`") for row in table("What may not import what")}
    assert on_page == {c["id"] for c in contracts()}


def test_the_import_contracts_are_kept() -> None:
    lint_imports = Path(sys.executable).parent / "lint-imports"

    result = subprocess.run(
        [lint_imports, "--no-cache", "--no-logo"],
        cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip

    assert result.returncode == 0, result.stdout + result.stderr
    assert f"Contracts: {len(contracts())} kept, 0 broken." in result.stdout, result.stdout


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


def test_only_the_adapters_spell_the_tables_sql() -> None:
    """One schema: the tables ``adapters/postgres.py`` creates are queried under ``adapters/``
    only (the console and the benchmark read them through the read models,
    ``adapters/*_views.py``); tests may look at a store directly."""
    schema = (PROJECT_ROOT / "minimart" / "adapters" / "postgres.py").read_text()
    tables = re.findall(r"CREATE TABLE IF NOT EXISTS (\w+)", schema)
    assert {"orders", "payments", "reservations", "stock"} <= set(tables)
    query = re.compile(rf"\b(?:FROM|JOIN|INTO|UPDATE)\s+(?:{'|'.join(tables)})\b", re.IGNORECASE)
    outside = [
        f"{path.relative_to(PROJECT_ROOT)}: {match[0]}"
        for folder in ("minimart", "bench", "functions", "scripts")
        for path in sorted((PROJECT_ROOT / folder).rglob("*.py"))
        if "adapters" not in path.relative_to(PROJECT_ROOT).parts
        for match in [query.search(path.read_text())]
        if match
    ]
    assert not outside, outside
