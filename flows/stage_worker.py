"""The worker side of a dispatched training stage (tasks/dispatch.py): one placed stage spec, run in a process of
this worker's machine (a GPU node of the `r1-gpu-h800` pool), publishing its stamped output to the shared store and
logging into the MLflow run the pipeline opened for it.

Deployed as `r1-stage-spec/h800` (and `r1-stage-spec/local` on the CPU pool) by infra/prefect.yaml; the pipeline
sends a stage here when its recipe sets `launch.stage_deployment`.
"""

from __future__ import annotations

from prefect import flow, get_run_logger
from prefect.runtime import flow_run

from models.stage_io import StageSpec
from tasks.progress import ProgressArtifact
from tasks.stages import run_here


def spec_run_name() -> str:
    spec = flow_run.parameters.get("spec") or {}
    return f"{spec.get('stage', 'stage')} {str(spec.get('output', ''))[-12:]}"


@flow(name="r1-stage-spec", log_prints=True, flow_run_name=spec_run_name)
def r1_stage_spec(spec: dict) -> dict:
    """Run one stage from its placed spec (output and MLflow run already set by the pipeline); returns its record."""
    placed = StageSpec.model_validate(spec)
    if not placed.output:
        raise ValueError("the spec has no output; the pipeline places a spec before it sends it here")
    return run_here(placed, ProgressArtifact(get_run_logger().info)).model_dump(mode="json")
