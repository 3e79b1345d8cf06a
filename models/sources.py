"""Records of what the pipeline starts from (models/stages.py SOURCES): the base model and the data files a recipe
names. A local file or folder is fingerprinted by content, a hub id by its name."""

from __future__ import annotations

import hashlib
from pathlib import Path

from models.config import DataConfig, Recipe
from models.data import rows_file
from models.factory import model_record
from models.records import Artifact, fingerprint_dir


def rows_record(source: str, name: str) -> Artifact:
    """A rows source (builtin:<name>, a .jsonl file or a hub id) as a dataset record."""
    path = rows_file(source)
    fingerprint = hashlib.sha256(path.read_bytes()).hexdigest()[:16] if path else f"hub-{source}"
    return Artifact(uri=str(path or source), fingerprint=fingerprint, stage=name, kind="dataset")


def _content(source: str | None) -> str:
    """A local file or folder by its content; a hub id or a split name by itself."""
    from models.problems import local_source

    path = local_source(source) if source else None
    if path is not None and Path(path).is_file():
        return hashlib.sha256(Path(path).read_bytes()).hexdigest()
    if path is not None and Path(path).is_dir():
        return fingerprint_dir(Path(path))
    return f"name-{source}"


def problems_record(cfg: DataConfig) -> Artifact | None:
    """The problem file(s) a recipe names (its training source and a held-out file, if one) as a record: a stage
    that draws problems from them is keyed by their content, so new rows in the same file re-run it."""
    if cfg.problems is None:
        return None
    parts = "\0".join(_content(source) for source in (cfg.problems.path, cfg.problems.eval_split))
    fingerprint = hashlib.sha256(parts.encode()).hexdigest()[:16]
    return Artifact(uri=cfg.problems.path, fingerprint=fingerprint, stage="problem_file", kind="dataset")


def source_record(name: str, recipe: Recipe) -> Artifact | None:
    """The record of source `name` for `recipe`, or None when the recipe names none (no cold-start file)."""
    if name == "base_model":
        return model_record(recipe.model.base, name)
    if name == "non_reasoning_data":
        return rows_record(recipe.data.non_reasoning, name)
    if name == "cold_start_data":
        return rows_record(recipe.data.cold_start, name) if recipe.data.cold_start else None
    if name == "problem_file":
        return problems_record(recipe.data)
    raise ValueError(f"unknown source '{name}'")
