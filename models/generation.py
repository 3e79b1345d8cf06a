"""Batched sampling of k completions per prompt (evaluation and rejection sampling share it).

On a GPU the completions come from models.fast_generation.StaticSampler (static KV cache, CUDA-graph decode), with
HF generate's semantics for what is set here: temperature, top_p, top_k=0, EOS then padding, k samples per prompt
(each prompt repeated k times in a row, as `num_return_sequences` does). `fast=False` is plain HF generate. The
global torch RNG is left as it was: the draws come from a forked RNG seeded with `seed`.
"""

from __future__ import annotations

import torch

from models.config import SamplingConfig
from models.fast_generation import StaticSampler

COMPILE_FROM_PARAMETERS = 100_000_000  # smaller models decode fast enough as graphs of eager kernels; no compile wait


def prompt_text(prompt: str | list[dict], tokenizer) -> str:
    """Plain prompts as they are; message lists through the tokenizer's chat template."""
    if isinstance(prompt, str):
        return prompt
    return tokenizer.apply_chat_template(prompt, tokenize=False, add_generation_prompt=True)


def eos_ids(model, tokenizer) -> list[int]:
    """The ids that end a completion, as HF generate takes them (the generation config's, else the tokenizer's)."""
    eos = getattr(model.generation_config, "eos_token_id", None)
    eos = tokenizer.eos_token_id if eos is None else eos
    return [eos] if isinstance(eos, int) else list(eos)


def sampler_for(model) -> StaticSampler:
    """The model's fast sampler, kept on the model so that later calls reuse its compiled step and caches."""
    sampler = getattr(model, "_r1_sampler", None)
    if sampler is None:
        big = sum(p.numel() for p in model.parameters()) >= COMPILE_FROM_PARAMETERS
        sampler = StaticSampler(model, compile_model=torch.cuda.is_available() and big)
        model._r1_sampler = sampler
    return sampler


def _completions(model, tokenizer, batch: dict, cfg: SamplingConfig, fast: bool) -> torch.Tensor:
    """(prompts x k, <= max_new_tokens) completion ids, each prompt's k rows together; pad after EOS."""
    if not fast:
        generated = model.generate(
            **batch,
            do_sample=True,
            temperature=cfg.temperature,
            top_p=cfg.top_p,
            top_k=0,
            max_new_tokens=cfg.max_new_tokens,
            num_return_sequences=cfg.num_samples,
            pad_token_id=tokenizer.pad_token_id,
        )
        return generated[:, batch["input_ids"].shape[1] :]
    k = cfg.num_samples
    return sampler_for(model).generate(
        batch["input_ids"].repeat_interleave(k, dim=0),
        batch["attention_mask"].repeat_interleave(k, dim=0),
        max_new_tokens=cfg.max_new_tokens,
        eos_token_ids=eos_ids(model, tokenizer),
        pad_token_id=tokenizer.pad_token_id,
        temperature=cfg.temperature,
        top_k=0,
        top_p=cfg.top_p,
    )


def trimmed(completions: torch.Tensor, eos: list[int]) -> list[list[int]]:
    """Each row up to and including its first EOS (the padding after it dropped)."""
    is_eos = torch.isin(completions, torch.tensor(eos, device=completions.device))
    ends = torch.where(is_eos.any(dim=1), is_eos.int().argmax(dim=1) + 1, completions.size(1))
    return [row[:end].tolist() for row, end in zip(completions.cpu(), ends.cpu(), strict=True)]


@torch.inference_mode()
def sample_ids(model, tokenizer, prompts: list, cfg: SamplingConfig, seed: int, fast: bool | None = None) -> list:
    """`cfg.num_samples` completions (token ids, up to and including EOS) for each prompt. `fast` defaults to the
    static-cache sampler on a GPU and HF generate on a CPU."""
    fast = torch.cuda.is_available() if fast is None else fast
    devices = [model.device] if model.device.type == "cuda" else []
    side, tokenizer.padding_side = tokenizer.padding_side, "left"
    was_training = model.training
    model.eval()
    out: list[list[list[int]]] = []
    try:
        with torch.random.fork_rng(devices=devices):
            torch.manual_seed(seed)
            for start in range(0, len(prompts), cfg.batch_size):
                texts = [prompt_text(p, tokenizer) for p in prompts[start : start + cfg.batch_size]]
                batch = tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=False)
                rows = trimmed(
                    _completions(model, tokenizer, batch.to(model.device), cfg, fast), eos_ids(model, tokenizer)
                )
                out += [rows[i : i + cfg.num_samples] for i in range(0, len(rows), cfg.num_samples)]
    finally:
        tokenizer.padding_side = side
        model.train(was_training)
    return out


def sample(model, tokenizer, prompts: list, cfg: SamplingConfig, seed: int, fast: bool | None = None) -> list:
    """`cfg.num_samples` completions for each prompt, decoded without special tokens (as TRL decodes them)."""
    ids = sample_ids(model, tokenizer, prompts, cfg, seed, fast)
    return [tokenizer.batch_decode(rows, skip_special_tokens=True) for rows in ids]
