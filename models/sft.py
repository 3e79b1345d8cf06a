"""Stages 1 and 4: supervised fine-tuning with TRL's SFTTrainer on prompt/completion rows in R1's format.

cold_start_sft:   base model + a few hundred long-CoT examples (R1: thousands), a few epochs.
supervised_merge: the BASE model again (by default) + rejection-sampled reasoning data merged with
                  non-reasoning data at the recipe's ratio.
"""

from __future__ import annotations

import json
import logging
import random
from collections.abc import Sequence
from pathlib import Path

import mlflow

from models.config import SftStage
from models.data import build_splits, cold_start_rows, dataset_input, load_rows, rows_source
from models.factory import load_model, precision_knobs
from models.guard_config import GradNormGuardConfig, TrainingGuardConfig
from models.records import local_path
from models.resume import NO_HOOKS, CheckpointHooks, TrainerAttributes, resumed_train, trainer_args
from models.stage_io import StageSpec, scratch_dir
from models.tracking import log_trainer_settings

log = logging.getLogger(__name__)


def sft_trainer(
    model,
    tokenizer,
    rows: list[dict],
    knobs: dict,
    seed: int,
    output_dir: Path,
    compile_layers: bool = False,
    callbacks: Sequence = (),
    activation_memory_budget: float = 1.0,
    stage_name: str = "training",
    grad_norm_guard: GradNormGuardConfig | None = None,
):
    """The SFT stages' trainer (`make bench-gpu` times this same trainer against stock TRL): FastSFTTrainer, TRL's
    SFTTrainer without host syncs in its step, with batches copied to the GPU without blocking; compile_layers:
    compile each decoder layer first (compile_decoder_layers, keeping activation_memory_budget of their
    activations). Stopped with a one-line reason naming stage_name at a NaN/inf loss, gradient or weight, and with
    grad_norm_guard at an exploding gradient norm (models/training_guards.py)."""
    import torch
    from datasets import Dataset
    from trl import SFTConfig

    from models.fast_sft import FastSFTTrainer
    from models.nonfinite import NonFiniteGuard
    from models.training_guards import TrainingGuards

    if compile_layers:
        compile_decoder_layers(model, activation_memory_budget)
    args = SFTConfig(
        output_dir=str(output_dir),
        report_to=["mlflow"] if mlflow.active_run() else "none",
        seed=seed,
        **{"save_strategy": "no"}
        | ({"accelerator_config": {"non_blocking": True}} if torch.cuda.is_available() else {})
        | precision_knobs(knobs),
    )
    guard_cfg = TrainingGuardConfig(**grad_norm_guard.model_dump()) if grad_norm_guard else None
    guards = [TrainingGuards(guard_cfg, stage_name)] if guard_cfg else []  # SFT logs no completion/reward metrics
    log_trainer_settings(args, model)  # every TRL argument, once, as an artifact (the params are the stage's settings)
    return FastSFTTrainer(
        model=model,
        args=args,
        train_dataset=Dataset.from_list(rows),
        processing_class=tokenizer,
        callbacks=[*callbacks, NonFiniteGuard(stage_name), *guards],
    )


def train_sft(
    source: str,
    dtype: str,
    rows: list[dict],
    stage: SftStage,
    knobs: dict,
    seed: int,
    out: Path,
    hooks: CheckpointHooks = NO_HOOKS,
    stage_name: str = "training",
) -> dict:
    """Fine-tune on `rows` (resuming from the last complete checkpoint in the work area, if any) and save model +
    tokenizer to `out`; returns TRL's final training metrics."""
    model, tokenizer = load_model(source, dtype)
    trainer = sft_trainer(
        model,
        tokenizer,
        rows,
        knobs | trainer_args(stage.checkpoint_every),
        seed,
        scratch_dir(out),
        compile_layers=stage.compile_layers,
        activation_memory_budget=stage.activation_memory_budget,
        stage_name=stage_name,
        grad_norm_guard=stage.guards.training,
    )
    result = resumed_train(trainer, hooks, tokens=TrainerAttributes(trainer, "_total_train_tokens"))
    trainer.save_model(str(out))
    tokenizer.save_pretrained(str(out))
    return result.metrics


def compile_decoder_layers(model, activation_memory_budget: float = 1.0) -> int:
    """torch.compile each decoder layer in place (regional compilation: one compiled graph serves every layer, so
    it compiles in seconds, not minutes): fused norm, rotary, SwiGLU and residual kernels. The LM head and loss
    stay TRL's fused, chunked head. Below 1, activation_memory_budget caps the share of a layer's activations kept
    for the backward pass; the partitioner recomputes the cheapest of the rest. Returns how many layers were
    compiled."""
    from transformers.modeling_layers import GradientCheckpointingLayer

    layers = [m for m in model.modules() if isinstance(m, GradientCheckpointingLayer)]
    backend = "inductor" if activation_memory_budget == 1 else _inductor_keeping(activation_memory_budget)
    for layer in layers:
        layer.compile(dynamic=False, backend=backend)
    return len(layers)


def _inductor_keeping(activation_memory_budget: float):
    """Inductor, with AOTAutograd's partitioner held to this activation memory budget while it splits each layer's
    forward from its backward (torch._functorch.config.activation_memory_budget, for these graphs only)."""
    import torch
    from torch._inductor.compile_fx import compile_fx

    def backend(graph, example_inputs):
        with torch._functorch.config.patch(activation_memory_budget=activation_memory_budget):
            return compile_fx(graph, example_inputs)

    return backend


def merged_rows(verified: list[dict], non_reasoning: list[dict], ratio: float, seed: int) -> list[dict]:
    """Verified reasoning rows plus non-reasoning rows drawn (with replacement) to make up `ratio` of the set."""
    rng = random.Random(seed)
    wanted = round(ratio / (1 - ratio) * len(verified)) if verified else len(non_reasoning)
    extra = [rng.choice(non_reasoning) for _ in range(wanted)] if non_reasoning else []
    rows = [{"prompt": r["prompt"], "completion": r["completion"]} for r in verified + extra]
    rng.shuffle(rows)
    return rows


def _log_dataset(rows: list[dict], name: str, source) -> None:
    if mlflow.active_run():
        mlflow.log_input(dataset_input(rows, name, source), context="training")


def run_cold_start(spec: StageSpec, out: Path, hooks: CheckpointHooks = NO_HOOKS) -> dict:
    if "cold_start" in spec.inputs:
        rows = load_rows(spec.inputs["cold_start"].uri)
    else:
        rows = cold_start_rows(build_splits(spec.data, spec.seed)["cold_start"])
    cold_start_file = spec.inputs["cold_start"].uri if "cold_start" in spec.inputs else None
    _log_dataset(rows, "cold_start", rows_source(cold_start_file, spec.data))
    start, knobs = spec.inputs["model"].uri, spec.settings["trl"]
    return train_sft(start, spec.dtype, rows, spec.config, knobs, spec.seed, out, hooks, spec.stage)


def run_supervised_merge(spec: StageSpec, out: Path, hooks: CheckpointHooks = NO_HOOKS) -> dict:
    stage = spec.config
    data_dir = local_path(spec.inputs["data"].uri)
    verified = [json.loads(line) for line in (data_dir / "data.jsonl").read_text().splitlines() if line]
    rows = merged_rows(verified, load_rows(spec.inputs["general"].uri), stage.non_reasoning_ratio, spec.seed)
    _log_dataset(rows, "supervised_merge", str(data_dir))
    if mlflow.active_run():
        mlflow.log_metrics({"data/reasoning_rows": len(verified), "data/total_rows": len(rows)})
    start = spec.inputs["model"].uri
    log.info("supervised_merge: %d rows (%d verified reasoning), starting from %s", len(rows), len(verified), start)
    return train_sft(start, spec.dtype, rows, stage, spec.settings["trl"], spec.seed, out, hooks, spec.stage)
