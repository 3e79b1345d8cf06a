"""GPU test of models/padded_attention.py (`python3 -m pytest -m gpu tests/gpu`): the tiny default's policy on
batches shaped like final_rl's (reasoning prompts of 10-12 tokens left-padded to general prompts of 24-35, then
40 completion tokens) under bf16 autocast, as TRL trains it: with padded SDPA every gradient stays finite over many
random batches (plain SDPA's fused kernels gave NaN gradients on such batches on the H200, issue 12)."""

from __future__ import annotations

import pytest
import torch

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")]


def _final_rl_like_batch(vocab: int, generator: torch.Generator):
    prompt_lens = torch.tensor([10, 12, 24, 35]).repeat_interleave(16)
    width, completion = int(prompt_lens.max()), 40
    ids = torch.randint(3, vocab, (64, width + completion), generator=generator)
    mask = torch.ones_like(ids)
    for row, length in enumerate(prompt_lens.tolist()):
        ids[row, : width - length], mask[row, : width - length] = 0, 0
    return ids.cuda(), mask.cuda()


def test_padded_sdpa_keeps_gradients_finite_on_left_padded_bf16_batches():
    from models.factory import load_model
    from models.padded_attention import use_padded_sdpa

    model, _ = load_model("builtin:tiny_base", "float32")
    assert use_padded_sdpa(model)
    generator = torch.Generator().manual_seed(0)
    for _ in range(20):
        ids, mask = _final_rl_like_batch(model.config.vocab_size, generator)
        with torch.autocast("cuda", dtype=torch.bfloat16):
            logits = model(input_ids=ids, attention_mask=mask).logits[:, -41:-1].float()
        logps = logits.log_softmax(-1).gather(-1, ids[:, -40:, None])[..., 0]
        model.zero_grad()
        (-logps.mean()).backward()
        bad = [n for n, p in model.named_parameters() if not torch.isfinite(p.grad).all()]
        assert not bad, f"non-finite gradients in {bad[:3]}"
