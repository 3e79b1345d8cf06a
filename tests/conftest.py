"""Shared fixtures: a real (temporary) Prefect API server for the flow tests, the small stage settings the
stage tests train with, a weight comparison and a tiny Qwen2."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="session", autouse=True)
def isolated_state(tmp_path_factory):
    """No test writes into the checkout's .state/: the default state folder of the session is a temporary one
    (a test that needs its own sets R1_STATE_DIR itself)."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("R1_STATE_DIR", str(tmp_path_factory.mktemp("state")))
        yield


@pytest.fixture(scope="session")
def prefect_server():
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=120):
        yield


# A few steps of every stage on the tiny model: enough for GRPO to see reward variance after the cold start.
SMALL_STAGES = [
    "data.eval_size=12",
    "data.cold_start_size=200",
    "data.rl_pool_size=32",
    "evaluation.num_samples=2",
    "reasoning_rl.trl.max_steps=3",
    "reasoning_rl.trl.num_generations=8",
    "reasoning_rl.trl.per_device_train_batch_size=16",
    "rejection_sampling.num_prompts=12",
    "final_rl.trl.max_steps=3",
    "final_rl.trl.num_generations=8",
    "final_rl.trl.per_device_train_batch_size=16",
    "final_rl.general_reward.last_steps=1",
]


@pytest.fixture(scope="session")
def small_stages() -> list[str]:
    """Recipe overrides for a few steps of every stage."""
    return list(SMALL_STAGES)


def _state_dict(uri: str) -> dict:
    from models.factory import load_model

    model, _ = load_model(uri)
    return {k: v.detach().float().cpu() for k, v in model.state_dict().items()}


@pytest.fixture(scope="session")
def weights_of():
    """uri -> the model's weights as float CPU tensors."""
    return _state_dict


@pytest.fixture(scope="session")
def weights_changed():
    """(before uri, after uri) -> whether any weight differs."""
    import torch

    def changed(before: str, after: str) -> bool:
        a, b = _state_dict(before), _state_dict(after)
        return any(not torch.equal(a[k], b[k]) for k in a)

    return changed


@pytest.fixture(scope="session")
def tiny_qwen2(tmp_path_factory) -> str:
    """A tiny random Qwen2 folder (the tiny base model's tokenizer): its backbone takes a mask mapping."""
    import torch
    from transformers import Qwen2Config, Qwen2ForCausalLM

    from models.factory import load_tokenizer

    tokenizer = load_tokenizer("builtin:tiny_base")
    shape = dict(
        hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2
    )
    torch.manual_seed(0)
    folder = tmp_path_factory.mktemp("qwen2")
    Qwen2ForCausalLM(Qwen2Config(vocab_size=len(tokenizer), **shape)).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return str(folder)
