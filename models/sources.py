"""Records of what the pipeline starts from (models/stages.py SOURCES): the base model and the data files a recipe
names, each fingerprinted by content (a local file or folder) or by resolved commit (a hub id), never by name
(models/fingerprints.py): a scheduled run on new data under the same path or id re-runs what depends on it.
Procedural reasoning-gym problems have no source record: their generator settings and seed are in the spec of
every stage that draws them."""

from __future__ import annotations

import hashlib
from pathlib import Path

from models.config import DataConfig, ProblemFile, Recipe
from models.factory import model_record
from models.fingerprints import content_fingerprint, hub_fingerprint
from models.problems import FORMATS, local_source
from models.records import Artifact


def rows_fingerprint(source: str, revision: str | None = None, config: str | None = None) -> str:
    """A rows source (builtin:<name>, a local file or folder, a hub dataset id) by content or resolved commit."""
    path = local_source(source)
    return content_fingerprint(path) if path is not None else hub_fingerprint(source, "dataset", revision, config)


def rows_record(source: str, name: str) -> Artifact:
    """A rows source (builtin:<name>, a .jsonl file or folder, or a hub id) as a dataset record."""
    path = local_source(source)
    return Artifact(uri=str(path or source), fingerprint=rows_fingerprint(source), stage=name, kind="dataset")


def _eval_source(cfg: ProblemFile) -> str:
    """What eval_split adds: a local file's second file by content; a split name of the same dataset by itself
    (its rows are covered by the dataset's fingerprint)."""
    path = local_source(cfg.path)
    if cfg.eval_split and path is not None and path.suffix in FORMATS:
        return content_fingerprint(Path(cfg.eval_split).expanduser())
    return f"split-{cfg.eval_split}"


def problems_record(cfg: DataConfig) -> Artifact | None:
    """The problem file(s) a recipe names (its training source and a held-out file, if one) as a record: a stage
    that draws problems from them is keyed by their content, so new rows in the same file re-run it."""
    if cfg.problems is None:
        return None
    problems = cfg.problems
    parts = (rows_fingerprint(problems.path, problems.revision, problems.name), _eval_source(problems))
    fingerprint = hashlib.sha256("\0".join(parts).encode()).hexdigest()[:16]
    return Artifact(uri=problems.path, fingerprint=fingerprint, stage="problem_file", kind="dataset")


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
