"""models/reward_isolation.py: a reward that raises, hangs, returns NaN/inf or a non-number, or kills its worker,
gives that sample 0 and is counted by kind; the other samples of the batch keep their rewards; a reward that fails
on every sample of N steps stops with one line. The real GRPO runs are in test_grpo_guards.py."""

from __future__ import annotations

import os
import time
from types import SimpleNamespace

import pytest

from models.guard_config import RewardIsolationConfig
from models.reward_isolation import IsolatedReward, RewardFailed, failure_totals, isolate_rewards, score_one

FAST = RewardIsolationConfig(timeout_s=0.5)
COMPLETIONS = ["ok", "raise", "hang", "nan", "inf", "none", "text", "ok"]
PER_KIND = {"error": 2, "timeout": 1, "nonfinite": 2}  # raise + text; hang; nan + inf


def misbehaving_reward(completions, **_):
    """One behaviour per completion text: the whole catalogue of what a user's reward can do wrong."""
    what = completions[0]
    if what == "raise":
        raise ZeroDivisionError("planted")
    if what == "hang":
        while True:
            time.sleep(0.01)
    if what == "exit":
        os._exit(3)
    return [{"nan": float("nan"), "inf": float("inf"), "none": None, "text": "1.0"}.get(what, 1.0)]


def _calls(func, completions, **kwargs):
    metrics: dict[str, list[float]] = {}
    log_metric = lambda name, value: metrics.setdefault(name, []).append(value)  # noqa: E731
    rewards = func(completions=completions, log_metric=log_metric, trainer_state=SimpleNamespace(global_step=3))
    return rewards, metrics


@pytest.mark.reliability("reward")
@pytest.mark.parametrize("isolated", [True, False], ids=["worker", "in_process"])
def test_each_failure_gives_zero_and_is_counted_the_rest_keep_their_rewards(isolated):
    completions = COMPLETIONS if isolated else [c for c in COMPLETIONS if c != "hang"]  # in process a hang hangs
    func = IsolatedReward(misbehaving_reward, FAST.model_copy(update={"isolated": isolated}), "reasoning_rl")
    try:
        rewards, metrics = _calls(func, completions)
    finally:
        func.close()
    expected = {"ok": 1.0, "none": None}
    assert rewards == [expected.get(c, 0.0) for c in completions]
    kinds = PER_KIND | ({} if isolated else {"timeout": 0})
    assert metrics["rewards/misbehaving_reward/failures"] == [sum(kinds.values())]
    assert {k: metrics[f"rewards/misbehaving_reward/failures/{k}"] for k in kinds} == {k: [v] for k, v in kinds.items()}
    totals = failure_totals([func])
    assert totals["reward_failures/misbehaving_reward"] == sum(kinds.values())


@pytest.mark.reliability("reward")
def test_a_hung_sample_costs_one_timeout_and_the_replacement_worker_finishes_the_batch():
    func = IsolatedReward(misbehaving_reward, FAST, "reasoning_rl")
    try:
        first_pid = (_calls(func, ["ok"]), func.scorer.process.pid)[1]
        started = time.monotonic()
        rewards, _ = _calls(func, ["ok", "hang", "ok", "ok"])
        took = time.monotonic() - started
        assert rewards == [1.0, 0.0, 1.0, 1.0]
        assert func.scorer.process.pid != first_pid  # killed and replaced
        assert took < FAST.timeout_s + 1.5
        assert _calls(func, ["exit", "ok"])[0] == [0.0, 1.0]  # a worker that dies is replaced too
    finally:
        func.close()
    assert func.scorer.process is None


@pytest.mark.reliability("reward")
def test_a_reward_failing_on_every_sample_of_n_steps_stops_with_one_line():
    func = IsolatedReward(misbehaving_reward, FAST.model_copy(update={"max_failed_steps": 2}), "final_rl")
    try:
        assert _calls(func, ["raise", "nan"])[0] == [0.0, 0.0]  # the first all-failing step: still going
        assert _calls(func, ["ok", "raise"])[0] == [1.0, 0.0]  # the streak is broken
        _calls(func, ["raise", "raise"])
        with pytest.raises(RewardFailed) as stopped:
            _calls(func, ["raise", "hang"])
    finally:
        func.close()
    line = str(stopped.value)
    assert "\n" not in line
    assert line.startswith("final_rl: reward misbehaving_reward failed on all 2 samples of 2 consecutive step(s)")
    assert "at step 3 (1 error, 1 timeout; first: ZeroDivisionError: planted)" in line
    assert "final_rl.guards.rewards.timeout_s" in line


def test_per_sample_columns_are_cut_and_the_rest_passed_whole():
    seen = []

    def reward(completions, answer, trainer_state, **_):
        seen.append((completions, answer, trainer_state))
        return [1.0]

    assert score_one(reward, {"completions": ["a", "b"], "answer": ["1", "2"], "trainer_state": 7}, 2, 1) == (
        "ok",
        1.0,
    )
    assert seen == [(["b"], ["2"], 7)]
    assert score_one(lambda **_: [1.0, 2.0], {"completions": ["a"]}, 1, 0)[0] == "error"


def test_reward_models_are_left_to_trl():
    import torch

    module = torch.nn.Linear(1, 1)
    wrapped = isolate_rewards([misbehaving_reward, "some/reward-model", module], FAST, "final_rl")
    assert isinstance(wrapped[0], IsolatedReward) and wrapped[0].__name__ == "misbehaving_reward"
    assert wrapped[1:] == ["some/reward-model", module]
