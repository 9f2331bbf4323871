"""The chaos soak, short (`make soak` runs it at its default length): kills heal by themselves,
every accepted order ends final, the books balance, no dead letter is left but poison."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bench import soak
from minimart.settings import Settings

pytestmark = [pytest.mark.e2e, pytest.mark.slow, pytest.mark.timeout(1200)]


def test_a_short_chaos_soak_passes(running_stack: Settings, tmp_path: Path) -> None:
    out = tmp_path / "soak.json"

    status = soak.main(["--seconds", "60", "--baseline", "20", "--max-gap", "12",
                        "--out", str(out)])  # fmt: skip

    results = json.loads(out.read_text())
    assert results["kills"], "the chaos loop killed nothing"
    assert results["all_back"], results["kills"]
    assert results["every_accepted_order_final"]
    assert results["check"]["settled"], results["check"]["summary"]
    assert status == 0
    assert out.with_suffix(".png").stat().st_size > 0
