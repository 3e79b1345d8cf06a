"""Records of what the pipeline starts from (models/stages.py SOURCES): the base model and the data files a recipe
names. A local file or folder is fingerprinted by content, a hub id by its name."""

from __future__ import annotations

import hashlib

from models.config import Recipe
from models.data import rows_file
from models.factory import model_record
from models.records import Artifact


def rows_record(source: str, name: str) -> Artifact:
    """A rows source (builtin:<name>, a .jsonl file or a hub id) as a dataset record."""
    path = rows_file(source)
    fingerprint = hashlib.sha256(path.read_bytes()).hexdigest()[:16] if path else f"hub-{source}"
    return Artifact(uri=str(path or source), fingerprint=fingerprint, stage=name, kind="dataset")


def source_record(name: str, recipe: Recipe) -> Artifact | None:
    """The record of source `name` for `recipe`, or None when the recipe names none (no cold-start file)."""
    if name == "base_model":
        return model_record(recipe.model.base, name)
    if name == "non_reasoning_data":
        return rows_record(recipe.data.non_reasoning, name)
    if name == "cold_start_data":
        return rows_record(recipe.data.cold_start, name) if recipe.data.cold_start else None
    raise ValueError(f"unknown source '{name}'")
