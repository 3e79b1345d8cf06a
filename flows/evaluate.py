"""Evaluate any model on a recipe's held-out split, on its own: R1's protocol, the same task the pipeline uses.

make eval MODEL=models:/r1-tiny@champion              # a registered model (alias or version)
make eval MODEL=.state/artifacts/tiny-r1/final_rl/<key> RECIPE=flows/recipes/tiny.yaml
"""

from __future__ import annotations

import json
from pathlib import Path

from prefect import flow, task
from prefect.runtime import flow_run

from models.config import Recipe
from models.factory import resolve_source
from models.records import Artifact, fingerprint_dir, local_path
from models.storage import state_dir
from tasks.pipeline_run import close_pipeline_run, open_pipeline_run
from tasks.stages import evaluation_of


@task
def model_record(model: str) -> Artifact:
    """A record for a registry URI (downloaded once into the state folder), a local folder or a hub id."""
    if model.startswith("models:/"):
        import mlflow

        from models.tracking import client

        client()  # sets the tracking URI
        folder = state_dir() / "registry" / model.removeprefix("models:/").replace("@", "/alias-")
        if not (folder / "config.json").is_file():
            mlflow.artifacts.download_artifacts(model, dst_path=str(folder))
        source = str(folder)
    else:
        source = resolve_source(model)
    fingerprint = fingerprint_dir(Path(source)) if Path(source).is_dir() else f"hub-{source}"
    return Artifact(uri=source, fingerprint=fingerprint, stage="evaluated_model", kind="model")


@flow(name="r1-evaluate", log_prints=True)
def r1_evaluate(model: str, recipe: Recipe | None = None) -> dict:
    """pass@1 over k samples, cons@k, pass@k, format and language rates, and a per-prompt table in MLflow."""
    recipe = recipe or Recipe()
    pipeline = open_pipeline_run(recipe, f"evaluate-{flow_run.get_name() or 'local'}", flow_run.get_id() or "")
    try:
        record = model_record(model)
        evaluation = evaluation_of("evaluated_model")("evaluate", recipe, {"model": record}, pipeline)
    except BaseException:
        close_pipeline_run(pipeline, "FAILED")
        raise
    close_pipeline_run(pipeline, "FINISHED")
    metrics = json.loads((local_path(evaluation.uri) / "metrics.json").read_text())
    return {"metrics": metrics, "parent_run_id": pipeline.parent_run_id, "experiment_id": pipeline.experiment_id}
