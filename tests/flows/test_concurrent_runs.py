"""Two pipelines of one recipe started together (`python -m flows.cli` twice, at once) never corrupt each other: on a
fresh state folder (MLflow's database and Prefect's embedded API database created by both at once), on that folder
once used (a changed stage computed by one while the other waits), and on an S3 bucket shared by two "machines"
(separate state folders: only the bucket and the tracking database in common). Both exit 0 with the same records,
each stage is computed once, nothing half-written is left.

    .venv/bin/python -m pytest tests/flows/test_concurrent_runs.py -q -m slow
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from models.config import PROJECT_ROOT
from models.stages import PIPELINE

pytestmark = [pytest.mark.slow, pytest.mark.reliability("concurrent")]
# the smallest pipeline that still trains and samples something in every stage
RECIPE = [
    "name=race",
    "model.registered_name=r1-race",
    "data.eval_size=10",
    "data.validation_size=8",
    "data.cold_start_size=100",
    "data.rl_pool_size=16",
    "evaluation.num_samples=1",
    "reasoning_rl.trl.max_steps=2",
    "reasoning_rl.trl.num_generations=4",
    "reasoning_rl.trl.per_device_train_batch_size=8",
    "rejection_sampling.num_prompts=8",
    "final_rl.trl.max_steps=2",
    "final_rl.trl.num_generations=4",
    "final_rl.trl.per_device_train_batch_size=8",
    "final_rl.general_reward.last_steps=1",
]
CHANGED = "final_rl.trl.learning_rate=5e-5"
# the caller's own stack must not leak in: each run uses the embedded defaults of its state folder
HIDDEN = ("PREFECT_API_URL", "PREFECT_HOME", "MLFLOW_TRACKING_URI", "R1_STATE_DIR", "R1_STORAGE_URI")


def _env(state: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in HIDDEN}
    return {**env, "R1_STATE_DIR": str(state), **extra}


def run_together(envs: list[dict[str, str]], overrides: list[str]) -> list[subprocess.CompletedProcess]:
    """`python -m flows.cli <overrides>` once per environment, all started at the same moment."""
    command = [sys.executable, "-m", "flows.cli", *overrides]
    pipes = {"stdout": subprocess.PIPE, "stderr": subprocess.STDOUT, "text": True, "cwd": PROJECT_ROOT}
    procs = [subprocess.Popen(command, env=env, **pipes) for env in envs]
    done = [subprocess.CompletedProcess(p.args, p.wait(timeout=900), p.communicate()[0]) for p in procs]
    for proc in done:
        assert proc.returncode == 0, proc.stdout[-4000:]
    return done


def _mlflow(tracking_uri: str):
    from mlflow import MlflowClient

    return MlflowClient(tracking_uri)


def pipeline_runs(tracking_uri: str, experiment: str = "race") -> list:
    """The pipeline (parent) runs of the experiment, newest first."""
    client = _mlflow(tracking_uri)
    found = client.get_experiment_by_name(experiment)
    runs = client.search_runs([found.experiment_id], "tags.pipeline = 'race'", order_by=["attribute.start_time DESC"])
    return [run for run in runs if "mlflow.parentRunId" not in run.data.tags]


def computed_stage_runs(tracking_uri: str, experiment: str = "race") -> dict[str, int]:
    """How many times each stage was computed: its MLflow runs that a stage process trained or sampled in (a reused
    stage is a link run, with no stage_key)."""
    client = _mlflow(tracking_uri)
    found = client.get_experiment_by_name(experiment)
    counts: dict[str, int] = {}
    for run in client.search_runs([found.experiment_id], "tags.stage_key != ''", max_results=1000):
        counts[run.data.tags["stage"]] = counts.get(run.data.tags["stage"], 0) + 1
    return counts


def records_of(run) -> dict[str, str]:
    return {k.removeprefix("record."): v for k, v in run.data.tags.items() if k.startswith("record.")}


def assert_same_records(pair: list) -> None:
    first, second = (records_of(run) for run in pair)
    assert set(first) == set(PIPELINE) and first == second
    assert [run.info.status for run in pair] == ["FINISHED", "FINISHED"]


def half_written(folder: Path) -> list[Path]:
    """What an attempt left behind: work folders, trainer scratch, temporary files."""
    return sorted(p for p in folder.rglob("*") if p.name.endswith((".partial", ".trainer")) or ".partial-" in p.name)


@pytest.fixture(scope="module")
def fresh(tmp_path_factory):
    """Two runs at once on a fresh state folder: (state folder, tracking URI)."""
    state = tmp_path_factory.mktemp("race") / "state"
    run_together([_env(state), _env(state)], RECIPE)
    return state, f"sqlite:///{state / 'mlflow.db'}"


def test_two_runs_on_a_fresh_state_folder_compute_each_stage_once(fresh):
    state, tracking = fresh
    pair = pipeline_runs(tracking)
    assert len(pair) == 2
    assert_same_records(pair)
    assert computed_stage_runs(tracking) == dict.fromkeys(PIPELINE, 1)
    for stage in PIPELINE:  # one published output per stage, named by its key
        assert len([p for p in (state / "artifacts" / "race" / stage).iterdir() if p.is_dir()]) == 1, stage
    assert half_written(state) == []
    assert list((state / "artifacts" / ".locks").glob("*.lock"))  # the stages' lock files (empty, free)


def test_two_runs_on_a_used_state_folder_compute_the_changed_stage_once(fresh):
    state, tracking = fresh
    before = computed_stage_runs(tracking)
    run_together([_env(state), _env(state)], [*RECIPE, CHANGED])
    pair = pipeline_runs(tracking)[:2]
    assert_same_records(pair)
    assert computed_stage_runs(tracking) == {**before, "final_rl": 2}  # once more, for the new learning rate
    assert len([p for p in (state / "artifacts" / "race" / "final_rl").iterdir() if p.is_dir()]) == 2
    assert half_written(state) == []


def test_two_machines_sharing_a_bucket_compute_each_stage_once(s3, tmp_path):
    server, bucket = s3
    tracking = f"sqlite:///{tmp_path / 'tracking' / 'mlflow.db'}"  # the shared tracking server's stand-in
    shared = {
        "MLFLOW_TRACKING_URI": tracking,
        "R1_STORAGE_URI": f"s3://{bucket}/r1",
        "R1_S3_ENDPOINT_URL": server.endpoint_url,
    }
    machines = [tmp_path / "machine-a", tmp_path / "machine-b"]
    run_together([_env(state, **shared) for state in machines], RECIPE)
    pair = pipeline_runs(tracking)
    assert_same_records(pair)
    assert computed_stage_runs(tracking) == dict.fromkeys(PIPELINE, 1)
    keys = [
        o["Key"]
        for page in server.client().get_paginator("list_objects_v2").paginate(Bucket=bucket)
        for o in page.get("Contents", [])
    ]
    for stage in PIPELINE:  # one stamped output per stage, with the objects of one attempt
        stamps = [k for k in keys if k.startswith(f"r1/race/{stage}/") and k.endswith("/_fingerprint.json")]
        attempts = {
            k.split("/.attempts/")[1].split("/")[0]
            for k in keys
            if k.startswith(f"r1/race/{stage}/") and "/.attempts/" in k
        }
        assert len(stamps) == 1 and len(attempts) == 1, (stage, stamps, attempts)
    assert not [k for k in keys if "/.locks/" in k]  # every lease released
    for state in machines:
        assert half_written(state) == []
