"""Batched sampling of k completions per prompt (evaluation and rejection sampling share it)."""

from __future__ import annotations

import torch

from models.config import SamplingConfig


def prompt_text(prompt: str | list[dict], tokenizer) -> str:
    """Plain prompts as they are; message lists through the tokenizer's chat template."""
    if isinstance(prompt, str):
        return prompt
    return tokenizer.apply_chat_template(prompt, tokenize=False, add_generation_prompt=True)


@torch.inference_mode()
def sample(model, tokenizer, prompts: list, cfg: SamplingConfig, seed: int) -> list[list[str]]:
    """`cfg.num_samples` completions for each prompt, decoded without special tokens (as TRL decodes them)."""
    torch.manual_seed(seed)
    side, tokenizer.padding_side = tokenizer.padding_side, "left"
    model.eval()
    out: list[list[str]] = []
    for start in range(0, len(prompts), cfg.batch_size):
        texts = [prompt_text(p, tokenizer) for p in prompts[start : start + cfg.batch_size]]
        batch = tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=False).to(model.device)
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
        completions = tokenizer.batch_decode(generated[:, batch["input_ids"].shape[1] :], skip_special_tokens=True)
        out += [completions[i : i + cfg.num_samples] for i in range(0, len(completions), cfg.num_samples)]
    tokenizer.padding_side = side
    return out
