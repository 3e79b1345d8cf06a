"""What a stage process receives (a spec file) and which part of the recipe each stage depends on."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict

from models.config import Recipe
from models.records import Artifact
from models.trl_knobs import STAGE_TRAINER, resolved_knobs

# What each stage's output is (evaluation writes per-prompt tables, not a model).
OUTPUT_KIND = {
    "cold_start_sft": "model",
    "reasoning_rl": "model",
    "rejection_sampling": "dataset",
    "supervised_merge": "model",
    "final_rl": "model",
    "evaluate": "dataset",
}


class StageSpec(BaseModel):
    """Everything a stage process needs: written by the Prefect task as JSON, read by `models.run_stage`."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    stage: str
    recipe: Recipe
    inputs: dict[str, Artifact]
    output: str
    mlflow_run_id: str | None = None


def stage_config(recipe: Recipe, stage: str) -> dict[str, Any]:
    """The resolved configuration a stage runs with: its own section (TRL knobs with defaults filled in), the
    data and model settings, and the seed. This is what its cache key and its MLflow params are made of."""
    if stage == "evaluate":
        own = recipe.evaluation.model_dump()
    else:
        own = getattr(recipe, stage).model_dump()
        if stage in STAGE_TRAINER:
            own["trl"] = resolved_knobs(stage, own["trl"])
    return {
        stage: own,
        "data": recipe.data.model_dump(),
        "model": recipe.model.model_dump(exclude={"registered_name"}),
        "seed": recipe.seed,
    }


def scratch_dir(out: Path) -> Path:
    """Trainer scratch space (checkpoints) beside an output folder, never inside it; removed once the stage
    succeeded, kept after a failure (its checkpoints are what a resume needs)."""
    return out.parent / (out.name.removesuffix(".partial") + ".trainer")
