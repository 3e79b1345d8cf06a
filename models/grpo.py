"""Stages 2 and 5: GRPO with TRL's GRPOTrainer and rule rewards.

reasoning_rl: from the cold-start model, verifiable prompts, rewards accuracy + format + language consistency.
final_rl:     from the supervised_merge model, reasoning + general prompts, the same rewards plus a general
              reward (a reward model through TRL, or a rule-based proxy) weighted only in the last N steps.
"""

from __future__ import annotations

import logging
import random
from pathlib import Path

import mlflow
from transformers import TrainerCallback

from models.alarms import RewardHackingAlarms
from models.config import RlStage, SamplingConfig
from models.data import build_splits, dataset_input, load_rows, problem_source
from models.evaluate import evaluate_model
from models.factory import load_model, precision_knobs, resolve_source
from models.generation import sample
from models.resume import NO_HOOKS, CheckpointHooks, ReferencePolicy, TrainerAttributes, resumed_train, trainer_args
from models.reward_isolation import close_rewards, isolate_rewards, report_failures
from models.rewards import REWARDS, general_quality_reward
from models.stage_io import StageSpec, scratch_dir
from models.tracking import log_curve_png, log_trainer_settings

log = logging.getLogger(__name__)


class GeneralRewardSchedule(TrainerCallback):
    """Keeps the general reward's weight at 0 until the last `last_steps` optimizer steps (R1, stage 5)."""

    def __init__(self, trainer, index: int, weight: float, last_steps: int):
        self.trainer, self.index, self.weight, self.last_steps = trainer, index, weight, last_steps

    def on_step_begin(self, args, state, control, **kwargs):
        on = state.global_step >= state.max_steps - self.last_steps
        self.trainer.reward_weights[self.index] = self.weight if on else 0.0
        if mlflow.active_run() and state.global_step % max(1, args.logging_steps) == 0:
            mlflow.log_metric(
                "general_reward/weight",
                self.trainer.reward_weights[self.index].item(),
                step=state.global_step,
            )


def validation_check(spec: StageSpec, tokenizer):
    """pass@1 of a policy on the validation prompts (held-out bucket, disjoint from evaluation), for the alarms;
    sampled as the stage's alarms.check_sampling says."""
    problems = build_splits(spec.data, spec.seed)["validation"]
    cfg = spec.config.alarms.check_sampling

    def check(model) -> float:
        metrics, _ = evaluate_model(model, tokenizer, problems, cfg, spec.seed, spec.data.language)
        return metrics["eval/pass_at_1"]

    return check


def reasoning_rows(spec: StageSpec) -> list[dict]:
    rl = build_splits(spec.data, spec.seed)["rl"]
    return [{**p.row(), "language": spec.data.language} for p in rl]


def general_rows(source: str, language: str, count: int, seed: int) -> list[dict]:
    """Non-reasoning prompts (nothing to verify: accuracy is None for them)."""
    rows, rng = load_rows(source), random.Random(seed)
    picked = [rng.choice(rows) for _ in range(count)] if rows else []
    return [
        {"prompt": r["prompt"], "answer": None, "entry": None, "task": "general", "language": language} for r in picked
    ]


def _log_samples(model, tokenizer, rows: list[dict], reward_funcs: list, temperature: float, seed: int) -> None:
    """A table of completions from the trained policy with each rule reward (TRL logs these to wandb only);
    `reward_funcs` are plain functions (reward models are scored inside TRL only)."""
    rows = rows[:32]
    cfg = SamplingConfig(num_samples=2, temperature=temperature, top_p=1.0, max_new_tokens=64)
    completions = [c for group in sample(model, tokenizer, [r["prompt"] for r in rows], cfg, seed) for c in group]
    repeated = [r for r in rows for _ in range(cfg.num_samples)]
    columns = {"prompt": [str(r["prompt"]) for r in repeated], "completion": completions}
    kwargs = {k: [r[k] for r in repeated] for k in ("answer", "entry", "language")}
    for func in reward_funcs:
        columns[func.__name__] = func(completions=completions, **kwargs)
    mlflow.log_table(columns, artifact_file="samples/completions.json")


def train_grpo(
    spec: StageSpec,
    stage: RlStage,
    start: str,
    rows: list[dict],
    out: Path,
    general=None,
    hooks: CheckpointHooks = NO_HOOKS,
) -> dict:
    """GRPO from `start` on `rows` (resuming from the last complete checkpoint in the work area, if any); `general` =
    (reward function or model path, weight, last_steps) or None."""
    from datasets import Dataset
    from trl import GRPOConfig, GRPOTrainer

    from models.fast_grpo import FastGRPOTrainer
    from models.nonfinite import NonFiniteGuard
    from models.padded_attention import use_padded_sdpa
    from models.training_guards import TrainingGuards

    funcs = [REWARDS[name] for name in stage.rewards]
    weights = list(stage.rewards.values())
    if general:
        funcs.append(general[0])
        weights.append(0.0)
    funcs = isolate_rewards(funcs, stage.guards.rewards, spec.stage)  # rule rewards: each in its worker process
    rule_funcs = [f for f in funcs if callable(f)]  # before TRL swaps model paths for models in `funcs`
    model, tokenizer = load_model(start, spec.dtype)
    use_padded_sdpa(model)  # left-padded prompts: no fully masked attention row (NaN gradients on a GPU)
    knobs = spec.settings["trl"]
    args = GRPOConfig(
        output_dir=str(scratch_dir(out)),
        report_to=["mlflow"] if mlflow.active_run() else "none",
        seed=spec.seed,
        reward_weights=weights,
        **precision_knobs(knobs | trainer_args(stage.checkpoint_every)),
    )
    trainer_class = FastGRPOTrainer if stage.rollout == "static_cache" else GRPOTrainer
    trainer = trainer_class(
        model=model,
        reward_funcs=funcs,
        args=args,
        train_dataset=Dataset.from_list(rows),
        processing_class=tokenizer,
    )
    log_trainer_settings(args, trainer.model)  # every TRL argument, once, as an artifact (params: the stage's settings)
    if mlflow.active_run():
        prompts = [{"prompt": str(r["prompt"]), "answer": r["answer"], "task": r["task"]} for r in rows]
        source = problem_source(spec.data)
        mlflow.log_input(dataset_input(prompts, f"{spec.stage}_prompts", source), context="training")
    if general:
        trainer.add_callback(GeneralRewardSchedule(trainer, len(funcs) - 1, general[1], general[2]))
    sharded = trainer.is_fsdp_enabled or trainer.is_deepspeed_enabled
    main = trainer.accelerator.is_main_process
    # generating outside TRL's own rollout on sharded weights would hang the ranks: no held-out checks there
    alarm_cfg = stage.alarms.model_copy(update={"check_every": 0}) if sharded else stage.alarms
    alarms = RewardHackingAlarms(alarm_cfg, validation_check(spec, tokenizer))
    trainer.add_callback(alarms)
    trainer.add_callback(NonFiniteGuard(spec.stage))  # stops at a NaN/inf loss, gradient or weight
    guards = TrainingGuards(stage.guards.training, spec.stage, args.max_completion_length)
    trainer.add_callback(guards)  # stops at an exploding gradient, all completions truncated, no reward variance
    counters = TrainerAttributes(trainer, "_step")
    try:
        result = resumed_train(
            trainer, hooks, ReferencePolicy.of(trainer), alarms=alarms, counters=counters, guards=guards
        )
    finally:
        report_failures(rule_funcs, spec.stage)
    trainer.save_model(str(out))
    if main:
        tokenizer.save_pretrained(str(out))
        alarms.write(out)
    if mlflow.active_run():
        reward_keys = ["reward"] + [
            k for k in trainer.state.log_history[0] if k.startswith("rewards/") and k.endswith("/mean")
        ]
        log_curve_png(
            trainer.state.log_history,
            reward_keys,
            f"plots/{spec.stage}_reward_curve.png",
            f"{spec.stage}: rewards",
        )
        if not sharded:
            _log_samples(trainer.model, tokenizer, rows, rule_funcs, args.temperature, spec.seed)
    close_rewards(rule_funcs)
    return result.metrics


def run_reasoning_rl(spec: StageSpec, out: Path, hooks: CheckpointHooks = NO_HOOKS) -> dict:
    return train_grpo(spec, spec.config, spec.inputs["model"].uri, reasoning_rows(spec), out, None, hooks)


def run_final_rl(spec: StageSpec, out: Path, hooks: CheckpointHooks = NO_HOOKS) -> dict:
    stage = spec.config
    reasoning = reasoning_rows(spec)
    count = round(stage.general_prompt_ratio / (1 - stage.general_prompt_ratio) * len(reasoning))
    rows = reasoning + general_rows(spec.inputs["general"].uri, spec.data.language, count, spec.seed)
    random.Random(spec.seed).shuffle(rows)
    reward = resolve_source(stage.general_reward.model) if stage.general_reward.model else general_quality_reward
    log.info(
        "final_rl: %d prompts (%d general), general reward %s in the last %d steps",
        len(rows),
        count,
        stage.general_reward.model or "general_quality_reward (rule proxy)",
        stage.general_reward.last_steps,
    )
    general = (reward, stage.general_reward.weight, stage.general_reward.last_steps)
    return train_grpo(spec, stage, spec.inputs["model"].uri, rows, out, general, hooks)
