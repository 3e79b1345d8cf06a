"""models/nonfinite.py: a planted non-finite loss stops training with a one-line reason naming the step, and the
checkpoint it would have written is never written (the earlier, finite one stays)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from models.nonfinite import NonFiniteGuard, NonFiniteTraining, nonfinite_parameter


def _rows() -> list[dict]:
    return [{"text": f"{a}{b} " * 20} for a in range(8) for b in range(8)]


def test_sft_stops_at_the_first_nonfinite_step_and_writes_no_bad_checkpoint(tmp_path, tiny_qwen2):
    """AdamW at lr 1e37 moves every weight by up to 1e38 in the first step (lr over its first bias correction,
    0.1): still finite, so checkpoint-1 is written; the second step's forward overflows to inf/NaN."""
    from models.factory import load_model
    from models.sft import sft_trainer

    model, tokenizer = load_model(tiny_qwen2, "float32")
    knobs = dict(max_steps=6, per_device_train_batch_size=8, learning_rate=1e37, lr_scheduler_type="constant")
    knobs |= dict(logging_steps=1, save_strategy="steps", save_steps=1, disable_tqdm=True)
    trainer = sft_trainer(model, tokenizer, _rows(), knobs, 0, tmp_path)
    with pytest.raises(NonFiniteTraining, match=r"at step 2;") as raised:
        trainer.train()
    assert "\n" not in str(raised.value)
    assert sorted(p.name for p in Path(tmp_path).glob("checkpoint-*")) == ["checkpoint-1"]


def test_a_finite_run_passes_and_a_poisoned_weight_is_named():
    model = torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.Linear(2, 1))
    assert nonfinite_parameter(model) is None
    with torch.no_grad():
        model[1].bias.fill_(float("inf"))
    assert nonfinite_parameter(model) == "1.bias"


@pytest.mark.parametrize("logs", [{"loss": float("nan")}, {"grad_norm": float("inf"), "loss": 1.0}])
def test_a_nonfinite_logged_value_stops_with_the_step(logs):
    from types import SimpleNamespace

    with pytest.raises(NonFiniteTraining, match=r"^final_rl: non-finite .* at step 6;"):
        NonFiniteGuard("final_rl").on_log(None, SimpleNamespace(global_step=6), None, logs=logs)
