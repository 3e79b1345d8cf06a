"""The pipeline's parent MLflow run: opened when a flow run starts, closed (FINISHED / FAILED) when it ends.
Stages that came from the cache are linked into the new run tree (a `cached=true` child with the origin's
rejection and cost metrics), not trained or logged again; their evaluation in this pipeline is logged into that
link. The parent run keeps each stage output's URI as a tag (`record.<stage>`), which `r1-run stage --from-run`
reads."""

from __future__ import annotations

import json
from contextlib import contextmanager

from mlflow.exceptions import MlflowException
from pydantic import BaseModel, ConfigDict

from models.config import Recipe
from models.records import Artifact
from models.stale_runs import Heartbeat, owner_tags
from models.storage import StorageConfig, artifact_store
from models.tracking import client, ensure_experiment, package_versions, start_child_run


class PipelineRun(BaseModel):
    """Where a pipeline run logs: its MLflow experiment and parent run (not part of any cache key)."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    name: str
    experiment_id: str
    parent_run_id: str
    flow_run_name: str
    storage: StorageConfig = StorageConfig()

    def store(self):
        """The artifact store of this pipeline run's outputs."""
        return artifact_store(self.storage)


def open_pipeline_run(recipe: Recipe, flow_run_name: str, flow_run_id: str) -> PipelineRun:
    experiment_id = ensure_experiment(recipe.name, recipe.storage)
    run = client().create_run(
        experiment_id,
        run_name=f"pipeline-{flow_run_name}",
        tags={"pipeline": recipe.name, "prefect.flow_run_id": flow_run_id, **owner_tags(flow_run_id)},
    )
    run_id = run.info.run_id
    mlflow_client = client()
    mlflow_client.log_dict(run_id, recipe.model_dump(), "recipe/resolved_recipe.json")
    mlflow_client.log_dict(run_id, package_versions(), "environment/package_versions.json")
    mlflow_client.log_param(run_id, "recipe", json.dumps(recipe.model_dump())[:6000])
    return PipelineRun(
        name=recipe.name,
        experiment_id=experiment_id,
        parent_run_id=run_id,
        flow_run_name=flow_run_name,
        storage=recipe.storage.effective(),
    )


@contextmanager
def pipeline_run_open(pipeline: PipelineRun):
    """While the pipeline runs: its parent run's owner heartbeat (by which a pipeline on another host tells it
    alive); then the run closed FINISHED, or FAILED if the body raised."""
    try:
        with Heartbeat(pipeline.parent_run_id):
            yield
    except BaseException:
        close_pipeline_run(pipeline, "FAILED")
        raise
    close_pipeline_run(pipeline, "FINISHED")


def close_pipeline_run(pipeline: PipelineRun, status: str) -> None:
    client().set_terminated(pipeline.parent_run_id, status)


def is_live(record: Artifact, pipeline: PipelineRun) -> bool:
    """A cached record is usable only while its stamped output folder and its MLflow run both exist."""
    if not pipeline.store().is_live(record):
        return False
    try:
        client().get_run(record.mlflow_run_id)
    except MlflowException:
        return False
    return True


def link_if_cached(pipeline: PipelineRun, stage: str, record: Artifact) -> str:
    """The run id that holds `stage`'s results in this run tree: its own run, or a new link to a cached one."""
    mlflow_client = client()
    origin = mlflow_client.get_run(record.mlflow_run_id)
    if origin.data.tags.get("mlflow.parentRunId") == pipeline.parent_run_id:
        return origin.info.run_id
    run_id = start_child_run(
        pipeline.experiment_id,
        pipeline.parent_run_id,
        stage,
        {"stage": stage, "cached": "true", "origin_run_id": origin.info.run_id},
    )
    for key, value in origin.data.metrics.items():
        if key.startswith(("rejection/", "cost/")):
            mlflow_client.log_metric(run_id, key, value)
    mlflow_client.set_terminated(run_id, "FINISHED")
    return run_id


def log_evaluation(run_id: str, evaluation: Artifact, pipeline: PipelineRun) -> None:
    """An evaluation made (or cached) for another run, copied into `run_id`: this tree then shows this pipeline's
    figures, also when only `evaluation.*` changed."""
    if evaluation.mlflow_run_id == run_id:
        return
    metrics = json.loads((pipeline.store().local_copy(evaluation) / "metrics.json").read_text())
    mlflow_client = client()
    for key, value in metrics.items():
        mlflow_client.log_metric(run_id, key, value)
    mlflow_client.set_tag(run_id, "evaluation_run_id", evaluation.mlflow_run_id or "")
    mlflow_client.set_tag(run_id, "evaluation_cached", "true")
    mlflow_client.set_terminated(run_id, "FINISHED")


def record_output(pipeline: PipelineRun, name: str, record: Artifact) -> None:
    """The parent run's `record.<name>` tag: where stage `name`'s output of this pipeline run lives."""
    client().set_tag(pipeline.parent_run_id, f"record.{name}", record.uri)


def recorded_output(pipeline: PipelineRun, name: str) -> Artifact:
    """The record of stage `name` that pipeline run `parent_run_id` made or used; one line if there is none."""
    uri = client().get_run(pipeline.parent_run_id).data.tags.get(f"record.{name}")
    record = pipeline.store().read_record(uri) if uri else None
    if record is None:
        raise ValueError(
            f"pipeline run {pipeline.parent_run_id} has no finished {name} output; run the pipeline (or that stage) "
            "first"
        )
    return record
