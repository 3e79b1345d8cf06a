"""The `evaluate` stage: score a model on the held-out split, with bootstrap intervals, and its paired gain over
the checkpoint it started from (when that checkpoint's evaluation is given as the `baseline` input).

Writes metrics.json, per_prompt.jsonl and eval_set.json (what was evaluated, for comparing across runs), and
logs metrics + the per-prompt table into the MLflow run of the stage that made the model.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import mlflow

from models.config import Recipe
from models.data import Problem, build_splits, overlap
from models.data_checks import training_sources
from models.evaluate import evaluate_model
from models.factory import load_model
from models.records import local_path
from models.stage_io import StageSpec
from models.stats import bootstrap_ci, paired_gain_ci, per_prompt_pass_rate


def eval_set_id(recipe: Recipe, problems: list[Problem]) -> str:
    """Identity of what pass@1 was measured on: the prompts, answers and sampling settings."""
    payload = [[json.dumps(p.prompt), p.answer] for p in problems] + [recipe.evaluation.model_dump()]
    return hashlib.sha256(json.dumps(payload).encode()).hexdigest()[:16]


def load_table(folder: Path) -> list[dict]:
    return [json.loads(line) for line in (folder / "per_prompt.jsonl").read_text().splitlines() if line]


def gain_metrics(after: list[dict], before: list[dict], seed: int) -> dict[str, float]:
    """Paired bootstrap of pass@1(after) - pass@1(before) over the same prompts."""
    if [r["prompt"] for r in after] != [r["prompt"] for r in before]:
        raise ValueError("gain: the two evaluations were made on different prompts")
    gain, low, high = paired_gain_ci(
        per_prompt_pass_rate([r["verdicts"] for r in after]),
        per_prompt_pass_rate([r["verdicts"] for r in before]),
        seed=seed,
    )
    return {"eval/pass_at_1_gain": gain, "eval/pass_at_1_gain_ci_low": low, "eval/pass_at_1_gain_ci_high": high}


def heldout_overlap(recipe: Recipe, splits: dict[str, list[Problem]]) -> int:
    """Held-out prompts that also occur in any training source (cold start, RL and rejection pool, validation, a
    cold-start file, non-reasoning rows), questions normalised: the recorded proof of what check_data enforced
    before the run (models/data_checks.py), so it is 0."""
    return overlap(splits["eval"], *training_sources(recipe.data, splits).values())


def _log(metrics: dict[str, float], rows: list[dict]) -> None:
    mlflow.log_metrics(metrics)
    columns = ("prompt", "answer", "samples", "verdicts", "voted", "voted_correct")
    table = {key: [json.dumps(r[key]) if isinstance(r[key], list) else r[key] for r in rows] for key in columns}
    mlflow.log_table(table, artifact_file="eval/per_prompt.json")


def run_evaluate(spec: StageSpec, out: Path) -> dict:
    recipe = spec.recipe
    splits = build_splits(recipe.data, recipe.seed)
    heldout = splits["eval"][: recipe.evaluation.max_prompts] if recipe.evaluation.max_prompts else splits["eval"]
    model, tokenizer = load_model(spec.inputs["model"].uri, recipe.model.dtype)
    metrics, rows = evaluate_model(model, tokenizer, heldout, recipe.evaluation, recipe.seed, recipe.data.language)
    low, high = bootstrap_ci(per_prompt_pass_rate([r["verdicts"] for r in rows]), seed=recipe.seed)
    metrics |= {"eval/pass_at_1_ci_low": low, "eval/pass_at_1_ci_high": high}
    metrics["eval/heldout_overlap"] = float(heldout_overlap(recipe, splits))
    if "baseline" in spec.inputs:
        metrics |= gain_metrics(rows, load_table(local_path(spec.inputs["baseline"].uri)), recipe.seed)
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2))
    (out / "eval_set.json").write_text(json.dumps({"id": eval_set_id(recipe, heldout), "prompts": len(heldout)}))
    with (out / "per_prompt.jsonl").open("w") as f:
        f.writelines(json.dumps(row) + "\n" for row in rows)
    if mlflow.active_run():
        _log(metrics, rows)
    return metrics
