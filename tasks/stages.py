"""Prefect tasks of the stages (and evaluation): take the stage's spec, open its nested MLflow run, run it in its own
process, return a small record (URI + fingerprint) read from the output's stamp.

Cache: a task's result is reused when its spec's key is unchanged (tasks/caching.py): the stage's own settings, the
shared recipe parts it reads, its inputs' fingerprints and the code that can change its result. Results persist in
Prefect's result storage under the state folder. A cached result whose output has gone is recomputed (the flow
refreshes it).

Two pipelines at one stage: one computes it while the other waits on the lock named by its cache key
(tasks/caching.py), then takes the first one's result; a stage whose output was published but whose result was not
written (its flow killed in between) is taken from the output.
"""

from __future__ import annotations

from prefect import get_run_logger, task

from models.checkpoint_sync import pull_latest
from models.config import Recipe
from models.records import Artifact
from models.resume import continue_stage_run
from models.sources import source_record
from models.stage_io import StageSpec, scratch_dir, stage_output, stage_spec
from models.stages import EVALUATE, SOURCES, STAGES
from models.storage import output_store
from models.tracking import client, start_child_run
from tasks.caching import STAGE_CACHE
from tasks.launch import launch
from tasks.pipeline_run import PipelineRun, is_live, log_evaluation
from tasks.progress import ProgressArtifact
from tasks.results import with_result_storage


def run_spec(spec: StageSpec, log_line) -> Artifact:
    """Run a spec with its output and MLflow run set: on the worker of `launch.stage_deployment` when the recipe
    names one (training stages only), else in a process here."""
    if spec.launch.stage_deployment:
        from tasks.dispatch import dispatched

        return dispatched(spec, log_line)
    return run_here(spec, ProgressArtifact(log_line) if spec.trainer else log_line)


def run_here(spec: StageSpec, log_line) -> Artifact:
    """Launch the stage process for a spec with its output and MLflow run set; the run is FAILED if it fails."""
    mlflow_client = client()
    try:
        record, lines = launch(spec, log_line, spec.timeout_s)
    except BaseException:
        if spec.mlflow_run_id:
            mlflow_client.set_terminated(spec.mlflow_run_id, "FAILED")
        raise
    if spec.mlflow_run_id:
        mlflow_client.log_text(spec.mlflow_run_id, "\n".join(lines), f"logs/{spec.stage}.log")
    return record


def placed(spec: StageSpec, pipeline: PipelineRun, run_id: str | None) -> StageSpec:
    """The spec with its output location (named by its key) and the MLflow run it logs into."""
    return spec.model_copy(update={"output": stage_output(pipeline.name, spec), "mlflow_run_id": run_id})


@task(cache_policy=STAGE_CACHE, persist_result=True, retries=0, log_prints=True)
def run_stage(spec: StageSpec, pipeline: PipelineRun) -> Artifact:
    """Train (or sample, for rejection_sampling) one stage, resuming a killed attempt from its last checkpoint; cache
    invalidated by its spec's key. An output that an earlier attempt published under the same key (one whose flow
    was killed after the stage finished) is taken as it is."""
    published = pipeline.store().read_record(stage_output(pipeline.name, spec))
    if published is not None:
        get_run_logger().info("%s: taking the output an earlier attempt published at %s", spec.stage, published.uri)
        return published
    return run_spec(placed(spec, pipeline, stage_run(spec, pipeline)), get_run_logger().info)


def stage_run(spec: StageSpec, pipeline: PipelineRun) -> str:
    """The stage's MLflow run: the run of an earlier, killed attempt when it left a checkpoint to resume from (moved
    under this pipeline's run; its newest checkpoint is first brought from the store to this worker), else a new
    nested run."""
    resumed = None
    if spec.trainer is not None:
        store, relative = output_store(stage_output(pipeline.name, spec), pipeline.storage)
        local_area = scratch_dir(store.work_path(relative))
        pull_latest(store, f"{relative}.trainer", local_area)
        resumed = continue_stage_run(local_area, pipeline.parent_run_id)
    tags = {"stage": spec.stage, "pipeline": pipeline.name, "stage_key": spec.key()}
    return resumed or start_child_run(pipeline.experiment_id, pipeline.parent_run_id, spec.stage, tags)


@task(cache_policy=STAGE_CACHE, persist_result=True, retries=0, log_prints=True)
def evaluate(spec: StageSpec, pipeline: PipelineRun) -> Artifact:
    """pass@1 / cons@k of inputs['model'] on the held-out split (and its paired gain over inputs['baseline'], an
    earlier evaluation), logged into spec.mlflow_run_id: the run that stands for the model's stage in this
    pipeline's tree. Cache invalidated by the model's and baseline's fingerprints or the evaluation settings."""
    return run_spec(placed(spec, pipeline, spec.mlflow_run_id), get_run_logger().info)


def resource_tags(name: str, recipe: Recipe) -> set[str]:
    """Tags that say where a stage's work belongs: `gpu:<class>` for a training stage (a tag concurrency limit of that
    name is the GPU slots pipelines queue for, infra/workpools), `runs:pipeline-worker` for the rest (they run where the
    pipeline's flow runs); and `stage:<name>`."""
    trains = name in STAGES and STAGES[name].trainer is not None
    return {f"stage:{name}", f"gpu:{recipe.launch.gpu_class}" if trains else "runs:pipeline-worker"}


def stage_task(name: str, recipe: Recipe):
    """The stage task, named after its stage in the Prefect UI and tagged with its resource class."""
    return run_stage.with_options(name=name, task_run_name=name, tags=resource_tags(name, recipe))


def evaluation_of(name: str):
    """The evaluate task, named after the stage whose model it scores."""
    return evaluate.with_options(task_run_name=f"evaluate-{name}", tags={"runs:pipeline-worker", f"evaluates:{name}"})


def evaluation_inputs(recipe: Recipe, model: Artifact, baseline: Artifact | None = None) -> dict[str, Artifact]:
    """The evaluate stage's inputs: the model, the baseline evaluation if any, and the sources it checks against."""
    sources = {k: source_record(p, recipe) for k, p in EVALUATE.inputs.items() if p in SOURCES}
    inputs = {"model": model, "baseline": baseline, **sources}
    return {k: v for k, v in inputs.items() if v is not None}


def evaluate_in_tree(name: str, recipe: Recipe, model: Artifact, pipeline: PipelineRun) -> tuple[Artifact, str]:
    """Evaluate a model no stage of this pipeline made (the base, a champion, a registered model) into a new run
    called `name` in the pipeline's tree; returns (evaluation record, that run's id)."""
    tags = {"stage": name, "pipeline": pipeline.name}
    run_id = start_child_run(pipeline.experiment_id, pipeline.parent_run_id, name, tags)
    spec = stage_spec("evaluate", recipe, evaluation_inputs(recipe, model), mlflow_run_id=run_id)
    task = with_result_storage(evaluation_of(name), pipeline.storage)
    record = task(spec, pipeline)
    if not is_live(record, pipeline):
        record = task.with_options(refresh_cache=True)(spec, pipeline)
    log_evaluation(run_id, record, pipeline)
    return record, run_id
