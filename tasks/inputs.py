"""Records for what the pipeline starts from: the base model and the shipped non-reasoning data."""

from __future__ import annotations

import hashlib

from prefect import task

from models.config import Recipe
from models.data import rows_file
from models.factory import model_record
from models.records import Artifact


@task
def base_model(recipe: Recipe) -> Artifact:
    """The base model as a record: a local folder is fingerprinted by content, a hub id by its name."""
    return model_record(recipe.model.base, "base_model")


@task
def non_reasoning_data(recipe: Recipe) -> Artifact:
    """The non-reasoning rows (stage 4 and the general prompts of stage 5) as a record."""
    path = rows_file(recipe.data.non_reasoning)
    fingerprint = hashlib.sha256(path.read_bytes()).hexdigest()[:16] if path else f"hub-{recipe.data.non_reasoning}"
    return Artifact(uri=str(path or recipe.data.non_reasoning), fingerprint=fingerprint, stage="data", kind="dataset")
