"""The SFT stages' trainer: per-layer compilation trains the same model as eager TRL (same losses, weights move); an
exploding gradient norm stops it with its last good checkpoint kept."""

from __future__ import annotations

import pytest
import torch
from transformers import TrainerCallback

from models.factory import load_model
from models.guard_config import GradNormGuardConfig
from models.sft import compile_decoder_layers, sft_trainer
from models.training_guards import TrainingStopped

ROWS = [
    {"prompt": f"Q:{a}+{b}\nA:", "completion": f"<think>{a}+{b}</think><answer>{a + b}</answer>"}
    for a in range(4)
    for b in range(4)
]
KNOBS = dict(
    max_steps=3,
    per_device_train_batch_size=8,
    learning_rate=1e-3,
    logging_steps=1,
    save_strategy="no",
    disable_tqdm=True,
)


def _train(tmp_path, compile_layers: bool, activation_memory_budget: float = 1.0, **knobs) -> tuple[list[float], dict]:
    model, tokenizer = load_model("builtin:tiny_base", "float32")
    trainer = sft_trainer(
        model,
        tokenizer,
        ROWS,
        KNOBS | knobs,
        0,
        tmp_path,
        compile_layers,
        activation_memory_budget=activation_memory_budget,
    )
    trainer.train()
    losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
    return losses, {k: v.detach().clone() for k, v in model.state_dict().items()}


def test_compiled_layers_train_like_eager(tmp_path):
    eager_losses, eager_weights = _train(tmp_path / "eager", compile_layers=False)
    compiled_losses, compiled_weights = _train(tmp_path / "compiled", compile_layers=True)
    assert compiled_losses == pytest.approx(eager_losses, rel=1e-4)
    base, _ = load_model("builtin:tiny_base", "float32")
    assert any(not torch.equal(w, base.state_dict()[k]) for k, w in compiled_weights.items())
    assert all(torch.allclose(w, eager_weights[k], atol=1e-4) for k, w in compiled_weights.items())


def test_compile_decoder_layers_compiles_every_layer():
    model, _ = load_model("builtin:tiny_base", "float32")
    assert compile_decoder_layers(model) == model.config.num_hidden_layers


def _bytes_saved_for_backward(activation_memory_budget: float) -> int:
    """Bytes one forward pass keeps for the backward pass, with the decoder layers compiled under this budget."""
    torch._dynamo.reset()  # a fresh compile for each budget, whatever compiled before in this process
    model, tokenizer = load_model("builtin:tiny_base", "float32")
    compile_decoder_layers(model, activation_memory_budget)
    batch = tokenizer([row["prompt"] + row["completion"] for row in ROWS], return_tensors="pt", padding=True)
    model(**batch)  # compiles first
    saved = []

    def keep(tensor):
        saved.append(tensor.numel() * tensor.element_size())
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(keep, lambda tensor: tensor):
        model(**batch)
    return sum(saved)


def test_activation_memory_budget_keeps_fewer_activations_and_trains_the_same(tmp_path):
    kept_all, kept_budget = _bytes_saved_for_backward(1.0), _bytes_saved_for_backward(0.05)
    assert kept_budget < 0.5 * kept_all
    full_losses, full_weights = _train(tmp_path / "full", True, activation_checkpointing=False)
    budget_losses, budget_weights = _train(tmp_path / "budget", True, 0.05, activation_checkpointing=False)
    assert budget_losses == pytest.approx(full_losses, rel=1e-5)
    assert all(torch.allclose(w, full_weights[k], atol=1e-5) for k, w in budget_weights.items())


class ScaleFinalNorm(TrainerCallback):
    """Before optimizer step `at` + 1, the final norm's weight times 1e4: the logits follow, and the gradient norm
    jumps from ~20 to ~1e5 while staying finite (an explosion, not a NaN)."""

    def __init__(self, at: int):
        self.at = at

    def on_step_begin(self, args, state, control, model=None, **kwargs):
        if state.global_step == self.at:
            with torch.no_grad():
                model.model.norm.weight.mul_(1e4)


@pytest.mark.reliability("guard")
def test_an_exploding_gradient_norm_stops_sft_and_keeps_the_last_good_checkpoint(tmp_path):
    model, tokenizer = load_model("builtin:tiny_base", "float32")
    knobs = KNOBS | dict(max_steps=6, save_strategy="steps", save_steps=1)
    trainer = sft_trainer(
        model,
        tokenizer,
        ROWS,
        knobs,
        0,
        tmp_path,
        callbacks=[ScaleFinalNorm(at=3)],
        stage_name="cold_start_sft",
        grad_norm_guard=GradNormGuardConfig(),  # the recipe's defaults
    )
    with pytest.raises(TrainingStopped) as stopped:
        trainer.train()
    message = str(stopped.value)
    assert "\n" not in message
    assert message.startswith("cold_start_sft: gradient norm ")
    assert "exceeds cold_start_sft.guards.training.max_grad_norm=10000 at step 4;" in message
    assert sorted(p.name for p in tmp_path.glob("checkpoint-*")) == ["checkpoint-1", "checkpoint-2", "checkpoint-3"]
