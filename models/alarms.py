"""Reward-hacking alarms of the RL stages, raised while training runs and logged as `alarm/<name>` metrics:

- reward_up_heldout_down: the training reward rises while a periodic check on held-out validation prompts
  (disjoint from the evaluation set, never trained on) falls;
- zero_variance_groups: the share of groups whose rewards are all equal (TRL's frac_reward_zero_std) stays
  above the recipe's threshold: GRPO gets no signal from them;
- all_truncated: every completion hit the length limit, so format and accuracy rewards are all 0.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from pathlib import Path

import mlflow
from transformers import TrainerCallback

from models.config import AlarmConfig

log = logging.getLogger(__name__)
ALARMS = ("reward_up_heldout_down", "zero_variance_groups", "all_truncated")


def _mean(values: list[float]) -> float:
    return sum(values) / len(values) if values else 0.0


class RewardHackingAlarms(TrainerCallback):
    """Watches TRL's logs and a periodic held-out check; `raised` holds the alarms that fired."""

    def __init__(self, cfg: AlarmConfig, heldout_check: Callable[[object], float]):
        self.cfg, self.heldout_check = cfg, heldout_check
        self.rewards: list[float] = []
        self.zero_std: list[float] = []
        self.checks: list[float] = []
        self.raised: dict[str, int] = {}

    def _raise(self, name: str, step: int, why: str) -> None:
        if name not in self.raised:
            log.warning("ALARM %s at step %d: %s", name, step, why)
            self.raised[name] = step
        if mlflow.active_run():
            mlflow.log_metric(f"alarm/{name}", 1.0, step=step)

    def on_log(self, args, state, control, logs=None, **kwargs):
        logs = logs or {}
        if "reward" not in logs:
            return
        self.rewards.append(float(logs["reward"]))
        self.zero_std.append(float(logs.get("frac_reward_zero_std", 0.0)))
        recent = self.zero_std[-self.cfg.window :]
        if len(recent) == self.cfg.window and min(recent) > self.cfg.max_zero_std_fraction:
            self._raise(
                "zero_variance_groups",
                state.global_step,
                f"frac_reward_zero_std > {self.cfg.max_zero_std_fraction} for {self.cfg.window} logs",
            )
        if float(logs.get("completions/clipped_ratio", 0.0)) >= 1.0:
            self._raise("all_truncated", state.global_step, "every completion was truncated")

    def on_train_begin(self, args, state, control, model=None, **kwargs):
        if self.cfg.check_every and model is not None and state.global_step == 0:  # resumed: the checks are restored
            self._check(model, state.global_step)

    def on_step_end(self, args, state, control, model=None, **kwargs):
        every = self.cfg.check_every
        if every and model is not None and state.global_step % every == 0:
            self._check(model, state.global_step)

    def _check(self, model, step: int) -> None:
        was_training = model.training
        score = self.heldout_check(model)
        model.train(was_training)
        self.checks.append(score)
        if mlflow.active_run():
            mlflow.log_metric("heldout_check/pass_at_1", score, step=step)
        window = self.cfg.window
        reward_rising = len(self.rewards) >= 2 * window and _mean(self.rewards[-window:]) > _mean(self.rewards[:window])
        if reward_rising and score < self.checks[0] - self.cfg.heldout_drop:
            self._raise(
                "reward_up_heldout_down",
                step,
                f"held-out check {score:.3f} < first {self.checks[0]:.3f} while the reward rose",
            )

    def state_dict(self) -> dict:
        """What a checkpoint keeps of the alarms (models/resume.py restores it on resume)."""
        return {"rewards": self.rewards, "zero_std": self.zero_std, "checks": self.checks, "raised": self.raised}

    def load_state_dict(self, state: dict) -> None:
        self.rewards, self.zero_std = list(state["rewards"]), list(state["zero_std"])
        self.checks, self.raised = list(state["checks"]), dict(state["raised"])

    def write(self, folder: Path) -> None:
        """alarms.json (alarm -> first step) beside the model; alarms that never fired are logged as 0."""
        (folder / "alarms.json").write_text(json.dumps(self.raised, indent=2))
        if mlflow.active_run():
            mlflow.log_metrics({f"alarm/{name}": 0.0 for name in ALARMS if name not in self.raised})
