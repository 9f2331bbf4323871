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
