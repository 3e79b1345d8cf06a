"""Evaluate any model on a recipe's held-out split, on its own: R1's protocol, the same task the pipeline uses.

make eval MODEL=models:/r1-tiny@champion              # a registered model (alias or version)
make eval MODEL=.state/artifacts/tiny-r1/final_rl/<key> RECIPE=flows/recipes/tiny.yaml
"""

from __future__ import annotations

import json
from functools import partial

from prefect import flow, task
from prefect.runtime import flow_run
from prefect.states import State

from flows.parameters import ParameterError, checked_recipe, refused, run_name
from models.config import Recipe
from models.factory import model_record
from models.records import Artifact
from models.tracking import registered_model_dir
from tasks.pipeline_run import open_pipeline_run, pipeline_run_open
from tasks.stages import evaluate_in_tree


@task
def evaluated_model(model: str) -> Artifact:
    """A record for a registry URI (downloaded once per version into the state folder), a folder or a hub id."""
    source = str(registered_model_dir(model)) if model.startswith("models:/") else model
    return model_record(source, "evaluated_model")


@flow(name="r1-evaluate", log_prints=True, validate_parameters=False, flow_run_name=partial(run_name, "evaluate "))
def r1_evaluate(
    model: str, recipe: Recipe | None = None, recipe_path: str | None = None, overrides: list[str] | None = None
) -> dict | State:
    """pass@1 over k samples, cons@k, pass@k, format and language rates, and a per-prompt table in MLflow.

    `model`: models:/<name>@<alias>, models:/<name>/<version>, a model folder or a hub id; the recipe (the typed
    form, or a shipped recipe's name or YAML path, plus overrides) gives the held-out split and sampling."""
    try:
        recipe = checked_recipe(recipe, recipe_path, overrides, training=False, model=model)
    except ParameterError as err:
        return refused(err)
    pipeline = open_pipeline_run(recipe, f"evaluate-{flow_run.get_name() or 'local'}", flow_run.get_id() or "")
    with pipeline_run_open(pipeline):  # heartbeat while it runs; closed FINISHED or FAILED
        record = evaluated_model(model)
        evaluation, _ = evaluate_in_tree("evaluated_model", recipe, record, pipeline)
    metrics = json.loads((pipeline.store().local_copy(evaluation) / "metrics.json").read_text())
    return {"metrics": metrics, "parent_run_id": pipeline.parent_run_id, "experiment_id": pipeline.experiment_id}
