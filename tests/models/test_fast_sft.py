"""FastSFTTrainer trains exactly like TRL's SFTTrainer: same losses and metrics, padded or not, nll or dft; its
NaN/Inf filter behaves like the Trainer's; where its fast path does not apply it is plain SFTTrainer."""

from __future__ import annotations

import math

import pytest
import torch
from datasets import Dataset
from test_sft import KNOBS  # the SFT test settings: tiny batches, a step logged at a time
from trl import SFTConfig, SFTTrainer

from models.factory import load_model, precision_knobs
from models.fast_sft import FastSFTTrainer, ScoredPositions

PADDED = [  # prompt/completion rows of different lengths: padding and prompt tokens without labels
    {"prompt": f"Q:{a}+{b}" + " x" * (a * 3), "completion": f"<think>{a}+{b}</think><answer>{a + b}</answer>"}
    for a in range(4)
    for b in range(4)
]
UNPADDED = [{"text": f"{a}{b} " * 6} for a in range(4) for b in range(4)]  # all the same length: no padding
LOGGED = ("loss", "grad_norm", "entropy", "mean_token_accuracy", "num_tokens")


def _history(trainer_class, rows, tmp_path, source="builtin:tiny_base", **knobs) -> tuple[list[dict], object]:
    model, tokenizer = load_model(source, "float32")
    args = SFTConfig(
        output_dir=str(tmp_path), report_to="none", seed=0, **precision_knobs({**KNOBS, "max_steps": 4, **knobs})
    )
    trainer = trainer_class(model=model, args=args, train_dataset=Dataset.from_list(rows), processing_class=tokenizer)
    trainer.train()
    return [{k: h[k] for k in LOGGED} for h in trainer.state.log_history if "loss" in h], trainer


@pytest.mark.parametrize(
    ("rows", "on_qwen2", "knobs"),
    [(PADDED, False, {}), (UNPADDED, False, {}), (PADDED, False, {"loss_type": "dft"}), (UNPADDED, True, {})],
    ids=["padded", "unpadded", "dft", "unpadded-mask-dropped"],
)
def test_same_losses_and_metrics_as_sft_trainer(tmp_path, tiny_qwen2, rows, on_qwen2, knobs):
    source = tiny_qwen2 if on_qwen2 else "builtin:tiny_base"
    stock, _ = _history(SFTTrainer, rows, tmp_path / "stock", source, **knobs)
    fast, trainer = _history(FastSFTTrainer, rows, tmp_path / "fast", source, **knobs)
    assert trainer.fast_path_blocker is None
    assert trainer.data_collator.drop_full_masks is on_qwen2
    assert len(fast) == len(stock) == 4
    for ours, theirs in zip(fast, stock, strict=True):
        assert ours == pytest.approx(theirs, rel=1e-5)
        assert all(isinstance(v, float | int) for v in ours.values())  # metrics reach the logs as numbers


def test_collator_lists_labelled_positions_and_drops_masks_without_padding():
    def collator(examples):
        return {"input_ids": torch.ones(2, 4, dtype=torch.long), **examples}

    labels = torch.tensor([[-100, 5, 6, -100], [-100, -100, 7, 8]])
    batch = ScoredPositions(collator, drop_full_masks=True)({"labels": labels, "attention_mask": torch.ones(2, 4)})
    assert batch["scored_positions"].tolist() == [0, 1, 5, 6]  # row b * 4 + t predicts label (b, t + 1)
    assert "attention_mask" not in batch
    padded = torch.tensor([[1, 1, 1, 1], [1, 1, 1, 0]])
    batch = ScoredPositions(collator, drop_full_masks=True)({"labels": labels, "attention_mask": padded})
    assert torch.equal(batch["attention_mask"], padded)


def test_nan_losses_are_filtered_on_the_device_like_the_trainer_does(tmp_path):
    model, tokenizer = load_model("builtin:tiny_base", "float32")
    args = SFTConfig(output_dir=str(tmp_path), use_cpu=True, bf16=False, report_to="none", max_steps=1)
    trainer = FastSFTTrainer(
        model=model, args=args, train_dataset=Dataset.from_list(PADDED), processing_class=tokenizer
    )
    assert trainer.args.logging_nan_inf_filter is False  # the Trainer's host-side filter is off ...
    trainer._tr_loss, trainer._globalstep_last_logged, trainer.state.global_step = torch.tensor(6.0), 0, 2
    trainer.current_gradient_accumulation_steps = 1
    batch = next(iter(trainer.get_train_dataloader()))
    trainer.compute_loss = lambda *a, **k: torch.tensor(math.nan, requires_grad=True)
    assert trainer.training_step(trainer.model, batch).item() == pytest.approx(2.0)  # ... and runs here: 6 / (1 + 2)


def test_falls_back_to_sft_trainer_where_the_fast_path_does_not_apply(tmp_path):
    stock, _ = _history(SFTTrainer, PADDED, tmp_path / "stock", label_smoothing_factor=0.1)
    fast, trainer = _history(FastSFTTrainer, PADDED, tmp_path / "fast", label_smoothing_factor=0.1)
    assert trainer.fast_path_blocker == "a custom loss function or label smoothing"
    assert all(ours == pytest.approx(theirs, rel=1e-5) for ours, theirs in zip(fast, stock, strict=True))
