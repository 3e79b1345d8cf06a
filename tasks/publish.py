"""Registering the final model and summarising a pipeline run (Prefect markdown artifact + parent MLflow run)."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

from prefect import get_run_logger, task
from prefect.artifacts import create_markdown_artifact

from models.config import Recipe
from models.records import Artifact
from models.stages import trained_stages
from models.tracking import client, example_prompt, run_url, save_generation_model
from tasks.pipeline_run import PipelineRun
from tasks.promotion import log_manifest, model_files_complete, set_alias, transient_failure, verified_output
from tasks.review import comparison_links, describe_runs, interval, log_figures

EVAL_COLUMNS = (
    "eval/pass_at_1",
    "eval/cons_at_k",
    "eval/pass_at_k",
    "eval/format_rate",
    "eval/language_consistency",
    "eval/mean_completion_chars",
)


@task(retries=2, retry_delay_seconds=[10, 60], retry_condition_fn=transient_failure)
def register_model(recipe: Recipe, final: Artifact, alias: str = "candidate") -> str:
    """Log the final checkpoint (stamped, checksums verified) into its stage run as an MLflow transformers model
    (text-generation pipeline with a signature, then its manifest) and register it as `<registered_name>@<alias>`,
    the alias set last (tasks/promotion.py: registry integrity). Idempotent: a model with the same fingerprint
    already registered keeps its version (its files logged again if a kill left them incomplete). The version's
    source is the copy under the run's artifact URI (s3://... with an S3 store)."""
    mlflow_client, name = client(), recipe.model.registered_name
    if not mlflow_client.search_registered_models(f"name = '{name}'"):
        mlflow_client.create_registered_model(name, description=f"Final model of the '{recipe.name}' R1 pipeline.")
    same = mlflow_client.search_model_versions(f"name = '{name}' and tag.fingerprint = '{final.fingerprint}'")
    if not (same and model_files_complete(same[0].run_id)):  # a kill while its files were logged: log them again
        _log_mlflow_model(recipe, final)
    if same:
        version = same[0]
    else:
        artifact_uri = mlflow_client.get_run(final.mlflow_run_id).info.artifact_uri
        version = mlflow_client.create_model_version(
            name,
            source=f"{artifact_uri}/model",
            run_id=final.mlflow_run_id,
            tags={"fingerprint": final.fingerprint, "stage": final.stage, "pipeline": recipe.name},
            description=LOAD_HINT.format(name=name),
        )
    set_alias(name, alias, version)  # last, on whole files
    get_run_logger().info("registered %s version %s as @%s", name, version.version, alias)
    return version.version


LOAD_HINT = (
    "An MLflow transformers model (text-generation): "
    "`mlflow.pyfunc.load_model('models:/{name}@candidate').predict([prompt])` returns the completions; "
    "`mlflow.transformers.load_model(...)` gives the transformers pipeline."
)


def _log_mlflow_model(recipe: Recipe, final: Artifact) -> None:
    """The final checkpoint saved as an MLflow model and logged as the `model` artifact of its stage run."""
    with tempfile.TemporaryDirectory(prefix="r1-mlflow-model-") as tmp:
        saved, folder = Path(tmp) / "model", verified_output(final, recipe.storage)
        save_generation_model(folder, saved, example_prompt(recipe.data.prompt_style), recipe.evaluation.max_new_tokens)
        client().log_artifacts(final.mlflow_run_id, str(saved), "model")
        log_manifest(final.mlflow_run_id, saved)


def _eval_metrics(evaluation: Artifact, pipeline: PipelineRun) -> dict[str, float]:
    return json.loads((pipeline.store().local_copy(evaluation) / "metrics.json").read_text())


def _table(rows: list[dict]) -> str:
    head = (
        "| stage | pass@1 [95% CI] | gain over start [95% CI] | cons@k | pass@k | format | language | chars "
        "| alarms | cached | MLflow run |\n" + "|---" * 11 + "|\n"
    )
    return head + "\n".join(
        f"| {r['stage']} | {interval(r, 'eval/pass_at_1')} | {interval(r, 'eval/pass_at_1_gain')} | "
        + " | ".join(f"{r[c]:.3f}" for c in EVAL_COLUMNS[1:5])
        + f" | {r[EVAL_COLUMNS[5]]:.1f} | {', '.join(r['alarms']) or '–'} | {r['cached']} | {r['run_link']} |"
        for r in rows
    )


def _costs(recipe: Recipe, pipeline: PipelineRun, stage_runs: dict[str, str]) -> list[dict]:
    """GPU-hours and cost per phase from the stage runs; logged into the parent run as a table and totals."""
    from models.cost import cost_table

    mlflow_client = client()
    rows = cost_table({stage: mlflow_client.get_run(run_id).data.metrics for stage, run_id in stage_runs.items()})
    mlflow_client.log_table(pipeline.parent_run_id, {k: [r[k] for r in rows] for k in rows[0]}, "summary/cost.json")
    for key in ("gpu_hours", "usd", "wall_s"):
        mlflow_client.log_metric(pipeline.parent_run_id, f"cost/total_{key}", rows[-1][key])
    return rows


def _cost_table(rows: list[dict]) -> str:
    head = "| phase | GPU-hours | cost (USD) | wall (s) |\n|---|---|---|---|\n"
    return head + "\n".join(
        f"| {r['phase']} | {r['gpu_hours']:.3f} | {r['usd']:.2f} | {r['wall_s']:.0f} |" for r in rows
    )


def _alarms(run_id: str) -> list[str]:
    """The alarms the stage's training run raised (its `alarm/<name>` metrics; a link run's origin holds them):
    read from MLflow, so that no model is downloaded for them."""
    from models.alarms import ALARMS

    mlflow_client = client()
    run = mlflow_client.get_run(run_id)
    metrics = mlflow_client.get_run(run.data.tags.get("origin_run_id", run_id)).data.metrics
    return sorted(name for name in ALARMS if metrics.get(f"alarm/{name}") == 1.0)


def _stage_rows(pipeline: PipelineRun, evaluations, models, stage_runs, cached, ui_base: str) -> list[dict]:
    rows = []
    for stage, evaluation in evaluations.items():
        run_id = stage_runs[stage]
        link = f"[{run_id[:8]}]({run_url(ui_base, pipeline.experiment_id, run_id)})"
        rows.append(
            {
                "stage": stage,
                **_eval_metrics(evaluation, pipeline),
                "cached": cached.get(stage, False),
                "alarms": _alarms(run_id) if stage in models else [],
                "run_id": run_id,
                "run_link": link,
            }
        )
    return rows


@task
def summarize(
    recipe: Recipe,
    pipeline: PipelineRun,
    evaluations: dict[str, Artifact],
    models: dict[str, Artifact],
    stage_runs: dict[str, str],
    cached: dict[str, bool],
    rejection: Artifact,
    version: str,
    promotion: str,
    ui_base: str,
) -> str:
    """Stage-by-stage table (pass@1 with intervals, gains, alarms), the final-vs-cold-start gain, rejection
    statistics, the promotion decision and links: a Prefect markdown artifact, and a table, plots and the same
    markdown in the parent MLflow run. Returns the markdown."""
    from models.eval_stage import gain_metrics, load_table

    rows = _stage_rows(pipeline, evaluations, models, stage_runs, cached, ui_base)
    overall = gain_metrics(
        load_table(pipeline.store().local_copy(evaluations["final_rl"])),
        load_table(pipeline.store().local_copy(evaluations["cold_start_sft"])),
        recipe.seed,
    )
    stats = json.loads((pipeline.store().local_copy(rejection) / "stats.json").read_text())
    raised = sorted({f"{r['stage']}: {a}" for r in rows for a in r["alarms"]})
    costs = _costs(recipe, pipeline, stage_runs)
    parent_url = run_url(ui_base, pipeline.experiment_id, pipeline.parent_run_id)
    markdown = (
        f"# R1 pipeline `{recipe.name}`: {pipeline.flow_run_name}\n\n"
        f"Held-out evaluation ({int(rows[0]['eval/num_prompts'])} prompts, k={int(rows[0]['eval/k'])}, "
        f"T={recipe.evaluation.temperature}, top-p={recipe.evaluation.top_p}; gains are paired bootstrap "
        f"intervals over the same prompts):\n\n{_table(rows)}\n\n"
        f"final_rl over cold_start_sft: pass@1 {interval(overall, 'eval/pass_at_1_gain')}.\n\n"
        f"Reward-hacking alarms: {'; '.join(raised) if raised else 'none'}.\n\n"
        f"Rejection sampling: kept {stats['kept']} of {stats['sampled']} samples "
        f"({stats['prompts_covered']} of {stats['prompts']} prompts covered).\n\n"
        f"Registered model: `{recipe.model.registered_name}` version {version}; {promotion}.\n\n"
        f"Compute (R1 Table 7 style; ${recipe.launch.gpu_hour_usd:g}/GPU-hour; cached stages at their original "
        f"cost):\n\n{_cost_table(costs)}\n\n"
        f"Stage comparison in MLflow (pass@1 with intervals, both reward curves): "
        f"{comparison_links(pipeline, stage_runs, ui_base)}.\n\n"
        f"MLflow parent run: [{pipeline.parent_run_id[:8]}]({parent_url})\n"
    )
    create_markdown_artifact(markdown, key="r1-pipeline-summary", description=f"R1 pipeline {recipe.name}")
    mlflow_client = client()
    columns = ("stage", *EVAL_COLUMNS, "eval/pass_at_1_ci_low", "eval/pass_at_1_ci_high", "cached", "run_id")
    table = {key: [r.get(key) for r in rows] for key in columns}
    table["alarms"] = [", ".join(r["alarms"]) for r in rows]
    mlflow_client.log_table(pipeline.parent_run_id, table, "summary/stages.json")
    mlflow_client.log_text(pipeline.parent_run_id, markdown, "summary/summary.md")
    for key, value in overall.items():
        mlflow_client.log_metric(pipeline.parent_run_id, key.replace("eval/", "eval/final_vs_cold_start_"), value)
    rl_runs = {s.name: stage_runs[s.name] for s in trained_stages("grpo") if s.name in stage_runs}
    log_figures(pipeline, rows, rl_runs)
    describe_runs(pipeline, rows, rl_runs, markdown, ui_base)
    return markdown
