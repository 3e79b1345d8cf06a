"""Fast batched sampling for GRPO rollouts: a static KV cache and a compiled one-token decode step (CUDA graphs
on a GPU), with HF generate's sampling semantics (min_new_tokens, temperature, top-k, top-p, EOS, padding).

HF `generate` spends most of a decode step in Python (logits processors, stopping checks that sync the device,
input preparation): ~20 ms a step uncompiled, ~4.5 ms compiled, for a 0.37B model whose weights take ~0.2 ms to
read (see ../shared/bench/BASELINE.md). Here a step is two compiled calls (model forward, sampling) and a few
tensor ops; the device is synchronised only every `check_every` steps to stop once every sequence has ended.

Same function as `model.generate(do_sample=True, ...)` for the processors it supports; `supports()` says whether a
generation config uses only those (anything else falls back to HF generate).
"""

from __future__ import annotations

import math

import torch

SUPPORTED = {
    "max_new_tokens",
    "min_new_tokens",
    "do_sample",
    "temperature",
    "top_k",
    "top_p",
    "pad_token_id",
    "bos_token_id",
    "eos_token_id",
    "cache_implementation",
}


def supports(generation_kwargs: dict) -> bool:
    """True if every set option is one this sampler implements exactly (min_p, repetition penalty, ... are not)."""
    neutral = {"min_p": None, "repetition_penalty": 1.0, "suppress_tokens": None}
    return all(k in SUPPORTED or v == neutral.get(k, object()) or v is None for k, v in generation_kwargs.items())


def _bucket(length: int, multiple: int = 64) -> int:
    return multiple * math.ceil(length / multiple)


def sample_next(logits: torch.Tensor, temperature: float, top_k: int, top_p: float) -> torch.Tensor:
    """One token per row, as HF's TemperatureLogitsWarper -> TopKLogitsWarper -> TopPLogitsWarper -> multinomial."""
    logits = logits.float() / temperature
    if top_k and top_k < logits.size(-1):
        kth = torch.topk(logits, top_k, dim=-1).values[:, -1:]
        logits = logits.masked_fill(logits < kth, -math.inf)
    if top_p < 1.0:
        sorted_logits, order = torch.sort(logits, descending=False, dim=-1)
        cumulative = sorted_logits.softmax(dim=-1).cumsum(dim=-1)
        remove = cumulative <= (1 - top_p)
        remove[:, -1] = False  # keep at least the most likely token
        logits = logits.masked_fill(remove.scatter(1, order, remove), -math.inf)
    return torch.multinomial(logits.softmax(dim=-1), num_samples=1).squeeze(1)


class StaticSampler:
    """Reusable sampler for one model; caches (and compiled graphs) are kept per (batch, length) bucket."""

    def __init__(self, model, compile_model: bool | None = None, check_every: int = 32):
        # every new cache bucket recompiles the decode step; past dynamo's default limit (8) it would silently fall
        # back to eager decoding, ~5x slower (seen on an H200 when other compiled code shared the process)
        torch._dynamo.config.recompile_limit = max(torch._dynamo.config.recompile_limit, 64)
        self.model = model
        self.check_every = check_every
        self.compile = torch.cuda.is_available() if compile_model is None else compile_model
        self._caches: dict[tuple[int, int], object] = {}
        self._decode = self._compiled(self._decode_step)
        self._sample = self._compiled(sample_next, mode="default")

    def _compiled(self, fn, mode: str = "reduce-overhead"):
        return torch.compile(fn, mode=mode, fullgraph=False, dynamic=False) if self.compile else fn

    def _decode_step(self, tokens, attention_mask, position_ids, cache):
        out = self.model(
            input_ids=tokens, attention_mask=attention_mask, position_ids=position_ids, cache=cache, use_cache=True
        )
        return out.logits[:, -1, :]

    def _cache(self, batch: int, length: int):
        from transformers import StaticCache

        key = (batch, length)
        if key not in self._caches:
            self._caches[key] = StaticCache(config=self.model.config, max_cache_len=length)
        cache = self._caches[key]
        cache.reset()
        return cache

    @torch.no_grad()
    def generate(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        *,
        max_new_tokens: int,
        eos_token_ids: list[int],
        pad_token_id: int,
        temperature: float = 1.0,
        top_k: int = 0,
        top_p: float = 1.0,
        min_new_tokens: int = 0,
    ) -> torch.Tensor:
        """Completion ids (batch, <= max_new_tokens) for left-padded prompts; pad after a row's EOS."""
        batch, prompt_len = input_ids.shape
        device = input_ids.device
        length = _bucket(prompt_len + max_new_tokens)
        cache = self._cache(batch, length)
        mask = torch.zeros(batch, length, dtype=attention_mask.dtype, device=device)
        mask[:, :prompt_len] = attention_mask
        mask[:, prompt_len:] = 1  # future slots: hidden by causality until written
        position = (attention_mask.long().cumsum(-1) - 1).clamp(min=0)
        # prefill runs eager (its shape changes with every batch of prompts); decoding is compiled
        logits = (
            self.model(input_ids=input_ids, attention_mask=mask, position_ids=position, cache=cache, use_cache=True)
            .logits[:, -1, :]
            .contiguous()
        )
        next_position = position[:, -1:] + 1
        eos = torch.tensor(eos_token_ids, device=device)
        finished = torch.zeros(batch, dtype=torch.bool, device=device)
        out = torch.full((batch, max_new_tokens), pad_token_id, dtype=torch.long, device=device)
        for step in range(max_new_tokens):
            if step < min_new_tokens:
                logits[:, eos] = -math.inf
            token = self._sample(logits, temperature, top_k, top_p)
            token = torch.where(finished, torch.full_like(token, pad_token_id), token)
            out[:, step] = token
            finished |= torch.isin(token, eos)
            if step == max_new_tokens - 1 or ((step + 1) % self.check_every == 0 and bool(finished.all())):
                return out[:, : step + 1]
            logits = self._decode(token[:, None], mask, next_position, cache).clone()
            next_position = next_position + 1
        return out
