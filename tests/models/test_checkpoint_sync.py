"""models/checkpoint_sync.py: checkpoints pushed on save come back on an empty disk, on both stores."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from models.checkpoint_sync import PushCheckpoints, restore_latest
from models.storage import StorageConfig, artifact_store

AREA = "demo/reasoning_rl/key1.trainer"


@pytest.fixture(params=["local", "s3"])
def store(request, tmp_path):
    if request.param == "local":
        return artifact_store(StorageConfig(uri=str(tmp_path / "store")))
    server, bucket = request.getfixturevalue("s3")
    return artifact_store(StorageConfig(uri=f"s3://{bucket}/runs", endpoint_url=server.endpoint_url))


def save(output, step: int) -> None:
    folder = output / f"checkpoint-{step}"
    folder.mkdir(parents=True)
    (folder / "model.safetensors").write_bytes(bytes([step]) * 100)
    (folder / "trainer_state.json").write_text(f'{{"global_step": {step}}}')


def test_pushed_checkpoints_resume_on_an_empty_disk(store, tmp_path):
    output, callback = tmp_path / "worker1" / "out", PushCheckpoints(store, AREA)
    assert restore_latest(store, AREA, tmp_path / "empty") is None
    for step in (2, 4, 6):
        save(output, step)
        if step == 6:  # the trainer's rotation (save_total_limit=2) removed checkpoint-2
            (output / "checkpoint-2" / "model.safetensors").unlink()
            (output / "checkpoint-2" / "trainer_state.json").unlink()
            (output / "checkpoint-2").rmdir()
        state = SimpleNamespace(global_step=step, is_world_process_zero=True)
        callback.on_save(SimpleNamespace(output_dir=str(output)), state, None)
    assert store.list_dirs(AREA) == ["checkpoint-4", "checkpoint-6"]
    resume = restore_latest(store, AREA, tmp_path / "worker2" / "scratch")
    assert resume == str(tmp_path / "worker2" / "scratch" / "checkpoint-6")
    assert (tmp_path / "worker2" / "scratch" / "checkpoint-6" / "model.safetensors").read_bytes() == b"\x06" * 100
