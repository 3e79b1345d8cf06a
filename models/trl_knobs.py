"""TRL knobs of each training stage: the project's defaults, the recipe's values on top, checked against TRL.

The defaults are the embedded tiny pipeline's (2 CPU cores; README, "The embedded default", lists them);
real recipes override them (flows/recipes/). Keys the pipeline owns (where outputs and metrics go) are refused.
"""

from __future__ import annotations

import difflib
import functools
import typing
from typing import Any

from pydantic import TypeAdapter, ValidationError

from models.resume import CHECKPOINT_KNOBS, checkpoint_problem
from models.stages import stage, trained_stages

OWNED_BY_PIPELINE = {"output_dir", "report_to", "run_name", "logging_dir", "push_to_hub", "hub_model_id"}

SFT_DEFAULTS: dict[str, Any] = {
    "num_train_epochs": 2,
    "learning_rate": 2e-3,
    "lr_scheduler_type": "cosine",
    "warmup_steps": 0.05,  # a float below 1 is a share of the steps
    "per_device_train_batch_size": 8,
    "max_length": 128,
    "logging_steps": 5,
    "activation_checkpointing": False,
}
GRPO_DEFAULTS: dict[str, Any] = {
    "learning_rate": 1e-4,
    "lr_scheduler_type": "constant",
    "per_device_train_batch_size": 64,  # completions per step: 4 prompts x 16 samples
    "num_generations": 16,
    "max_completion_length": 40,
    "max_steps": 500,
    "temperature": 1.0,
    "beta": 0.001,  # R1: KL coefficient 0.001 (k3 estimator)
    "loss_type": "grpo",
    "scale_rewards": "group",
    "logging_steps": 5,
    "activation_checkpointing": False,
    "log_completions": False,
}
# per-stage defaults on top of the trainer's
STAGE_DEFAULTS: dict[str, dict[str, Any]] = {"final_rl": {"temperature": 0.7, "max_steps": 600}}


@functools.cache
def _trl_fields(kind: str) -> dict[str, Any]:
    """Field name -> type of TRL's SFTConfig or GRPOConfig (imports only TRL's config modules)."""
    if kind == "sft":
        from trl import SFTConfig as cls
    else:
        from trl import GRPOConfig as cls
    return typing.get_type_hints(cls)


def resolved_knobs(name: str, user_knobs: dict[str, Any]) -> dict[str, Any]:
    """The TRL knobs a stage runs with: project defaults, then stage defaults, then the recipe's values."""
    base = dict(SFT_DEFAULTS if stage(name).trainer == "sft" else GRPO_DEFAULTS)
    base.update(STAGE_DEFAULTS.get(name, {}))
    return {**base, **user_knobs}


def coerce_knobs(name: str, knobs: dict[str, Any]) -> dict[str, Any]:
    """The knobs with values converted to TRL's field types (YAML reads `1e-4` as a string); raises ValueError
    naming `<stage>.trl.<key>` and the fix for the first unknown, owned or ill-typed knob."""
    kind = stage(name).trainer
    fields = _trl_fields(kind)
    cls_name = "SFTConfig" if kind == "sft" else "GRPOConfig"
    coerced = {}
    for key, value in knobs.items():
        where = f"{name}.trl.{key}"
        if key == "reward_weights":
            raise ValueError(f"{where}: set reward weights in {name}.rewards (name: weight) instead")
        if key in CHECKPOINT_KNOBS:
            raise ValueError(f"{where}: set by {name}.checkpoint_every (steps between checkpoints; 0: none) instead")
        if key in OWNED_BY_PIPELINE:
            raise ValueError(f"{where}: set by the pipeline, remove it from the recipe")
        if key == "hub_token":
            raise ValueError(f"{where}: a recipe is logged and shown in the Prefect UI; export HF_TOKEN instead")
        if key not in fields:
            close = difflib.get_close_matches(key, fields, n=1)
            hint = f"; did you mean '{close[0]}'?" if close else f"; see TRL's {cls_name} for valid fields"
            raise ValueError(f"{where}: TRL {cls_name} has no field '{key}'{hint}")
        try:
            coerced[key] = TypeAdapter(fields[key]).validate_python(value, strict=False)
        except ValidationError as err:
            raise ValueError(f"{where}: expected {fields[key]}, got {value!r} ({err.errors()[0]['msg']})") from None
    return coerced


def coerce_recipe_knobs(tree: Any) -> Any:
    """A raw recipe mapping with every stage's `trl` dict coerced (pydantic 'before' validator)."""
    if not isinstance(tree, dict):
        return tree
    tree = dict(tree)
    for declared in trained_stages():
        section = tree.get(declared.section)
        if isinstance(section, dict) and isinstance(section.get("trl"), dict):
            tree[declared.section] = {**section, "trl": coerce_knobs(declared.name, section["trl"])}
    return tree


VLLM_MODES = ("colocate", "server")
AT_LEAST_ONE = ("per_device_train_batch_size", "gradient_accumulation_steps", "max_completion_length", "max_length")
# knob -> (is the value one that trains nothing or garbage, what to write instead); None values are TRL's "unset"
VALUE_RULES: dict[str, tuple[Any, str]] = {
    "learning_rate": (lambda v: v <= 0, "must be above 0 (0 trains nothing; a negative rate climbs the loss)"),
    "max_steps": (lambda v: v == 0, "trains nothing; give the number of optimizer steps, or -1 to train epochs"),
    "num_train_epochs": (lambda v: v < 0, "is negative; give a number of epochs above 0"),
    "temperature": (lambda v: v <= 0, "must be above 0 (sampling divides the logits by it); R1 samples at 0.6-1.0"),
    "top_p": (lambda v: not 0 < v <= 1, "must be in (0, 1]"),
    "beta": (lambda v: v < 0, "must be 0 or more (the KL coefficient; R1: 0.001)"),
    "warmup_steps": (lambda v: v < 0, "must be 0 or more (a value below 1 is a share of the steps)"),
    **{knob: (lambda v: v < 1, "must be 1 or more") for knob in AT_LEAST_ONE},
}


def value_problem(name: str, knobs: dict[str, Any]) -> str | None:
    """Why the resolved knobs of stage `name` would train nothing or garbage although TRL accepts them, or None."""
    for knob, (bad, fix) in VALUE_RULES.items():
        value = knobs.get(knob)
        if isinstance(value, (int, float)) and not isinstance(value, bool) and bad(value):
            return f"{name}.trl.{knob}: {value!r} {fix}"
    if knobs.get("max_steps", -1) < 0 and knobs.get("num_train_epochs", 3) <= 0:
        return f"{name}.trl.num_train_epochs: 0 epochs with no max_steps trains nothing; give epochs above 0"
    return None


def rl_pool_problem(name: str, knobs: dict[str, Any], pool_size: int, processes: int) -> str | None:
    """Why the RL prompt pool cannot fill one generation batch of GRPO stage `name` (distinct prompts it draws), or
    None."""
    if "num_generations" not in knobs or not knobs["num_generations"]:
        return None
    per_generation = knobs.get("steps_per_generation") or knobs.get("gradient_accumulation_steps", 1)
    completions = knobs["per_device_train_batch_size"] * per_generation * processes
    prompts = completions // knobs["num_generations"]
    if pool_size >= prompts:
        return None
    return (
        f"data.rl_pool_size: {pool_size} prompts cannot fill one generation batch of {name} ({prompts} distinct "
        f"prompts: {completions} completions / {knobs['num_generations']} per prompt); raise data.rl_pool_size or "
        f"lower {name}.trl.per_device_train_batch_size"
    )


def check_knobs(recipe: Any) -> None:
    """The project's defaults merged with the recipe's knobs must be valid too, and train something; vLLM generation
    (TRL's colocate or server mode, where vLLM is installed) must name a mode TRL has."""
    for declared in trained_stages():
        name, section = declared.name, getattr(recipe, declared.section)
        knobs = coerce_knobs(name, resolved_knobs(name, section.trl))
        problem = (
            value_problem(name, knobs)
            or checkpoint_problem(section.checkpoint_every, knobs, name)
            or rl_pool_problem(name, knobs, recipe.data.rl_pool_size, recipe.launch.num_processes)
        )
        if problem:
            raise ValueError(problem)
        if knobs.get("use_vllm") and knobs.get("vllm_mode", "colocate") not in VLLM_MODES:
            raise ValueError(f"{name}.trl.vllm_mode: '{knobs['vllm_mode']}' is not one of {', '.join(VLLM_MODES)}")
