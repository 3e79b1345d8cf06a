"""Stale pipeline runs in MLflow: a pipeline killed with SIGKILL cannot close its parent run or its stage and
evaluation runs, so they would stay RUNNING for ever. Each parent run records its owner (`owner_tags`: host, pid,
the process's start time, the Prefect flow-run id); the next pipeline run of the same experiment finds RUNNING parent
runs whose owner is provably dead and marks them, and every RUNNING run below them, FAILED.

Provably dead: on this host, the pid is gone or belongs to another process (another start time). A run owned by
another host is left alone (nothing here can prove that process dead); so is a run without owner tags.

    python -m models.stale_runs <experiment name>    # reconcile by hand; prints one line per reconciled run
"""

from __future__ import annotations

import logging
import os
import socket
import sys
from dataclasses import dataclass

log = logging.getLogger(__name__)

HOST, PID, STARTED, FLOW_RUN = "r1.owner.host", "r1.owner.pid", "r1.owner.started", "r1.owner.flow_run_id"
RECONCILED = "r1.reconciled"  # on a run closed here: why
START_TIME_TOLERANCE_S = 0.05  # psutil's create_time is derived from clock ticks since boot


def process_start_time(pid: int) -> float | None:
    """When process `pid` started (seconds since the epoch), or None if there is no such process."""
    import psutil

    try:
        return psutil.Process(pid).create_time()
    except psutil.NoSuchProcess:
        return None


def owner_tags(flow_run_id: str) -> dict[str, str]:
    """Tags naming this process as the owner of a pipeline run."""
    pid = os.getpid()
    return {HOST: socket.gethostname(), PID: str(pid), STARTED: repr(process_start_time(pid)), FLOW_RUN: flow_run_id}


def why_dead(tags: dict[str, str]) -> str | None:
    """Why the owner of a run with these tags is provably dead, or None (alive, another host's, or no owner)."""
    if HOST not in tags or tags[HOST] != socket.gethostname():
        return None
    pid = int(tags[PID])
    started = process_start_time(pid)
    if started is None:
        return f"its owner pid {pid} on {tags[HOST]} is gone"
    if abs(started - float(tags[STARTED])) > START_TIME_TOLERANCE_S:
        return f"its owner pid {pid} on {tags[HOST]} is now another process"
    return None


@dataclass(frozen=True)
class StaleRun:
    """A parent run closed as FAILED, the RUNNING runs below it closed with it, and its Prefect flow run's id."""

    run_id: str
    why: str
    flow_run_id: str
    children: tuple[str, ...]


def _running_below(mlflow_client, experiment_id: str, parent_run_id: str) -> list[str]:
    """RUNNING runs anywhere below `parent_run_id` (stage, evaluation and link runs, and theirs)."""
    found = mlflow_client.search_runs(
        [experiment_id], f"tags.mlflow.parentRunId = '{parent_run_id}'", max_results=10_000
    )
    below: list[str] = []
    for run in found:
        below += _running_below(mlflow_client, experiment_id, run.info.run_id)
        if run.info.status == "RUNNING":
            below.append(run.info.run_id)
    return below


def _close(mlflow_client, run_id: str, why: str) -> None:
    mlflow_client.set_tag(run_id, RECONCILED, why)
    mlflow_client.set_terminated(run_id, "FAILED")


def reconcile_experiment(experiment_name: str) -> list[StaleRun]:
    """Close every RUNNING pipeline run of `experiment_name` whose owner is provably dead, and the RUNNING runs
    below it, as FAILED (tagged `r1.reconciled` with the reason)."""
    from models.tracking import client

    mlflow_client = client()
    experiment = mlflow_client.get_experiment_by_name(experiment_name)
    if experiment is None:
        return []
    running = mlflow_client.search_runs([experiment.experiment_id], "attributes.status = 'RUNNING'", max_results=10_000)
    stale = []
    for run in running:
        why = why_dead(run.data.tags)
        if why is None:
            continue
        children = tuple(_running_below(mlflow_client, experiment.experiment_id, run.info.run_id))
        for child in children:
            _close(mlflow_client, child, f"its pipeline run {run.info.run_id} was killed: {why}")
        _close(mlflow_client, run.info.run_id, f"killed: {why}")
        stale.append(StaleRun(run.info.run_id, why, run.data.tags.get(FLOW_RUN, ""), children))
    return stale


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    if len(sys.argv) != 2:
        sys.exit("usage: python -m models.stale_runs <experiment name>")
    for stale_run in reconcile_experiment(sys.argv[1]):
        log.info("%s FAILED (%d below): %s", stale_run.run_id, len(stale_run.children), stale_run.why)
