"""GPU-hour accounting: per-stage figures and the Table-7-shaped totals."""

from __future__ import annotations

import pytest

from models.cost import cost_table, stage_cost


def test_stage_cost_is_wall_times_gpus_at_the_price():
    cost = stage_cost("reasoning_rl", wall_s=7200, gpus=8, usd_per_gpu_hour=2.0)
    assert cost == {
        "cost/reasoning_rl_wall_s": 7200,
        "cost/reasoning_rl_gpus": 8.0,
        "cost/reasoning_rl_gpu_hours": 16.0,
        "cost/reasoning_rl_usd": 32.0,
    }


def test_cpu_stages_cost_no_gpu_hours():
    assert stage_cost("cold_start_sft", wall_s=30, gpus=0, usd_per_gpu_hour=2.0)["cost/cold_start_sft_usd"] == 0


def test_table_sums_evaluations_over_every_model_and_totals():
    runs = {
        "base_model": stage_cost("evaluate", 360, 1, 2.0),
        "cold_start_sft": stage_cost("cold_start_sft", 3600, 8, 2.0) | stage_cost("evaluate", 360, 1, 2.0),
        "reasoning_rl": stage_cost("reasoning_rl", 7200, 8, 2.0),
    }
    rows = {r["phase"]: r for r in cost_table(runs)}
    assert rows["cold_start_sft"]["gpu_hours"] == 8.0
    assert rows["evaluate"]["gpu_hours"] == pytest.approx(0.2)
    assert rows["final_rl"]["gpu_hours"] == 0.0
    assert rows["total"]["gpu_hours"] == pytest.approx(24.2)
    assert rows["total"]["usd"] == pytest.approx(48.4)
