"""models/s3_store.py, stores.py, checkpoint_sync.py under storage faults: every request goes through the
fault-injecting proxy (tests/s3_fault_proxy.py) in front of moto's S3 server. Outputs are published and read back
through retries; a failed publish leaves nothing; a damaged object or checkpoint is refused in one line.

    python -m pytest tests/models/test_s3_faults.py -q
"""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path

import pytest

from models import s3_store
from models.checkpoint_sync import pull_latest, store_hooks
from models.records import STAMP
from models.resume import COMPLETE, resume_point
from models.s3_store import S3Store
from models.storage import StorageConfig, StorageError, artifact_store
from models.stores import CorruptObjectError
from tests import s3_fault_proxy as proxy_audit
from tests.conftest import free_port
from tests.s3_fault_proxy import FaultProxy, FaultSchedule

pytestmark = pytest.mark.reliability("storage")

META = {"stage": "cold_start_sft", "kind": "model", "mlflow_run_id": "run-1"}
AREA = "demo/reasoning_rl/key1.trainer"


@pytest.fixture
def proxy(s3):
    server, _ = s3
    proxy = FaultProxy(server.endpoint_url, FaultSchedule(rate=0.0, slow_s=0.05)).start()
    yield proxy
    proxy.stop()


def store_at(endpoint: str, s3, tmp_path, name: str = "worker1") -> S3Store:
    _, bucket = s3
    cfg = StorageConfig(uri=f"s3://{bucket}/runs", endpoint_url=endpoint, multipart_threshold_mb=5)
    return S3Store(cfg, cache_dir=tmp_path / name / "cache")


def publish(store: S3Store, relative: str, files: dict[str, bytes]):
    work = store.work_dir(relative)
    for name, content in files.items():
        (work / name).parent.mkdir(parents=True, exist_ok=True)
        (work / name).write_bytes(content)
    return store.publish(work, relative, META)


def bucket_keys(s3) -> list[str]:
    server, bucket = s3
    pages = server.client().get_paginator("list_objects_v2").paginate(Bucket=bucket)
    return [item["Key"] for page in pages for item in page.get("Contents", [])]


def open_uploads(s3) -> list[str]:
    server, bucket = s3
    return proxy_audit.open_uploads(server.client(), bucket)


def unstamped_objects(s3) -> list[str]:
    server, bucket = s3
    return proxy_audit.unstamped_objects(server.client(), bucket, STAMP)


def damaged(body: bytes, truncate: bool) -> bytes:
    return body[:-7] if truncate else body[:-1] + bytes([body[-1] ^ 1])


def flip_a_byte(s3, key: str, truncate: bool = False) -> None:
    """Replace the object at `key` (directly on the server) by its bytes with the last one flipped, or cut short;
    the server keeps the SHA-256 of what it now holds."""
    server, bucket = s3
    body = server.client().get_object(Bucket=bucket, Key=key)["Body"].read()
    server.client().put_object(Bucket=bucket, Key=key, Body=damaged(body, truncate), ChecksumAlgorithm="SHA256")


@pytest.mark.parametrize("seed", [1, 2])
def test_publish_list_and_download_finish_through_faults(s3, proxy, tmp_path, seed):
    proxy.schedule = FaultSchedule(rate=0.3, seed=seed, slow_s=0.05)
    store = store_at(proxy.endpoint_url, s3, tmp_path)
    outputs = {
        f"demo/stage{i}/key": {"config.json": b'{"a": %d}' % i, "model.safetensors": os.urandom(2000 + i)}
        for i in range(3)
    }
    outputs["demo/big/key"] = {"model.safetensors": os.urandom(11 << 20), "tok/tokenizer.json": b"{}"}  # 3 parts
    records = {relative: publish(store, relative, files) for relative, files in outputs.items()}
    reader = store_at(proxy.endpoint_url, s3, tmp_path, "worker2")
    for relative, files in outputs.items():
        assert reader.read_record(reader.uri_for(relative)) == records[relative]
        folder = reader.local_copy(records[relative])
        assert {name: (folder / name).read_bytes() for name in files} == files
    stats = proxy.stats()
    assert stats["faults"] >= 10 and stats["retries"] >= 5, stats
    assert not open_uploads(s3) and not unstamped_objects(s3)


def test_checkpoints_push_list_and_pull_through_faults(s3, proxy, tmp_path):
    proxy.schedule = FaultSchedule(rate=0.3, seed=3, slow_s=0.05)
    store = store_at(proxy.endpoint_url, s3, tmp_path)
    area = tmp_path / "worker1" / "out.trainer"
    hooks = store_hooks(store, AREA, area)
    for step in (2, 4):
        hooks.on_checkpoint(checkpoint(area, step))
    assert store.list_dirs(AREA) == ["checkpoint-2", "checkpoint-4"]
    fresh = tmp_path / "worker2" / "out.trainer"
    assert pull_latest(store, AREA, fresh) == fresh / "checkpoint-4"
    assert (fresh / "checkpoint-4" / "model.safetensors").read_bytes() == bytes([4]) * 6000
    assert proxy.stats()["faults"] >= 3 and not open_uploads(s3)


def test_a_response_cut_mid_body_is_read_again(s3, proxy, tmp_path):
    store = store_at(proxy.endpoint_url, s3, tmp_path)
    record = publish(store, "demo/cut/key", {"model.safetensors": os.urandom(50_000)})
    reader = store_at(proxy.endpoint_url, s3, tmp_path, "worker2")
    proxy.script(lambda r: r.method == "GET" and "?" not in r.path, ["reset_body", "reset_body"])
    assert reader.read_record(record.uri) == record  # the stamp's body, cut once: read again
    assert (reader.local_copy(record) / "model.safetensors").stat().st_size == 50_000  # s3transfer reads again
    assert proxy.stats()["by_kind"] == {"reset_body": 2}


def test_a_404_answer_cut_mid_body_is_asked_again(s3, proxy, tmp_path):
    """botocore reads a GetObject error's body outside its retries (urllib3's ProtocolError escapes): read_object
    asks again, and the missing object reads as missing. Seen in the pipeline at 10% faults (a checkpoint push's
    manifest lookup)."""
    store = store_at(proxy.endpoint_url, s3, tmp_path)
    proxy.script(lambda r: r.method == "GET" and "missing" in r.path, ["reset_body", "reset_body"])
    assert store.read_record(store.uri_for("demo/missing/key")) is None
    assert proxy.stats()["by_kind"] == {"reset_body": 2}


def test_a_stalled_answer_times_out_and_is_retried(s3, proxy, tmp_path, monkeypatch):
    monkeypatch.setattr(s3_store, "READ_TIMEOUT_S", 1)
    proxy.schedule = FaultSchedule(rate=0.0, stall_s=2.5)
    store = store_at(proxy.endpoint_url, s3, tmp_path)
    record = publish(store, "demo/stall/key", {"config.json": b"{}"})
    proxy.script(lambda r: r.method == "GET", ["stall"])
    started = time.monotonic()
    assert store.read_record(record.uri) == record
    assert 1 <= time.monotonic() - started < 10
    assert proxy.stats()["by_kind"] == {"stall": 1} and proxy.stats()["retries"] == 1


def test_a_lost_create_multipart_answer_leaves_no_open_upload(s3, proxy, tmp_path):
    store = store_at(proxy.endpoint_url, s3, tmp_path)
    proxy.script(lambda r: r.method == "POST" and r.path.endswith("?uploads"), ["drop_after"])
    record = publish(store, "demo/big/key", {"model.safetensors": os.urandom(6 << 20)})
    assert proxy.stats()["by_kind"] == {"drop_after": 1}  # the server started an upload the client never heard of
    assert not open_uploads(s3)  # ... and it was aborted
    assert store.read_record(record.uri) == record


@pytest.mark.parametrize(
    ("fails", "kind"),
    [
        pytest.param(lambda r: r.method == "PUT" and "partNumber=2" in r.path, "error_503", id="a-part"),
        pytest.param(lambda r: r.method == "PUT" and r.path.endswith(STAMP), "error_500", id="the-stamp"),
        pytest.param(lambda r: r.method == "HEAD", "drop_before", id="the-check"),
    ],
)
def test_a_publish_that_fails_after_its_retries_leaves_nothing(s3, proxy, tmp_path, monkeypatch, fails, kind):
    monkeypatch.setattr(s3_store, "MAX_ATTEMPTS", 3)
    store = store_at(proxy.endpoint_url, s3, tmp_path)
    proxy.script(fails, [kind] * 3)
    with pytest.raises(StorageError) as failed:
        publish(store, "demo/failed/key", {"model.safetensors": os.urandom(11 << 20), "config.json": b"{}"})
    assert "\n" not in str(failed.value) and "demo/failed/key" in str(failed.value)
    assert proxy.stats()["faults"] == 3
    assert bucket_keys(s3) == [] and not open_uploads(s3)  # no stamp, no object of the attempt, no open upload
    assert store.read_record(store.uri_for("demo/failed/key")) is None


def test_an_object_that_differs_on_the_server_is_never_stamped(s3, proxy, tmp_path, monkeypatch):
    """The server holds other bytes than the file uploaded (a stand-in for a corruption in transit the server did
    not catch): the check before the stamp refuses the attempt."""
    store = store_at(proxy.endpoint_url, s3, tmp_path)
    upload = store.client.upload_file

    def damaged_upload(filename, bucket, key, **kwargs):
        upload(filename, bucket, key, **kwargs)
        flip_a_byte(s3, key)

    monkeypatch.setattr(store.client, "upload_file", damaged_upload)
    with pytest.raises(CorruptObjectError, match="differs from the uploaded file"):
        publish(store, "demo/damaged/key", {"config.json": b'{"a": 1}'})
    assert bucket_keys(s3) == []


@pytest.mark.parametrize("truncate", [False, True], ids=["flipped-byte", "truncated"])
def test_a_damaged_published_object_is_refused_in_one_line(s3, proxy, tmp_path, truncate):
    store = store_at(proxy.endpoint_url, s3, tmp_path)
    record = publish(store, "demo/out/key", {"model.safetensors": os.urandom(3000), "config.json": b"{}"})
    stamp = store.read_stamp(record.uri)
    flip_a_byte(s3, f"runs/demo/out/key/{stamp.objects}/model.safetensors", truncate)
    reader = store_at(proxy.endpoint_url, s3, tmp_path, "worker2")
    with pytest.raises(CorruptObjectError) as refused:
        reader.local_copy(record)
    message = str(refused.value)
    assert "model.safetensors" in message and ("truncated" if truncate else "corrupt") in message
    assert "\n" not in message
    assert not list((tmp_path / "worker2" / "cache").glob("*/model.safetensors"))  # nothing half-cached


def test_a_damaged_stamp_is_refused_in_one_line(s3, proxy, tmp_path):
    store = store_at(proxy.endpoint_url, s3, tmp_path)
    record = publish(store, "demo/out/key", {"config.json": b"{}"})
    flip_a_byte(s3, f"runs/demo/out/key/{STAMP}", truncate=True)
    with pytest.raises(StorageError, match="is not a valid stamp") as refused:
        store_at(proxy.endpoint_url, s3, tmp_path, "worker2").local_copy(record)
    assert "\n" not in str(refused.value)


def checkpoint(area, step: int, size: int = 6000):
    folder = area / f"checkpoint-{step}"
    folder.mkdir(parents=True)
    (folder / "model.safetensors").write_bytes(bytes([step]) * size)
    (folder / "pipeline_state.json").write_text("{}")
    (folder / COMPLETE).write_text("")
    return folder


@pytest.fixture(params=["local", "s3"])
def checkpoint_store(request, tmp_path):
    """(store, damage(relative, truncate), the trainer's work area, the work area of the resumed attempt). With the
    local store both work areas are the store's folder itself; with S3 (behind the proxy) the resumed attempt runs
    on a second worker with an empty disk."""
    if request.param == "local":
        store = artifact_store(StorageConfig(uri=str(tmp_path / "store")))

        def damage(relative: str, truncate: bool) -> None:
            path = Path(store.uri_for(relative))
            path.write_bytes(damaged(path.read_bytes(), truncate))

        area = Path(store.uri_for(AREA))
        return store, damage, area, area
    s3 = request.getfixturevalue("s3")
    store = store_at(request.getfixturevalue("proxy").endpoint_url, s3, tmp_path)
    damage = lambda relative, truncate: flip_a_byte(s3, store.key(relative), truncate)  # noqa: E731
    return store, damage, tmp_path / "worker1" / "out.trainer", tmp_path / "worker2" / "out.trainer"


@pytest.mark.parametrize("truncate", [False, True], ids=["flipped-byte", "truncated"])
def test_a_damaged_checkpoint_is_refused_and_the_one_before_resumed(checkpoint_store, caplog, truncate):
    store, damage, area, resumed = checkpoint_store
    hooks = store_hooks(store, AREA, area)
    for step in (4, 6):
        hooks.on_checkpoint(checkpoint(area, step))
    damage(f"{AREA}/checkpoint-6/model.safetensors", truncate)
    with caplog.at_level(logging.WARNING, logger="models.checkpoint_sync"):
        assert resume_point(resumed, store_hooks(store, AREA, resumed)) == resumed / "checkpoint-4"
    refusals = [r.getMessage() for r in caplog.records if "refusing checkpoint" in r.getMessage()]
    assert len(refusals) == 1 and "checkpoint-6/model.safetensors" in refusals[0] and "\n" not in refusals[0]
    assert ("truncated" if truncate else "corrupt") in refusals[0]
    assert store.list_dirs(AREA) == ["checkpoint-4"]  # the damaged one is gone: no later attempt resumes it
    assert not (resumed / "checkpoint-6").exists()
    assert (resumed / "checkpoint-4" / "model.safetensors").read_bytes() == bytes([4]) * 6000


def test_when_every_checkpoint_is_damaged_the_stage_starts_fresh(checkpoint_store):
    store, damage, area, resumed = checkpoint_store
    hooks = store_hooks(store, AREA, area)
    for step in (4, 6):
        hooks.on_checkpoint(checkpoint(area, step))
        damage(f"{AREA}/checkpoint-{step}/model.safetensors", truncate=step == 4)
    assert resume_point(resumed, store_hooks(store, AREA, resumed)) is None
    assert store.list_dirs(AREA) == []


def test_a_dead_endpoint_fails_fast_in_one_line(s3, tmp_path):
    store = store_at(f"http://127.0.0.1:{free_port()}", s3, tmp_path)  # nothing listens there
    started = time.monotonic()
    with pytest.raises(StorageError) as preflight:
        store.check()
    with pytest.raises(StorageError) as publishing:
        publish(store, "demo/out/key", {"config.json": b"{}"})
    assert time.monotonic() - started < 20
    for failed in (preflight, publishing):
        assert str(failed.value).startswith("cannot reach the S3 endpoint http://127.0.0.1:")
        assert "\n" not in str(failed.value)
