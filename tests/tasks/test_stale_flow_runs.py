"""tasks/stale_runs.py against a real (temporary) Prefect API: the flow run of a killed pipeline and its unfinished
task runs become CRASHED; finished task runs keep their state; a flow run the API does not know is one log line."""

from __future__ import annotations

import logging
import uuid

import pytest
from prefect import flow, task
from prefect.client.orchestration import get_client
from prefect.states import Completed, Pending, Running

from models.stale_runs import StaleRun

pytestmark = pytest.mark.reliability("kill")


@flow
def victim():
    pass


@task
def step():
    pass


def killed_flow_run(client, task_states) -> tuple[uuid.UUID, list[uuid.UUID]]:
    """A RUNNING flow run with one task run per state in `task_states` (what a SIGKILLed pipeline leaves)."""
    flow_run = client.create_flow_run(victim)
    client.set_flow_run_state(flow_run.id, Running(), force=True)
    task_runs = []
    for i, state in enumerate(task_states):
        task_run = client.create_task_run(step, flow_run.id, dynamic_key=str(i))
        client.set_task_run_state(task_run.id, state, force=True)
        task_runs.append(task_run.id)
    return flow_run.id, task_runs


def test_a_killed_flow_run_and_its_unfinished_task_runs_are_crashed(prefect_server, caplog):
    from tasks.stale_runs import crash_flow_run

    with get_client(sync_client=True) as client:
        flow_run_id, (running, pending, completed) = killed_flow_run(client, [Running(), Pending(), Completed()])
        crash_flow_run(StaleRun("run", "its owner pid 1 is gone", str(flow_run_id), ()), logging.getLogger("t"))
        assert client.read_flow_run(flow_run_id).state.name == "Crashed"
        states = [client.read_task_run(t).state.name for t in (running, pending, completed)]
    assert states == ["Crashed", "Crashed", "Completed"]
    assert "2 unfinished task runs" in caplog.text


def test_a_flow_run_the_api_does_not_know_is_one_warning(prefect_server, caplog):
    from tasks.stale_runs import crash_flow_run

    crash_flow_run(StaleRun("run", "gone", str(uuid.uuid4()), ()), logging.getLogger("t"))
    assert "is not on this Prefect API" in caplog.text
