"""Run one stage in its own process from a spec file written by the Prefect task (or by hand):

    python -m models.run_stage spec.json
    accelerate launch -m models.run_stage spec.json      # several processes / GPUs

The output folder appears only when the stage succeeded (written as <output>.partial, stamped, renamed). The
last stdout line is `R1_RECORD <json>`: the Artifact record the task returns.
"""

from __future__ import annotations

import contextlib
import logging
import shutil
import sys
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from models.records import Artifact
    from models.stage_io import StageSpec

RECORD_PREFIX = "R1_RECORD "


def _runner(stage: str):
    """The stage's entry function, imported lazily (TRL takes seconds to import)."""
    if stage in ("cold_start_sft", "supervised_merge"):
        from models import sft

        return {"cold_start_sft": sft.run_cold_start, "supervised_merge": sft.run_supervised_merge}[stage]
    if stage in ("reasoning_rl", "final_rl"):
        from models import grpo

        return {"reasoning_rl": grpo.run_reasoning_rl, "final_rl": grpo.run_final_rl}[stage]
    if stage == "rejection_sampling":
        from models.rejection import run_rejection_sampling

        return run_rejection_sampling
    if stage == "evaluate":
        from models.eval_stage import run_evaluate

        return run_evaluate
    raise ValueError(f"unknown stage '{stage}'")


def _tracked(spec):
    """The stage's MLflow run as the active run (TRL's MLflow callback then logs into it), or nothing."""
    if not spec.mlflow_run_id:
        return contextlib.nullcontext()
    import mlflow

    from models.storage import tracking_uri

    mlflow.set_tracking_uri(tracking_uri())
    return mlflow.start_run(run_id=spec.mlflow_run_id)


def run(spec: StageSpec) -> Artifact:
    from models.records import local_path, partial_dir, publish
    from models.stage_io import OUTPUT_KIND, scratch_dir, stage_config
    from models.tracking import log_params, package_versions

    final = local_path(spec.output)
    work = partial_dir(final)
    try:
        with _tracked(spec) as run_:
            if run_ and spec.stage != "evaluate":
                import mlflow

                log_params(stage_config(spec.recipe, spec.stage))
                mlflow.log_dict(spec.recipe.model_dump(), "recipe/resolved_recipe.json")
                mlflow.log_dict(package_versions(), "environment/package_versions.json")
            _runner(spec.stage)(spec, work)
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise
    meta = {"stage": spec.stage, "kind": OUTPUT_KIND[spec.stage], "mlflow_run_id": spec.mlflow_run_id}
    record = publish(work, final, meta)
    shutil.rmtree(scratch_dir(final), ignore_errors=True)
    return record


def main() -> None:
    from models.stage_io import StageSpec

    logging.basicConfig(level=logging.INFO, stream=sys.stdout, format="%(asctime)s %(name)s: %(message)s")
    spec = StageSpec.model_validate_json(Path(sys.argv[1]).read_text())
    record = run(spec)
    print(RECORD_PREFIX + record.model_dump_json(), flush=True)


if __name__ == "__main__":
    main()
