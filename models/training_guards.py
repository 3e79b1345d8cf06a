"""Stop a GRPO run that is going nowhere (and an SFT run whose gradient norm explodes), with a one-line reason that
names the cause and the fix:

- an exploding gradient norm: a logged norm (before clipping) above guards.training.max_grad_norm, or above
  grad_norm_spike times the median of the norms logged before it (the near-zero norms of steps without reward
  variance, common in GRPO, left out of the median);
- every completion truncated (TRL's completions/clipped_ratio = 1) for truncated_steps consecutive steps;
- every group with equal rewards (TRL's frac_reward_zero_std = 1: advantages 0, no gradient) for
  zero_variance_steps consecutive steps: the silent zero-gradient failure.

    trainer.add_callback(TrainingGuards(stage.guards.training, "final_rl", max_completion_length=40))

Checked in on_log, which the Trainer calls before it saves the step's checkpoint: a stopped run keeps its last good
checkpoint, and the stage process publishes nothing (models/run_stage.py drops its work folder), as a NaN does
(models/nonfinite.py).
"""

from __future__ import annotations

import statistics

from transformers import TrainerCallback

from models.guard_config import TrainingGuardConfig


class TrainingStopped(RuntimeError):
    """A guard stopped the run: exploding gradients, all completions truncated, or no reward variance."""


class TrainingGuards(TrainerCallback):
    def __init__(self, cfg: TrainingGuardConfig, stage: str, max_completion_length: int | None = None):
        self.cfg, self.stage, self.max_completion_length = cfg, stage, max_completion_length
        self.grad_norms: list[float] = []
        self.last_untruncated = self.last_varied = 0

    def on_train_begin(self, args, state, control, **kwargs):
        self.last_untruncated = self.last_varied = state.global_step  # a resumed run counts from where it resumed

    def on_log(self, args, state, control, logs=None, **kwargs):
        logs, step = logs or {}, state.global_step
        if "grad_norm" in logs:
            self._check_grad_norm(float(logs["grad_norm"]), step)
        if "completions/clipped_ratio" in logs:
            if float(logs["completions/clipped_ratio"]) < 1.0:
                self.last_untruncated = step
            self._check_truncation(step)
        if "frac_reward_zero_std" in logs:
            if float(logs["frac_reward_zero_std"]) < 1.0:
                self.last_varied = step
            self._check_variance(step)

    def _stop(self, why: str, step: int, fix: str) -> None:
        raise TrainingStopped(f"{self.stage}: {why} at step {step}; stopped, no output written: {fix}")

    def _check_grad_norm(self, norm: float, step: int) -> None:
        cfg, median = self.cfg, self._running_median()
        self.grad_norms.append(norm)
        fix = f"lower {self.stage}.trl.learning_rate, or check the data (and the rewards, in an RL stage)"
        if cfg.max_grad_norm and norm > cfg.max_grad_norm:
            limit = f"{self.stage}.guards.training.max_grad_norm={cfg.max_grad_norm:g}"
            self._stop(f"gradient norm {norm:.3g} exceeds {limit}", step, fix)
        if cfg.grad_norm_spike and median and norm > cfg.grad_norm_spike * median:
            spike = f"{self.stage}.guards.training.grad_norm_spike={cfg.grad_norm_spike:g}"
            why = f"gradient norm {norm:.3g} is {norm / median:.3g}x the running median {median:.3g} ({spike})"
            self._stop(why, step, fix)

    def _running_median(self) -> float | None:
        """The median of the norms logged so far, leaving out the near-zero ones of steps where every group had
        equal rewards (below 1/1000 of the largest); None until spike_history norms count."""
        if not self.grad_norms:
            return None
        floor = max(self.grad_norms) * 1e-3
        counted = [norm for norm in self.grad_norms if norm >= floor]
        return statistics.median(counted) if len(counted) >= self.cfg.spike_history else None

    def _check_truncation(self, step: int) -> None:
        limit = self.cfg.truncated_steps
        if limit and step - self.last_untruncated >= limit:
            length = f" ({self.max_completion_length} tokens)" if self.max_completion_length else ""
            self._stop(
                f"every completion hit max_completion_length{length} for {step - self.last_untruncated} steps "
                "(completions/clipped_ratio 1), so no completion ends and its rewards say nothing",
                step,
                f"raise {self.stage}.trl.max_completion_length, or check that the start model ends its answers "
                "(EOS token)",
            )

    def _check_variance(self, step: int) -> None:
        limit = self.cfg.zero_variance_steps
        if limit and step - self.last_varied >= limit:
            self._stop(
                f"every group had equal rewards for {step - self.last_varied} steps (frac_reward_zero_std 1), so "
                "every advantage and the policy gradient are zero",
                step,
                "the task is too hard or too easy for the start model (change the data or the start model), or a "
                f"reward is constant (check {self.stage}.rewards and the rewards/<name>/std metrics)",
            )

    def state_dict(self) -> dict:
        """What a checkpoint keeps (models/resume.py restores it): the gradient norms of the running median."""
        return {"grad_norms": self.grad_norms}

    def load_state_dict(self, state: dict) -> None:
        self.grad_norms = list(state["grad_norms"])
