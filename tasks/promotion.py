"""The promotion gate: the registered final model becomes `champion` only if its held-out pass@1 beats the current
champion's on the same evaluation set. A champion measured on another set is re-evaluated on this one first."""

from __future__ import annotations

import json

from prefect import get_run_logger, task

from models.config import Recipe
from models.factory import model_record
from models.records import Artifact
from models.tracking import client, registered_model_dir
from tasks.pipeline_run import PipelineRun
from tasks.stages import evaluate_in_tree


def evaluation_summary(evaluation: Artifact, pipeline: PipelineRun) -> tuple[str, float]:
    """(evaluation set id, pass@1) of a finished evaluation."""
    folder = pipeline.store().local_copy(evaluation)
    metrics = json.loads((folder / "metrics.json").read_text())
    return json.loads((folder / "eval_set.json").read_text())["id"], metrics["eval/pass_at_1"]


def _champion_on(recipe: Recipe, version, eval_set: str, pipeline: PipelineRun) -> float:
    """The champion's pass@1 on `eval_set`: its recorded score if made there, else a fresh evaluation."""
    if version.tags.get("eval_set") == eval_set:
        return float(version.tags["pass_at_1"])
    folder = registered_model_dir(f"models:/{recipe.model.registered_name}/{version.version}")
    model = model_record(str(folder), "champion")
    evaluation, _ = evaluate_in_tree("champion", recipe, model, pipeline)
    return evaluation_summary(evaluation, pipeline)[1]


@task(retries=1)
def promote(recipe: Recipe, version: str, evaluation: Artifact, pipeline: PipelineRun) -> str:
    """Set `champion` on `version` if it beats the current champion; returns the decision, also logged as the
    parent run's `promotion` tag and the version's `promotion` tag."""
    mlflow_client, name = client(), recipe.model.registered_name
    eval_set, score = evaluation_summary(evaluation, pipeline)
    mlflow_client.set_model_version_tag(name, version, "eval_set", eval_set)
    mlflow_client.set_model_version_tag(name, version, "pass_at_1", f"{score:.6f}")
    try:
        champion = mlflow_client.get_model_version_by_alias(name, "champion")
    except Exception:  # noqa: BLE001 - MLflow raises a generic RestException when the alias is unset
        champion = None
    if champion is None:
        promoted, why = True, f"first champion (pass@1 {score:.3f})"
    elif champion.version == version:
        promoted, why = True, f"already champion (pass@1 {score:.3f})"
    else:
        best = _champion_on(recipe, champion, eval_set, pipeline)
        promoted = score > best
        verdict = ">" if promoted else "<="
        why = f"pass@1 {score:.3f} {verdict} champion v{champion.version}'s {best:.3f} on the same held-out set"
    decision = f"{'promoted to champion' if promoted else 'stays candidate'}: {why}"
    if promoted:
        mlflow_client.set_registered_model_alias(name, "champion", version)
    mlflow_client.set_model_version_tag(name, version, "promotion", decision)
    mlflow_client.set_tag(pipeline.parent_run_id, "promotion", decision)
    get_run_logger().info("version %s %s", version, decision)
    return decision
