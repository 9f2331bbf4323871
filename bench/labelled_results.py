"""Results files that keep one entry per label, so runs (before/after a change) sit side by side."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


def record(out: Path, label: str, result: dict[str, Any]) -> None:
    """Print ``result`` and store it under ``label`` in ``out``, keeping the other labels."""
    print(json.dumps(result, indent=2))
    previous = json.loads(out.read_text()) if out.exists() else {}
    previous[label] = result
    out.write_text(json.dumps(previous, indent=2) + "\n")


def append(out: Path, result: dict[str, Any]) -> None:
    """Print ``result`` and add it to the list of sittings in ``out`` (a JSON array)."""
    print(json.dumps(result))
    previous = json.loads(out.read_text()) if out.exists() else []
    out.write_text(json.dumps([*previous, result], indent=1) + "\n")
