"""What a stage process receives: its spec. The spec is the cache key: it holds the stage's own resolved settings,
the shared recipe parts the stage reads (models/stages.py says which) and its input records, and the key is a hash
of exactly that plus the stage's code version. Nothing else of the recipe reaches the stage.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from models.config import DataConfig, LaunchConfig, Recipe
from models.records import Artifact
from models.stages import stage
from models.storage import StorageConfig
from models.trl_knobs import coerce_knobs, resolved_knobs

SPEC_FILE = "spec.json"  # the spec a stage ran with, kept beside its output
# Settings that change how a stage runs, not what it produces: left out of its key.
NOT_IN_KEY = frozenset({"checkpoint_every", "guards"})


class StageSpec(BaseModel):
    """Everything a stage process needs: written by the Prefect task (or `r1-run stage`) as JSON, read by
    `models.run_stage`."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    stage: str
    entry: str = Field(description="The function the stage process runs, `module:function` (the registry's).")
    kind: str = Field(description="What the stage publishes: model or dataset.")
    trainer: str | None = Field(None, description="The TRL trainer of a training stage (it checkpoints and resumes).")
    section: str | None = Field(description="The recipe section its settings come from.")
    code: str = Field(description="Version of the code that can change its result (models/code_version.py).")
    settings: dict[str, Any] = Field(description="The stage's own recipe section, TRL knobs resolved.")
    data: DataConfig | None = Field(None, description="The data settings, for stages that read them.")
    dtype: str | None = Field(None, description="Weights dtype on load, for stages that load a model.")
    trust_remote_code: bool = Field(False, description="Whether a model's own modelling code may run on load.")
    seed: int
    inputs: dict[str, Artifact]
    # where and how it runs: not part of the key
    output: str = ""
    mlflow_run_id: str | None = None
    launch: LaunchConfig = Field(default_factory=LaunchConfig)
    timeout_s: int = 6 * 3600
    storage: StorageConfig = Field(default_factory=StorageConfig, description="The store outputs live in.")

    @property
    def config(self):
        """The stage's settings as its typed recipe section (SftStage, RlStage, ...)."""
        if self.section is None:
            return None
        return Recipe.model_fields[self.section].annotation.model_validate(self.settings)

    def key_payload(self) -> dict[str, Any]:
        """What the cache key hashes: everything the stage reads, its inputs' fingerprints and its code."""
        return {
            "stage": self.stage,
            "entry": self.entry,
            "trainer": self.trainer,
            "settings": {k: v for k, v in self.settings.items() if k not in NOT_IN_KEY},
            "data": self.data.model_dump() if self.data else None,
            "dtype": self.dtype,
            "seed": self.seed,
            "inputs": {name: record.fingerprint for name, record in sorted(self.inputs.items())},
            "code": self.code,
            **({"trust_remote_code": True} if self.trust_remote_code else {}),  # keys without it stay as they were
        }

    def key(self) -> str:
        """The cache key (also the name of the stage's output folder)."""
        payload = json.dumps(self.key_payload(), sort_keys=True, default=str)
        return hashlib.sha256(payload.encode()).hexdigest()[:20]


def stage_settings(name: str, recipe: Recipe) -> dict[str, Any]:
    """The stage's own section with TRL knobs resolved (project defaults, stage defaults, the recipe's values)."""
    declared = stage(name)
    if declared.section is None:
        return {}
    own = getattr(recipe, declared.section).model_dump()
    if declared.trainer:
        own["trl"] = coerce_knobs(name, resolved_knobs(name, own["trl"]))  # TRL's types: 2 and 2.0 are one key
    return own


def stage_spec(name: str, recipe: Recipe, inputs: dict[str, Artifact], **where: Any) -> StageSpec:
    """The spec of stage `name` for `recipe` and `inputs`; `where` sets output, mlflow_run_id."""
    declared = stage(name)
    missing = set(declared.inputs) - declared.optional - set(inputs)
    unknown = set(inputs) - set(declared.inputs)
    if missing or unknown:
        raise ValueError(f"{name}: inputs {sorted(inputs)}; it takes {sorted(declared.inputs)} (missing or unknown)")
    from models.code_version import code_version

    return StageSpec(
        stage=name,
        entry=declared.entry,
        kind=declared.output,
        trainer=declared.trainer,
        section=declared.section,
        code=code_version(name),
        settings=stage_settings(name, recipe),
        data=recipe.data if "data" in declared.reads else None,
        dtype=recipe.model.dtype if "dtype" in declared.reads else None,
        trust_remote_code=recipe.model.trust_remote_code,
        seed=recipe.seed,
        inputs=inputs,
        launch=recipe.launch if declared.launch == "accelerate" else LaunchConfig(),
        timeout_s=recipe.stage_timeout_s,
        storage=recipe.storage.effective(),
        **where,
    )


def scratch_dir(out: Path) -> Path:
    """Trainer scratch space (checkpoints) beside an output folder, never inside it; removed once the stage
    succeeded, kept after a failure (its checkpoints are what a resume needs)."""
    return out.parent / (out.name.removesuffix(".partial") + ".trainer")


def stage_output(pipeline_name: str, spec: StageSpec) -> str:
    """Where a stage's output is published: `<store>/<pipeline>/<stage>/<spec key>` in the spec's store."""
    from models.storage import artifact_store

    return artifact_store(spec.storage).uri_for(f"{pipeline_name}/{spec.stage}/{spec.key()}")
