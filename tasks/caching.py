"""Cache keys of the stage tasks: the key of the stage's spec (models/stage_io.py), which hashes exactly what the
stage process receives (its settings, the shared parts it reads, its inputs' fingerprints) and the code version of
what it runs (models/code_version.py).

Not Prefect's default policy (it includes the flow-run id, so nothing would be reused across runs); the pipeline's
MLflow run, the output location and the launch settings are not in it.

Two runs of one recipe at once: the policy is SERIALIZABLE, as Prefect's transactional tasks are. Prefect takes the
lock named by the cache key before it looks the key up and holds it until the task's result is written, so of two
pipelines that reach one stage together one computes it and the other waits, then finds the result (Cached). The
locks are models/stage_lock.py's, in the store the stage publishes to (a lock file in the local folder, a lease in
the bucket), so they are shared by exactly those who share the outputs and never outlive a killed holder.
"""

from __future__ import annotations

import threading

import anyio.to_thread
from prefect.cache_policies import CacheKeyFnPolicy
from prefect.context import TaskRunContext

from models.stage_lock import FileLock, S3Lease, stage_lock
from models.storage import StorageConfig


def task_cache_key(context, parameters: dict) -> str:
    """Prefect cache_key_fn of the stage tasks: `<stage>-<spec key>`."""
    spec = parameters["spec"]
    return f"{spec.stage}-{spec.key()}"


def _task_storage() -> StorageConfig | None:
    """The store of the stage task running in this thread (its spec's), or None (the local folder)."""
    context = TaskRunContext.get()
    spec = context.parameters.get("spec") if context and context.parameters else None
    return getattr(spec, "storage", None)


class StageLocks:
    """Prefect's LockManager protocol over models/stage_lock.py. What this process holds is kept in one table shared
    by every copy (Prefect deep-copies cache policies)."""

    _held: dict[str, tuple[str, FileLock | S3Lease]] = {}
    _table = threading.Lock()

    def __deepcopy__(self, memo) -> StageLocks:
        return self

    def acquire_lock(
        self, key: str, holder: str, acquire_timeout: float | None = None, hold_timeout: float | None = None
    ) -> bool:
        """Wait for the lock `key` (as long as it takes by default); a lease is renewed while held, so
        `hold_timeout` is not needed for a killed holder to let go and is ignored."""
        if self.is_lock_holder(key, holder):
            return True
        lock = stage_lock(key, _task_storage())
        if not lock.acquire(acquire_timeout):
            return False
        with self._table:
            self._held[key] = (holder, lock)
        return True

    async def aacquire_lock(
        self, key: str, holder: str, acquire_timeout: float | None = None, hold_timeout: float | None = None
    ) -> bool:
        return await anyio.to_thread.run_sync(self.acquire_lock, key, holder, acquire_timeout, hold_timeout)

    def release_lock(self, key: str, holder: str) -> None:
        with self._table:
            found = self._held.get(key)
            if found is None or found[0] != holder:
                raise ValueError(f"lock {key} is not held by {holder}; only its holder may release it")
            del self._held[key]
        found[1].release()

    def is_locked(self, key: str) -> bool:
        return key in self._held or stage_lock(key, _task_storage()).is_locked()

    def is_lock_holder(self, key: str, holder: str) -> bool:
        found = self._held.get(key)
        return found is not None and found[0] == holder and found[1].held

    def wait_for_lock(self, key: str, timeout: float | None = None) -> bool:
        """Wait until nobody holds `key` (True) or `timeout` passed (False)."""
        lock = stage_lock(key, _task_storage())
        if not lock.acquire(timeout):
            return False
        lock.release()
        return True

    async def await_for_lock(self, key: str, timeout: float | None = None) -> bool:
        return await anyio.to_thread.run_sync(self.wait_for_lock, key, timeout)


STAGE_CACHE = CacheKeyFnPolicy(cache_key_fn=task_cache_key).configure(
    isolation_level="SERIALIZABLE", lock_manager=StageLocks()
)
