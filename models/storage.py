"""Where the pipeline keeps its state and its stage outputs.

State: one local folder (`.state/` under the working directory, or $R1_STATE_DIR) holding the MLflow database,
Prefect's home, the download cache and, by default, the stage outputs (artifacts/).

Stage outputs live in one artifact store chosen by one setting, the recipe's `storage.uri` (overridden by
$R1_STORAGE_URI): unset for the local folder, `s3://bucket/prefix` for S3 or an S3-compatible server (MinIO,
Ceph) whose endpoint is `storage.endpoint_url` or $R1_S3_ENDPOINT_URL / $AWS_ENDPOINT_URL_S3 / $AWS_ENDPOINT_URL.
Credentials come only from the standard AWS chain (environment, profile, instance role), never from a recipe.

    store = artifact_store(StorageConfig(uri="s3://bucket/r1"))
    store.check()                                    # one-line StorageError before any training starts
    record = store.publish(work, "demo/cold_start_sft/<key>", meta)
    folder = store.local_copy(record)                # verified local folder (downloaded once per fingerprint)
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, field_validator

if TYPE_CHECKING:
    from models.stores import ArtifactStore

ENDPOINT_ENV = ("R1_S3_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL")
# Things that only a secret looks like: userinfo in a URL, signed-URL or credential query parameters.
SECRET_HINTS = re.compile(r"(x-amz-|signature|secret|token|password|access_?key)", re.IGNORECASE)


class StorageError(RuntimeError):
    """The artifact store cannot be used or an object in it is damaged; the message (one line) says what to do."""


def state_dir() -> Path:
    """$R1_STATE_DIR, or .state under the working directory; an empty R1_STATE_DIR is refused (StorageError), never
    taken as the working directory itself."""
    raw = os.environ.get("R1_STATE_DIR", ".state")
    if not raw.strip():
        raise StorageError("R1_STATE_DIR is empty (STATE= on make's line?); set it to a folder, e.g. .state")
    return Path(raw).expanduser().resolve()


def artifacts_root() -> Path:
    return state_dir() / "artifacts"


def cache_root() -> Path:
    return state_dir() / "cache"


def default_tracking_uri() -> str:
    return f"sqlite:///{state_dir() / 'mlflow.db'}"


def tracking_uri() -> str:
    """MLFLOW_TRACKING_URI if set, else the SQLite database in the state folder."""
    return os.environ.get("MLFLOW_TRACKING_URI") or default_tracking_uri()


def mlflow_artifact_root() -> Path:
    return state_dir() / "mlartifacts"


def _refuse_secrets(value: str, what: str) -> str:
    parts = urlsplit(value)
    if parts.username or parts.password or "@" in parts.netloc:
        raise ValueError(f"{what} '{parts.scheme}://...' carries credentials; remove them and use the AWS chain")
    if parts.query or SECRET_HINTS.search(value):
        raise ValueError(f"{what} looks like it carries a secret; give a plain address and use the AWS chain")
    return value


class StorageConfig(BaseModel):
    """Where stage outputs, resume checkpoints, Prefect results and MLflow artifacts are kept."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    uri: str | None = Field(
        None,
        description="Artifact store: unset for the local folder <state>/artifacts, or s3://bucket/prefix "
        "($R1_STORAGE_URI overrides it). Credentials come from the standard AWS chain, never from here.",
    )
    endpoint_url: str | None = Field(
        None,
        description="Endpoint of an S3-compatible server (MinIO, Ceph), e.g. http://minio:9000; unset for AWS "
        "($R1_S3_ENDPOINT_URL, $AWS_ENDPOINT_URL_S3 or $AWS_ENDPOINT_URL override it).",
    )
    cache_max_gb: float = Field(
        50.0, gt=0, description="Size bound of the local download cache <state>/cache (least recently used go)."
    )
    multipart_threshold_mb: int = Field(
        64, ge=5, description="Files above this size are uploaded to S3 in parts (S3's smallest part is 5 MB)."
    )

    @field_validator("uri")
    @classmethod
    def _uri(cls, value: str | None) -> str | None:
        if value is None:
            return None
        _refuse_secrets(value, "storage.uri")
        if "://" in value and not value.startswith(("s3://", "file://")):
            raise ValueError(
                f"storage.uri '{value}' is neither s3://bucket/prefix nor a local folder; write one of those"
            )
        if value.startswith("s3://") and not urlsplit(value).netloc:
            raise ValueError("storage.uri 's3://' names no bucket; write s3://bucket/prefix")
        if value.startswith("s3://") and ".." in urlsplit(value).path.split("/"):
            raise ValueError(f"storage.uri '{value}' has a '..' in its prefix; write s3://bucket/prefix without '..'")
        return value

    @field_validator("endpoint_url")
    @classmethod
    def _endpoint(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith(("http://", "https://")):
            raise ValueError(f"storage.endpoint_url '{value}' must start with http:// or https://")
        return value if value is None else _refuse_secrets(value, "storage.endpoint_url")

    @property
    def is_s3(self) -> bool:
        return (self.uri or "").startswith("s3://")

    def effective(self) -> StorageConfig:
        """This config with the environment's overrides applied (validated like a recipe's)."""
        uri = os.environ.get("R1_STORAGE_URI") or self.uri
        endpoint = os.environ.get(ENDPOINT_ENV[0]) or self.endpoint_url
        endpoint = endpoint or next((os.environ[name] for name in ENDPOINT_ENV[1:] if os.environ.get(name)), None)
        return self if (uri, endpoint) == (self.uri, self.endpoint_url) else _rebuilt(self, uri, endpoint)


def _rebuilt(cfg: StorageConfig, uri: str | None, endpoint: str | None) -> StorageConfig:
    try:
        return StorageConfig(**{**cfg.model_dump(), "uri": uri, "endpoint_url": endpoint})
    except ValueError as err:
        raise StorageError(f"storage settings from the environment are invalid: {_first_error(err)}") from None


def _first_error(err: ValueError) -> str:
    errors = getattr(err, "errors", None)
    return errors()[0]["msg"].removeprefix("Value error, ") if errors else str(err)


def artifact_store(cfg: StorageConfig | None = None) -> ArtifactStore:
    """The store `cfg` (with the environment's overrides) selects: a LocalStore or an S3Store."""
    cfg = (cfg or StorageConfig()).effective()
    if cfg.is_s3:
        from models.s3_store import S3Store

        return S3Store(cfg)
    from models.stores import LocalStore

    root = Path(cfg.uri.removeprefix("file://")) if cfg.uri else artifacts_root()
    return LocalStore(root.resolve())


def mlflow_artifact_location(cfg: StorageConfig | None, experiment: str) -> str:
    """Artifact location of a new MLflow experiment: s3://bucket/prefix/mlflow/<experiment> with an S3 store,
    else the local mlartifacts folder."""
    cfg = (cfg or StorageConfig()).effective()
    if cfg.is_s3:
        return f"{cfg.uri.rstrip('/')}/mlflow/{experiment}"
    return (mlflow_artifact_root() / experiment).as_uri()


def mlflow_env(cfg: StorageConfig | None) -> dict[str, str]:
    """Environment MLflow's S3 artifact repository needs for this store: the endpoint, and botocore's standard retry
    mode with 8 attempts (MLflow builds its client without retry settings: legacy mode, 5 attempts) unless the
    environment sets them; credentials stay in the AWS chain. Empty for a local store."""
    cfg = (cfg or StorageConfig()).effective()
    if not cfg.is_s3:
        return {}
    retries = {"AWS_RETRY_MODE": os.environ.get("AWS_RETRY_MODE", "standard")}
    retries["AWS_MAX_ATTEMPTS"] = os.environ.get("AWS_MAX_ATTEMPTS", "8")
    return {"MLFLOW_S3_ENDPOINT_URL": cfg.endpoint_url, **retries} if cfg.endpoint_url else retries


def output_store(output: str, cfg: StorageConfig | None) -> tuple[ArtifactStore, str]:
    """(store, relative name) of a stage output URI: an s3:// output lives in the S3 store `cfg` selects; a local
    output folder in a local store rooted at its parent (so a spec written by hand may name any folder)."""
    if output.startswith("s3://"):
        store = artifact_store(cfg)
        root = store.root_uri.rstrip("/") + "/"
        if not output.startswith(root):
            raise StorageError(f"output {output} is outside the store {store.root_uri}; set storage.uri to its bucket")
        return store, output.removeprefix(root)
    from models.stores import LocalStore

    path = Path(output.removeprefix("file://")).resolve()
    return LocalStore(path.parent), path.name


def prepared_store(cfg: StorageConfig | None) -> ArtifactStore:
    """The store, checked (one-line StorageError for a missing bucket, refused credentials, an unreachable endpoint
    or an unwritable folder) and with the environment MLflow's S3 artifact repository needs set; call it before
    any work starts."""
    store = artifact_store(cfg)
    store.check()
    os.environ.update(mlflow_env(cfg))
    return store
