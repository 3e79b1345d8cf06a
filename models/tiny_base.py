"""The embedded default base model: a character tokenizer trained locally and a ~0.3M-parameter Llama,
pre-trained on procedural worked arithmetic chains (R1 starts from a pre-trained base; so does the demo).

    python -m models.tiny_base --out models/assets/tiny_base     # `make base-model`: ~5 min on 2 CPU cores

Deterministic for a given seed and torch version; the seed, settings and the weights' fingerprint are written
to build_info.json beside the weights.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import random
import time
from pathlib import Path

import torch

from models.config import DataConfig
from models.data import load_rows, pretraining_text
from models.records import fingerprint_dir

log = logging.getLogger(__name__)
TAGS = ["<think>", "</think>", "<answer>", "</answer>"]
SPECIALS = ["<pad>", "<unk>", "<eos>"]
ARITHMETIC_CHARS = "0123456789+-=,:QA\n"


def build_tokenizer(corpus: list[str]):
    """Character-level tokenizer trained on `corpus`; R1's tags are single, normal (non-special) tokens so that
    decoding with skip_special_tokens keeps them (TRL decodes that way)."""
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.WordLevel(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Split(Regex(r"[\s\S]"), behavior="isolated")
    tok.decoder = decoders.Fuse()
    tok.train_from_iterator([ARITHMETIC_CHARS, *corpus], trainers.WordLevelTrainer(special_tokens=SPECIALS))
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<eos>", pad_token="<pad>", unk_token="<unk>")
    fast.add_tokens(TAGS)
    return fast


def build_model(vocab_size: int, seed: int, hidden: int = 128, layers: int = 2):
    """A tiny Llama (tied embeddings). Llama, not Qwen2: transformers keeps a saved tokenizer as-is for it."""
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=vocab_size,
        hidden_size=hidden,
        intermediate_size=2 * hidden,
        num_hidden_layers=layers,
        num_attention_heads=4,
        num_key_value_heads=4,
        max_position_embeddings=256,
        tie_word_embeddings=True,
        bos_token_id=None,
        eos_token_id=2,
        pad_token_id=0,
    )
    return LlamaForCausalLM(config)


def _batch(tokenizer, rng: random.Random, cfg: DataConfig, extra: list[str], size: int, length: int) -> torch.Tensor:
    """`size` rows of `length` tokens, each a stream of corpus lines (5% non-reasoning text)."""
    rows = []
    for _ in range(size):
        ids: list[int] = []
        while len(ids) < length + 1:
            line = rng.choice(extra) if rng.random() < 0.05 else pretraining_text(rng, cfg)
            ids += tokenizer(line, add_special_tokens=False)["input_ids"]
        rows.append(ids[: length + 1])
    return torch.tensor(rows)


def pretrain(out: Path, seed: int, steps: int, batch: int, length: int, lr: float) -> dict:
    """Train tokenizer and model from scratch and save both to `out` (a Hugging Face folder)."""
    rng = random.Random(seed)
    cfg = DataConfig()
    extra = [r["prompt"] + r["completion"] + "\n" for r in load_rows(cfg.non_reasoning)]
    tokenizer = build_tokenizer(extra + [pretraining_text(rng, cfg) for _ in range(2000)])
    model = build_model(len(tokenizer), seed)
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.01)
    warmup = max(1, steps // 20)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer,
        lambda s: min(1.0, (s + 1) / warmup) * 0.5 * (1 + math.cos(math.pi * min(s, steps) / steps)),
    )
    started = time.time()
    for step in range(steps):
        ids = _batch(tokenizer, rng, cfg, extra, batch, length)
        loss = model(input_ids=ids, labels=ids).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step(), schedule.step(), optimizer.zero_grad()
        if step % 100 == 0 or step == steps - 1:
            log.info("step %d/%d loss %.4f (%.0f s)", step, steps, loss.item(), time.time() - started)
    out.mkdir(parents=True, exist_ok=True)
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    info = {
        "seed": seed,
        "steps": steps,
        "batch": batch,
        "length": length,
        "lr": lr,
        "final_loss": loss.item(),
        "seconds": round(time.time() - started, 1),
        "torch": torch.__version__,
        "parameters": sum(p.numel() for p in model.parameters()),
    }
    info["fingerprint"] = fingerprint_dir(out)
    (out / "build_info.json").write_text(json.dumps(info, indent=2) + "\n")
    return info


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "assets" / "tiny_base")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--steps", type=int, default=1500)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--length", type=int, default=64)
    parser.add_argument("--lr", type=float, default=3e-3)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    torch.set_num_threads(max(1, torch.get_num_threads()))
    info = pretrain(args.out, args.seed, args.steps, args.batch, args.length, args.lr)
    log.info("saved %s: %s", args.out, json.dumps(info))


if __name__ == "__main__":
    main()
