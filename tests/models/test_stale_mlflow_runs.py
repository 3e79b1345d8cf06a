"""models/stale_runs.py on MLflow (SQLite): a killed pipeline's RUNNING runs are closed as FAILED, and only when
their owner process is provably dead: gone from this host, or silent on another host for longer than the heartbeat
limit."""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
import time

import pytest

from models.stale_runs import (
    FLOW_RUN,
    HEARTBEAT,
    HOST,
    PID,
    RECONCILED,
    STALE_AFTER_S,
    STARTED,
    Heartbeat,
    owner_tags,
    process_start_time,
)

pytestmark = pytest.mark.reliability("kill")


@pytest.fixture
def tracking(tmp_path, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    from models.tracking import client, ensure_experiment

    return client(), ensure_experiment("stale")


@pytest.fixture(scope="module")
def dead_owner() -> dict[str, str]:
    """Owner tags of a process that has exited."""
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    started = process_start_time(proc.pid)
    proc.kill()
    proc.wait()
    return {HOST: socket.gethostname(), PID: str(proc.pid), STARTED: repr(started), FLOW_RUN: ""}


def tree(tracking, owner: dict[str, str]) -> tuple[str, str, str, str]:
    """(parent, running child, its running grandchild, finished child), all owned by `owner`."""
    mlflow_client, experiment = tracking
    parent = mlflow_client.create_run(experiment, run_name="pipeline", tags=owner).info.run_id

    def child(of: str, name: str) -> str:
        return mlflow_client.create_run(experiment, run_name=name, tags={"mlflow.parentRunId": of}).info.run_id

    running, finished = child(parent, "cold_start_sft"), child(parent, "base_model")
    grandchild = child(running, "nested")
    mlflow_client.set_terminated(finished, "FINISHED")
    return parent, running, grandchild, finished


def status(tracking, run_id: str) -> str:
    return tracking[0].get_run(run_id).info.status


def test_a_dead_owners_runs_are_failed_with_everything_running_below(tracking, dead_owner):
    from models.stale_runs import reconcile_experiment

    parent, running, grandchild, finished = tree(tracking, dead_owner)
    (stale,) = reconcile_experiment("stale")
    assert stale.run_id == parent and set(stale.children) == {running, grandchild}
    assert [status(tracking, r) for r in (parent, running, grandchild, finished)] == [
        "FAILED",
        "FAILED",
        "FAILED",
        "FINISHED",
    ]
    assert "is gone" in tracking[0].get_run(parent).data.tags[RECONCILED]
    assert reconcile_experiment("stale") == []  # once


def test_a_pid_reused_by_another_process_counts_as_dead(tracking):
    from models.stale_runs import reconcile_experiment

    reused = {**owner_tags(""), STARTED: repr(process_start_time(os.getpid()) - 100)}
    parent, *_ = tree(tracking, reused)
    (stale,) = reconcile_experiment("stale")
    assert stale.run_id == parent and "now another process" in stale.why


@pytest.mark.parametrize(
    "owner",
    [
        pytest.param(lambda: owner_tags("x"), id="alive"),
        pytest.param(lambda: {**owner_tags("x"), HOST: "elsewhere"}, id="another-host-beating"),
        pytest.param(
            lambda: {k: v for k, v in owner_tags("x").items() if k != HEARTBEAT} | {HOST: "elsewhere"},
            id="another-host-without-heartbeat",
        ),
        pytest.param(lambda: {}, id="no-owner"),
    ],
)
def test_runs_not_provably_dead_stay_running(tracking, owner):
    from models.stale_runs import reconcile_experiment

    parent, running, *_ = tree(tracking, owner())
    assert reconcile_experiment("stale") == []
    assert status(tracking, parent) == status(tracking, running) == "RUNNING"


def test_an_unknown_experiment_has_nothing_to_reconcile(tracking):
    from models.stale_runs import reconcile_experiment

    assert reconcile_experiment("no-such-experiment") == []


def test_another_hosts_owner_silent_past_the_limit_counts_as_dead(tracking):
    from models.stale_runs import reconcile_experiment

    silent = {**owner_tags("x"), HOST: "elsewhere", HEARTBEAT: repr(time.time() - STALE_AFTER_S - 5)}
    parent, running, *_ = tree(tracking, silent)
    (stale,) = reconcile_experiment("stale")
    assert stale.run_id == parent and running in stale.children
    assert re.search(r"its owner on elsewhere sent no heartbeat for 60[5-9] s \(more than 600 s\)", stale.why)
    assert status(tracking, parent) == status(tracking, running) == "FAILED"


def test_the_heartbeat_rewrites_its_tag_while_open_and_stops_when_closed(tracking):
    mlflow_client, experiment = tracking
    run_id = mlflow_client.create_run(experiment, run_name="pipeline", tags=owner_tags("x")).info.run_id
    beat = lambda: float(mlflow_client.get_run(run_id).data.tags[HEARTBEAT])  # noqa: E731
    first = beat()
    with Heartbeat(run_id, every_s=0.05):
        deadline = time.monotonic() + 10
        while beat() == first and time.monotonic() < deadline:
            time.sleep(0.05)
    last = beat()
    assert last > first
    time.sleep(0.3)
    assert beat() == last
