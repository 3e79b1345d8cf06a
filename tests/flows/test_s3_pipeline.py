"""The whole tiny pipeline with S3 selected, against a real S3-speaking server (moto's server mode on 127.0.0.1):
what lands in the bucket, a second worker with an empty folder that shares only the bucket and the tracking and
orchestration servers, a planted corrupt object, and the one-line preflight errors."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from models.recipe import load_recipe
from models.stages import PIPELINE

pytestmark = pytest.mark.slow

SMALL = [
    "name=s3-e2e",
    "model.registered_name=r1-s3",
    "data.eval_size=12",
    "data.cold_start_size=100",
    "data.rl_pool_size=16",
    "data.validation_size=8",
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


@pytest.fixture(scope="module")
def bucket(s3_server, prefect_server, tmp_path_factory):
    """The bucket and the shared tracking database (the stand-in for a tracking server); every worker below gets
    its own empty working and state folder."""
    shared = tmp_path_factory.mktemp("shared")
    name = s3_server.new_bucket()
    with pytest.MonkeyPatch.context() as patch:
        for key in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3"):
            patch.delenv(key, raising=False)
        for key, value in s3_server.env.items():
            patch.setenv(key, value)
        patch.setenv("AWS_CONFIG_FILE", str(shared / "no-aws-config"))
        patch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(shared / "no-aws-credentials"))
        patch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{shared / 'mlflow.db'}")
        patch.setenv("R1_STORAGE_URI", f"s3://{name}/r1")
        patch.setenv("R1_S3_ENDPOINT_URL", s3_server.endpoint_url)
        yield name


def on_a_new_worker(tmp_path_factory, name: str, run):
    """Run `run()` from an empty working folder with an empty state folder and empty Prefect local storage."""
    from prefect.settings import PREFECT_LOCAL_STORAGE_PATH, temporary_settings

    folder = tmp_path_factory.mktemp(name)
    with pytest.MonkeyPatch.context() as patch, temporary_settings({PREFECT_LOCAL_STORAGE_PATH: folder / "results"}):
        patch.chdir(folder)
        patch.setenv("R1_STATE_DIR", str(folder / "state"))
        return run(), folder / "state"


@pytest.fixture(scope="module")
def first(bucket, tmp_path_factory):
    from flows.pipeline import r1_pipeline

    return on_a_new_worker(tmp_path_factory, "worker1", lambda: r1_pipeline(load_recipe(None, SMALL)))


@pytest.fixture(scope="module")
def second(first, tmp_path_factory):
    from flows.pipeline import r1_pipeline

    return on_a_new_worker(tmp_path_factory, "worker2", lambda: r1_pipeline(load_recipe(None, SMALL)))


def _keys(s3_server, bucket: str, prefix: str) -> list[str]:
    pages = s3_server.client().get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
    return [o["Key"] for page in pages for o in page.get("Contents", [])]


def test_every_output_lands_in_the_bucket(first, s3_server, bucket):
    keys = _keys(s3_server, bucket, "r1/")
    for stage in (*PIPELINE, "evaluate"):
        stamps = [k for k in keys if k.startswith(f"r1/s3-e2e/{stage}/") and k.endswith("/_fingerprint.json")]
        assert stamps, stage
    for stage in ("cold_start_sft", "reasoning_rl", "supervised_merge", "final_rl"):
        files = {k.rsplit("/", 1)[-1] for k in keys if k.startswith(f"r1/s3-e2e/{stage}/")}
        assert {"model.safetensors", "config.json", "tokenizer.json", "spec.json"} <= files, stage
    rejection = {k.rsplit("/", 1)[-1] for k in keys if k.startswith("r1/s3-e2e/rejection_sampling/")}
    assert {"data.jsonl", "stats.json", "spec.json"} <= rejection
    evaluation = {k.rsplit("/", 1)[-1] for k in keys if k.startswith("r1/s3-e2e/evaluate/")}
    assert {"metrics.json", "per_prompt.jsonl", "eval_set.json"} <= evaluation
    assert any(k.startswith("r1/prefect-results/") for k in keys)  # the cache lives in the bucket too
    assert any(k.startswith("r1/mlflow/s3-e2e/") for k in keys)  # MLflow's artifacts too
    assert not any(k.endswith(".trainer/") or "/.trainer" in k for k in keys)  # no work area once published
    _, state = first
    assert not (state / "artifacts").exists()  # nothing published on the worker's disk


def test_the_registered_model_points_at_its_copy_in_the_bucket(first, bucket):
    from models.tracking import client

    result, _ = first
    version = client().get_model_version("r1-s3", result["model_version"])
    assert version.source.startswith(f"s3://{bucket}/r1/mlflow/s3-e2e/") and version.source.endswith("/model")


def test_a_second_worker_with_an_empty_folder_hits_the_cache(first, second):
    result, state = second
    assert all(result["cached"][stage] for stage in PIPELINE)
    assert result["model_version"] == first[0]["model_version"]
    downloaded = [p.name for p in (state / "cache").rglob("*") if p.is_file()]
    assert "metrics.json" in downloaded  # what the summary reads
    assert "model.safetensors" not in downloaded  # no model was fetched: nothing needed one


def test_a_corrupt_object_in_the_bucket_is_refused_in_one_line(first, s3_server, bucket, tmp_path, monkeypatch):
    from models.storage import StorageError, artifact_store
    from models.tracking import client

    result, _ = first
    uri = client().get_run(result["parent_run_id"]).data.tags["record.final_rl"]
    monkeypatch.setenv("R1_STATE_DIR", str(tmp_path / "fresh"))  # an empty download cache
    store = artifact_store()
    record = store.read_record(uri)
    stamp = store.read_stamp(uri)
    key = f"{uri.removeprefix(f's3://{bucket}/')}/{stamp.objects}/model.safetensors"
    body = s3_server.client().get_object(Bucket=bucket, Key=key)["Body"].read()
    s3_server.client().put_object(Bucket=bucket, Key=key, Body=body[:-1] + bytes([body[-1] ^ 1]))
    with pytest.raises(StorageError) as refused:
        store.local_copy(record)
    assert "model.safetensors is corrupt" in str(refused.value) and "\n" not in str(refused.value)


@pytest.mark.parametrize(
    ("variable", "value", "expected"),
    [
        ("R1_STORAGE_URI", "s3://no-such-bucket-r1/x", "no-such-bucket-r1"),
        ("R1_S3_ENDPOINT_URL", "http://127.0.0.1:9", "127.0.0.1:9"),
    ],
)
def test_a_bad_store_stops_the_cli_in_one_line_before_any_work(
    bucket, tmp_path, monkeypatch, capsys, variable, value, expected
):
    from flows.cli import main

    monkeypatch.setenv("R1_STATE_DIR", str(tmp_path / "state"))
    monkeypatch.setenv("PREFECT_HOME", str(tmp_path / "state" / "prefect"))  # main() sets it otherwise
    monkeypatch.setenv(variable, value)
    started = time.monotonic()
    assert main(["name=preflight"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("storage error:") and expected in err and len(err.splitlines()) == 1
    assert time.monotonic() - started < 30
    assert not (tmp_path / "state" / "prefect").exists()  # stopped before Prefect started


SFT = [
    "data.cold_start_size=64",
    "cold_start_sft.trl.per_device_train_batch_size=8",
    "cold_start_sft.trl.logging_steps=1",
]


def _stage_process(spec, folder: Path):
    """`python -m models.run_stage spec.json` on a worker whose state folder is `folder` (empty at first)."""
    import os
    import subprocess
    import sys

    from models.config import PROJECT_ROOT

    folder.mkdir(parents=True, exist_ok=True)
    (folder / "spec.json").write_text(spec.model_dump_json())
    env = {**os.environ, "R1_STATE_DIR": str(folder / "state"), "PYTHONPATH": str(PROJECT_ROOT), "TQDM_DISABLE": "1"}
    log = (folder / "stage.log").open("w")
    command = [sys.executable, "-m", "models.run_stage", str(folder / "spec.json")]
    return subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=PROJECT_ROOT)


def test_a_stage_killed_mid_training_resumes_from_the_bucket_on_an_empty_disk(bucket, tmp_path, weights_of):
    """Worker 1 is killed once checkpoint-4 is in the bucket; worker 2, with an empty disk, pulls it and ends with
    the weights of an uninterrupted run."""
    import torch

    from models.factory import model_record
    from models.stage_io import stage_spec
    from models.storage import artifact_store

    recipe = load_recipe(None, [*SFT, "cold_start_sft.checkpoint_every=4"])
    store, base = artifact_store(), model_record(recipe.model.base, "base_model")
    killed = stage_spec("cold_start_sft", recipe, {"model": base}, output=store.uri_for("resume/killed"))
    first = _stage_process(killed, tmp_path / "worker1")
    deadline = time.monotonic() + 300
    while "checkpoint-4" not in store.list_dirs("resume/killed.trainer"):
        assert first.poll() is None and time.monotonic() < deadline, (tmp_path / "worker1" / "stage.log").read_text()
        time.sleep(0.01)
    first.kill()
    first.wait()
    assert store.read_record(killed.output) is None  # nothing published by the killed attempt
    assert _stage_process(killed, tmp_path / "worker2").wait(timeout=300) == 0  # an empty disk
    log = (tmp_path / "worker2" / "stage.log").read_text()
    assert "pulled checkpoint-4" in log and "resuming from" in log, log[-2000:]
    straight = killed.model_copy(update={"output": store.uri_for("resume/straight")})
    assert _stage_process(straight, tmp_path / "worker3").wait(timeout=300) == 0
    resumed, expected = (weights_of(str(store.local_copy(store.read_record(s.output)))) for s in (killed, straight))
    assert all(torch.equal(expected[k], resumed[k]) for k in expected)
    assert store.list_dirs("resume/killed.trainer") == []  # the work area goes once the output is published
