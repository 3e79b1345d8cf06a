"""tasks/results.py: Prefect task results persisted to the artifact store's bucket (a real Prefect API and moto's
S3 server), so that a second worker with an empty working folder hits the cache."""

from __future__ import annotations

import uuid

from models.storage import StorageConfig
from tasks.results import result_block, result_storage


def test_result_storage_follows_the_store(tmp_path, monkeypatch):
    monkeypatch.delenv("R1_STORAGE_URI", raising=False)
    monkeypatch.setenv("R1_STATE_DIR", str(tmp_path))
    assert result_storage(StorageConfig()) == tmp_path / "prefect-results"
    s3 = result_block(StorageConfig(uri="s3://b/runs/", endpoint_url="http://minio:9000"))
    assert (s3.bucket, s3.prefix, s3.endpoint_url) == ("b", "runs/prefect-results", "http://minio:9000")
    assert s3._resolve_path("key") == s3._resolve_path(s3._resolve_path("key")) == "s3://b/runs/prefect-results/key"
    assert "secret" not in s3.model_dump_json().lower()


def test_cached_result_lives_in_the_bucket_and_serves_an_empty_worker(prefect_server, s3, tmp_path, monkeypatch):
    from prefect import flow, task
    from prefect.settings import PREFECT_LOCAL_STORAGE_PATH, temporary_settings

    server, bucket = s3
    cfg = StorageConfig(uri=f"s3://{bucket}/runs", endpoint_url=server.endpoint_url)
    key, calls = f"square-{uuid.uuid4().hex[:8]}", []

    @task(cache_key_fn=lambda context, parameters: key, persist_result=True)
    def square(x: int) -> int:
        calls.append(x)
        return x * x

    @flow
    def pipeline(x: int) -> int:
        return square.with_options(result_storage=result_storage(cfg))(x)

    def run_on_a_new_worker(name: str) -> int:
        folder = tmp_path / name
        folder.mkdir()
        monkeypatch.chdir(folder)
        monkeypatch.setenv("R1_STATE_DIR", str(folder / "state"))
        with temporary_settings({PREFECT_LOCAL_STORAGE_PATH: folder / "prefect-storage"}):
            return pipeline(7)

    assert run_on_a_new_worker("worker1") == 49
    objects = server.client().list_objects_v2(Bucket=bucket, Prefix="runs/prefect-results/")["Contents"]
    assert [o["Key"] for o in objects] == [f"runs/prefect-results/{key}"]
    assert run_on_a_new_worker("worker2") == 49 and calls == [7]  # cache hit, read from the bucket
    server.client().delete_object(Bucket=bucket, Key=f"runs/prefect-results/{key}")
    assert run_on_a_new_worker("worker3") == 49 and calls == [7, 7]  # without the object: computed again
