"""One writer per stage output: a lock named by the stage's cache key (`<stage>-<spec key>`), held while the stage
is computed, so that a second pipeline of the same recipe waits and then reuses what the first published.

    lock = stage_lock("cold_start_sft-0123abcd", recipe.storage)   # the store the stage publishes to
    if lock.acquire(timeout=None):                                 # waits; True once held
        try:
            ...                                                    # re-check for a published output, else compute
        finally:
            lock.release()

Two kinds, picked by the artifact store, so the lock is shared by exactly those who share the outputs:
- local store: `fcntl.flock` on `<store>/.locks/<name>.lock`. The kernel drops it when its holder dies (kill -9
  included), so a killed holder never blocks anyone; Prefect's FileSystemLockManager writes a lock file that a
  killed holder leaves behind (it blocks until its hold timeout, forever without one).
- S3 store: a lease object `<prefix>/.locks/<name>.lease`, created with a conditional put (`If-None-Match: *`:
  of two writers exactly one wins), renewed by a heartbeat thread (`If-Match` on its own ETag) every ttl/3. A lease
  not renewed for `ttl_s` seconds (by the server's clock: its Last-Modified against the Date of the answer) is
  expired and taken over with `If-Match` on the expired ETag, so of two takers one wins. Works across machines that
  share the bucket; moto's server (the tests' S3) honours both conditions.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import re
import socket
import threading
import time
import uuid
from email.utils import parsedate_to_datetime
from pathlib import Path

from models.storage import StorageConfig

LOCKS = ".locks"
LEASE_TTL_S = 60.0  # a killed holder's S3 lease is taken over this long after its last heartbeat
POLL_S = 0.5
NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
log = logging.getLogger(__name__)


def holder_id() -> str:
    """Who holds a lock, for the messages that name it: host, process and a unique tail."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


def checked_name(name: str) -> str:
    if not NAME.match(name):
        raise ValueError(f"lock name '{name}' must be letters, digits, '.', '_' or '-' (a stage's cache key)")
    return name


def _acquire(try_once, timeout: float | None) -> bool:
    """Call `try_once` every POLL_S until it holds the lock (True) or `timeout` seconds have passed (False); None
    waits as long as it takes."""
    deadline = None if timeout is None else time.monotonic() + timeout
    while not try_once():
        if deadline is not None and time.monotonic() >= deadline:
            return False
        time.sleep(POLL_S)
    return True


class FileLock:
    """An exclusive `flock` on a lock file: held until released or until its process dies."""

    def __init__(self, path: Path | str):
        self.path = Path(path)
        self._fd: int | None = None

    @property
    def held(self) -> bool:
        return self._fd is not None

    def _try(self) -> bool:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return False
        os.ftruncate(fd, 0)
        os.write(fd, holder_id().encode())  # who holds it, for a person looking
        self._fd = fd
        return True

    def acquire(self, timeout: float | None = None) -> bool:
        """Wait until held (True) or `timeout` seconds have passed (False); None waits as long as it takes."""
        return _acquire(self._try, timeout)

    def release(self) -> None:
        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None

    def is_locked(self) -> bool:
        """Whether someone (this object included) holds it now."""
        if self.held:
            return True
        if not self._try():
            return True
        self.release()
        return False


class S3Lease:
    """A lease object in a bucket: created only if absent, renewed by its holder, taken over once expired."""

    def __init__(self, client, bucket: str, key: str, ttl_s: float = LEASE_TTL_S):
        self.client, self.bucket, self.key, self.ttl_s = client, bucket, key, ttl_s
        self.holder = holder_id()
        self._etag: str | None = None
        self._stop = threading.Event()
        self._beat: threading.Thread | None = None
        self.lost = False

    @property
    def held(self) -> bool:
        return self._etag is not None and not self.lost

    def _body(self) -> bytes:
        return json.dumps({"holder": self.holder, "ttl_s": self.ttl_s, "written": time.time()}).encode()

    def _put(self, **condition) -> str | None:
        """PUT the lease under `condition`; its new ETag, or None when the condition failed (someone else won)."""
        from botocore.exceptions import ClientError

        try:
            return self.client.put_object(Bucket=self.bucket, Key=self.key, Body=self._body(), **condition)["ETag"]
        except ClientError as err:
            if _code(err) in ("PreconditionFailed", "412", "ConditionalRequestConflict", "409"):
                return None
            raise

    def _expired_etag(self) -> str | None:
        """The ETag of the present lease if it has expired (server clock), else None; '' when there is none."""
        from botocore.exceptions import ClientError

        try:
            head = self.client.head_object(Bucket=self.bucket, Key=self.key)
        except ClientError as err:
            if _code(err) in ("404", "NoSuchKey", "NotFound"):
                return ""
            raise
        server_now = parsedate_to_datetime(head["ResponseMetadata"]["HTTPHeaders"]["date"])
        age = (server_now - head["LastModified"]).total_seconds()
        return head["ETag"] if age > self.ttl_s else None

    def _try(self) -> bool:
        etag = self._put(IfNoneMatch="*")
        if etag is None:
            expired = self._expired_etag()
            if expired:
                log.warning("lock %s: lease expired (holder killed?), taking it over", self.key)
                etag = self._put(IfMatch=expired)
            elif expired == "":  # released between the two calls: try again at once
                etag = self._put(IfNoneMatch="*")
        if etag is None:
            return False
        self._etag, self.lost = etag, False
        self._stop.clear()
        self._beat = threading.Thread(target=self._heartbeat, name=f"lease {self.key}", daemon=True)
        self._beat.start()
        return True

    def _heartbeat(self) -> None:
        """Renew every ttl/3; a failed renewal is retried on the next beat, a lost lease (another holder took it
        after we missed a whole ttl) is logged and ends the beat."""
        while not self._stop.wait(self.ttl_s / 3):
            try:
                etag = self._put(IfMatch=self._etag)
            except Exception as err:  # transient: S3 unreachable for a moment; the next beat tries again
                log.warning("lock %s: renewing the lease failed (%s); retrying", self.key, err)
                continue
            if etag is None:
                log.error("lock %s: lease lost to another holder (not renewed for %.0f s)", self.key, self.ttl_s)
                self.lost = True
                return
            self._etag = etag

    def acquire(self, timeout: float | None = None) -> bool:
        """Wait until held (True) or `timeout` seconds have passed (False); None waits as long as it takes."""
        return _acquire(self._try, timeout)

    def release(self) -> None:
        """Stop the heartbeat and delete the lease if it is still ours."""
        from botocore.exceptions import ClientError

        self._stop.set()
        if self._beat is not None:
            self._beat.join()
        if self._etag is not None and not self.lost:
            with contextlib.suppress(ClientError):  # already taken over: nothing of ours to delete
                self.client.delete_object(Bucket=self.bucket, Key=self.key, IfMatch=self._etag)
        self._etag, self._beat = None, None

    def is_locked(self) -> bool:
        return self.held or self._expired_etag() is None


def _code(err) -> str:
    return str(err.response.get("Error", {}).get("Code", ""))


def stage_lock(name: str, storage: StorageConfig | None, ttl_s: float = LEASE_TTL_S) -> FileLock | S3Lease:
    """The lock called `name` in the store `storage` selects: a lease in the bucket, or a lock file in the folder."""
    from models.storage import artifact_store

    cfg = (storage or StorageConfig()).effective()
    store = artifact_store(cfg)
    if cfg.is_s3:
        key = "/".join(p for p in (store.prefix, LOCKS, f"{checked_name(name)}.lease") if p)
        return S3Lease(store.client, store.bucket, key, ttl_s)
    return FileLock(store.root / LOCKS / f"{checked_name(name)}.lock")
