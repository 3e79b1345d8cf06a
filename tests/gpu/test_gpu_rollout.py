"""GPU tests of the rollout at R1-like lengths (`python3 -m pytest -m gpu tests/gpu`): the CUDA-graph sampler with
prefix attention decodes HF's greedy tokens at 1k tokens and the model's own greedy continuation at 4k tokens
(past 16 prefix-length graphs), evaluation sampling keeps the global RNG as it was, and the embedded default's
stages at their own settings reach 150 steps of final_rl with finite weights (on the H200 the 6th logged step of
final_rl once had a NaN gradient norm: issue 12; several minutes)."""

from __future__ import annotations

import pytest
import torch

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")]


def _peaked_qwen2():
    """A random fp32 Qwen2 with grouped-query attention whose logits are peaked enough for greedy decoding to have
    no near-ties over thousands of tokens."""
    from transformers import Qwen2Config, Qwen2ForCausalLM

    torch.manual_seed(0)
    shape = dict(hidden_size=128, intermediate_size=256, num_hidden_layers=2, num_attention_heads=8)
    config = Qwen2Config(vocab_size=256, num_key_value_heads=2, initializer_range=0.2, **shape)
    return Qwen2ForCausalLM(config).cuda().eval()


def _batch():
    input_ids = torch.tensor([[0, 0, 0, 5, 6, 7], [1, 2, 3, 4, 5, 6]], device="cuda")
    return input_ids, (input_ids != 0).long()


def _greedy(sampler, input_ids, mask, tokens):
    common = dict(eos_token_ids=[1], pad_token_id=0, top_k=1)
    return sampler.generate(input_ids, mask, max_new_tokens=tokens, min_new_tokens=tokens, **common)


def test_graph_sampler_matches_hf_greedy_at_1k_tokens():
    from models.fast_generation import StaticSampler

    model = _peaked_qwen2()
    input_ids, mask = _batch()
    hf = dict(max_new_tokens=1024, min_new_tokens=1024, pad_token_id=0, eos_token_id=1, do_sample=False)
    reference = model.generate(input_ids=input_ids, attention_mask=mask, **hf)[:, input_ids.shape[1] :]
    sampler = StaticSampler(model, compile_model=True)
    assert torch.equal(_greedy(sampler, input_ids, mask, 1024), reference)
    assert sampler.use_graphs and sampler.prefix


@torch.no_grad()
def test_graph_sampler_decodes_the_models_greedy_continuation_at_4k_tokens():
    """Teacher-forced check (one forward of the model's own attention over prompt + completion): every decoded
    token is the argmax after its prefix, EOS excluded as min_new_tokens excludes it, which is what HF greedy
    decoding produces (HF generate itself would take minutes at 4k)."""
    from models.fast_generation import StaticSampler

    model = _peaked_qwen2()
    input_ids, mask = _batch()
    out = _greedy(StaticSampler(model, compile_model=True), input_ids, mask, 4096)
    full = torch.cat([input_ids, out], dim=1)
    logits = model(full, attention_mask=torch.cat([mask, torch.ones_like(out)], dim=1)).logits
    logits[..., 1] = -torch.inf  # the EOS id, held back by min_new_tokens while decoding
    predicted = logits[:, input_ids.shape[1] - 1 : -1].argmax(-1)
    assert (predicted == out).float().mean() == 1.0


def test_evaluation_sampling_leaves_the_global_cuda_rng_untouched():
    from models.config import SamplingConfig
    from models.factory import load_model
    from models.generation import sample

    model, tokenizer = load_model("builtin:tiny_base")
    torch.cuda.manual_seed(5)
    expected = torch.rand(4, device="cuda")
    torch.cuda.manual_seed(5)
    cfg = SamplingConfig(num_samples=4, max_new_tokens=64)
    first = sample(model, tokenizer, ["Q:1+2+3\nA:", "Q:9-8\nA:"], cfg, seed=0)
    assert torch.equal(torch.rand(4, device="cuda"), expected)
    assert first == sample(model, tokenizer, ["Q:1+2+3\nA:", "Q:9-8\nA:"], cfg, seed=0)


@pytest.mark.slow
def test_embedded_default_final_rl_stays_finite(tmp_path, weights_of):
    """Stages 1-4 of the embedded default as the flow runs them, then final_rl from the supervised merge for 150
    steps; NonFiniteGuard would stop the stage at a non-finite loss or gradient norm (the stage then raises)."""
    from stage_chain import FLOW_CHAIN, run_chain

    from models.recipe import load_recipe

    records = run_chain(load_recipe(None, ["final_rl.trl.max_steps=150"]), tmp_path, chain=FLOW_CHAIN)
    assert all(torch.isfinite(v).all() for v in weights_of(records["final_rl"].uri).values())
