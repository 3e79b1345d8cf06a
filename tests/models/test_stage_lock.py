"""The stage lock (models/stage_lock.py): one holder at a time under contention, a killed holder lets go (a lock
file at once, an S3 lease once it expires), a live holder's lease is renewed and never taken over.

    .venv/bin/python -m pytest tests/models/test_stage_lock.py -q
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import threading
import time

import pytest

from models.stage_lock import FileLock, S3Lease, checked_name, stage_lock
from models.storage import StorageConfig

concurrent = pytest.mark.reliability("concurrent")


@pytest.fixture
def lease_of(s3):
    """name, ttl -> an S3Lease in a fresh bucket of the test server."""
    server, bucket = s3
    return lambda name, ttl=1.5: S3Lease(server.client(), bucket, f"r1/.locks/{name}.lease", ttl_s=ttl)


def _holders_at_once(make_lock, workers: int = 4, rounds: int = 3) -> int:
    """The most threads that were inside the lock at the same time (each with its own lock object)."""
    inside, most, guard = [0], [0], threading.Lock()

    def work():
        for _ in range(rounds):
            lock = make_lock()
            assert lock.acquire(timeout=60)
            with guard:
                inside[0] += 1
                most[0] = max(most[0], inside[0])
            time.sleep(0.05)
            with guard:
                inside[0] -= 1
            lock.release()

    threads = [threading.Thread(target=work) for _ in range(workers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return most[0]


@concurrent
def test_file_lock_admits_one_holder_at_a_time(tmp_path):
    assert _holders_at_once(lambda: FileLock(tmp_path / "k.lock")) == 1


@concurrent
def test_s3_lease_admits_one_holder_at_a_time(lease_of):
    assert _holders_at_once(lambda: lease_of("k", ttl=30), workers=3, rounds=2) == 1


@concurrent
def test_busy_lock_times_out_and_frees_on_release(tmp_path):
    first, second = FileLock(tmp_path / "k.lock"), FileLock(tmp_path / "k.lock")
    assert first.acquire(timeout=0)
    started = time.monotonic()
    assert not second.acquire(timeout=0.6)
    assert time.monotonic() - started >= 0.6
    assert second.is_locked()
    first.release()
    assert not second.is_locked()
    assert second.acquire(timeout=0)
    second.release()


def _holding_process(code: str, env: dict | None = None) -> subprocess.Popen:
    """A python process that takes a lock (the code below), prints 'held' and sleeps."""
    script = textwrap.dedent(code) + "\nprint('held', flush=True)\nimport time\ntime.sleep(600)\n"
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True, env=env)
    assert proc.stdout.readline().strip() == "held"
    return proc


def _kill(proc: subprocess.Popen) -> None:
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()


@concurrent
def test_lock_file_of_a_killed_holder_is_free_at_once(tmp_path):
    path = tmp_path / "k.lock"
    proc = _holding_process(f"from models.stage_lock import FileLock\nassert FileLock({str(path)!r}).acquire(0)")
    try:
        assert not FileLock(path).acquire(timeout=0.5)
    finally:
        _kill(proc)
    lock = FileLock(path)
    assert lock.acquire(timeout=2)  # the kernel dropped the dead process's lock
    lock.release()


@concurrent
def test_live_holder_keeps_its_lease_past_the_ttl(lease_of):
    holder, other = lease_of("k"), lease_of("k")
    assert holder.acquire(timeout=0)
    try:
        assert not other.acquire(timeout=4.0)  # over twice the ttl: the heartbeat renewed it
        assert holder.held and other.is_locked()
    finally:
        holder.release()
    assert other.acquire(timeout=0)
    other.release()


@concurrent
def test_lease_of_a_killed_holder_is_taken_over_after_its_ttl(s3):
    server, bucket = s3
    code = f"""
        import boto3
        from models.stage_lock import S3Lease
        client = boto3.client("s3", endpoint_url={server.endpoint_url!r}, region_name="us-east-1")
        assert S3Lease(client, {bucket!r}, "r1/.locks/k.lease", ttl_s=1.5).acquire(0)
    """
    proc = _holding_process(code, env={**os.environ, **server.env})
    _kill(proc)  # its lease stays in the bucket, never renewed again
    lease = S3Lease(server.client(), bucket, "r1/.locks/k.lease", ttl_s=1.5)
    assert not lease.acquire(timeout=0)
    started = time.monotonic()
    assert lease.acquire(timeout=10)
    assert 0.2 < time.monotonic() - started < 6
    lease.release()
    assert server.client().list_objects_v2(Bucket=bucket, Prefix="r1/.locks/").get("KeyCount", 0) == 0


@concurrent
def test_lost_lease_is_noticed_by_its_old_holder(lease_of):
    holder = lease_of("k", ttl=1.0)
    assert holder.acquire(timeout=0)
    holder._stop.set()  # a holder cut off from S3: no heartbeat for over a ttl
    holder._beat.join()
    taker = lease_of("k", ttl=1.0)
    assert taker.acquire(timeout=10)
    holder._stop.clear()
    holder._heartbeat()  # its next renewal is refused: the beat ends and says the lease is lost
    assert holder.lost and not holder.held
    taker.release()


def test_stage_lock_lives_in_the_store_of_the_outputs(tmp_path, s3):
    server, bucket = s3
    local = stage_lock("cold_start_sft-abc", StorageConfig(uri=str(tmp_path / "store")))
    assert isinstance(local, FileLock) and local.path == tmp_path / "store" / ".locks" / "cold_start_sft-abc.lock"
    remote = stage_lock("cold_start_sft-abc", StorageConfig(uri=f"s3://{bucket}/r1", endpoint_url=server.endpoint_url))
    assert isinstance(remote, S3Lease) and (remote.bucket, remote.key) == (bucket, "r1/.locks/cold_start_sft-abc.lease")


@pytest.mark.parametrize("name", ["", "../x", "a/b", ".hidden"])
def test_lock_names_cannot_leave_the_locks_folder(name):
    with pytest.raises(ValueError, match="lock name"):
        checked_name(name)
