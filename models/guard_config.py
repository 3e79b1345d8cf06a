"""The stages' guards in the recipe: reward isolation (models/reward_isolation.py) and the training guards that
stop a run going nowhere (models/training_guards.py) in the RL stages; the gradient-norm guard in the SFT stages;
verifier isolation in evaluation and rejection sampling (models/verifier_isolation.py).

    python -m models.recipe flows/recipes/tiny.yaml reasoning_rl.guards.rewards.timeout_s=2   # prints the recipe
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class IsolationConfig(_Strict):
    isolated: bool = Field(
        True,
        description="Run each call (a rule reward, or the answer verifier) in a worker process, where a call that "
        "takes longer than `timeout_s` is killed; off: in the stage process (a failed call still scores 0, or "
        "incorrect, and is counted, but a hung call hangs the stage).",
    )
    timeout_s: float = Field(
        10.0,
        gt=0,
        description="Seconds one sample's call may take; past it the worker is killed and replaced, the sample "
        "scores 0 (a reward) or incorrect (a verdict) and counts as a timeout.",
    )


class RewardIsolationConfig(IsolationConfig):
    max_failed_steps: int = Field(
        1,
        ge=1,
        description="Stop the stage when one reward fails (error, timeout, NaN/inf) on every sample of this many "
        "consecutive steps, instead of training on zeros.",
    )


class GradNormGuardConfig(_Strict):
    max_grad_norm: float = Field(
        1e4,
        ge=0,
        description="Stop when a logged gradient norm (before clipping) exceeds this (0: off).",
    )
    grad_norm_spike: float = Field(
        1000.0,
        ge=0,
        description="Stop when a logged gradient norm exceeds this many times the median of the previous ones, "
        "near-zero norms (steps without reward variance) left out (0: off).",
    )
    spike_history: int = Field(
        10,
        ge=1,
        description="Logged gradient norms the running median needs before the spike test starts.",
    )


class TrainingGuardConfig(GradNormGuardConfig):
    truncated_steps: int = Field(
        50,
        ge=0,
        description="Stop when every completion hit max_completion_length (TRL's completions/clipped_ratio = 1) "
        "for this many consecutive steps (0: off).",
    )
    zero_variance_steps: int = Field(
        50,
        ge=0,
        description="Stop when every group had equal rewards (TRL's frac_reward_zero_std = 1: no gradient) for "
        "this many consecutive steps (0: off).",
    )


class GuardConfig(_Strict):
    rewards: RewardIsolationConfig = Field(
        default_factory=RewardIsolationConfig, description="How reward calls are contained."
    )
    training: TrainingGuardConfig = Field(
        default_factory=TrainingGuardConfig, description="When a run going nowhere is stopped."
    )


class SftGuardConfig(_Strict):
    training: GradNormGuardConfig = Field(
        default_factory=GradNormGuardConfig, description="When an exploding gradient norm stops the stage."
    )


class SamplingGuardConfig(_Strict):
    verifier: IsolationConfig = Field(
        default_factory=IsolationConfig, description="How the answer verifier's calls are contained."
    )
