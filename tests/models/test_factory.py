"""models/factory.py: a model folder is checked from its files (no weights read), and a folder with its own
modelling code is accepted only when the recipe says model.trust_remote_code, with a warning."""

from __future__ import annotations

import json
import logging
import shutil

import pytest

from models.data_checks import base_tokenizer
from models.factory import ASSETS, safetensors_problem, shards_problem, source_problem
from models.recipe import RecipeError, load_recipe


@pytest.fixture
def folder(tmp_path):
    copy = tmp_path / "model"
    shutil.copytree(ASSETS / "tiny_base", copy)
    return copy


def test_the_shipped_model_passes_as_a_model_but_not_as_a_reward_model_without_a_head_check(folder):
    assert source_problem("builtin:tiny_base") is None
    assert source_problem(str(folder)) is None
    assert source_problem(str(folder), "reward") is None  # llama has a sequence-classification head
    assert source_problem("some-org/some-model") is None  # a hub id: checked when it loads


def test_a_file_that_is_not_safetensors_is_named(folder):
    weights = folder / "model.safetensors"
    weights.write_bytes(b"\x00" * 16)
    assert "is not a safetensors file" in safetensors_problem(weights)
    weights.write_bytes((2**40).to_bytes(8, "little") + b"{}")
    assert "is not a safetensors file" in safetensors_problem(weights)


def test_a_sharded_checkpoint_missing_a_shard_is_named(folder):
    (folder / "model.safetensors").rename(folder / "model-00001-of-00002.safetensors")
    index = {"weight_map": {"a": "model-00001-of-00002.safetensors", "b": "model-00002-of-00002.safetensors"}}
    (folder / "model.safetensors.index.json").write_text(json.dumps(index))
    assert "lacks the shard model-00002-of-00002.safetensors" in shards_problem(folder)


def test_remote_code_needs_the_recipe_to_allow_it_and_then_warns(folder, caplog):
    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**config, "auto_map": {"AutoModelForCausalLM": "m.M"}}))
    with pytest.raises(RecipeError, match="needs its own modelling code"):
        load_recipe(None, [f"model.base={folder}"])
    recipe = load_recipe(None, [f"model.base={folder}", "model.trust_remote_code=true"])
    with caplog.at_level(logging.WARNING):
        tokenizer, context = base_tokenizer(recipe)
    assert context == config["max_position_embeddings"] and tokenizer.eos_token
    assert "model.trust_remote_code is on" in caplog.text
    assert source_problem(str(folder), remote_code=True) is None
