"""Registered models resolve to the version an alias points at now, never to a stale download."""

from __future__ import annotations

from models.factory import resolve_source


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
