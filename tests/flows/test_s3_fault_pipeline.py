"""The whole tiny pipeline on S3 with every S3 request (the stores', Prefect's results, MLflow's artifacts) going
through the fault-injecting proxy (tests/s3_fault_proxy.py): 500s, 503 SlowDown, slow answers, dropped connections
and answers cut mid-body on 10% of requests. It finishes through retries, and the bucket holds no unstamped output
and no open multipart upload.

    python -m pytest tests/flows/test_s3_fault_pipeline.py -q -s   # -s prints the fault counts survived
"""

from __future__ import annotations

import json
import logging

import pytest

from models.recipe import load_recipe
from models.stages import PIPELINE
from tests.s3_fault_proxy import FaultProxy, FaultSchedule, open_uploads, unstamped_objects

pytestmark = [pytest.mark.slow, pytest.mark.reliability("storage")]
log = logging.getLogger(__name__)

SMALL = [
    "name=s3-faults",
    "model.registered_name=r1-s3-faults",
    "data.eval_size=12",
    "data.cold_start_size=64",
    "data.rl_pool_size=16",
    "data.validation_size=8",
    "evaluation.num_samples=1",
    "cold_start_sft.trl.per_device_train_batch_size=8",
    "cold_start_sft.trl.logging_steps=1",
    "cold_start_sft.checkpoint_every=4",  # a checkpoint pushed through the faults too
    "reasoning_rl.trl.max_steps=2",
    "reasoning_rl.trl.num_generations=4",
    "reasoning_rl.trl.per_device_train_batch_size=8",
    "rejection_sampling.num_prompts=8",
    "final_rl.trl.max_steps=2",
    "final_rl.trl.num_generations=4",
    "final_rl.trl.per_device_train_batch_size=8",
    "final_rl.general_reward.last_steps=1",
]
FAULT_RATE, SEED = 0.1, 15


@pytest.fixture(scope="module")
def faulty_bucket(s3_server, prefect_server, tmp_path_factory):
    """A fresh bucket behind the proxy, the shared tracking database and an empty state folder; yields
    (bucket, proxy)."""
    folder = tmp_path_factory.mktemp("faults")
    name = s3_server.new_bucket()
    proxy = FaultProxy(s3_server.endpoint_url, FaultSchedule(rate=FAULT_RATE, seed=SEED, slow_s=0.1)).start()
    with pytest.MonkeyPatch.context() as patch:
        for key in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3"):
            patch.delenv(key, raising=False)
        for key, value in s3_server.env.items():
            patch.setenv(key, value)
        patch.setenv("AWS_CONFIG_FILE", str(folder / "no-aws-config"))
        patch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(folder / "no-aws-credentials"))
        patch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{folder / 'mlflow.db'}")
        patch.setenv("R1_STORAGE_URI", f"s3://{name}/r1")
        patch.setenv("R1_S3_ENDPOINT_URL", proxy.endpoint_url)
        patch.setenv("R1_STATE_DIR", str(folder / "state"))
        patch.chdir(folder)
        yield name, proxy
    proxy.stop()


@pytest.fixture(scope="module")
def run(faulty_bucket, tmp_path_factory):
    from prefect.settings import PREFECT_LOCAL_STORAGE_PATH, temporary_settings

    from flows.pipeline import r1_pipeline

    _, proxy = faulty_bucket
    with temporary_settings({PREFECT_LOCAL_STORAGE_PATH: tmp_path_factory.mktemp("results")}):
        result = r1_pipeline(load_recipe(None, SMALL))
    stats = proxy.stats()
    print(f"\nS3 faults survived by the pipeline: {json.dumps(stats)}")  # noqa: T201 - the report's numbers
    return result, stats


def keys_under(s3_server, bucket: str, prefix: str) -> list[str]:
    pages = s3_server.client().get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
    return [o["Key"] for page in pages for o in page.get("Contents", [])]


def test_the_pipeline_finishes_through_the_faults(run, s3_server, faulty_bucket):
    result, stats = run
    bucket, _ = faulty_bucket
    assert result["model_version"]
    assert stats["faults"] >= 20 and stats["retries"] >= 10, stats
    assert len(stats["by_kind"]) >= 5, stats  # (nearly) every kind of fault was met
    keys = keys_under(s3_server, bucket, "r1/")
    for stage in (*PIPELINE, "evaluate"):
        assert any(k.startswith(f"r1/s3-faults/{stage}/") and k.endswith("/_fingerprint.json") for k in keys), stage
    assert any(k.startswith("r1/mlflow/s3-faults/") for k in keys)  # MLflow's artifacts went through the proxy


def test_no_unstamped_output_and_no_open_upload_is_left(run, s3_server, faulty_bucket):
    bucket, _ = faulty_bucket
    client = s3_server.client()
    assert unstamped_objects(client, bucket) == []
    assert open_uploads(client, bucket) == []
    assert not any(".trainer/" in k for k in keys_under(s3_server, bucket, "r1/s3-faults/"))  # work areas gone


def test_every_published_output_reads_back_intact(run, s3_server, faulty_bucket, tmp_path):
    """A worker with an empty cache downloads each stage's output directly from the server: every file matches its
    stamp's sha256 (nothing half-written got stamped)."""
    from models.s3_store import S3Store
    from models.storage import StorageConfig

    bucket, _ = faulty_bucket
    store = S3Store(StorageConfig(uri=f"s3://{bucket}/r1", endpoint_url=s3_server.endpoint_url), tmp_path / "cache")
    stamps = [k for k in keys_under(s3_server, bucket, "r1/s3-faults/") if k.endswith("/_fingerprint.json")]
    for key in stamps:
        record = store.read_record(f"s3://{bucket}/{key.removesuffix('/_fingerprint.json')}")
        assert store.local_copy(record).is_dir()


SFT = [
    "data.cold_start_size=64",
    "cold_start_sft.trl.per_device_train_batch_size=8",
    "cold_start_sft.trl.logging_steps=1",
    "cold_start_sft.trl.num_train_epochs=3",  # 24 steps: time to kill it after checkpoint-8
    "cold_start_sft.checkpoint_every=4",
]


def stage_process(spec, folder):
    """`python -m models.run_stage spec.json` on a worker whose state folder is `folder` (empty at first)."""
    import os
    import subprocess
    import sys

    from models.config import PROJECT_ROOT

    folder.mkdir(parents=True, exist_ok=True)
    (folder / "spec.json").write_text(spec.model_dump_json())
    env = {**os.environ, "R1_STATE_DIR": str(folder / "state"), "PYTHONPATH": str(PROJECT_ROOT), "TQDM_DISABLE": "1"}
    command = [sys.executable, "-m", "models.run_stage", str(folder / "spec.json")]
    with (folder / "stage.log").open("w") as log:
        return subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=PROJECT_ROOT)


def test_a_damaged_checkpoint_in_the_bucket_is_refused_and_the_one_before_resumed(
    faulty_bucket, s3_server, tmp_path, weights_of
):
    """Worker 1 (through the faults) is killed once checkpoint-8 is in the bucket; a byte of that checkpoint's
    weights is flipped; worker 2, with an empty disk, refuses it in one line, resumes from checkpoint-4 and ends with
    the weights of an uninterrupted run: the damaged weights were never loaded."""
    import time

    import torch

    from models.factory import model_record
    from models.s3_store import S3Store
    from models.stage_io import stage_spec
    from models.storage import StorageConfig, artifact_store

    bucket, _ = faulty_bucket
    recipe = load_recipe(None, SFT)
    store, base = artifact_store(), model_record(recipe.model.base, "base_model")
    direct = S3Store(StorageConfig(uri=f"s3://{bucket}/r1", endpoint_url=s3_server.endpoint_url), tmp_path / "cache")
    killed = stage_spec("cold_start_sft", recipe, {"model": base}, output=store.uri_for("damaged/killed"))
    first, area = stage_process(killed, tmp_path / "worker1"), "damaged/killed.trainer"
    deadline = time.monotonic() + 300
    while "checkpoint-8" not in direct.list_dirs(area):
        assert first.poll() is None and time.monotonic() < deadline, (tmp_path / "worker1" / "stage.log").read_text()
        time.sleep(0.05)
    first.kill()
    first.wait()
    *_, before, newest = direct.list_dirs(area)
    key = direct.key(f"{area}/{newest}/model.safetensors")
    body = s3_server.client().get_object(Bucket=bucket, Key=key)["Body"].read()
    s3_server.client().put_object(Bucket=bucket, Key=key, Body=body[:-1] + bytes([body[-1] ^ 1]))
    assert stage_process(killed, tmp_path / "worker2").wait(timeout=300) == 0
    log = (tmp_path / "worker2" / "stage.log").read_text()
    refused = [line for line in log.splitlines() if "refusing checkpoint" in line]
    assert len(refused) == 1 and f"{newest}/model.safetensors is corrupt" in refused[0], log[-3000:]
    assert f"resuming from {tmp_path / 'worker2'}" in log and f"{before}" in log.split("resuming from")[1][:300]
    straight = killed.model_copy(update={"output": store.uri_for("damaged/straight")})
    assert stage_process(straight, tmp_path / "worker3").wait(timeout=300) == 0
    resumed, expected = (weights_of(str(direct.local_copy(direct.read_record(s.output)))) for s in (killed, straight))
    assert all(torch.equal(expected[k], resumed[k]) for k in expected)
