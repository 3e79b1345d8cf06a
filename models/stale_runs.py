"""Stale pipeline runs in MLflow: a pipeline killed with SIGKILL cannot close its parent run or its stage and
evaluation runs, so they would stay RUNNING for ever. Each parent run records its owner (`owner_tags`: host, pid,
the process's start time, the Prefect flow-run id); the next pipeline run of the same experiment finds RUNNING parent
runs whose owner is provably dead and marks them, and every RUNNING run below them, FAILED.

Provably dead: on this host, the pid is gone or belongs to another process (another start time). On another host
(nothing here can see its processes): the owner's heartbeat, a tag its flow process rewrites every 60 s while the run
is open (`Heartbeat`), is older than 10 minutes; this compares the two hosts' clocks, which NTP keeps within
seconds. A run without owner tags, or another host's without a heartbeat tag, is left alone.

    python -m models.stale_runs <experiment name>    # reconcile by hand; prints one line per reconciled run
"""

from __future__ import annotations

import logging
import os
import socket
import sys
import threading
import time
from dataclasses import dataclass

log = logging.getLogger(__name__)

HOST, PID, STARTED, FLOW_RUN = "r1.owner.host", "r1.owner.pid", "r1.owner.started", "r1.owner.flow_run_id"
HEARTBEAT = "r1.owner.heartbeat"  # seconds since the epoch, rewritten every HEARTBEAT_EVERY_S by the owner
HEARTBEAT_EVERY_S = 60.0
STALE_AFTER_S = 600.0  # another host's owner is dead after this long without a heartbeat (10 missed beats)
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
    return {
        HOST: socket.gethostname(),
        PID: str(pid),
        STARTED: repr(process_start_time(pid)),
        FLOW_RUN: flow_run_id,
        HEARTBEAT: repr(time.time()),
    }


def why_dead(tags: dict[str, str], stale_after_s: float = STALE_AFTER_S) -> str | None:
    """Why the owner of a run with these tags is provably dead, or None (alive, beating, or no owner)."""
    if HOST not in tags:
        return None
    if tags[HOST] != socket.gethostname():
        return _silent_for(tags, stale_after_s)
    pid = int(tags[PID])
    started = process_start_time(pid)
    if started is None:
        return f"its owner pid {pid} on {tags[HOST]} is gone"
    if abs(started - float(tags[STARTED])) > START_TIME_TOLERANCE_S:
        return f"its owner pid {pid} on {tags[HOST]} is now another process"
    return None


def _silent_for(tags: dict[str, str], stale_after_s: float) -> str | None:
    """Why another host's owner counts as dead (no heartbeat for stale_after_s), or None."""
    if HEARTBEAT not in tags:
        return None
    silent = time.time() - float(tags[HEARTBEAT])
    if silent <= stale_after_s:
        return None
    return f"its owner on {tags[HOST]} sent no heartbeat for {silent:.0f} s (more than {stale_after_s:.0f} s)"


class Heartbeat:
    """Rewrites the HEARTBEAT tag of `run_id` every `every_s` seconds from a daemon thread while open; a failed write
    (tracking server down for a moment) is logged once and retried at the next beat.

        with Heartbeat(parent_run_id):
            ...   # the pipeline
    """

    def __init__(self, run_id: str, every_s: float = HEARTBEAT_EVERY_S):
        self.run_id, self.every_s = run_id, every_s
        self.stopped = threading.Event()
        self.thread = threading.Thread(target=self._beat, name="r1-heartbeat", daemon=True)
        self.failed = False

    def __enter__(self) -> Heartbeat:
        from models.tracking import client

        self.mlflow_client = client()  # opened here, once: the beat thread only writes through it
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stopped.set()
        self.thread.join(timeout=10)

    def _beat(self) -> None:
        while not self.stopped.wait(self.every_s):
            try:
                self.mlflow_client.set_tag(self.run_id, HEARTBEAT, repr(time.time()))
            except Exception as error:  # a beat missed is not a failure of the run; 10 in a row are
                if not self.failed:
                    log.warning(
                        "heartbeat of MLflow run %s not written (retried every %g s): %s",
                        self.run_id,
                        self.every_s,
                        error,
                    )
                self.failed = True


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


def reconcile_experiment(experiment_name: str, stale_after_s: float = STALE_AFTER_S) -> list[StaleRun]:
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
        why = why_dead(run.data.tags, stale_after_s)
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
