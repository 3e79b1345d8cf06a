"""Registering the final model and summarising a pipeline run (Prefect markdown artifact + parent MLflow run)."""

from __future__ import annotations

import json

from prefect import get_run_logger, task
from prefect.artifacts import create_markdown_artifact

from models.config import Recipe
from models.records import Artifact, local_path
from models.tracking import client
from tasks.pipeline_run import PipelineRun

EVAL_COLUMNS = (
    "eval/pass_at_1",
    "eval/cons_at_k",
    "eval/pass_at_k",
    "eval/format_rate",
    "eval/language_consistency",
    "eval/mean_completion_chars",
)


@task(retries=2)
def register_model(recipe: Recipe, final: Artifact, alias: str = "candidate") -> str:
    """Log the final checkpoint into its stage run and register it as `<registered_name>@<alias>`. Idempotent:
    a model with the same fingerprint already registered keeps its version."""
    mlflow_client, name = client(), recipe.model.registered_name
    if not mlflow_client.search_registered_models(f"name = '{name}'"):
        mlflow_client.create_registered_model(name, description=f"Final model of the '{recipe.name}' R1 pipeline.")
    same = mlflow_client.search_model_versions(f"name = '{name}' and tag.fingerprint = '{final.fingerprint}'")
    if same:
        version = same[0].version
    else:
        mlflow_client.log_artifacts(final.mlflow_run_id, str(local_path(final.uri)), "model")
        version = mlflow_client.create_model_version(
            name,
            source=f"runs:/{final.mlflow_run_id}/model",
            run_id=final.mlflow_run_id,
            tags={"fingerprint": final.fingerprint, "stage": final.stage, "pipeline": recipe.name},
        ).version
    mlflow_client.set_registered_model_alias(name, alias, version)
    get_run_logger().info("registered %s version %s as @%s", name, version, alias)
    return version


def _eval_metrics(evaluation: Artifact) -> dict[str, float]:
    return json.loads((local_path(evaluation.uri) / "metrics.json").read_text())


def _table(rows: list[dict]) -> str:
    head = (
        "| stage | pass@1 | cons@k | pass@k | format | language | chars | cached | MLflow run |\n"
        + "|---|---|---|---|---|---|---|---|---|\n"
    )
    return head + "\n".join(
        f"| {r['stage']} | "
        + " | ".join(f"{r[c]:.3f}" for c in EVAL_COLUMNS[:5])
        + f" | {r[EVAL_COLUMNS[5]]:.1f} | {r['cached']} | {r['run_link']} |"
        for r in rows
    )


@task
def summarize(
    recipe: Recipe,
    pipeline: PipelineRun,
    evaluations: dict[str, Artifact],
    stage_runs: dict[str, str],
    cached: dict[str, bool],
    rejection: Artifact,
    version: str,
    ui_base: str,
) -> str:
    """Stage-by-stage evaluation table, rejection-sampling statistics and links, as a Prefect markdown artifact
    and as a table + JSON in the parent MLflow run. Returns the markdown."""
    rows = []
    for stage, evaluation in evaluations.items():
        run_id = stage_runs[stage]
        link = f"[{run_id[:8]}]({ui_base}/#/experiments/{pipeline.experiment_id}/runs/{run_id})"
        rows.append(
            {
                "stage": stage,
                **_eval_metrics(evaluation),
                "cached": cached.get(stage, False),
                "run_id": run_id,
                "run_link": link,
            }
        )
    stats = json.loads((local_path(rejection.uri) / "stats.json").read_text())
    markdown = (
        f"# R1 pipeline `{recipe.name}`: {pipeline.flow_run_name}\n\n"
        f"Held-out evaluation ({int(rows[0]['eval/num_prompts'])} prompts, k={int(rows[0]['eval/k'])}, "
        f"T={recipe.evaluation.temperature}, top-p={recipe.evaluation.top_p}):\n\n{_table(rows)}\n\n"
        f"Rejection sampling: kept {stats['kept']} of {stats['sampled']} samples "
        f"({stats['prompts_covered']} of {stats['prompts']} prompts covered).\n\n"
        f"Registered model: `{recipe.model.registered_name}` version {version} (alias `candidate`).\n\n"
        f"MLflow parent run: [{pipeline.parent_run_id[:8]}]({ui_base}/#/experiments/{pipeline.experiment_id}/runs/"
        f"{pipeline.parent_run_id})\n"
    )
    create_markdown_artifact(markdown, key="r1-pipeline-summary", description=f"R1 pipeline {recipe.name}")
    mlflow_client = client()
    columns = {key: [r[key] for r in rows] for key in ("stage", *EVAL_COLUMNS, "cached", "run_id")}
    mlflow_client.log_table(pipeline.parent_run_id, columns, "summary/stages.json")
    mlflow_client.log_text(pipeline.parent_run_id, markdown, "summary/summary.md")
    return markdown
