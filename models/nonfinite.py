"""Stop a training stage at the first non-finite loss, gradient norm or weight, before a bad checkpoint is written.

    trainer.add_callback(NonFiniteGuard("final_rl"))   # or callbacks=[..., NonFiniteGuard(name)]

Checked where the values are on the host anyway or where a checkpoint is about to be written, so the steps in
between never wait for the GPU: the logged loss and gradient norm at each logging step; every weight before a
checkpoint is saved (the Trainer saves right after on_step_end) and once when training ends (before the stage
writes its model). A failure raises NonFiniteTraining with a one-line reason naming the step; the stage process
then publishes nothing (models/run_stage.py drops its work folder) and the checkpoints already written, all checked
finite, stay the last good ones.
"""

from __future__ import annotations

import math

import torch
from transformers import TrainerCallback

WATCHED = ("loss", "grad_norm")


class NonFiniteTraining(RuntimeError):
    """A loss, gradient norm or weight became NaN or infinite."""


def nonfinite_parameter(model) -> str | None:
    """The name of the first parameter holding a NaN or inf, or None (one host sync for the whole model)."""
    named = [(n, p) for n, p in model.named_parameters() if p.is_floating_point()]
    if not named:
        return None
    finite = torch.stack([torch.isfinite(p.detach()).all() for _, p in named]).cpu()
    bad = (~finite).nonzero()
    return named[int(bad[0])][0] if len(bad) else None


class NonFiniteGuard(TrainerCallback):
    """Raises NonFiniteTraining at the first non-finite logged loss or gradient norm, or non-finite weight before a
    save and at the end of training."""

    def __init__(self, stage: str = "training"):
        self.stage = stage

    def _stop(self, what: str, step: int) -> None:
        raise NonFiniteTraining(f"{self.stage}: {what} at step {step}; stopped, no checkpoint or output written")

    def on_log(self, args, state, control, logs=None, **kwargs):
        for key in WATCHED:
            value = (logs or {}).get(key)
            if isinstance(value, (int, float)) and not math.isfinite(value):
                self._stop(f"non-finite {key} ({value}) logged", state.global_step)

    def on_step_end(self, args, state, control, model=None, **kwargs):
        if control.should_save and model is not None:
            self._check_weights(model, state.global_step, "before saving a checkpoint")

    def on_train_end(self, args, state, control, model=None, **kwargs):
        if model is not None:
            self._check_weights(model, state.global_step, "at the end of training")

    def _check_weights(self, model, step: int, when: str) -> None:
        name = nonfinite_parameter(model)
        if name is not None:
            self._stop(f"non-finite weight {name} {when}", step)
