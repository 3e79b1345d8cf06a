"""Run one stage on its own, from a recipe and the records of an earlier pipeline run: its inputs are the outputs
that run made (read from their stamps), its output and MLflow run go where the pipeline would put them (the
output named by the spec's key; a child run of that pipeline run), and the spec is kept beside the output.

    r1-run stage final_rl --from-run <parent run id> [--recipe my.yaml] [key=value ...]
    r1-run stage final_rl --from-run <parent run id> --in-process      # in this process, no subprocess

The `r1-stage` flow is the same as a deployment (infra/prefect.yaml): the Prefect UI's form picks the stage.
"""

from __future__ import annotations

from enum import Enum

from prefect import flow, get_run_logger
from prefect.states import State

from flows.parameters import ParameterError, checked_recipe, refused, run_name
from models.config import Recipe
from models.records import Artifact
from models.sources import source_record
from models.stage_io import stage_spec
from models.stages import PIPELINE, SOURCES, stage
from models.storage import prepared_store
from models.tracking import client, start_child_run
from tasks.pipeline_run import PipelineRun, record_output, recorded_output
from tasks.stages import placed, run_spec


def stage_inputs(name: str, recipe: Recipe, pipeline: PipelineRun) -> dict[str, Artifact]:
    """The stage's inputs: sources from the recipe, stage outputs from the pipeline run's records."""
    inputs = {}
    for role, producer in stage(name).producers(recipe).items():
        record = source_record(producer, recipe) if producer in SOURCES else recorded_output(pipeline, producer)
        if record is not None:
            inputs[role] = record
    return inputs


def run_one_stage(name: str, recipe: Recipe, parent_run_id: str, in_process: bool, log_line=print) -> Artifact:
    """Run stage `name` (or reuse its published output when one with the same key exists); returns its record."""
    prepared_store(recipe.storage)
    parent = client().get_run(parent_run_id)
    pipeline = PipelineRun(
        name=recipe.name,
        experiment_id=parent.info.experiment_id,
        parent_run_id=parent_run_id,
        flow_run_name=parent.info.run_name or "",
        storage=recipe.storage.effective(),
    )
    spec = stage_spec(name, recipe, stage_inputs(name, recipe, pipeline))
    existing = pipeline.store().read_record(placed(spec, pipeline, None).output)
    if existing is not None:
        log_line(f"{name}: already published at {existing.uri} (same spec key); nothing to run")
        return existing
    tags = {"stage": name, "pipeline": recipe.name, "stage_key": spec.key(), "started_by": "r1-run stage"}
    spec = placed(spec, pipeline, start_child_run(pipeline.experiment_id, parent_run_id, name, tags))
    if in_process:
        from models.run_stage import run

        record = run(spec)
    else:
        record = run_spec(spec, log_line)
    record_output(pipeline, name, record)
    return record


def stage_run_name() -> str:
    """`<stage> from <run> <recipe> <changes>` for the flow-run name."""
    from prefect.runtime import flow_run

    params = flow_run.parameters
    stage_name = getattr(params.get("stage"), "value", params.get("stage"))
    return f"{stage_name} from {str(params.get('from_run'))[:8]} " + run_name()


StageName = Enum("StageName", {name: name for name in PIPELINE}, type=str)  # a dropdown in the Prefect UI


@flow(name="r1-stage", log_prints=True, validate_parameters=False, flow_run_name=stage_run_name)
def r1_stage(
    stage: StageName,
    from_run: str,
    recipe: Recipe | None = None,
    recipe_path: str | None = None,
    overrides: list[str] | None = None,
) -> dict | State:
    """One stage of an earlier pipeline run, from the records of its inputs (the deployment behind `r1-run stage`).

    `from_run`: the MLflow id of that pipeline's parent run; the recipe (the typed form, or a shipped recipe's name
    or YAML path, plus overrides) gives the stage's settings."""
    from mlflow.exceptions import MlflowException

    name = getattr(stage, "value", stage)
    try:
        if name not in PIPELINE:
            raise ParameterError(f"stage error: unknown stage '{name}'; choose one of {', '.join(PIPELINE)}")
        recipe = checked_recipe(recipe, recipe_path, overrides)
        record = run_one_stage(name, recipe, from_run, in_process=False, log_line=get_run_logger().info)
    except ParameterError as err:
        return refused(err)
    except (ValueError, MlflowException) as err:
        return refused(ParameterError(f"stage error: {str(err).splitlines()[0]}"))
    return record.model_dump(mode="json")
