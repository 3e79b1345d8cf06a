"""Stale runs of killed pipelines, reconciled when the next pipeline of the same recipe starts: their MLflow runs are
closed as FAILED (models/stale_runs.py: only runs whose owner process is provably dead), then their Prefect flow run
and its unfinished task runs are set CRASHED (forced: a dead process's run would otherwise stay RUNNING, as Prefect's
own crash detection needs the process to live long enough to report). Works against the embedded API (the state
folder's database) and a shared server alike: the flow-run id is read from the MLflow run.
"""

from __future__ import annotations

import logging
from uuid import UUID

from models.stale_runs import StaleRun, reconcile_experiment

UNFINISHED = ("RUNNING", "PENDING", "SCHEDULED", "PAUSED", "CANCELLING")


def _crash(client, flow_run_id: UUID, why: str) -> int:
    """CRASHED for the flow run (if unfinished) and its unfinished task runs; how many task runs."""
    from prefect.client.schemas.filters import (
        TaskRunFilter,
        TaskRunFilterFlowRunId,
        TaskRunFilterState,
        TaskRunFilterStateType,
    )
    from prefect.states import Crashed

    unfinished = TaskRunFilter(
        flow_run_id=TaskRunFilterFlowRunId(any_=[flow_run_id]),
        state=TaskRunFilterState(type=TaskRunFilterStateType(any_=list(UNFINISHED))),
    )
    task_runs = client.read_task_runs(task_run_filter=unfinished)
    for task_run in task_runs:
        client.set_task_run_state(task_run.id, Crashed(message=why), force=True)
    flow_run = client.read_flow_run(flow_run_id)
    if flow_run.state is None or flow_run.state.type.value in UNFINISHED:
        client.set_flow_run_state(flow_run_id, Crashed(message=why), force=True)
    return len(task_runs)


def crash_flow_run(stale: StaleRun, logger: logging.Logger | logging.LoggerAdapter) -> None:
    """Set the Prefect flow run of a reconciled pipeline run (and its task runs) CRASHED; one log line."""
    from prefect.client.orchestration import get_client
    from prefect.exceptions import ObjectNotFound

    if not stale.flow_run_id:
        return
    why = f"pipeline process killed ({stale.why}); reconciled by a later run"
    with get_client(sync_client=True) as client:
        try:
            count = _crash(client, UUID(stale.flow_run_id), why)
        except ObjectNotFound:
            logger.warning("flow run %s of MLflow run %s is not on this Prefect API", stale.flow_run_id, stale.run_id)
            return
    logger.warning("flow run %s CRASHED with %d unfinished task runs: %s", stale.flow_run_id, count, stale.why)


def reconcile_stale_runs(experiment_name: str, logger: logging.Logger | logging.LoggerAdapter) -> list[StaleRun]:
    """Close the MLflow runs and Prefect runs of every killed pipeline of `experiment_name` (module docstring)."""
    stale_runs = reconcile_experiment(experiment_name)
    for stale in stale_runs:
        logger.warning("MLflow run %s FAILED (%d runs below it): %s", stale.run_id, len(stale.children), stale.why)
        crash_flow_run(stale, logger)
    return stale_runs
