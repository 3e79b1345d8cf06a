"""models/training_guards.py on logged values: each guard fires with its cause and fix in one line, and the defaults
stay quiet on the values a shipped tiny run logs. The real GRPO runs that trip them are in test_grpo_guards.py."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from models.guard_config import TrainingGuardConfig
from models.training_guards import TrainingGuards, TrainingStopped

# what the tiny recipe's reasoning_rl and final_rl logged over 500 and 600 steps (every 5): the extremes
TINY_RUN = {"grad_norm": (1.1e-6, 2.7), "completions/clipped_ratio": (0.0, 0.15), "frac_reward_zero_std": (0.05, 0.85)}


def _feed(guards: TrainingGuards, series: list[dict], every: int = 1) -> None:
    guards.on_train_begin(None, SimpleNamespace(global_step=0), None)
    for index, logs in enumerate(series, start=1):
        guards.on_log(None, SimpleNamespace(global_step=index * every), None, logs=logs)


def test_the_defaults_stay_quiet_on_a_tiny_run_s_values():
    lows = {key: low for key, (low, _) in TINY_RUN.items()}
    highs = {key: high for key, (_, high) in TINY_RUN.items()}
    _feed(TrainingGuards(TrainingGuardConfig(), "final_rl"), [lows, highs] * 60, every=5)


@pytest.mark.reliability("guard")
@pytest.mark.parametrize(
    ("cfg", "series", "expected"),
    [
        pytest.param(
            {},
            [{"grad_norm": 0.5}, {"grad_norm": 2e4}],
            r"^final_rl: gradient norm 2e\+04 exceeds final_rl.guards.training.max_grad_norm=10000 at step 10;",
            id="above_the_limit",
        ),
        pytest.param(
            {"spike_history": 3, "grad_norm_spike": 100},
            [{"grad_norm": 0.5}, {"grad_norm": 0.7}, {"grad_norm": 0.6}, {"grad_norm": 61.0}],
            r"gradient norm 61 is 102x the running median 0.6 .*grad_norm_spike=100\) at step 20;",
            id="spike_over_the_median",
        ),
        pytest.param(
            {"truncated_steps": 10},
            [{"completions/clipped_ratio": 1.0}] * 2,
            r"every completion hit max_completion_length \(40 tokens\) for 10 steps .* raise "
            r"final_rl.trl.max_completion_length",
            id="all_truncated",
        ),
        pytest.param(
            {"zero_variance_steps": 15},
            [{"frac_reward_zero_std": 1.0}] * 2 + [{"frac_reward_zero_std": 0.9}] + [{"frac_reward_zero_std": 1.0}] * 3,
            r"every group had equal rewards for 15 steps .* at step 30; .*too hard or too easy",
            id="zero_variance",
        ),
    ],
)
def test_each_guard_stops_with_its_cause_and_fix(cfg, series, expected):
    guards = TrainingGuards(TrainingGuardConfig(**cfg), "final_rl", max_completion_length=40)
    with pytest.raises(TrainingStopped, match=expected) as stopped:
        _feed(guards, series, every=5)
    assert "\n" not in str(stopped.value)


def test_off_means_off_and_a_resumed_run_keeps_its_median():
    off = TrainingGuardConfig(max_grad_norm=0, grad_norm_spike=0, truncated_steps=0, zero_variance_steps=0)
    _feed(TrainingGuards(off, "reasoning_rl"), [{"grad_norm": 1e9, "frac_reward_zero_std": 1.0}] * 20)
    before = TrainingGuards(TrainingGuardConfig(spike_history=2, grad_norm_spike=10), "reasoning_rl")
    _feed(before, [{"grad_norm": 1.0}] * 3)
    resumed = TrainingGuards(TrainingGuardConfig(spike_history=2, grad_norm_spike=10), "reasoning_rl")
    resumed.load_state_dict(before.state_dict())
    with pytest.raises(TrainingStopped, match="running median 1 "):
        _feed(resumed, [{"grad_norm": 11.0}])
