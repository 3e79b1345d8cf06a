"""GPU benchmark: our reasoning_rl and cold_start_sft trainers against stock TRL, side by side in one run.

    make bench-gpu                                   # on the GPU machine; writes $OUT/bench.jsonl and prints a table
    python -m models.benchmarks.gpu --out results/ --phases grpo sft [--rounds 2]
    python -m models.benchmarks.gpu --shape qwen2.5-0.5b --lengths 1024 2048 4096 --phases grpo decode sample \
        --arms stock ours --micro-batch 16             # R1's lengths with a real vocabulary, side by side
    python -m models.benchmarks.gpu --shape qwen2.5-0.5b --lengths 4096 2048 1024 --phases grpo --arms stock \
        --stock-steps 1 1 --warm-first-only --micro-batch 16   # stock warmed up once, at the longest length

--shape picks the model (tiny: the 372.6M default below; qwen2.5-0.5b and qwen2.5-1.5b: those models' shapes with
their 151,936-token vocabularies), --lengths the completion lengths (each one a GRPO comparison of its own),
--group the generations per prompt and --completions the completions a step; --micro-batch splits a step's
completions into micro-batches (gradient accumulation; the same in both arms) where a whole step's logits would not
fit. Per GRPO arm it reports tokens/s/GPU end to end ((prompt + completion tokens) a step / step time / GPUs), the
step split into generation, scoring + log-probs and training, the training MFU and peak memory. Phase `decode`
times our decode step against the tokens in the cache beside its bandwidth floor; `sample` compares
models.generation (evaluation, rejection sampling) with HF generate (models/benchmarks/rollout.py).

Both arms get the identical model (a random-init Qwen2 of 372.6M parameters, bf16, tied embeddings of 16,384 rows
for a local byte-level BPE tokenizer), the identical data, group size, completions per step, lengths and
optimizer settings; arms alternate (stock, ours, stock, ours, ...) so drift hits both. GRPO:
8 prompts x 8 generations = 64 completions of exactly 256 tokens a step (min_new_tokens), beta 0, TRL's defaults
otherwise (gradient checkpointing on in both arms). SFT: rows longer than 1,024 tokens truncated to 1,024, batch 32,
logging every 10 steps (TRL's default); ours is the SFT stages' own trainer (models.sft.sft_trainer). Ours differs
only in the levers named in ARMS. Throughput ratios are against stock (TRL's defaults); peak memory is also held
against stock with the same checkpointing (stock_nogc for the arms that turn it off). Results go to MLflow too when
MLFLOW_TRACKING_URI is set. --syncs BENCH:ARM counts the host syncs of a step and where they happen; --profile
BENCH:ARM prints top kernels and the GPU's busy share.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import gc
import json
import math
import os
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

from models.benchmarks.diagnostics import host_syncs, profile_step

MODEL_SHAPE = dict(  # the tiny preset's backbone; --shape replaces it
    hidden_size=896,
    intermediate_size=4864,
    num_hidden_layers=24,
    num_attention_heads=14,
    num_key_value_heads=2,
    max_position_embeddings=4096,
    rope_theta=1_000_000.0,
    rms_norm_eps=1e-6,
    tie_word_embeddings=True,
    hidden_act="silu",
)
SYSTEM = (
    "A conversation between User and Assistant. The Assistant first thinks about the reasoning process and "
    "then gives the answer, as <think> reasoning </think><answer> answer </answer>."
)
QWEN = dict(max_position_embeddings=32768, rope_theta=1_000_000.0, rms_norm_eps=1e-6, hidden_act="silu")
SHAPES = {  # --shape: (backbone, embedding rows); Qwen2.5's own sizes, tied embeddings as theirs are
    "tiny": (dict(MODEL_SHAPE), 16384),
    "qwen2.5-0.5b": (
        dict(hidden_size=896, intermediate_size=4864, num_hidden_layers=24, num_attention_heads=14,
             num_key_value_heads=2, tie_word_embeddings=True, **QWEN),
        151936,
    ),
    "qwen2.5-1.5b": (
        dict(hidden_size=1536, intermediate_size=8960, num_hidden_layers=28, num_attention_heads=12,
             num_key_value_heads=2, tie_word_embeddings=True, **QWEN),
        151936,
    ),
}  # fmt: skip
PEAK_BF16 = 989e12  # H100/H200 SXM dense bf16, datasheet
VOCAB = 16384  # embedding rows: a multiple of 64, as real models pad theirs, so the LM head's GEMMs stay aligned
LENGTH, SEQ = 256, 1024  # completion tokens (GRPO), sequence length (SFT); --tiny shrinks them for a CPU smoke run
COMPLETIONS, GROUP, MICRO = 64, 8, None  # completions a GRPO step, generations per prompt, micro-batch (None: all)
GRPO_ARMS = {"stock": dict(), "ours": dict()}  # same GRPOConfig; ours = FastGRPOTrainer (static-cache rollouts)
# ours*: models.sft.sft_trainer, as the SFT stages build it; compile_layers and activation_memory_budget are its
# options (the SFT stages' fields of the same names), the rest are SFTConfig fields
SFT_ARMS = {
    "stock": dict(),  # TRL defaults: activation (gradient) checkpointing on
    "stock_nogc": dict(activation_checkpointing=False),  # stock without checkpointing: the others' memory reference
    "ours": dict(activation_checkpointing=False, compile_layers=True, dataloader_num_workers=2),
    "ours_gc": dict(compile_layers=True, dataloader_num_workers=2),  # checkpointing kept: stock's memory or less
    "ours_budget": dict(  # between the two: the compiler recomputes the cheapest half of each layer's activations
        activation_checkpointing=False, compile_layers=True, activation_memory_budget=0.5, dataloader_num_workers=2
    ),
    "ours_liger": dict(activation_checkpointing=False, use_liger_kernel=True),  # TRL's own fused-kernel lever
}


def words(rng: random.Random, n: int) -> list[str]:
    syllables = [c + v for c in "bcdfghjklmnprstvwz" for v in ("a", "e", "i", "o", "u", "ai", "ou")]
    return ["".join(rng.choice(syllables) for _ in range(rng.randint(2, 4))) for _ in range(n)]


def problem(rng: random.Random) -> tuple[str, int]:
    a, b = rng.randint(2, 999), rng.randint(2, 999)
    return f"What is {a} + {b}? Think step by step.", a + b


def text_corpus(rng: random.Random, vocab: list[str], docs: int):
    for _ in range(docs):
        question, answer = problem(rng)
        steps = " ".join(f"Step {k}: {' '.join(rng.choices(vocab, k=5))} {rng.randint(1, 999)}." for k in range(8))
        yield f"{SYSTEM}\n{question}\n<think> {steps} </think><answer>{answer}</answer>"


def build_model(folder: Path, seed: int = 0) -> None:
    """Byte-level BPE tokenizer (up to 16,384 tokens, ChatML template) + random-init Qwen2 in bf16 with VOCAB
    embedding rows (the --shape preset's), saved to `folder`."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast, Qwen2Config, Qwen2ForCausalLM

    rng = random.Random(seed)
    vocab = words(rng, 6000)
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    special = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    trainer = trainers.BpeTrainer(
        vocab_size=16384,  # the corpus gives ~14k tokens; a preset's larger vocabulary pads the embedding rows
        special_tokens=special,
        show_progress=False,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tok.train_from_iterator(text_corpus(rng, vocab, 6000), trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|im_end|>", pad_token="<|endoftext|>")
    fast.chat_template = (
        "{% for m in messages %}{{ '<|im_start|>' + m['role'] + '\\n' + m['content'] + "
        "'<|im_end|>\\n' }}{% endfor %}{% if add_generation_prompt %}"
        "{{ '<|im_start|>assistant\\n' }}{% endif %}"
    )
    torch.manual_seed(seed)
    config = Qwen2Config(
        vocab_size=VOCAB,  # the tokenizer's tokens padded as the baseline's model is (13,974 tokens), or a preset's
        bos_token_id=None,
        eos_token_id=fast.eos_token_id,
        pad_token_id=fast.pad_token_id,
        **MODEL_SHAPE,
    )
    Qwen2ForCausalLM(config).to(torch.bfloat16).save_pretrained(folder)
    fast.save_pretrained(folder)


def grpo_rows(n: int, seed: int = 1) -> list[dict]:
    rng = random.Random(seed)
    rows = []
    for _ in range(n):
        question, answer = problem(rng)
        rows.append(
            {
                "prompt": [{"role": "system", "content": SYSTEM}, {"role": "user", "content": question}],
                "answer": str(answer),
            }
        )
    return rows


def sft_rows(n: int, seed: int = 2) -> list[dict]:
    rng = random.Random(seed)
    vocab = words(rng, 6000)
    rows = []
    for _ in range(n):
        question, answer = problem(rng)
        body = " ".join(rng.choices(vocab, k=1400))  # > 1,024 tokens: every row is truncated to max_length
        rows.append(
            {
                "messages": [
                    {"role": "user", "content": question},
                    {"role": "assistant", "content": f"<think> {body} </think><answer>{answer}</answer>"},
                ]
            }
        )
    return rows


def format_reward(completions, **_) -> list[float]:
    return [float("<answer>" in c[-1]["content"]) for c in completions]


class StepClock:
    """Wall time of the optimizer steps after `warmup`. every_step=True synchronises the device at each step end
    (per-step times); otherwise only where the measured window starts and ends, as a training run goes: a sync every
    step would leave the device idle while the host fetches and launches the next step, in both arms."""

    def __init__(self, warmup: int, every_step: bool = True):
        from transformers import TrainerCallback

        clock = self
        self.ends: list[float] = []
        self.warmup = warmup

        class Callback(TrainerCallback):
            def on_step_end(self, args, state, control, **kwargs):
                if every_step or state.global_step in (warmup, state.max_steps):
                    _sync()
                clock.ends.append(time.perf_counter())

            def on_train_begin(self, args, state, control, **kwargs):
                _sync()
                clock.ends.append(time.perf_counter())

        self.callback = Callback()

    def steps(self) -> list[float]:
        deltas = [b - a for a, b in zip(self.ends, self.ends[1:], strict=False)]
        return deltas[self.warmup :]

    def window_mean(self) -> float:
        return (self.ends[-1] - self.ends[self.warmup]) / (len(self.ends) - 1 - self.warmup)


class HoldAfterWarmup:
    """At the end of the last warm-up step, wait until `path` exists (--hold-file): other work sharing the GPU
    during the warm-up (a one-off cost, e.g. attention plans built per new length) finishes before the measured
    steps begin. Listed before the StepClock's callback, so the wait falls outside every measured step."""

    def __init__(self, path: Path, warmup: int, poll_s: float = 1.0):
        from transformers import TrainerCallback

        hold = self
        self.waited_s = 0.0

        class Callback(TrainerCallback):
            def on_step_end(self, args, state, control, **kwargs):
                if state.global_step == warmup:
                    start = time.perf_counter()
                    while not Path(path).exists():
                        time.sleep(poll_s)
                    hold.waited_s = time.perf_counter() - start

        self.callback = Callback()


CUDA = torch.cuda.is_available()
HOLD_FILE: Path | None = None  # --hold-file


def _sync() -> None:
    if CUDA:
        torch.cuda.synchronize()


def _free() -> None:
    torch._dynamo.reset()  # each arm is a fresh training run: no compiled code carried over from the last one
    gc.collect()
    if CUDA:
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()


def _allocated() -> int:
    return torch.cuda.memory_allocated() if CUDA else 0


def _peak_gib() -> float:
    return torch.cuda.max_memory_allocated() / 2**30 if CUDA else float("nan")


def _peak_requested_gib() -> float:
    """Peak of the bytes tensors asked for, without the allocator's block rounding (which depends on history)."""
    return torch.cuda.memory_stats()["requested_bytes.all.peak"] / 2**30 if CUDA else float("nan")


def _precision() -> dict:
    """bf16 on the GPU; a CPU smoke run (--tiny) trains in fp32."""
    return dict(bf16=True, model_init_kwargs={"dtype": "bfloat16"}) if CUDA else dict(bf16=False, use_cpu=True)


def _timing(clock: StepClock, trainer, window: bool = False) -> tuple[dict, float, int]:
    """(step-time fields of a result, step seconds, parameter count) after the warm-up steps: the median step, or
    with `window` the mean over the measured window (synchronised only at its ends)."""
    steps = clock.steps()
    step = clock.window_mean() if window else statistics.median(steps)
    params = sum(p.numel() for p in trainer.model.parameters())
    return dict(steps=len(steps), step_s=step, step_s_all=steps), step, params


@contextlib.contextmanager
def restored_modeling_modules():
    """Put transformers' modeling modules back as they were once the block (or decorated arm) ends: Liger
    (use_liger_kernel) patches them in place when a trainer is built (Qwen2's RMSNorm, MLP and rotary), which
    handed its kernels to every later arm, stock's included (measured: stock SFT 92k -> 133k tokens/s)."""
    import transformers.models.qwen2.modeling_qwen2  # noqa: F401 - imported, so that its state is saved too

    saved = {
        module: dict(vars(module))
        for name, module in list(sys.modules.items())
        if name.startswith("transformers.models.") and ".modeling_" in name
    }
    try:
        yield
    finally:
        for module, attributes in saved.items():
            for key, value in attributes.items():
                if vars(module).get(key) is not value:
                    setattr(module, key, value)


@restored_modeling_modules()
def run_grpo(model_dir: Path, arm: str, warmup: int, measured: int, callbacks=()) -> dict:
    from datasets import Dataset
    from transformers import AutoTokenizer
    from trl import GRPOConfig, GRPOTrainer

    from models.fast_grpo import FastGRPOTrainer

    _free()
    micro = MICRO or COMPLETIONS
    args = GRPOConfig(
        output_dir=tempfile.mkdtemp(),
        per_device_train_batch_size=micro,
        gradient_accumulation_steps=COMPLETIONS // micro,
        num_generations=GROUP,
        max_completion_length=LENGTH,
        generation_kwargs={"min_new_tokens": LENGTH},
        beta=0.0,
        max_steps=warmup + measured,
        logging_steps=1,
        save_strategy="no",
        report_to="none",
        disable_tqdm=True,
        seed=0,
        **_precision(),
        **GRPO_ARMS[arm],
    )
    clock = StepClock(warmup)
    held = [HoldAfterWarmup(HOLD_FILE, warmup).callback] if HOLD_FILE and warmup else []
    cls = GRPOTrainer if arm == "stock" else FastGRPOTrainer
    trainer = cls(
        model=str(model_dir),
        reward_funcs=[format_reward],
        args=args,
        train_dataset=Dataset.from_list(grpo_rows(2000)),
        processing_class=AutoTokenizer.from_pretrained(model_dir, padding_side="left"),
        callbacks=[*held, clock.callback, *callbacks],  # the hold first: its wait ends before the clock reads
    )
    gen_times, rollout_times, prompt_tokens = _time_rollouts(trainer)
    trainer.train()
    gens, rollouts = gen_times[warmup:], rollout_times[warmup:]
    history = [h for h in trainer.state.log_history if "loss" in h]
    completion_tokens = COMPLETIONS * LENGTH
    timing, step, params = _timing(clock, trainer)
    gen_s, rollout_s = statistics.median(gens), statistics.median(rollouts)
    train_s = step - rollout_s  # forward, backward, optimizer, logging
    tokens = completion_tokens + prompt_tokens[-1]
    result = dict(
        bench="grpo",
        arm=arm,
        length=LENGTH,
        completions=COMPLETIONS,
        **timing,
        gen_s=gen_s,
        score_logprob_s=rollout_s - gen_s,  # rewards, advantages and any old/reference log-probs
        train_s=train_s,
        tokens_per_s_gpu=tokens / step / _gpus(),
        gen_tokens_per_s=completion_tokens / gen_s,
        train_tokens_per_s=completion_tokens / step,
        mfu_train=8 * params * tokens / train_s / PEAK_BF16,  # 6 N a token, + 2 N for checkpointing's recompute
        peak_gib=_peak_gib(),
        peak_requested_gib=_peak_requested_gib(),
        rollout_held_mib=max(trainer._bench_held[warmup:]) / 2**20,
        peak_gib_after_rollouts=trainer._bench_peaks,
        decode_graphs=getattr(getattr(trainer, "_sampler", None), "use_graphs", None),
        losses=[h["loss"] for h in history],
        rewards=[h.get("reward") for h in history],
    )
    del trainer
    return result


def _time_rollouts(trainer) -> tuple[list[float], list[float], list[int]]:
    """Wrap a GRPO trainer's generation and its whole rollout (generation, rewards, log-probs) with synchronised
    timers; the lists fill as it trains (also the prompt tokens of each generation, and in trainer._bench_held the
    device memory a rollout leaves allocated beyond what was before it)."""
    gen_times, rollout_times, prompt_tokens = [], [], []
    trainer._bench_held, trainer._bench_peaks = [], []
    generate, rollout = trainer._generate_single_turn, trainer._generate_and_score_completions

    def timed_generate(prompt_ids, *a, **k):
        _sync()
        start, before = time.perf_counter(), _allocated()
        out = generate(prompt_ids, *a, **k)
        _sync()
        gen_times.append(time.perf_counter() - start)
        trainer._bench_held.append(_allocated() - before)
        trainer._bench_peaks.append(_peak_gib())  # the arm's peak so far, read after each rollout
        prompt_tokens.append(sum(len(p) for p in prompt_ids))
        return out

    def timed_rollout(*a, **k):
        _sync()
        start = time.perf_counter()
        out = rollout(*a, **k)
        _sync()
        rollout_times.append(time.perf_counter() - start)
        return out

    trainer._generate_single_turn, trainer._generate_and_score_completions = timed_generate, timed_rollout
    return gen_times, rollout_times, prompt_tokens


def _gpus() -> int:
    return int(os.environ.get("WORLD_SIZE", "1"))


@restored_modeling_modules()
def run_sft(model_dir: Path, arm: str, warmup: int, measured: int, callbacks=()) -> dict:
    from datasets import Dataset
    from trl import SFTConfig, SFTTrainer

    from models.factory import load_model
    from models.sft import sft_trainer

    _free()
    knobs = {k: v for k, v in SFT_ARMS[arm].items() if CUDA or k != "use_liger_kernel"}
    compile_layers = knobs.pop("compile_layers", False)
    budget = knobs.pop("activation_memory_budget", 1.0)
    common = dict(
        per_device_train_batch_size=32,
        max_length=SEQ,
        max_steps=warmup + measured,
        logging_steps=10,  # TRL's SFT default
        save_strategy="no",
        disable_tqdm=True,
        learning_rate=1e-5,
    )
    rows = sft_rows(32 * (warmup + measured))
    clock = StepClock(warmup, every_step=False)
    if arm.startswith("stock"):
        args = SFTConfig(output_dir=tempfile.mkdtemp(), report_to="none", seed=0, **common, **knobs, **_precision())
        trainer = SFTTrainer(
            model=str(model_dir),
            args=args,
            train_dataset=Dataset.from_list(rows),
            callbacks=[clock.callback, *callbacks],
        )
    else:  # the SFT stages' own trainer
        model, tokenizer = load_model(str(model_dir), "bfloat16" if CUDA else "float32")
        trainer = sft_trainer(
            model,
            tokenizer,
            rows,
            {**common, **knobs},
            0,
            tempfile.mkdtemp(),
            compile_layers=compile_layers,
            callbacks=[clock.callback, *callbacks],
            activation_memory_budget=budget,
        )
    losses = _record_losses(trainer)
    trainer.train()
    tokens = 32 * SEQ
    timing, step, params = _timing(clock, trainer, window=True)
    result = dict(
        bench="sft",
        arm=arm,
        **timing,
        tokens_per_s=tokens / step,
        mfu=6 * params * tokens / step / PEAK_BF16,
        peak_gib=_peak_gib(),
        peak_requested_gib=_peak_requested_gib(),
        losses=_step_losses(losses, trainer.args.gradient_accumulation_steps),
    )
    del trainer
    return result


def _record_losses(trainer) -> list:
    """Each step's loss, kept on the device (no synchronisation) and read once training is over."""
    losses, compute_loss = [], trainer.compute_loss

    def recorded(*args, **kwargs):
        out = compute_loss(*args, **kwargs)
        losses.append((out[0] if isinstance(out, tuple) else out).detach())
        return out

    trainer.compute_loss = recorded
    return losses


def _step_losses(micro_losses: list, accumulation: int) -> list[float]:
    """Each optimizer step's loss: TRL scales every micro-batch's loss by the whole step's token count, so a step's
    loss is the sum over its micro-batches."""
    values = [float(loss) for loss in micro_losses]
    return [sum(values[i : i + accumulation]) for i in range(0, len(values), accumulation)]


def _ratio(ours: float, stock: float) -> str:
    return f" ({ours / stock:.2f}x)" if stock else ""


RATE = {"grpo": "train_tokens_per_s", "sft": "tokens_per_s"}  # the throughput each ratio is taken on


def compare(results: list[dict]) -> list[dict]:
    """For each bench and non-stock arm: medians of every timed field for it and for stock, the throughput ratio,
    and the largest gap between the first round's loss curves (same seed and data: a lever that changes results
    shows up there)."""
    rows = []
    groups = sorted({(r["bench"], r.get("length")) for r in results if r["bench"] in RATE}, key=str)
    for bench, length in groups:
        rate = RATE[bench]
        ok = [r for r in results if (r["bench"], r.get("length")) == (bench, length) and "error" not in r]
        arms = {a: [r for r in ok if r["arm"] == a] for a in sorted({r["arm"] for r in ok})}
        if "stock" not in arms:
            continue
        med = {
            a: {k: statistics.median(r[k] for r in rs) for k, v in rs[0].items() if isinstance(v, float)}
            for a, rs in arms.items()
        }
        for arm in (a for a in arms if a != "stock"):
            pairs = zip(arms["stock"][0]["losses"], arms[arm][0]["losses"], strict=False)
            reference = memory_reference(bench, arm, arms)
            rows.append(
                dict(
                    bench=bench if sum(g[0] == bench for g in groups) == 1 else f"{bench}_{length}",
                    arm=arm,
                    stock=med["stock"],
                    ours=med[arm],
                    ratio=med[arm][rate] / med["stock"][rate],
                    loss_gap=max((abs(a - b) for a, b in pairs), default=0.0),
                    memory_reference=reference,
                    memory_ratio=med[arm].get("peak_gib", 0.0) / (med[reference].get("peak_gib") or float("nan")),
                )
            )
    return rows


def checkpointed(bench: str, arm: str) -> bool:
    """Whether an arm keeps TRL's default activation checkpointing (every GRPO arm does)."""
    return bench.startswith("grpo") or SFT_ARMS[arm].get("activation_checkpointing", True)


def memory_reference(bench: str, arm: str, arms: dict) -> str:
    """The stock arm an arm's peak memory is held against: stock with the same batch and the same checkpointing
    (stock_nogc for an arm without it, when that arm ran), else stock."""
    stocks = [a for a in arms if a.startswith("stock") and a != arm]
    return next((a for a in stocks if checkpointed(bench, a) == checkpointed(bench, arm)), "stock")


def table(rows: list[dict]) -> str:
    lines = []
    for row in rows:
        bench, arm, stock, ours = row["bench"], row["arm"], row["stock"], row["ours"]
        lines.append(f"{bench} loss curves stock vs {arm}: max |difference| {row['loss_gap']:.2e} over the first round")
        pairs = [f"{k} {stock[k]:.4g} -> {ours[k]:.4g}{_ratio(ours[k], stock[k])}" for k in stock if k in ours]
        lines.append(f"{bench} stock -> {arm}: " + " | ".join(pairs))
        lines.append(f"{bench} THROUGHPUT RATIO {arm}/stock = {row['ratio']:.2f}x")
        reference, memory = row["memory_reference"], row["memory_ratio"]
        memory_text = f"{memory:.2f}x" if math.isfinite(memory) else "n/a (no peak memory without a GPU)"
        lines.append(f"{bench} PEAK MEMORY RATIO {arm}/{reference} = {memory_text} ({_mode(bench, arm, reference)})")
    return "\n".join(lines)


def _mode(bench: str, arm: str, reference: str) -> str:
    if checkpointed(bench, arm) == checkpointed(bench, reference):
        return "same batch, same activation checkpointing"
    with_it, without = (arm, reference) if checkpointed(bench, arm) else (reference, arm)
    return f"same batch; {with_it} checkpoints activations, {without} does not"


def log_to_mlflow(results: list[dict], rows: list[dict], summary: str) -> None:
    """One MLflow run: every result as an artifact, each arm's medians and ratio to stock as metrics."""
    import mlflow

    from models.tracking import ensure_experiment

    with mlflow.start_run(run_name="bench-gpu", experiment_id=ensure_experiment("bench-gpu")):
        mlflow.log_dict({"results": results}, "bench.json")
        mlflow.log_text(summary, "summary.txt")
        for row in rows:
            prefix = f"{row['bench']}/{row['arm']}"
            values = {f"{prefix}/{k}": v for k, v in row["ours"].items() if math.isfinite(v)}
            values |= {f"{row['bench']}/stock/{k}": v for k, v in row["stock"].items() if math.isfinite(v)}
            values |= {f"{prefix}/ratio": row["ratio"], f"{prefix}/loss_gap": row["loss_gap"]}
            if math.isfinite(row["memory_ratio"]):
                values[f"{prefix}/memory_ratio"] = row["memory_ratio"]
            mlflow.log_metrics(values)


def _arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path(os.environ.get("OUT", "bench-results")))
    phases = ["grpo", "sft", "decode", "sample"]
    parser.add_argument("--phases", nargs="+", default=["grpo", "sft"], choices=phases)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument(
        "--arms", nargs="+", default=["stock", "stock_nogc", "ours", "ours_gc", "ours_budget", "ours_liger"]
    )
    parser.add_argument("--shape", default="tiny", choices=sorted(SHAPES), help="model shape and vocabulary")
    parser.add_argument("--lengths", nargs="+", type=int, default=[LENGTH], help="GRPO completion lengths")
    parser.add_argument("--group", type=int, default=GROUP, help="GRPO generations per prompt")
    parser.add_argument("--completions", type=int, default=COMPLETIONS, help="GRPO completions a step")
    parser.add_argument("--micro-batch", type=int, default=None, help="GRPO completions a micro-batch (default: all)")
    parser.add_argument("--steps", type=int, nargs=2, default=None, metavar=("WARMUP", "MEASURED"), help="GRPO steps")
    parser.add_argument("--stock-steps", type=int, nargs=2, default=None, metavar=("WARMUP", "MEASURED"))
    parser.add_argument(
        "--hold-file",
        type=Path,
        default=None,
        help="GRPO: after the warm-up steps, wait until this file exists before the measured steps (other work on "
        "the GPU during the warm-up finishes first; the wait is outside every timing)",
    )
    parser.add_argument(
        "--warm-first-only",
        action="store_true",
        help="GRPO warm-up steps only at the first of --lengths (put the longest first: the later, shorter lengths "
        "reuse the process's kernels and attention plans; each step's time is in step_s_all to check)",
    )
    parser.add_argument(
        "--decode-variants", nargs="+", default=["prefix", "full"], choices=["prefix", "full"], help="phase decode"
    )
    parser.add_argument("--sample-prompts", type=int, default=16, help="phase sample: prompts (x k=4 samples)")
    parser.add_argument("--profile", nargs="*", default=[], metavar="BENCH:ARM", help="e.g. sft:ours grpo:ours")
    parser.add_argument("--syncs", nargs="*", default=[], metavar="BENCH:ARM", help="count host syncs a step")
    parser.add_argument("--tiny", action="store_true", help="a tiny model and lengths: a smoke run of the code paths")
    args = parser.parse_args()
    known = {"grpo": GRPO_ARMS, "sft": SFT_ARMS}
    unknown = [a for a in args.arms if not any(a in arms for arms in known.values())]
    if unknown:
        parser.error(f"unknown arm '{unknown[0]}'; choose from {', '.join(sorted({*GRPO_ARMS, *SFT_ARMS}))}")
    for option, specs in (("--profile", args.profile), ("--syncs", args.syncs)):
        for spec in specs:
            bench, _, arm = spec.partition(":")
            if arm not in known.get(bench, {}):
                parser.error(f"{option} '{spec}': give BENCH:ARM, e.g. sft:ours or grpo:ours")
    if args.rounds < 1:
        parser.error("--rounds must be at least 1")
    if args.completions % args.group or args.completions % (args.micro_batch or args.completions):
        parser.error("--completions must be a multiple of --group and of --micro-batch")
    return args


def _configure(args: argparse.Namespace) -> dict:
    """Set the module's shape and GRPO globals from the arguments; (warm-up, measured) steps per phase and arm."""
    global LENGTH, SEQ, VOCAB, COMPLETIONS, GROUP, MICRO, HOLD_FILE
    backbone, VOCAB = SHAPES[args.shape]
    HOLD_FILE = args.hold_file
    MODEL_SHAPE.clear()
    MODEL_SHAPE.update(backbone)
    COMPLETIONS, GROUP, MICRO = args.completions, args.group, args.micro_batch
    steps = {"grpo": (2, 4), "sft": (3, 8)}
    if args.tiny:
        LENGTH, SEQ = 8, 64
        args.lengths = [LENGTH]
        MODEL_SHAPE.update(
            hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2
        )
        steps = {"grpo": (1, 1), "sft": (1, 2)}
    steps["grpo"] = tuple(args.steps or steps["grpo"])
    steps["grpo_stock"] = tuple(args.stock_steps or steps["grpo"])
    return steps


def _record(args, result: dict, round_: int) -> dict:
    result["round"] = round_
    print("RESULT", json.dumps(result), flush=True)
    with (args.out / "bench.jsonl").open("a") as f:
        f.write(json.dumps(result) + "\n")
    return result


def _attempt(phase: str, arm: str, run) -> dict:
    try:
        return run()
    except Exception as err:  # noqa: BLE001 - a failed arm is reported, the others still run
        return dict(
            bench=phase,
            arm=arm,
            length=LENGTH if phase == "grpo" else None,
            error=f"{type(err).__name__}: {err}"[:1500],
        )


def _trainer_rounds(args, model_dir: Path, steps: dict) -> list[dict]:
    """GRPO at each length and SFT, stock and ours alternating inside every round."""
    global LENGTH
    results = []
    runners = {"grpo": run_grpo, "sft": run_sft}
    for round_ in range(args.rounds):
        for phase in (p for p in args.phases if p in runners):
            for length in args.lengths if phase == "grpo" else [None]:
                LENGTH = length or LENGTH
                for arm in (a for a in args.arms if a in (GRPO_ARMS if phase == "grpo" else SFT_ARMS)):
                    key = "grpo_stock" if phase == "grpo" and arm == "stock" else phase
                    warmup, measured = steps[key]
                    if phase == "grpo" and args.warm_first_only and length != args.lengths[0]:
                        warmup = 0
                    run = functools.partial(runners[phase], model_dir, arm, warmup, measured)
                    results.append(_record(args, _attempt(phase, arm, run), round_))
    return results


def _rollout_phases(args, model_dir: Path) -> list[dict]:
    """Phases decode (ours with prefix attention and over the whole cache) and sample (ours vs HF generate)."""
    from models.benchmarks import rollout

    results = []
    if "decode" in args.phases:
        bandwidth = rollout.copy_bandwidth()
        results.append(_record(args, dict(bench="copy", arm="device", bytes_per_s=bandwidth), 0))
        longest = max(args.lengths)
        lengths = {"prefix": longest, "full": min(longest, 2048)}  # the whole-cache attention only to 2k: slow
        for variant, length in ((v, lengths[v]) for v in args.decode_variants):
            run = functools.partial(rollout.decode_curve, model_dir, COMPLETIONS, length, variant, bandwidth)
            results.append(_record(args, _attempt("decode", variant, run), 0))
            _free()
    if "sample" in args.phases:
        length = 1024 if 1024 in args.lengths else max(args.lengths)
        for fast in (False, True):
            run = functools.partial(rollout.sampling_throughput, model_dir, args.sample_prompts, 4, length, fast)
            results.append(_record(args, _attempt("sample", "ours" if fast else "hf_generate", run), 0))
            _free()
    return results


def rollout_table(results: list[dict]) -> str:
    """Decode step against length (ours, the old full-cache attention, the bandwidth floor) and sampling rates."""
    lines = []
    for r in (r for r in results if r["bench"] == "decode" and "error" not in r):
        every = max(1, len(r["step_ms"]) // 8)
        points = [
            f"{t}: {ms:.2f} ms (floor {f:.2f})"
            for t, ms, f in list(zip(r["at_tokens"], r["step_ms"], r["floor_ms"], strict=True))[::every]
        ]
        lines.append(f"decode {r['arm']} batch {r['batch']}, ms a step at N cached tokens: " + "; ".join(points))
    rates = {r["arm"]: r for r in results if r["bench"] == "sample" and "error" not in r}
    if {"ours", "hf_generate"} <= rates.keys():
        ours, hf = rates["ours"]["gen_tokens_per_s"], rates["hf_generate"]["gen_tokens_per_s"]
        lines.append(f"sample generated tokens/s: hf_generate {hf:.0f} -> ours {ours:.0f} ({ours / hf:.2f}x)")
    return "\n".join(lines)


def main() -> None:
    args = _arguments()
    args.out.mkdir(parents=True, exist_ok=True)
    steps = _configure(args)
    model_dir = Path(tempfile.mkdtemp()) / f"qwen2-{args.shape}"
    build_model(model_dir)
    results = _trainer_rounds(args, model_dir, steps)
    results += _rollout_phases(args, model_dir)
    rows = compare(results)
    summary = "\n".join(filter(None, [table(rows), rollout_table(results)]))
    print(summary)
    (args.out / "summary.txt").write_text(summary + "\n")
    runners = {"grpo": run_grpo, "sft": run_sft}
    for spec in args.syncs:
        bench, arm = spec.split(":")
        print(host_syncs(runners[bench], model_dir, bench, arm, args.out), flush=True)
    for spec in args.profile:
        bench, arm = spec.split(":")
        print(profile_step(runners[bench], model_dir, bench, arm, args.out), flush=True)
    if os.environ.get("MLFLOW_TRACKING_URI"):
        log_to_mlflow(results, rows, summary)


if __name__ == "__main__":
    main()
