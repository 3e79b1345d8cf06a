"""tasks/stages.py: a stage whose earlier attempt was killed after a checkpoint continues that attempt's MLflow run,
moved under the new pipeline run; otherwise the stage gets a new nested run."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from models.factory import model_record
from models.recipe import load_recipe
from models.resume import COMPLETE, PIPELINE_STATE
from models.stage_io import scratch_dir


@pytest.fixture
def pipeline(tmp_path, monkeypatch):
    monkeypatch.setenv("R1_STATE_DIR", str(tmp_path / "state"))
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    from models.tracking import client, ensure_experiment
    from tasks.pipeline_run import PipelineRun

    experiment = ensure_experiment("stages")
    parent = client().create_run(experiment, run_name="pipeline-1").info.run_id
    return PipelineRun(name="stages", experiment_id=experiment, parent_run_id=parent, flow_run_name="one")


def test_a_killed_stage_continues_its_run_under_the_new_pipeline_run(pipeline):
    from models.stage_io import stage_output, stage_spec
    from models.tracking import client
    from tasks.stages import stage_run

    recipe = load_recipe(None)
    spec = stage_spec("cold_start_sft", recipe, {"model": model_record(recipe.model.base, "base_model")})
    first = stage_run(spec, pipeline)
    checkpoint = scratch_dir(Path(stage_output(pipeline.name, spec))) / "checkpoint-50"
    checkpoint.mkdir(parents=True)
    (checkpoint / PIPELINE_STATE).write_text(json.dumps({"mlflow_run_id": first, "state": {}}))
    (checkpoint / COMPLETE).write_text("{}")

    parent = client().create_run(pipeline.experiment_id, run_name="pipeline-2").info.run_id
    second = pipeline.model_copy(update={"parent_run_id": parent, "flow_run_name": "two"})
    assert stage_run(spec, second) == first
    assert client().get_run(first).data.tags["mlflow.parentRunId"] == parent
    other = stage_spec("reasoning_rl", recipe, {"model": spec.inputs["model"]})
    assert stage_run(other, second) != first  # nothing to resume
