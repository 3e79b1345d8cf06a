"""Rollout benchmarks for models.benchmarks.gpu (phases `decode` and `sample`).

decode: our sampler's decode step against the number of tokens in the cache, timed with CUDA events every 64
steps of one long generation, beside the bandwidth floor of that step (the weights once plus the keys and values of
the filled cache, over the copy bandwidth measured on the device), with prefix attention (ours) and with attention
over the whole preallocated cache (as before, `full`).

sample: generated tokens/s of models.generation.sample_ids (evaluation and rejection sampling) with the fast
sampler and with HF generate, the same prompts and sampling settings (temperature 0.6, top-p 0.95, k samples).
"""

from __future__ import annotations

import statistics
import time
from pathlib import Path

import torch

MARK_EVERY = 64


def copy_bandwidth(gib: float = 2.0) -> float:
    """Device-to-device copy bandwidth in bytes/s, counting bytes read plus written (median of 10 copies)."""
    src = torch.empty(int(gib * 2**30), dtype=torch.uint8, device="cuda").random_()
    dst = torch.empty_like(src)
    times = []
    for _ in range(13):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        dst.copy_(src)
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end) / 1e3)
    del src, dst
    return 2 * gib * 2**30 / statistics.median(times[3:])


def _model(model_dir: Path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.bfloat16).cuda().eval()
    return model, AutoTokenizer.from_pretrained(model_dir, padding_side="left")


def kv_bytes_per_token(config) -> int:
    """Bytes of keys and values one token adds to the cache over all layers (bf16)."""
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
    return config.num_hidden_layers * 2 * config.num_key_value_heads * head_dim * 2


def decode_floor_s(model, batch: int, tokens: int, bandwidth: float) -> float:
    """Fewest seconds a decode step can take at `tokens` cached tokens a row: every weight read once, every cached
    key and value read once, over the measured copy bandwidth."""
    weights = sum(p.numel() * p.element_size() for p in model.parameters())
    return (weights + batch * tokens * kv_bytes_per_token(model.config)) / bandwidth


def _prompts(tokenizer, batch: int, prompt_len: int = 48) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(0)
    ids = torch.randint(3, len(tokenizer), (batch, prompt_len), generator=generator)
    return ids.cuda(), torch.ones_like(ids).cuda()


def _per_step(marks: list, start: int) -> list[tuple[int, float]]:
    """(tokens decoded at a window's end, ms a step over the window) from (tokens, event) marks."""
    torch.cuda.synchronize()
    windows = zip(marks, marks[1:], strict=False)
    return [(b[0] + start, a[1].elapsed_time(b[1]) / (b[0] - a[0])) for a, b in windows if b[0] > a[0]]


def decode_curve(model_dir: Path, batch: int, length: int, variant: str, bandwidth: float) -> dict:
    """Our decode step's time against the tokens in the cache, one generation of `length` tokens (after one short
    warm-up generation that compiles the step)."""
    from models.fast_generation import StaticSampler

    model, tokenizer = _model(model_dir)
    sampler = StaticSampler(model)
    sampler.prefix = sampler.prefix and variant == "prefix"
    ids, mask = _prompts(tokenizer, batch)
    common = dict(eos_token_ids=[tokenizer.eos_token_id], pad_token_id=tokenizer.pad_token_id)
    sampler.generate(ids, mask, max_new_tokens=2 * MARK_EVERY, min_new_tokens=2 * MARK_EVERY, **common)
    sampler.step_marks, sampler.mark_every = [], MARK_EVERY
    torch.cuda.synchronize()
    start = time.perf_counter()
    sampler.generate(ids, mask, max_new_tokens=length, min_new_tokens=length, **common)
    torch.cuda.synchronize()
    total = time.perf_counter() - start
    steps = _per_step(sampler.step_marks, ids.size(1))
    floors = [decode_floor_s(model, batch, tokens, bandwidth) * 1e3 for tokens, _ in steps]
    result = dict(
        bench="decode",
        arm=variant,
        batch=batch,
        length=length,
        generate_s=total,
        tokens_per_s=batch * length / total,
        step_ms=[round(ms, 4) for _, ms in steps],
        at_tokens=[t for t, _ in steps],
        floor_ms=[round(f, 4) for f in floors],
        peak_gib=torch.cuda.max_memory_allocated() / 2**30,
    )
    del sampler, model
    return result


def sampling_throughput(model_dir: Path, prompts: int, k: int, length: int, fast: bool, rounds: int = 1) -> dict:
    """Generated tokens/s of models.generation.sample_ids over `prompts` prompts x `k` samples of up to `length`
    tokens (R1's evaluation settings). The first call of either path is a warm-up, timed apart: ours compiles
    there, and HF generate pays its one-off costs per new cache length there (on the H200, stock TRL's first GRPO
    step at a new length ran ~55 s slower than the next at 1,024 tokens; a long sampling job pays that once)."""
    from models.config import SamplingConfig
    from models.generation import sample_ids

    model, tokenizer = _model(model_dir)
    texts = [f"What is {i} + {2 * i + 7}? Think step by step." for i in range(prompts)]
    cfg = SamplingConfig(num_samples=k, temperature=0.6, top_p=0.95, max_new_tokens=length, batch_size=prompts)
    timings, tokens = [], 0
    for _ in range(rounds + 1):
        torch.cuda.synchronize()
        start = time.perf_counter()
        ids = sample_ids(model, tokenizer, texts, cfg, seed=0, fast=fast)
        torch.cuda.synchronize()
        timings.append(time.perf_counter() - start)
        tokens = sum(len(row) for rows in ids for row in rows)
    measured = timings[1:]
    result = dict(
        bench="sample",
        arm="ours" if fast else "hf_generate",
        prompts=prompts,
        k=k,
        length=length,
        generated_tokens=tokens,
        first_call_s=timings[0],
        sample_s=statistics.median(measured),
        gen_tokens_per_s=tokens / statistics.median(measured),
        peak_gib=torch.cuda.max_memory_allocated() / 2**30,
    )
    del model
    return result
