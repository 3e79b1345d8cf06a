"""Records for what the pipeline starts from: the base model and the data files the recipe names."""

from __future__ import annotations

from prefect import task

from models.config import Recipe
from models.records import Artifact
from models.sources import source_record


@task(task_run_name="source-{name}")
def source(name: str, recipe: Recipe) -> Artifact | None:
    """The record of a source (models/stages.py SOURCES); None when the recipe names none."""
    return source_record(name, recipe)
