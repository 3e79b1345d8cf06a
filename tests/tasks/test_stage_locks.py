"""Prefect's SERIALIZABLE cache policy of the stage tasks over the stage locks (tasks/caching.py): two task runs of
one cache key at once compute it once, the other waits and takes the result (Cached), in the local folder and in
a bucket; and the LockManager protocol itself.

    .venv/bin/python -m pytest tests/tasks/test_stage_locks.py -q
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from models.storage import StorageConfig
from tasks.caching import STAGE_CACHE, StageLocks

concurrent = pytest.mark.reliability("concurrent")


@dataclass(frozen=True)
class Spec:
    """What the cache policy reads of a stage spec: its stage, its key and the store it publishes to."""

    stage: str
    storage: StorageConfig
    digest: str = "0123abcd"

    def key(self) -> str:
        return self.digest


@pytest.fixture
def local_state(tmp_path, monkeypatch):
    monkeypatch.setenv("R1_STATE_DIR", str(tmp_path / "state"))
    monkeypatch.delenv("R1_STORAGE_URI", raising=False)
    return tmp_path / "state"


def test_lock_manager_protocol(local_state):
    locks = StageLocks()
    assert locks.acquire_lock("cold_start_sft-k", "me")
    assert locks.is_locked("cold_start_sft-k") and locks.is_lock_holder("cold_start_sft-k", "me")
    assert not locks.is_lock_holder("cold_start_sft-k", "you")
    assert locks.acquire_lock("cold_start_sft-k", "me")  # its holder again: at once
    assert not locks.acquire_lock("cold_start_sft-k", "you", acquire_timeout=0.3)
    assert not locks.wait_for_lock("cold_start_sft-k", timeout=0.3)
    with pytest.raises(ValueError, match="not held by you"):
        locks.release_lock("cold_start_sft-k", "you")
    locks.release_lock("cold_start_sft-k", "me")
    assert not locks.is_locked("cold_start_sft-k")
    assert locks.wait_for_lock("cold_start_sft-k", timeout=0)
    assert (local_state / "artifacts" / ".locks" / "cold_start_sft-k.lock").is_file()


def test_policy_is_serializable_through_the_stage_locks():
    assert STAGE_CACHE.isolation_level == "SERIALIZABLE"
    assert isinstance(STAGE_CACHE.lock_manager, StageLocks)


def _race(spec: Spec, results: Path, calls: Path) -> list:
    """Two task runs of `spec`'s key submitted together in one flow; their final states."""
    from prefect import flow, task

    @task(cache_policy=STAGE_CACHE, persist_result=True, result_storage=results)
    def stage(spec: Spec) -> str:
        with calls.open("a") as f:
            f.write(f"{threading.get_ident()}\n")
        time.sleep(1.5)  # long enough for the other run to reach the lock
        return f"output of {spec.stage}-{spec.key()}"

    @flow
    def two_at_once():
        futures = [stage.submit(spec), stage.submit(spec)]
        return [future.wait() or future.state for future in futures]

    return two_at_once()


def _check_one_computed(states: list, calls: Path) -> None:
    assert len(calls.read_text().splitlines()) == 1
    assert [state.result() for state in states] == ["output of cold_start_sft-0123abcd"] * 2
    assert sorted(state.name for state in states) == ["Cached", "Completed"]


@concurrent
def test_two_runs_of_one_key_compute_it_once_in_the_local_folder(prefect_server, local_state, tmp_path):
    spec = Spec("cold_start_sft", StorageConfig())
    states = _race(spec, tmp_path / "results", tmp_path / "calls")
    _check_one_computed(states, tmp_path / "calls")


@concurrent
def test_two_runs_of_one_key_compute_it_once_in_a_bucket(prefect_server, s3, tmp_path):
    server, bucket = s3
    spec = Spec("cold_start_sft", StorageConfig(uri=f"s3://{bucket}/r1", endpoint_url=server.endpoint_url))
    states = _race(spec, tmp_path / "results", tmp_path / "calls")
    _check_one_computed(states, tmp_path / "calls")
    assert server.client().list_objects_v2(Bucket=bucket, Prefix="r1/.locks/").get("KeyCount", 0) == 0  # released
    assert not (tmp_path / "state" / "artifacts" / ".locks").exists()  # a lease in the bucket, not a local lock
