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

from models.config import EvalConfig
from models.data import Problem, build_splits, load_rows, overlap
from models.data_checks import TRAINING_SPLITS
from models.evaluate import evaluate_model
from models.factory import load_model
from models.records import local_path
from models.stage_io import StageSpec
from models.stats import bootstrap_ci, paired_gain_ci, per_prompt_pass_rate


def eval_set_id(cfg: EvalConfig, problems: list[Problem]) -> str:
    """Identity of what pass@1 was measured on: the prompts, answers and sampling settings."""
    payload = [[json.dumps(p.prompt), p.answer] for p in problems] + [cfg.model_dump()]
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


def heldout_overlap(spec: StageSpec, splits: dict[str, list[Problem]]) -> int:
    """Held-out prompts that also occur in any training source (cold start, RL and rejection pool, validation, a
    cold-start file, the non-reasoning rows; the files through their input records), questions normalised: the
    recorded proof of what check_data enforced before the run (models/data_checks.py), so it is 0."""
    training = [splits[name] for name in TRAINING_SPLITS]
    for name in ("cold_start", "general"):
        if name in spec.inputs:
            training.append([Problem(r["prompt"], "", "", "") for r in load_rows(spec.inputs[name].uri)])
    return overlap(splits["eval"], *training)


def _log(metrics: dict[str, float], rows: list[dict]) -> None:
    mlflow.log_metrics(metrics)
    columns = ("prompt", "answer", "samples", "verdicts", "voted", "voted_correct")
    table = {key: [json.dumps(r[key]) if isinstance(r[key], list) else r[key] for r in rows] for key in columns}
    mlflow.log_table(table, artifact_file="eval/per_prompt.json")


def run_evaluate(spec: StageSpec, out: Path) -> dict:
    cfg = spec.config
    splits = build_splits(spec.data, spec.seed)
    heldout = splits["eval"][: cfg.max_prompts] if cfg.max_prompts else splits["eval"]
    model, tokenizer = load_model(spec.inputs["model"].uri, spec.dtype)
    metrics, rows = evaluate_model(model, tokenizer, heldout, cfg, spec.seed, spec.data.language)
    low, high = bootstrap_ci(per_prompt_pass_rate([r["verdicts"] for r in rows]), seed=spec.seed)
    metrics |= {"eval/pass_at_1_ci_low": low, "eval/pass_at_1_ci_high": high}
    metrics["eval/heldout_overlap"] = float(heldout_overlap(spec, splits))
    if "baseline" in spec.inputs:
        metrics |= gain_metrics(rows, load_table(local_path(spec.inputs["baseline"].uri)), spec.seed)
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2))
    (out / "eval_set.json").write_text(json.dumps({"id": eval_set_id(cfg, heldout), "prompts": len(heldout)}))
    with (out / "per_prompt.jsonl").open("w") as f:
        f.writelines(json.dumps(row) + "\n" for row in rows)
    if mlflow.active_run():
        _log(metrics, rows)
    return metrics
