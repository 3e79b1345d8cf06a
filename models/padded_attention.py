"""SDPA for training on left-padded batches: a query row that may attend to nothing (a left pad before a short
prompt) attends to every key instead, so no row of the attention is fully masked.

    use_padded_sdpa(model)   # models/grpo.py, before the policy trains

GRPO batches are prompts left-padded to the longest one, then completions, so each pad's query row is fully
masked. On the H200 (torch 2.11, bf16 autocast) SDPA picks its cuDNN backend, whose backward gives NaN gradients on
such batches while the forward and the loss stay finite; a weight's gradient sums over every position, so the
whole gradient goes NaN. final_rl hit it on all three seeds tried: its general prompts are two to
three times longer than the reasoning prompts, so its pads are long. Replayed on the dumped batches
(models/benchmarks/final_rl_replay.py): NaN with the cuDNN backend, finite with the efficient and math backends,
in fp32, with eager attention and with this padded SDPA (README, issue 12). The pads are never scored, so what
their rows attend to changes neither the loss nor any gradient of a real token; it only keeps the backward finite.
"""

from __future__ import annotations

import torch

PADDED_SDPA = "r1_padded_sdpa"  # the name registered with transformers' attention and mask interfaces


def padded_sdpa_mask(*args, **kwargs):
    """transformers' SDPA mask, with every fully masked query row opened to all keys (boolean masks only; a None
    mask, no padding, stays None)."""
    from transformers.masking_utils import sdpa_mask

    mask = sdpa_mask(*args, **kwargs)
    if not isinstance(mask, torch.Tensor) or mask.dtype != torch.bool:
        return mask
    return mask | ~mask.any(dim=-1, keepdim=True)


def _register() -> None:
    from transformers import AttentionInterface
    from transformers.integrations.sdpa_attention import sdpa_attention_forward
    from transformers.masking_utils import AttentionMaskInterface

    if PADDED_SDPA not in AttentionInterface._global_mapping:
        AttentionInterface.register(PADDED_SDPA, sdpa_attention_forward)
        AttentionMaskInterface.register(PADDED_SDPA, padded_sdpa_mask)


def use_padded_sdpa(model) -> bool:
    """Switch a model that uses SDPA to padded SDPA (its config and sub-configs); True if it was switched. Other
    implementations (eager, flash attention on unpadded rows, ...) are left as they are."""
    configs = {
        id(m.config): m.config
        for m in model.modules()
        if getattr(getattr(m, "config", None), "_attn_implementation_internal", None) == "sdpa"
    }
    if not configs:
        return False
    _register()
    for config in configs.values():
        config._attn_implementation_internal = PADDED_SDPA
    return True
