"""The static-cache sampler: HF generate's semantics (greedy equality, min_new_tokens, EOS then padding, the
temperature/top-k/top-p distribution) and no KV-cache memory held between calls. The CUDA-graph path is checked
against HF generate in tests/gpu."""

from __future__ import annotations

import pytest
import torch

from models.fast_generation import StaticSampler, sample_next, supports


@pytest.fixture(scope="module")
def tiny():
    from models.factory import load_model

    model, tokenizer = load_model("builtin:tiny_base")
    tokenizer.padding_side = "left"
    prompts = ["Q:1+2+3\nA:", "Q:9-8+7-6\nA:", "hi"]
    batch = tokenizer(prompts, return_tensors="pt", padding=True, add_special_tokens=False)
    return model, batch


def _generate(sampler, batch, **kwargs):
    defaults = dict(max_new_tokens=24, eos_token_ids=[2], pad_token_id=0)
    return sampler.generate(batch["input_ids"], batch["attention_mask"], **{**defaults, **kwargs})


def test_greedy_matches_hf_generate_and_holds_no_cache_memory(tiny):
    model, batch = tiny
    reference = model.generate(**batch, do_sample=False, max_new_tokens=24, pad_token_id=0)
    reference = reference[:, batch["input_ids"].shape[1] :]
    sampler = StaticSampler(model)
    for _ in range(2):  # the second call re-grows the released cache of the same bucket
        assert torch.equal(_generate(sampler, batch, top_k=1), reference)
        (cache,) = sampler._caches.values()
        assert all(layer.keys.untyped_storage().nbytes() == 0 for layer in cache.layers)


def test_min_new_tokens_holds_back_eos_and_rows_pad_after_eos(tiny):
    model, batch = tiny
    sampler = StaticSampler(model)
    common_ids = list(range(3, 40))  # most of the character vocabulary: every row ends quickly once allowed
    torch.manual_seed(0)
    out = _generate(sampler, batch, eos_token_ids=common_ids, min_new_tokens=5, max_new_tokens=64)
    is_eos = torch.isin(out, torch.tensor(common_ids))
    assert not is_eos[:, :5].any()
    first = is_eos.int().argmax(dim=1)
    assert is_eos.any(dim=1).all()
    for row, end in zip(out, first, strict=True):
        assert (row[end + 1 :] == 0).all()
    assert out.shape[1] < 64  # stopped early once every row had ended (checked every 32 steps)


def _peaked_qwen2(vocab: int = 96):
    """A random Qwen2 with grouped-query attention (4 query heads share 2 key/value heads) and peaked logits, so
    greedy decoding has no near-ties over thousands of tokens."""
    from transformers import Qwen2Config, Qwen2ForCausalLM

    torch.manual_seed(0)
    shape = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4)
    config = Qwen2Config(vocab_size=vocab, num_key_value_heads=2, initializer_range=0.2, **shape)
    return Qwen2ForCausalLM(config).eval()


@pytest.mark.parametrize("new_tokens", [1024, pytest.param(2048, marks=pytest.mark.slow)])
def test_greedy_matches_hf_generate_at_length_with_grouped_heads_and_padding(new_tokens):
    """Past several prefix-length buckets (prefix attention over the filled slots only) and with left padding."""
    model = _peaked_qwen2()
    input_ids = torch.tensor([[0, 0, 0, 5, 6, 7], [1, 2, 3, 4, 5, 6]])
    batch = dict(input_ids=input_ids, attention_mask=(input_ids != 0).long())
    kwargs = dict(max_new_tokens=new_tokens, min_new_tokens=new_tokens, pad_token_id=0)
    hf_eos = dict(eos_token_id=1)  # the id the sampler treats as EOS below (held back by min_new_tokens in both)
    reference = model.generate(**batch, do_sample=False, **kwargs, **hf_eos)[:, input_ids.shape[1] :]
    sampler = StaticSampler(model)
    assert sampler.prefix
    assert torch.equal(_generate(sampler, batch, top_k=1, eos_token_ids=[1], **kwargs), reference)


def test_prefix_attention_equals_attention_over_the_whole_cache():
    from models.fast_generation import prefix_attention

    torch.manual_seed(0)
    query, cache = torch.randn(3, 8, 1, 16), torch.randn(2, 3, 2, 300, 16)
    mask = torch.rand(3, 1, 1, 300) < 0.7
    mask[..., 256:] = False  # slots past the filled prefix
    full = torch.nn.functional.scaled_dot_product_attention(
        query, cache[0].repeat_interleave(4, 1), cache[1].repeat_interleave(4, 1), attn_mask=mask
    )
    out, _ = prefix_attention(None, query, cache[0], cache[1], mask[..., :256], scaling=16**-0.5)
    assert torch.allclose(out, full.transpose(1, 2), atol=1e-5)


def _hf_probs(logits: torch.Tensor, temperature: float, top_k: int, top_p: float) -> torch.Tensor:
    from transformers.generation.logits_process import (
        TemperatureLogitsWarper,
        TopKLogitsWarper,
        TopPLogitsWarper,
    )

    for warper in (TemperatureLogitsWarper(temperature), TopKLogitsWarper(top_k), TopPLogitsWarper(top_p)):
        logits = warper(None, logits)
    return logits.softmax(dim=-1)


@pytest.mark.parametrize(("temperature", "top_k", "top_p"), [(1.0, 0, 1.0), (0.7, 5, 1.0), (1.3, 0, 0.8)])
def test_sampling_distribution_matches_hf_warpers(temperature, top_k, top_p):
    torch.manual_seed(0)
    logits = torch.randn(1, 12) * 2
    expected = _hf_probs(logits.clone(), temperature, top_k or 12, top_p)[0]
    draws = 40_000
    tokens = sample_next(logits.expand(draws, -1), temperature, top_k, top_p)
    observed = torch.bincount(tokens, minlength=12).float() / draws
    assert (observed[expected == 0] == 0).all()  # nothing outside the top-k / nucleus is ever drawn
    assert torch.allclose(observed, expected, atol=0.01)


def test_supports_only_what_it_implements():
    assert supports({"max_new_tokens": 8, "temperature": 0.7, "top_p": 0.95, "min_p": None})
    assert not supports({"max_new_tokens": 8, "min_p": 0.1})
    assert not supports({"max_new_tokens": 8, "repetition_penalty": 1.2})
