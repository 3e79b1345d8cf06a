"""models/padded_attention.py: fully masked query rows (left pads) are opened to every key and nothing else changes:
on a left-padded batch the loss and every gradient equal plain SDPA's where SDPA's are finite (the CPU)."""

from __future__ import annotations

import torch

from models.padded_attention import PADDED_SDPA, padded_sdpa_mask, use_padded_sdpa


def _left_padded_batch(vocab: int, pads=(0, 5, 9, 14), length: int = 24):
    torch.manual_seed(0)
    ids = torch.randint(3, vocab, (len(pads), length))
    mask = torch.ones_like(ids)
    for row, pad in enumerate(pads):
        ids[row, :pad], mask[row, :pad] = 0, 0
    return ids, mask


def test_only_fully_masked_rows_are_opened():
    ids, mask = _left_padded_batch(50)
    kwargs = dict(batch_size=ids.size(0), q_length=ids.size(1), kv_length=ids.size(1))
    from transformers.masking_utils import sdpa_mask

    plain, padded = (
        sdpa_mask(attention_mask=mask.bool(), **kwargs),
        padded_sdpa_mask(attention_mask=mask.bool(), **kwargs),
    )
    empty = ~plain.any(dim=-1)
    assert empty.sum() == 5 + 9 + 14  # one fully masked row per left pad
    assert padded[empty].all() and torch.equal(padded[~empty], plain[~empty])


def test_loss_and_gradients_equal_plain_sdpa_on_a_left_padded_batch(tiny_qwen2):
    from transformers import AutoModelForCausalLM

    results = []
    for switch in (False, True):
        model = AutoModelForCausalLM.from_pretrained(tiny_qwen2, attn_implementation="sdpa")
        if switch:
            assert use_padded_sdpa(model)
        ids, mask = _left_padded_batch(model.config.vocab_size)
        logits = model(input_ids=ids, attention_mask=mask).logits
        scored = (mask[:, :-1] & mask[:, 1:]).bool()  # real tokens predicting real tokens, as GRPO scores them
        loss = torch.nn.functional.cross_entropy(logits[:, :-1][scored], ids[:, 1:][scored])
        loss.backward()
        results.append((loss.detach(), {n: p.grad for n, p in model.named_parameters()}))
    (plain_loss, plain), (padded_loss, padded) = results
    assert torch.equal(plain_loss, padded_loss)
    assert all(torch.allclose(plain[n], padded[n], rtol=0, atol=1e-7) for n in plain)


def test_other_attention_implementations_are_left_alone(tiny_qwen2):
    from transformers import AutoModelForCausalLM

    eager = AutoModelForCausalLM.from_pretrained(tiny_qwen2, attn_implementation="eager")
    assert not use_padded_sdpa(eager) and eager.config._attn_implementation == "eager"
    sdpa = AutoModelForCausalLM.from_pretrained(tiny_qwen2, attn_implementation="sdpa")
    assert use_padded_sdpa(sdpa) and sdpa.config._attn_implementation == PADDED_SDPA
