"""Reward-hacking alarms fire on the patterns they name and stay quiet otherwise."""

from __future__ import annotations

import json
from types import SimpleNamespace

from models.alarms import RewardHackingAlarms
from models.config import AlarmConfig


def _alarms(checks=(), **cfg) -> RewardHackingAlarms:
    scores = iter(checks)
    return RewardHackingAlarms(AlarmConfig(**cfg), heldout_check=lambda model: next(scores))


def _log(alarms, step, reward=1.0, zero_std=0.0, clipped=0.0):
    logs = {"reward": reward, "frac_reward_zero_std": zero_std, "completions/clipped_ratio": clipped}
    alarms.on_log(None, SimpleNamespace(global_step=step), None, logs=logs)


def _step_end(alarms, step):
    model = SimpleNamespace(training=True, train=lambda mode: None)
    alarms.on_step_end(None, SimpleNamespace(global_step=step), None, model=model)


def test_zero_variance_alarm_needs_a_full_window_above_threshold():
    alarms = _alarms(window=3, max_zero_std_fraction=0.8, check_every=0)
    for step, frac in enumerate([0.9, 0.9, 0.5, 0.9, 0.9]):
        _log(alarms, step, zero_std=frac)
    assert alarms.raised == {}
    _log(alarms, 5, zero_std=0.95)
    assert alarms.raised == {"zero_variance_groups": 5}


def test_all_truncated_alarm():
    alarms = _alarms(check_every=0)
    _log(alarms, 1, clipped=0.5)
    assert alarms.raised == {}
    _log(alarms, 2, clipped=1.0)
    assert alarms.raised == {"all_truncated": 2}


def test_reward_up_while_heldout_check_falls():
    alarms = _alarms(checks=[0.8, 0.6], window=2, check_every=10, heldout_drop=0.05)
    _step_end(alarms, 10)  # first check: 0.8
    for step, reward in enumerate([1.0, 1.0, 2.0, 2.0]):
        _log(alarms, step, reward=reward)
    _step_end(alarms, 20)  # 0.6 < 0.8 - 0.05 while the reward rose
    assert alarms.raised == {"reward_up_heldout_down": 20}


def test_no_alarm_when_heldout_check_holds():
    alarms = _alarms(checks=[0.8, 0.79], window=2, check_every=10)
    _step_end(alarms, 10)
    for step, reward in enumerate([1.0, 1.0, 2.0, 2.0]):
        _log(alarms, step, reward=reward)
    _step_end(alarms, 20)
    assert alarms.raised == {}


def test_alarms_are_written_beside_the_model(tmp_path):
    alarms = _alarms(check_every=0)
    _log(alarms, 3, clipped=1.0)
    alarms.write(tmp_path)
    assert json.loads((tmp_path / "alarms.json").read_text()) == {"all_truncated": 3}
