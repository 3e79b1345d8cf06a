"""Reward isolation and training guards in real tiny GRPO runs (reasoning_rl from the tiny base model, a few steps of
2 prompts x 4 completions, through models.run_stage as the pipeline runs it): faulty rewards are contained and
counted while the stage completes; an all-failing reward, all-truncated completions, a constant reward and an
exploding gradient each stop the stage with their one line, publishing nothing."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from models.factory import model_record
from models.recipe import load_recipe
from models.reward_isolation import RewardFailed
from models.rewards import REWARDS
from models.run_stage import run
from models.stage_io import stage_spec
from models.training_guards import TrainingStopped

SMALL = [
    "reasoning_rl.trl.max_steps=2",
    "reasoning_rl.trl.logging_steps=1",
    "reasoning_rl.trl.num_generations=4",
    "reasoning_rl.trl.per_device_train_batch_size=8",
    "reasoning_rl.checkpoint_every=1",
    "reasoning_rl.alarms.check_every=0",
    "data.rl_pool_size=16",
    "data.cold_start_size=16",
]


def _nth_call(name: str, folder: Path) -> int:
    """The count of calls to reward `name` so far: the workers are forked (and replaced), so it lives in a file."""
    path = folder / name
    count = int(path.read_text()) + 1 if path.exists() else 1
    path.write_text(str(count))
    return count


def _faulty(name: str, every: int, fail, folder: Path):
    """A reward with TRL's signature (called once per sample by the worker) that fails on every `every`-th call."""

    def reward(completions, **_):
        return fail() if (_nth_call(name, folder) - 1) % every == 0 else [1.0]

    reward.__name__ = name
    return reward


def _raise():
    raise KeyError("planted")


def _hang():
    time.sleep(3600)


def _train(tmp_path: Path, overrides: list[str], mlflow_run: bool = False):
    run_id = None
    if mlflow_run:
        from models.tracking import client, ensure_experiment

        run_id = client().create_run(ensure_experiment("guards")).info.run_id
    recipe = load_recipe(None, SMALL + overrides)
    inputs = {"model": model_record(recipe.model.base, "base_model")}
    spec = stage_spec("reasoning_rl", recipe, inputs, output=str(tmp_path / "reasoning_rl"), mlflow_run_id=run_id)
    return run(spec), run_id


@pytest.fixture
def tracking(tmp_path, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    from models.tracking import client

    return client


def _nothing_published(tmp_path: Path) -> bool:
    return not (tmp_path / "reasoning_rl").exists()


@pytest.mark.reliability("reward")
def test_a_reward_that_raises_hangs_or_returns_nan_is_contained_and_counted(tmp_path, monkeypatch, tracking):
    """8 samples a step, 2 steps: each faulty reward fails on every 4th call it gets (the sample table after training
    calls them too, outside the counts)."""
    monkeypatch.setitem(REWARDS, "accuracy", _faulty("raising_reward", 4, _raise, tmp_path))
    monkeypatch.setitem(REWARDS, "format", _faulty("hanging_reward", 4, _hang, tmp_path))
    monkeypatch.setitem(REWARDS, "language_consistency", _faulty("nan_reward", 4, lambda: [float("nan")], tmp_path))
    record, run_id = _train(tmp_path, ["reasoning_rl.guards.rewards.timeout_s=0.5"], mlflow_run=True)
    assert record.kind == "model" and (tmp_path / "reasoning_rl" / "model.safetensors").is_file()
    metrics = tracking().get_run(run_id).data.metrics
    per_kind = {"raising_reward": "error", "hanging_reward": "timeout", "nan_reward": "nonfinite"}
    for name, kind in per_kind.items():
        assert metrics[f"reward_failures/{name}"] == metrics[f"reward_failures/{name}/{kind}"] == 4  # 16 calls / 4
        logged = [m.value for m in tracking().get_metric_history(run_id, f"rewards/{name}/failures")]
        assert logged == [2.0, 2.0]  # 2 of each step's 8 samples
        assert f"rewards/{name}/mean" in metrics


@pytest.mark.reliability("reward")
def test_a_reward_failing_on_every_sample_stops_the_stage(tmp_path, monkeypatch):
    monkeypatch.setitem(REWARDS, "format", _faulty("broken_reward", 1, _raise, tmp_path))
    with pytest.raises(RewardFailed, match=r"^reasoning_rl: reward broken_reward failed on all 8 samples") as stopped:
        _train(tmp_path, [])
    assert "\n" not in str(stopped.value)
    assert _nothing_published(tmp_path)


def constant_reward(completions, **_):
    return [1.0 for _ in completions]


def exploding_reward(completions, trainer_state, **_):
    """Rewards that differ within a group (the parity of the text's character codes), in units a million times
    larger from the second step on: unscaled advantages (scale_rewards none) that blow the gradient up."""
    scale = 1e6 if trainer_state.global_step >= 1 else 1.0
    return [scale * (sum(map(ord, c)) % 2) for c in completions]


@pytest.mark.reliability("guard")
@pytest.mark.parametrize(
    ("reward", "overrides", "expected"),
    [
        pytest.param(
            constant_reward,
            ["reasoning_rl.trl.max_completion_length=2", "reasoning_rl.guards.training.truncated_steps=2"],
            r"^reasoning_rl: every completion hit max_completion_length \(2 tokens\) for 2 steps",
            id="all_truncated",
        ),
        pytest.param(
            constant_reward,
            ["reasoning_rl.rewards={format: 1.0}", "reasoning_rl.guards.training.zero_variance_steps=2"],
            r"^reasoning_rl: every group had equal rewards for 2 steps",
            id="zero_variance",
        ),
        pytest.param(
            exploding_reward,
            ["reasoning_rl.rewards={format: 1.0}", "reasoning_rl.trl.scale_rewards=none"],
            r"^reasoning_rl: gradient norm .* exceeds reasoning_rl.guards.training.max_grad_norm=10000 at step 2;",
            id="exploding_gradient",
        ),
    ],
)
def test_a_run_going_nowhere_stops_with_its_cause_and_keeps_its_last_good_checkpoint(
    tmp_path, monkeypatch, reward, overrides, expected
):
    monkeypatch.setitem(REWARDS, "format", reward)
    with pytest.raises(TrainingStopped, match=expected) as stopped:
        _train(tmp_path, [*overrides, "reasoning_rl.trl.max_steps=4"])
    assert "\n" not in str(stopped.value)
    assert _nothing_published(tmp_path)
    checkpoints = sorted(p.name for p in tmp_path.glob("reasoning_rl.trainer/checkpoint-*"))
    assert checkpoints[-1] == f"checkpoint-{int(str(stopped.value).split(' at step ')[1].split(';')[0]) - 1}"
