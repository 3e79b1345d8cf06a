"""tasks/promotion.py's registry integrity on MLflow (SQLite, local artifacts): a logged model counts as whole only
once its manifest is there and every file it lists has its size, and no alias is set on a version that is not."""

from __future__ import annotations

from pathlib import Path

import pytest

pytestmark = pytest.mark.reliability("kill")


@pytest.fixture
def logged(tmp_path, monkeypatch):
    """(run id, local folder of its `model` artifact): two files logged as `model`, then their manifest."""
    monkeypatch.setenv("R1_STATE_DIR", str(tmp_path / "state"))
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    from models.tracking import client, ensure_experiment
    from tasks.promotion import log_manifest

    model = tmp_path / "saved" / "model"
    (model / "sub").mkdir(parents=True)
    (model / "model.safetensors").write_bytes(b"w" * 1000)
    (model / "sub" / "MLmodel").write_text("flavors: {}\n")
    mlflow_client = client()
    run_id = mlflow_client.create_run(ensure_experiment("integrity")).info.run_id
    mlflow_client.log_artifacts(run_id, str(model), "model")
    log_manifest(run_id, model)
    return run_id, Path(mlflow_client.get_run(run_id).info.artifact_uri.removeprefix("file://")) / "model"


def test_a_model_with_its_manifest_and_all_its_files_is_whole(logged):
    from tasks.promotion import model_files_complete

    assert model_files_complete(logged[0])


@pytest.mark.parametrize("damage", ["truncated", "missing"])
def test_a_model_a_kill_left_incomplete_is_not_whole_and_gets_no_alias(logged, damage):
    from models.tracking import client
    from tasks.promotion import model_files_complete, set_alias

    run_id, folder = logged
    weights = folder / "model.safetensors"
    if damage == "truncated":
        weights.write_bytes(b"w" * 10)
    else:
        weights.unlink()
    assert not model_files_complete(run_id)
    mlflow_client = client()
    mlflow_client.create_registered_model("integrity")
    version = mlflow_client.create_model_version("integrity", source=str(folder), run_id=run_id)
    with pytest.raises(RuntimeError, match="incomplete; @champion not set"):
        set_alias("integrity", "champion", version)
    assert mlflow_client.get_registered_model("integrity").aliases == {}


def test_a_model_logged_without_its_manifest_is_not_whole(tmp_path, monkeypatch):
    """A kill after the files but before the manifest: not whole (the next registration logs it again)."""
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    from models.tracking import client, ensure_experiment
    from tasks.promotion import model_files_complete

    (tmp_path / "model").mkdir()
    (tmp_path / "model" / "config.json").write_text("{}")
    run_id = client().create_run(ensure_experiment("integrity")).info.run_id
    client().log_artifacts(run_id, str(tmp_path / "model"), "model")
    assert not model_files_complete(run_id)


def test_only_a_published_output_whose_checksums_match_is_registered(tmp_path, monkeypatch):
    """An unstamped folder in the store (a stage's unfinished work) is refused in one line, a stamped one whose file
    changed since by its checksum; a stamped, intact one is taken."""
    monkeypatch.setenv("R1_STATE_DIR", str(tmp_path / "state"))
    from models.records import Artifact
    from models.storage import StorageConfig, StorageError, artifact_store
    from tasks.promotion import verified_output

    store, meta = artifact_store(), {"stage": "final_rl", "kind": "model"}
    work = store.work_dir("reg/final_rl/key")
    (work / "model.safetensors").write_bytes(b"w" * 100)
    unfinished = Artifact(uri=str(work), fingerprint="x", **meta)
    with pytest.raises(ValueError, match="has no stamp: only a published stage output can be registered"):
        verified_output(unfinished, StorageConfig())
    record = store.publish(work, "reg/final_rl/key", meta)
    assert verified_output(record, StorageConfig()) == Path(record.uri)
    (Path(record.uri) / "model.safetensors").write_bytes(b"v" * 100)  # same size, other bytes
    with pytest.raises(StorageError, match="corrupt"):
        verified_output(record, StorageConfig())
