"""Where the pipeline keeps its state: one local folder by default (`.state/` under the working directory, or
$R1_STATE_DIR), holding stage outputs (artifacts/), the MLflow database and artifacts, and Prefect's home.

Stage outputs are addressed by URI (models/records.py), so another store can replace the local folder.
"""

from __future__ import annotations

import os
from pathlib import Path


def state_dir() -> Path:
    return Path(os.environ.get("R1_STATE_DIR", ".state")).resolve()


def artifacts_root() -> Path:
    return state_dir() / "artifacts"


def default_tracking_uri() -> str:
    return f"sqlite:///{state_dir() / 'mlflow.db'}"


def tracking_uri() -> str:
    """MLFLOW_TRACKING_URI if set, else the SQLite database in the state folder."""
    return os.environ.get("MLFLOW_TRACKING_URI") or default_tracking_uri()


def mlflow_artifact_root() -> Path:
    return state_dir() / "mlartifacts"
