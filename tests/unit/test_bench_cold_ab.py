"""bench/cold_ab.py's arithmetic: what a round keeps, the head/base ratios, the table."""

from __future__ import annotations

from typing import Any

import pytest

from bench import cold_ab


def burst(throughput: float, cpu: float, publish: float) -> dict[str, Any]:
    """The parts of ``measure_burst``'s answer (with ``outside``) that a round keeps."""
    return {
        "throughput_orders_per_s": throughput,
        "completions_per_s_in_window": throughput / 2,
        "backlog_at_window_end": 100,
        "post_orders_ms": {"p50": 4.0, "p99": 40.0},
        "cpu_ms_per_order": cpu,
        "functions_cpu_ms_per_order": cpu / 2,
        "emulator_cpu_ms_per_order": cpu / 4,
        "servers_cpu_ms_per_order": cpu / 4,
        "publish_mean_ms": {"fn-order": publish},
        "step_mean_ms": {},
        "delivery_mean_ms": {},
        "loadavg_1m": [0.5, 1.75],
        "outside": {"idle": True, "outside_cpu_pct_of_a_core": 3.0},
        "cpu_ms_per_order_by_component": {"kafka": 9.0},  # not kept
    }


def test_a_round_keeps_the_burst_figures_and_flattens_the_means() -> None:
    row = cold_ab.round_row("base", burst(20.0, 80.0, publish=3.0))

    assert row["side"] == "base"
    assert row["post_p50_ms"] == 4.0
    assert row["functions_cpu_ms_per_order"] == 40.0
    assert row["publish_mean_ms.fn-order"] == 3.0
    assert row["outside"]["idle"] is True
    assert "cpu_ms_per_order_by_component" not in row


def rows() -> list[dict[str, Any]]:
    return [
        cold_ab.round_row("base", burst(20.0, 100.0, publish=4.0)),
        cold_ab.round_row("head", burst(28.0, 70.0, publish=2.0)),
        cold_ab.round_row("base", burst(30.0, 80.0, publish=6.0)),
        cold_ab.round_row("head", burst(32.0, 50.0, publish=3.0)),
    ]


def test_ratios_are_head_over_base_of_the_means() -> None:
    table = cold_ab.ratios(rows())

    assert table["throughput_orders_per_s"] == {"base": 25.0, "head": 30.0, "ratio": 1.2}
    assert table["cpu_ms_per_order"]["ratio"] == pytest.approx(60 / 90, abs=1e-3)
    assert table["publish_mean_ms.fn-order"]["ratio"] == pytest.approx(0.5)
    assert table["backlog_at_window_end"]["ratio"] == 1.0
    assert "loadavg_1m" not in table and "outside" not in table


def test_a_figure_one_side_lacks_has_no_ratio() -> None:
    only_head = rows()
    only_head[1]["delivery_mean_ms.fn-order"] = 5.0

    table = cold_ab.ratios(only_head)

    assert table["delivery_mean_ms.fn-order"] == {"base": None, "head": 5.0, "ratio": None}


def test_the_table_has_a_column_per_round_and_the_ratio_last() -> None:
    table = cold_ab.ratios(rows())

    lines = cold_ab.table_lines(rows(), table)

    assert lines[0].split() == ["figure", "1:base", "2:head", "3:base", "4:head", "base",
                                "head", "head/base"]  # fmt: skip
    throughput = next(line for line in lines if line.startswith("throughput_orders_per_s"))
    assert throughput.split()[1:] == ["20.00", "28.00", "30.00", "32.00", "25.00", "30.00",
                                      "1.20"]  # fmt: skip
    assert lines[-2].split()[-4:] == ["1.75"] * 4  # the load average at each burst's end
    assert lines[-1].split()[-4:] == ["True"] * 4
