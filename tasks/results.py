"""Where Prefect persists task results: beside the artifacts, so that a worker with an empty working folder that
shares only the bucket and the Prefect API hits the cache.

    storage = result_storage(recipe.storage)          # in the flow body: it may save a block on the API
    stage_task.with_options(result_storage=storage)(...)

With an S3 store this is `S3ResultStorage`, a small result-storage block over boto3 (objects under
s3://bucket/prefix/prefect-results/<cache key>, credentials from the standard AWS chain, the store's endpoint).
prefect-aws's S3Bucket and fsspec's s3fs would do the same, but both need aiobotocore, whose every release pins
botocore below 1.44, and this project pins boto3 1.44.8. Prefect accepts a block as result storage only once it
is saved on the API, so the block is saved (under a name derived from bucket, prefix and endpoint: it holds no
secret) and referred to by name; a local store needs no API call (a folder path).
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from prefect._internal.compatibility.async_dispatch import async_dispatch
from prefect.filesystems import WritableFileSystem
from pydantic import Field, PrivateAttr

from models.s3_store import explain, read_object, s3_client, split_s3
from models.storage import StorageConfig, state_dir

RESULTS = "prefect-results"


class S3ResultStorage(WritableFileSystem):
    """Prefect results as objects in an S3 bucket (or an S3-compatible server); no credentials are stored."""

    _block_type_name = "R1 S3 Result Storage"
    bucket: str = Field(description="Bucket that holds the results.")
    prefix: str = Field("", description="Key prefix of the results inside the bucket.")
    endpoint_url: str | None = Field(None, description="Endpoint of an S3-compatible server; unset for AWS.")
    _client = PrivateAttr(None)

    def _resolve_path(self, path: str) -> str:
        """The object's s3:// URI: Prefect records it as the result's storage key (idempotent)."""
        if path.startswith("s3://"):
            return path
        return f"s3://{self.bucket}/" + "/".join(p for p in (self.prefix.strip("/"), path) if p)

    def _s3(self):
        if self._client is None:
            self._client = s3_client(self.endpoint_url)
        return self._client

    def _read(self, path: str) -> bytes:
        from botocore.exceptions import BotoCoreError, ClientError

        bucket, key = split_s3(self._resolve_path(path))
        try:
            return read_object(self._s3(), bucket, key)
        except ClientError as err:
            if err.response.get("Error", {}).get("Code") in ("NoSuchKey", "404"):
                raise ValueError(f"no result at s3://{bucket}/{key}") from None
            raise explain(err, f"s3://{bucket}/{key}", self.endpoint_url) from None
        except BotoCoreError as err:
            raise explain(err, f"s3://{bucket}/{key}", self.endpoint_url) from None

    def _write(self, path: str, content: bytes) -> str:
        from botocore.exceptions import BotoCoreError, ClientError

        uri = self._resolve_path(path)
        bucket, key = split_s3(uri)
        try:
            self._s3().put_object(Bucket=bucket, Key=key, Body=content)
        except (BotoCoreError, ClientError) as err:
            raise explain(err, uri, self.endpoint_url) from None
        return uri

    async def aread_path(self, path: str) -> bytes:
        import anyio.to_thread

        return await anyio.to_thread.run_sync(self._read, path)

    @async_dispatch(aread_path)
    def read_path(self, path: str) -> bytes:
        return self._read(path)

    async def awrite_path(self, path: str, content: bytes) -> str:
        import anyio.to_thread

        return await anyio.to_thread.run_sync(self._write, path, content)

    @async_dispatch(awrite_path)
    def write_path(self, path: str, content: bytes) -> str:
        return self._write(path, content)


def result_block(cfg: StorageConfig) -> S3ResultStorage:
    """The (unsaved) result-storage block of an S3 store: results under s3://bucket/prefix/prefect-results/."""
    bucket, prefix = split_s3(cfg.uri)
    return S3ResultStorage(bucket=bucket, prefix=f"{prefix}/{RESULTS}".strip("/"), endpoint_url=cfg.endpoint_url)


def result_storage(cfg: StorageConfig | None = None) -> str | Path:
    """What to pass as a task's `result_storage` for the store `cfg` (with the environment's overrides) selects:
    the saved S3 block's reference `r1-s3-result-storage/<name>` (saved now: needs the Prefect API), or the
    folder <state>/prefect-results."""
    cfg = (cfg or StorageConfig()).effective()
    if not cfg.is_s3:
        return state_dir() / RESULTS
    block = result_block(cfg)
    where = f"{block.bucket}/{block.prefix}@{block.endpoint_url or 'aws'}"
    name = f"r1-results-{hashlib.sha256(where.encode()).hexdigest()[:12]}"
    block.save(name, overwrite=True, _sync=True)
    return f"{S3ResultStorage.get_block_type_slug()}/{name}"


def with_result_storage(task, cfg: StorageConfig):
    """`task` persisting its result in the artifact store's bucket when the store is S3; as it is otherwise
    (Prefect's local result storage under PREFECT_HOME)."""
    cfg = cfg.effective()
    return task.with_options(result_storage=result_storage(cfg)) if cfg.is_s3 else task
