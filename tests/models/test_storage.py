"""models/storage.py, stores.py, s3_store.py, artifact_cache.py: the artifact store on a local folder and on a
real S3-speaking server (moto's server mode on loopback, tests/conftest.py's `s3` fixture)."""

from __future__ import annotations

import contextlib
import os
import time

import pytest

from models.records import STAMP, Artifact, fingerprint_dir
from models.s3_store import S3Store, split_s3
from models.storage import StorageConfig, StorageError, artifact_store, mlflow_artifact_location, mlflow_env
from tests.conftest import free_port

META = {"stage": "cold_start_sft", "kind": "model", "mlflow_run_id": "run-1"}
FILES = {"config.json": b'{"a": 1}', "model.safetensors": os.urandom(3000), "tok/tokenizer.json": b"{}"}
OUT = "demo/cold_start_sft/key1"


def s3_config(s3, **extra) -> StorageConfig:
    server, bucket = s3
    return StorageConfig(uri=f"s3://{bucket}/runs", endpoint_url=server.endpoint_url, **extra)


@pytest.fixture(params=["local", "s3"])
def store(request, tmp_path):
    if request.param == "local":
        return artifact_store(StorageConfig(uri=str(tmp_path / "store")))
    return artifact_store(s3_config(request.getfixturevalue("s3"), multipart_threshold_mb=5))


def write(folder, files: dict[str, bytes]):
    for name, content in files.items():
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_bytes(content)
    return folder


def published(store, relative=OUT, files=FILES) -> Artifact:
    return store.publish(write(store.work_dir(relative), files), relative, META)


def fresh_worker(store, tmp_path, name="worker2"):
    """The same store seen from a second worker with an empty state folder (so an empty cache)."""
    if isinstance(store, S3Store):
        cfg = StorageConfig(uri=store.root_uri, endpoint_url=store.endpoint_url, multipart_threshold_mb=5)
        return S3Store(cfg, cache_dir=tmp_path / name / "cache")
    return store


@contextlib.contextmanager
def s3_requests(store):
    """Names of the S3 operations `store`'s client sends while inside."""
    seen = []

    def hook(event_name, **_):
        seen.append(event_name.rsplit(".", 1)[-1])

    store.client.meta.events.register("before-send.s3", hook)
    try:
        yield seen
    finally:
        store.client.meta.events.unregister("before-send.s3", hook)


def files_of(folder) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


def test_publish_read_local_copy_round_trip(store, tmp_path):
    expected_fingerprint = fingerprint_dir(write(tmp_path / "same", FILES))
    record = published(store)
    assert record.uri == store.uri_for(OUT)
    assert record.fingerprint == expected_fingerprint  # the same fingerprint as today's stamps
    assert store.read_record(record.uri) == record
    assert store.is_live(record)
    other = fresh_worker(store, tmp_path)
    copy = other.local_copy(record)
    assert {k: v for k, v in files_of(copy).items() if k != STAMP} == FILES
    assert other.local_source(record) == str(copy)


def test_output_without_stamp_is_not_trusted(store):
    record = published(store)
    if isinstance(store, S3Store):
        bucket, key = split_s3(record.uri)
        store.client.delete_object(Bucket=bucket, Key=f"{key}/{STAMP}")
    else:
        (store.root / OUT / STAMP).unlink()
    assert store.read_record(record.uri) is None
    assert not store.is_live(record)
    assert store.read_record(store.uri_for("demo/never/written")) is None


def test_s3_stamp_is_written_last_under_an_attempt_prefix(s3):
    store = artifact_store(s3_config(s3))
    with s3_requests(store) as ops:
        record = published(store)
    assert ops[-1] == "PutObject" and ops.count("PutObject") == len(FILES) + 1
    stamp = store.read_stamp(record.uri)
    assert stamp.objects.startswith(".attempts/")
    bucket, key = split_s3(record.uri)
    keys = {o["Key"] for o in store.client.list_objects_v2(Bucket=bucket, Prefix=key)["Contents"]}
    assert keys == {f"{key}/{STAMP}"} | {f"{key}/{stamp.objects}/{name}" for name in FILES}


def test_multipart_upload_above_the_threshold(s3, tmp_path):
    store = artifact_store(s3_config(s3, multipart_threshold_mb=5))
    big = {"model.safetensors": os.urandom(11 << 20), "config.json": b"{}"}
    with s3_requests(store) as ops:
        record = published(store, files=big)
    assert ops.count("CreateMultipartUpload") == 1 and ops.count("UploadPart") == 3
    assert ops.count("CompleteMultipartUpload") == 1
    assert files_of(fresh_worker(store, tmp_path).local_copy(record))["model.safetensors"] == big["model.safetensors"]


def test_cache_hit_makes_no_request(s3, tmp_path):
    record = published(artifact_store(s3_config(s3)))
    worker = fresh_worker(artifact_store(s3_config(s3)), tmp_path)
    with s3_requests(worker) as first:
        folder = worker.local_copy(record)
    with s3_requests(worker) as second:
        assert worker.local_copy(record) == folder
    assert "GetObject" in first and second == []
    assert folder == tmp_path / "worker2" / "cache" / record.fingerprint


def test_publishing_worker_has_its_output_cached(s3):
    store = artifact_store(s3_config(s3))
    record = published(store)
    with s3_requests(store) as ops:
        store.local_copy(record)
    assert ops == []


def test_cache_evicts_least_recently_used_past_its_bound(s3):
    store = S3Store(s3_config(s3, cache_max_gb=7000 / (1 << 30)))  # room for two 3 kB outputs
    a, b = (published(store, f"demo/s/{n}", {**FILES, "n": n.encode()}) for n in "ab")
    time.sleep(0.01)
    store.local_copy(a)  # a is now more recent than b
    time.sleep(0.01)
    c = published(store, "demo/s/c", {**FILES, "n": b"c"})
    cached = {p.name for p in store.cache.root.iterdir()}
    assert cached == {a.fingerprint, c.fingerprint}
    with s3_requests(store) as ops:
        store.local_copy(b)  # evicted: fetched again
    assert "GetObject" in ops


@pytest.mark.parametrize(
    ("damage", "word"),
    [(lambda data: bytes([data[0] ^ 1]) + data[1:], "corrupt"), (lambda data: data[:-10], "truncated")],
    ids=["corrupt", "truncated"],
)
def test_damaged_object_is_refused_with_one_line(store, tmp_path, damage, word):
    record = published(store)
    stamp = store.read_stamp(record.uri)
    if isinstance(store, S3Store):
        bucket, key = split_s3(record.uri)
        target = f"{key}/{stamp.objects}/model.safetensors"
        store.client.put_object(Bucket=bucket, Key=target, Body=damage(FILES["model.safetensors"]))
    else:
        target = store.root / OUT / "model.safetensors"
        target.write_bytes(damage(FILES["model.safetensors"]))
    worker = fresh_worker(store, tmp_path)
    with pytest.raises(StorageError, match=word) as err:
        worker.local_copy(record, full=True)
    assert "\n" not in str(err.value) and "model.safetensors" in str(err.value) and "delete" in str(err.value)
    if isinstance(worker, S3Store):
        assert not any(worker.cache.root.iterdir())  # nothing half-downloaded stays in the cache


def test_missing_object_is_refused_with_one_line(s3, tmp_path):
    store = artifact_store(s3_config(s3))
    record = published(store)
    bucket, key = split_s3(record.uri)
    store.client.delete_object(Bucket=bucket, Key=f"{key}/{store.read_stamp(record.uri).objects}/config.json")
    with pytest.raises(StorageError, match="config.json is missing: delete") as err:
        fresh_worker(store, tmp_path).local_copy(record)
    assert "\n" not in str(err.value)


def test_push_pull_round_trip_to_an_empty_folder(store, tmp_path):
    checkpoint = write(tmp_path / "checkpoint-2", {"model.safetensors": os.urandom(2000), "trainer_state.json": b"{}"})
    area = "demo/reasoning_rl/key1.trainer"
    assert store.list_dirs(area) == [] and not store.pull_dir(f"{area}/checkpoint-2", tmp_path / "x")
    store.push_dir(checkpoint, f"{area}/checkpoint-2")
    assert store.list_dirs(area) == ["checkpoint-2"]
    empty = tmp_path / "new-disk" / "checkpoint-2"
    assert store.pull_dir(f"{area}/checkpoint-2", empty)
    assert files_of(empty) == files_of(checkpoint)
    store.remove(area)
    assert store.list_dirs(area) == [] and not store.pull_dir(f"{area}/checkpoint-2", tmp_path / "y")


def test_push_dir_uploads_only_new_or_changed_files(s3, tmp_path):
    store = artifact_store(s3_config(s3))
    checkpoint = write(tmp_path / "checkpoint-4", {"a.bin": b"1" * 100, "b.bin": b"2" * 100})
    store.push_dir(checkpoint, "w/checkpoint-4")
    with s3_requests(store) as unchanged:
        store.push_dir(checkpoint, "w/checkpoint-4")
    (checkpoint / "b.bin").write_bytes(b"3" * 100)
    with s3_requests(store) as changed:
        store.push_dir(checkpoint, "w/checkpoint-4")
    assert "PutObject" not in unchanged
    assert changed.count("PutObject") == 2  # b.bin, then the manifest


def test_clean_attempts_keeps_the_stamped_one(s3, tmp_path):
    store = artifact_store(s3_config(s3))
    published(store)
    record = published(store)  # a second writer: its stamp wins, the first attempt is orphaned
    assert store.clean_attempts(OUT, older_than_s=3600) == 0  # too young: a writer may still be uploading
    assert store.clean_attempts(OUT, older_than_s=0) == len(FILES)
    assert files_of(fresh_worker(store, tmp_path).local_copy(record))["config.json"] == FILES["config.json"]


def test_records_outside_the_store_pass_through(store, tmp_path):
    hub = Artifact(uri="Qwen/Qwen2.5-0.5B", fingerprint="hub-Qwen", stage="base_model", kind="model")
    folder = write(tmp_path / "base", {"config.json": b"{}"})
    local = Artifact(uri=str(folder), fingerprint="f", stage="base_model", kind="model")
    assert store.local_source(hub) == "Qwen/Qwen2.5-0.5B"
    assert store.local_copy(local) == folder and store.read_record(str(folder)) is None


def test_outputs_with_an_earlier_stamp_format_still_count(tmp_path):
    """Outputs published before stamps held checksums (the stamp was the bare record) are still read."""
    store = artifact_store(StorageConfig(uri=str(tmp_path / "store")))
    final = write(tmp_path / "store" / OUT, FILES)
    record = Artifact(uri=str(final), fingerprint=fingerprint_dir(final), **META)
    (final / STAMP).write_text(record.model_dump_json())
    assert store.read_record(str(final)) == record and store.is_live(record)
    assert store.local_copy(record, full=True) == final


def test_small_text_objects_round_trip(store):
    uri = store.put_text("demo/specs/cold_start_sft.json", '{"stage": "cold_start_sft"}')
    assert uri == store.uri_for("demo/specs/cold_start_sft.json")
    assert store.get_text(uri) == '{"stage": "cold_start_sft"}'
    with pytest.raises(StorageError, match="does not exist"):
        store.get_text(store.uri_for("demo/specs/none.json"))


def one_line_error(check) -> tuple[str, float]:
    started = time.monotonic()
    with pytest.raises(StorageError) as err:
        check()
    assert "\n" not in str(err.value)
    return str(err.value), time.monotonic() - started


def test_preflight_passes_on_a_good_store(store):
    store.check()


def test_preflight_missing_bucket_and_unreachable_endpoint(s3):
    server, _ = s3
    missing = artifact_store(StorageConfig(uri="s3://no-such-bucket/x", endpoint_url=server.endpoint_url))
    message, took = one_line_error(missing.check)
    assert "does not exist" in message and took < 5
    closed = f"http://127.0.0.1:{free_port()}"
    message, took = one_line_error(artifact_store(StorageConfig(uri="s3://b/x", endpoint_url=closed)).check)
    assert "cannot reach" in message and closed in message and took < 10


def test_preflight_bad_credentials(s3, monkeypatch):
    """The server validates credentials (moto's IAM auth, switched on for this test): a key it issued passes,
    a wrong secret is refused with one line."""
    import requests

    server, bucket = s3
    auth = f"{server.endpoint_url}/moto-api/reset-auth"
    requests.post(auth, data=b"3", timeout=5)  # the next 3 requests set up a user; all later ones are checked
    try:
        iam = boto3_client("iam", server)
        iam.create_user(UserName="r1")
        iam.put_user_policy(UserName="r1", PolicyName="s3", PolicyDocument=S3_POLICY)
        key = iam.create_access_key(UserName="r1")["AccessKey"]
        monkeypatch.setenv("AWS_ACCESS_KEY_ID", key["AccessKeyId"])
        monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", key["SecretAccessKey"])
        store = artifact_store(StorageConfig(uri=f"s3://{bucket}/x", endpoint_url=server.endpoint_url))
        store.check()
        monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "wrong")
        wrong = artifact_store(StorageConfig(uri=f"s3://{bucket}/x", endpoint_url=server.endpoint_url))
        message, took = one_line_error(wrong.check)
    finally:
        requests.post(auth, data=b"inf", timeout=5)
    assert "refused the credentials" in message and "SignatureDoesNotMatch" in message and took < 5


def test_preflight_without_credentials(s3, monkeypatch):
    server, bucket = s3
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        monkeypatch.delenv(name)
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")  # no instance role to find here
    store = artifact_store(StorageConfig(uri=f"s3://{bucket}/x", endpoint_url=server.endpoint_url))
    message, took = one_line_error(store.check)
    assert message.startswith("no AWS credentials") and "AWS_PROFILE" in message and took < 5


S3_POLICY = '{"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "s3:*", "Resource": "*"}]}'


def boto3_client(service, server):
    import boto3

    return boto3.client(service, endpoint_url=server.endpoint_url, region_name="us-east-1")


def test_preflight_unwritable_local_folder(tmp_path):
    (tmp_path / "file").write_text("")
    message, _ = one_line_error(artifact_store(StorageConfig(uri=str(tmp_path / "file" / "store"))).check)
    assert "cannot write to the artifact folder" in message


@pytest.mark.parametrize(
    ("fields", "error"),
    [
        ({"uri": "s3://AKIA:secret@bucket/x"}, "carries credentials"),
        ({"uri": "s3://bucket/x?X-Amz-Signature=abc"}, "secret"),
        ({"uri": "gs://bucket/x"}, "neither s3://"),
        ({"uri": "s3:///x"}, "names no bucket"),
        ({"endpoint_url": "minio:9000"}, "http://"),
        ({"endpoint_url": "http://user:pw@minio:9000"}, "carries credentials"),
        ({"cache_max_gb": 0}, "greater than 0"),
        ({"bucket": "b"}, "Extra inputs"),
    ],
)
def test_storage_config_refuses(fields, error):
    with pytest.raises(ValueError, match=error):
        StorageConfig(**fields)


@pytest.mark.parametrize(
    ("env", "uri", "endpoint"),
    [
        ({}, None, None),
        ({"R1_STORAGE_URI": "s3://b/p"}, "s3://b/p", None),
        ({"R1_STORAGE_URI": "s3://b/p", "AWS_ENDPOINT_URL": "http://a:1"}, "s3://b/p", "http://a:1"),
        ({"AWS_ENDPOINT_URL_S3": "http://s3:1", "AWS_ENDPOINT_URL": "http://a:1"}, None, "http://s3:1"),
        ({"R1_S3_ENDPOINT_URL": "http://r1:1", "AWS_ENDPOINT_URL_S3": "http://s3:1"}, None, "http://r1:1"),
    ],
)
def test_environment_overrides(monkeypatch, env, uri, endpoint):
    for name in ("R1_STORAGE_URI", "R1_S3_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL"):
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    cfg = StorageConfig().effective()
    assert (cfg.uri, cfg.endpoint_url) == (uri, endpoint)


def test_environment_override_is_validated(monkeypatch):
    monkeypatch.setenv("R1_STORAGE_URI", "s3://key:secret@bucket")
    with pytest.raises(StorageError, match="from the environment") as err:
        StorageConfig().effective()
    assert "secret@" not in str(err.value)


def test_mlflow_artifacts_and_registered_model_land_in_the_bucket(s3, tmp_path, monkeypatch):
    import mlflow
    from mlflow.tracking import MlflowClient

    server, bucket = s3
    cfg = s3_config(s3)
    for name, value in mlflow_env(cfg).items():
        monkeypatch.setenv(name, value)
    mlflow.set_tracking_uri(f"sqlite:///{tmp_path / 'mlflow.db'}")
    client = MlflowClient()
    location = mlflow_artifact_location(cfg, "demo")
    assert location == f"s3://{bucket}/runs/mlflow/demo"
    run = client.create_run(client.create_experiment("demo", artifact_location=location))
    model = write(tmp_path / "final", {"config.json": b"{}", "model.safetensors": b"w"})
    client.log_artifacts(run.info.run_id, str(model), "model")
    client.create_registered_model("r1")
    source = f"{client.get_run(run.info.run_id).info.artifact_uri}/model"  # the S3 copy, not runs:/
    version = client.create_model_version("r1", source=source, run_id=run.info.run_id)
    keys = {o["Key"] for o in server.client().list_objects_v2(Bucket=bucket, Prefix="runs/mlflow/demo/")["Contents"]}
    assert f"runs/mlflow/demo/{run.info.run_id}/artifacts/model/model.safetensors" in keys
    assert (
        client.get_model_version("r1", version.version).source
        == f"s3://{bucket}/runs/mlflow/demo/{run.info.run_id}/artifacts/model"
    )
    downloaded = mlflow.artifacts.download_artifacts(f"models:/r1/{version.version}", dst_path=str(tmp_path / "dl"))
    assert (tmp_path / "dl" / "model.safetensors").read_bytes() == b"w" and downloaded


def test_a_model_checkpoint_loads_from_the_bucket_on_an_empty_worker(s3, tmp_path, tiny_qwen2, weights_changed):
    import shutil

    store = artifact_store(s3_config(s3))
    work = store.work_dir(OUT)
    shutil.copytree(tiny_qwen2, work, dirs_exist_ok=True)  # safetensors, config, tokenizer
    record = store.publish(work, OUT, META)
    source = fresh_worker(store, tmp_path).local_source(record)
    assert {"model.safetensors", "config.json", "tokenizer.json"} <= set(os.listdir(source))
    assert not weights_changed(tiny_qwen2, source)
