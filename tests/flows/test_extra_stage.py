"""A throwaway sixth stage, declared in a few lines, runs through the flow machinery: the registry, its spec and
cache key, the Prefect task, the stage process, the record from the stamp, its MLflow run and its evaluation."""

from __future__ import annotations

import shutil

import pytest

from models.recipe import load_recipe
from models.stages import STAGES, Stage

pytestmark = pytest.mark.slow

SMALL = ["name=extra", "data.eval_size=12", "data.cold_start_size=64", "evaluation.num_samples=1"]
COPY_STAGE = Stage(
    name="copy_model",
    entry="tests.flows.test_extra_stage:copy_model",
    inputs={"model": "cold_start_sft"},
    output="model",
    section=None,
)


def copy_model(spec, out) -> dict:
    """The stage's entry function: publishes its input model unchanged (what a distillation stage would replace)."""
    from models.records import META_FILES, local_path

    shutil.copytree(local_path(spec.inputs["model"].uri), out, dirs_exist_ok=True, ignore=lambda *_: META_FILES)
    return {}


@pytest.fixture
def with_copy_stage(monkeypatch, tmp_path, prefect_server):
    from prefect.settings import PREFECT_LOCAL_STORAGE_PATH, temporary_settings

    monkeypatch.setitem(STAGES, COPY_STAGE.name, COPY_STAGE)
    monkeypatch.setenv("R1_STATE_DIR", str(tmp_path))
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    with temporary_settings({PREFECT_LOCAL_STORAGE_PATH: tmp_path / "results"}):
        yield


def test_a_sixth_stage_runs_through_the_flow(with_copy_stage):
    from prefect import flow

    from flows.pipeline import Tracker
    from models.tracking import client
    from tasks.pipeline_run import close_pipeline_run, open_pipeline_run

    @flow
    def two_stages(recipe):
        pipeline = open_pipeline_run(recipe, "extra", "")
        run = Tracker(recipe, pipeline)
        run.evaluate("base_model", run.source("base_model"))
        run.stage("cold_start_sft")
        record = run.stage("copy_model")
        close_pipeline_run(pipeline, "FINISHED")
        return run, record

    run, record = two_stages(load_recipe(None, SMALL))
    assert record.stage == "copy_model" and record.kind == "model"
    assert record.fingerprint == run.records["cold_start_sft"].fingerprint  # the same weights, published again
    stage_run = client().get_run(run.runs["copy_model"])
    assert stage_run.info.status == "FINISHED" and stage_run.info.run_name == "copy_model"
    # evaluated like any model stage, with the gain over the checkpoint it started from (here: no gain at all)
    assert stage_run.data.metrics["eval/pass_at_1_gain"] == 0.0
