"""Records for what the pipeline starts from: the base model and the shipped non-reasoning data."""

from __future__ import annotations

import hashlib
from pathlib import Path

from prefect import task

from models.config import Recipe
from models.data import ASSETS
from models.factory import resolve_source
from models.records import Artifact, fingerprint_dir


def _file_of(source: str) -> Path | None:
    path = ASSETS / f"{source.removeprefix('builtin:')}.jsonl" if source.startswith("builtin:") else Path(source)
    return path if path.is_file() else None


@task
def base_model(recipe: Recipe) -> Artifact:
    """The base model as a record: a local folder is fingerprinted by content, a hub id by its name."""
    source = resolve_source(recipe.model.base)
    fingerprint = fingerprint_dir(Path(source)) if Path(source).is_dir() else f"hub-{source}"
    return Artifact(uri=source, fingerprint=fingerprint, stage="base_model", kind="model")


@task
def non_reasoning_data(recipe: Recipe) -> Artifact:
    """The non-reasoning rows (stage 4 and the general prompts of stage 5) as a record."""
    path = _file_of(recipe.data.non_reasoning)
    fingerprint = hashlib.sha256(path.read_bytes()).hexdigest()[:16] if path else f"hub-{recipe.data.non_reasoning}"
    return Artifact(uri=str(path or recipe.data.non_reasoning), fingerprint=fingerprint, stage="data", kind="dataset")
