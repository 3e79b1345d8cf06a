"""models/checkpoint_sync.py: checkpoints pushed as they complete come back on an empty disk, on both stores, and
the store keeps the trainer's rotation."""

from __future__ import annotations

import pytest

from models.checkpoint_sync import pull_latest, record_attempt_in, store_hooks
from models.resume import COMPLETE, RUN_FILE
from models.storage import StorageConfig, artifact_store

AREA = "demo/reasoning_rl/key1.trainer"


@pytest.fixture(params=["local", "s3"])
def store(request, tmp_path):
    if request.param == "local":
        return artifact_store(StorageConfig(uri=str(tmp_path / "store")))
    server, bucket = request.getfixturevalue("s3")
    return artifact_store(StorageConfig(uri=f"s3://{bucket}/runs", endpoint_url=server.endpoint_url))


def save(area, step: int):
    folder = area / f"checkpoint-{step}"
    folder.mkdir(parents=True)
    (folder / "model.safetensors").write_bytes(bytes([step]) * 100)
    (folder / COMPLETE).write_text("")
    return folder


def test_pushed_checkpoints_resume_on_an_empty_disk(store, tmp_path):
    area = tmp_path / "worker1" / "out.trainer"
    hooks = store_hooks(store, AREA, area)
    assert pull_latest(store, AREA, tmp_path / "empty") is None
    record_attempt_in(store, AREA, "run-1")
    for step in (2, 4, 6):
        folder = save(area, step)
        if step == 6:  # the trainer's rotation (the newest two) removed checkpoint-2
            for path in (area / "checkpoint-2").iterdir():
                path.unlink()
            (area / "checkpoint-2").rmdir()
        hooks.on_checkpoint(folder)
    assert store.list_dirs(AREA) == ["checkpoint-4", "checkpoint-6"]
    fresh = tmp_path / "worker2" / "out.trainer"
    assert pull_latest(store, AREA, fresh) == fresh / "checkpoint-6"
    assert (fresh / "checkpoint-6" / "model.safetensors").read_bytes() == b"\x06" * 100
    assert (fresh / "checkpoint-6" / COMPLETE).is_file()
    assert '"run-1"' in (fresh / RUN_FILE).read_text()  # the attempt's MLflow run travels with it
