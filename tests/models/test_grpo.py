"""final_rl's general reward: weighted only in the last N steps, and a reward model from a local folder is
scored through TRL (the same loading path as a hub id)."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from models.factory import load_tokenizer, model_record
from models.grpo import GeneralRewardSchedule
from models.recipe import load_recipe
from models.run_stage import run
from models.sources import source_record
from models.stage_io import stage_spec


@pytest.mark.parametrize(("step", "expected"), [(0, 0.0), (6, 0.0), (7, 0.5), (9, 0.5)])
def test_general_reward_weight_only_in_last_steps(step, expected):
    trainer = SimpleNamespace(reward_weights=torch.tensor([1.0, 1.0, 0.0]))
    schedule = GeneralRewardSchedule(trainer, index=2, weight=0.5, last_steps=3)
    schedule.on_step_begin(SimpleNamespace(logging_steps=1), SimpleNamespace(global_step=step, max_steps=10), None)
    assert trainer.reward_weights.tolist() == [1.0, 1.0, expected]


@pytest.fixture(scope="module")
def reward_model_dir(tmp_path_factory) -> Path:
    """A tiny sequence-classification reward model saved as a Hugging Face folder."""
    from transformers import LlamaConfig, LlamaForSequenceClassification

    folder = tmp_path_factory.mktemp("reward_model")
    tokenizer = load_tokenizer("builtin:tiny_base")
    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=1,
        num_attention_heads=2,
        num_labels=1,
        pad_token_id=tokenizer.pad_token_id,
    )
    LlamaForSequenceClassification(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def test_final_rl_scores_a_reward_model_from_a_local_folder(tmp_path, reward_model_dir, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    from models.tracking import client, ensure_experiment

    run_id = client().create_run(ensure_experiment("test")).info.run_id
    recipe = load_recipe(
        None,
        [
            f"final_rl.general_reward.model={reward_model_dir}",
            "final_rl.general_reward.last_steps=1",
            "final_rl.trl.logging_steps=1",
            "final_rl.trl.max_steps=2",
            "final_rl.trl.num_generations=4",
            "final_rl.trl.per_device_train_batch_size=8",
            "data.rl_pool_size=16",
            "data.cold_start_size=16",
        ],
    )
    base = model_record(recipe.model.base, "base_model")
    inputs = {"model": base, "general": source_record("non_reasoning_data", recipe)}
    spec = stage_spec("final_rl", recipe, inputs, output=str(tmp_path / "final_rl"), mlflow_run_id=run_id)
    record = run(spec)
    assert (tmp_path / "final_rl" / "model.safetensors").is_file()
    assert record.kind == "model"
    metrics = client().get_run(run_id).data.metrics
    assert f"rewards/{reward_model_dir.name}/mean" in metrics
    assert "rewards/accuracy_reward/mean" in metrics
    assert [m.value for m in client().get_metric_history(run_id, "general_reward/weight")] == [0.0, 1.0]


def test_recipe_rejects_a_missing_reward_model_folder(tmp_path):
    from models.recipe import RecipeError

    with pytest.raises(RecipeError, match="final_rl.general_reward.model"):
        load_recipe(None, [f"final_rl.general_reward.model={tmp_path / 'nope'}"])
