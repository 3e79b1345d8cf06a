"""MLflow behind one small module: experiments, the run tree, params, plots, tables and the model registry."""

from __future__ import annotations

import importlib.metadata
import json
from pathlib import Path
from typing import Any

import mlflow
from mlflow.tracking import MlflowClient

from models.storage import StorageConfig, mlflow_artifact_location, state_dir, tracking_uri

PACKAGES = (
    "torch",
    "transformers",
    "trl",
    "accelerate",
    "datasets",
    "tokenizers",
    "mlflow",
    "prefect",
    "reasoning-gym",
    "math-verify",
    "pydantic",
)


def client() -> MlflowClient:
    mlflow.set_tracking_uri(tracking_uri())
    return MlflowClient()


def ensure_experiment(name: str, storage: StorageConfig | None = None) -> str:
    """Experiment id of `name`, created with an explicit artifact location when tracking is a local database (the
    state folder's mlartifacts) or the artifact store is S3 (s3://bucket/prefix/mlflow/<name>)."""
    mlflow_client = client()
    found = mlflow_client.get_experiment_by_name(name)
    if found:
        return found.experiment_id
    storage = (storage or StorageConfig()).effective()
    location = None
    if tracking_uri().startswith("sqlite:") or storage.is_s3:
        location = mlflow_artifact_location(storage, name)
    return mlflow_client.create_experiment(name, artifact_location=location)


def start_child_run(experiment_id: str, parent_run_id: str, name: str, tags: dict[str, str]) -> str:
    """A nested run under the pipeline's parent run; returns its id."""
    run = client().create_run(experiment_id, run_name=name, tags={"mlflow.parentRunId": parent_run_id, **tags})
    return run.info.run_id


def flat(config: dict[str, Any], prefix: str = "") -> dict[str, str]:
    """{'a': {'b': 1}} -> {'a.b': '1'}: nested config as MLflow params."""
    out: dict[str, str] = {}
    for key, value in config.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            out.update(flat(value, f"{name}."))
        else:
            out[name] = json.dumps(value) if isinstance(value, (list, dict)) else str(value)
    return out


def log_params(config: dict[str, Any], prefix: str = "config.") -> None:
    items = list(flat(config, prefix).items())
    for i in range(0, len(items), 100):
        mlflow.log_params(dict(items[i : i + 100]))


def package_versions() -> dict[str, str]:
    versions = {}
    for name in PACKAGES:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = "absent"
    return versions


def log_curve_png(history: list[dict], keys: list[str], artifact: str, title: str) -> None:
    """One PNG of the given step series from a trainer's log history, into the active run."""
    from models.plots import close, curves_figure

    fig = curves_figure({key: [(h["step"], h[key]) for h in history if key in h] for key in keys}, title)
    mlflow.log_figure(fig, artifact)
    close(fig)


def registered_model_dir(uri: str) -> Path:
    """The local folder of `models:/<name>@<alias>` or `models:/<name>/<version>`, downloaded once per version
    into the state folder (an alias is resolved first, so a moved alias never serves a stale copy)."""
    name, _, rest = uri.removeprefix("models:/").partition("/")
    if "@" in name:
        name, alias = name.split("@", 1)
        version = client().get_model_version_by_alias(name, alias).version
    else:
        version = rest
    folder = state_dir() / "registry" / name / str(version)
    if not (folder / "config.json").is_file():
        mlflow.artifacts.download_artifacts(f"models:/{name}/{version}", dst_path=str(folder))
    return folder
