"""Send a training stage to its own worker: a flow run of the `launch.stage_deployment` deployment (the GPU pool's
`r1-stage-spec/h800`, infra/prefect.yaml) that runs the placed spec there; the pipeline waits for it and reads the
stage's record from the stamp it published in the shared store. A run that does not finish in the stage's timeout is
cancelled; one that fails fails the stage with its state's message.
"""

from __future__ import annotations

from models.records import Artifact
from models.stage_io import StageSpec
from models.storage import output_store
from tasks.launch import StageFailed


def dispatched(spec: StageSpec, log_line) -> Artifact:
    """Run `spec` as a flow run of its stage deployment and return the record it published."""
    from prefect.deployments import run_deployment

    name = spec.launch.stage_deployment
    log_line(f"{spec.stage}: sent to deployment {name} (waiting up to {spec.timeout_s} s)")
    flow_run = run_deployment(
        name,
        parameters={"spec": spec.model_dump(mode="json")},
        timeout=spec.timeout_s,
        tags=[f"stage:{spec.stage}", f"gpu:{spec.launch.gpu_class}"],
    )
    state = flow_run.state
    if state is None or not state.is_final():
        _cancel(flow_run.id)
        raise StageFailed(f"{spec.stage} on {name} ran past its timeout of {spec.timeout_s} s; flow run cancelled")
    if not state.is_completed():
        raise StageFailed(f"{spec.stage} on {name} ended {state.type.value}: {state.message}")
    record = output_store(spec.output, spec.storage)[0].read_record(spec.output)
    if record is None:
        raise StageFailed(f"{spec.stage} on {name} completed but published no stamped output at {spec.output}")
    return record


def _cancel(flow_run_id) -> None:
    from prefect.client.orchestration import get_client
    from prefect.states import Cancelling

    with get_client(sync_client=True) as prefect_client:
        prefect_client.set_flow_run_state(flow_run_id, Cancelling(message="the stage ran past its timeout"), force=True)
