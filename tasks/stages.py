"""Prefect tasks of the five stages (and evaluation): bind the recipe and input records, open the stage's nested
MLflow run, run the stage in its own process, return a small record (URI + fingerprint).

Cache: a task's result is reused when its stage's resolved config, its inputs' fingerprints and the code of the
stage are unchanged (tasks/caching.py); results persist in Prefect's local storage under the state folder. A
cached result whose output folder has gone is recomputed (the flow refreshes it).
"""

from __future__ import annotations

from prefect import get_run_logger, task

from models.config import STAGES, Recipe
from models.records import Artifact
from models.resume import continue_stage_run
from models.stage_io import StageSpec, scratch_dir
from models.storage import artifacts_root
from models.tracking import client, start_child_run
from tasks.caching import stage_key, task_cache_key
from tasks.launch import launch
from tasks.pipeline_run import PipelineRun


def _output(stage: str, recipe: Recipe, inputs: dict[str, Artifact]):
    return artifacts_root() / recipe.name / stage / stage_key(stage, recipe, inputs)


def stage_run(stage: str, recipe: Recipe, inputs: dict[str, Artifact], pipeline: PipelineRun) -> str:
    """The stage's MLflow run: the run of an earlier, killed attempt when it left a checkpoint to resume from
    (moved under this pipeline's run), else a new nested run."""
    resumed = continue_stage_run(scratch_dir(_output(stage, recipe, inputs)), pipeline.parent_run_id)
    tags = {"stage": stage, "pipeline": recipe.name, "stage_key": stage_key(stage, recipe, inputs)}
    return resumed or start_child_run(pipeline.experiment_id, pipeline.parent_run_id, stage, tags)


def _run_in_process(stage: str, recipe: Recipe, inputs: dict[str, Artifact], run_id: str | None) -> Artifact:
    logger = get_run_logger()
    output = _output(stage, recipe, inputs)
    spec = StageSpec(stage=stage, recipe=recipe, inputs=inputs, output=str(output), mlflow_run_id=run_id)
    mlflow_client = client()
    try:
        record, lines = launch(spec, logger.info, recipe.stage_timeout_s)
    except BaseException:
        if run_id:
            mlflow_client.set_terminated(run_id, "FAILED")
        raise
    if run_id:
        mlflow_client.log_text(run_id, "\n".join(lines), f"logs/{stage}.log")
    return record


@task(cache_key_fn=task_cache_key, persist_result=True, retries=0, log_prints=True)
def run_stage(stage: str, recipe: Recipe, inputs: dict[str, Artifact], pipeline: PipelineRun) -> Artifact:
    """Train (or sample, for rejection_sampling) one stage, resuming a killed attempt from its last checkpoint; cache
    invalidated by its config, inputs or code."""
    return _run_in_process(stage, recipe, inputs, stage_run(stage, recipe, inputs, pipeline))


@task(cache_key_fn=task_cache_key, persist_result=True, retries=1, log_prints=True)
def evaluate(stage: str, recipe: Recipe, inputs: dict[str, Artifact], pipeline: PipelineRun) -> Artifact:
    """pass@1 / cons@k of inputs['model'] on the held-out split (and its paired gain over inputs['baseline'], an
    earlier evaluation), logged into the run of the stage that made the model; a model no stage of this pipeline
    made (the base, a champion) gets a run named after its record's stage. Cache invalidated by the model's and
    baseline's fingerprints or the evaluation config."""
    model = inputs["model"]
    tags = {"stage": model.stage, "pipeline": recipe.name}
    run_id = model.mlflow_run_id or start_child_run(pipeline.experiment_id, pipeline.parent_run_id, model.stage, tags)
    return _run_in_process(stage, recipe, inputs, run_id)


STAGE_TASKS = {name: run_stage.with_options(name=name, task_run_name=name) for name in STAGES}


def evaluation_of(stage: str):
    """The evaluate task, named after the stage whose model it scores."""
    return evaluate.with_options(task_run_name=f"evaluate-{stage}")
