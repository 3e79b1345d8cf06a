"""Registered models resolve to the version an alias points at now, never to a stale download."""

from __future__ import annotations

from pathlib import Path

import pytest

from models.factory import resolve_source
from models.recipe import load_recipe


def test_registered_model_dir_follows_the_alias(tmp_path, monkeypatch):
    monkeypatch.setenv("R1_STATE_DIR", str(tmp_path))
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    from models.tracking import client, ensure_experiment, registered_model_dir

    mlflow_client = client()
    mlflow_client.create_registered_model("m")
    experiment = ensure_experiment("e")
    for _ in range(2):
        run_id = mlflow_client.create_run(experiment).info.run_id
        mlflow_client.log_artifacts(run_id, resolve_source("builtin:tiny_base"), "model")
        mlflow_client.create_model_version("m", source=f"runs:/{run_id}/model", run_id=run_id)
    mlflow_client.set_registered_model_alias("m", "champion", "1")
    assert registered_model_dir("models:/m@champion") == tmp_path / "registry" / "m" / "1"
    mlflow_client.set_registered_model_alias("m", "champion", "2")
    moved = registered_model_dir("models:/m@champion")
    assert moved == tmp_path / "registry" / "m" / "2"
    assert (moved / "model.safetensors").is_file()
    assert registered_model_dir("models:/m/1") == tmp_path / "registry" / "m" / "1"


def test_a_new_experiment_is_tagged_as_model_training_and_an_old_one_gets_the_tag(tmp_path, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    from models.tracking import EXPERIMENT_KIND_TAG, MODEL_TRAINING, client, ensure_experiment

    fresh = client().get_experiment(ensure_experiment("fresh"))
    assert fresh.tags[EXPERIMENT_KIND_TAG] == MODEL_TRAINING == "custom_model_development"
    old = client().create_experiment("old", artifact_location=(tmp_path / "old").as_uri())
    assert EXPERIMENT_KIND_TAG not in client().get_experiment(old).tags
    assert ensure_experiment("old") == old
    assert client().get_experiment(old).tags[EXPERIMENT_KIND_TAG] == MODEL_TRAINING
    client().set_experiment_tag(old, EXPERIMENT_KIND_TAG, "finetuning")  # a choice made in the UI is kept
    ensure_experiment("old")
    assert client().get_experiment(old).tags[EXPERIMENT_KIND_TAG] == "finetuning"


def test_ui_links_open_the_model_training_view():
    from models.tracking import artifact_image, compare_url, run_url

    assert (
        run_url("http://h:5000/", "3", "abc") == "http://h:5000/#/experiments/3/runs/abc?workflowType=machine_learning"
    )
    assert run_url("http://h:5000", "3", "abc", "plots/x.png").endswith(
        "/runs/abc/artifactPath/plots/x.png?workflowType=machine_learning"
    )
    assert compare_url("http://h:5000", "3", ["a", "b"]) == (
        "http://h:5000/#/compare-runs?runs=%5B%22a%22%2C%20%22b%22%5D&experiments=%5B%223%22%5D&workflowType=machine_learning"
    )
    assert artifact_image("abc", "plots/x y.png", "t") == "![t](get-artifact?path=plots/x%20y.png&run_uuid=abc)"


@pytest.fixture(scope="module")
def trained_runs(tmp_path_factory, small_stages):
    """cold_start_sft and reasoning_rl run in process, each into its own MLflow run: {stage: (spec, run)}."""
    from models.factory import model_record
    from models.run_stage import run
    from models.stage_io import stage_spec
    from models.tracking import client, ensure_experiment

    out = tmp_path_factory.mktemp("params")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{out / 'mlflow.db'}")
        recipe = load_recipe(None, small_stages)
        experiment, model, runs = ensure_experiment("params"), model_record(recipe.model.base, "base_model"), {}
        for stage in ("cold_start_sft", "reasoning_rl"):
            run_id = client().create_run(experiment, run_name=stage).info.run_id
            spec = stage_spec(stage, recipe, {"model": model}, output=str(out / stage), mlflow_run_id=run_id)
            model = run(spec)
            runs[stage] = (spec, client().get_run(run_id))
        yield runs


@pytest.mark.parametrize("stage", ["cold_start_sft", "reasoning_rl"])
def test_every_knob_is_a_param_once_the_stages_resolved_settings(trained_runs, stage):
    import json

    from mlflow.artifacts import download_artifacts

    from models.tracking import flat

    spec, run = trained_runs[stage]
    payload = spec.key_payload()
    shared = {k: payload[k] for k in ("data", "dtype", "seed") if payload[k] is not None}
    assert set(run.data.params) == set(flat({stage: payload["settings"], **shared}, "config."))  # nothing of TRL's
    knobs = [key.rsplit(".", 1)[-1] for key in run.data.params if key.startswith(f"config.{stage}.trl.")]
    assert len(knobs) == len(set(knobs)) > 5
    trainer_args = json.loads(
        Path(download_artifacts(run_id=run.info.run_id, artifact_path="trainer/training_args.json")).read_text()
    )
    for knob in knobs:  # TRL ran with the settings the params show
        if knob in trainer_args and knob != "warmup_steps":
            assert _same(trainer_args[knob], run.data.params[f"config.{stage}.trl.{knob}"]), knob
    assert "num_hidden_layers" in json.loads(
        Path(download_artifacts(run_id=run.info.run_id, artifact_path="trainer/model_config.json")).read_text()
    )


def _same(value, param: str) -> bool:
    """A TrainingArguments value equals its param (TRL keeps 5 as 5.0 for some fields)."""
    try:
        return float(value) == float(param)
    except (TypeError, ValueError):
        return str(value) == param
