"""The deployments of infra/prefect.yaml on the local stack, started the way the Prefect UI starts them: a run of the
train deployment with changed parameters (what the Run button sends), a bad parameter that fails the run at once,
and the scheduled retraining deployment on a short schedule that fires, runs and is paused again.

    python -m pytest -q tests/e2e/test_deployments.py
"""

from __future__ import annotations

import time
from datetime import timedelta

import pytest
from live_stack import SCHEDULED, SMALL, TRAIN

from models.stages import PIPELINE

pytestmark = pytest.mark.slow


def pipeline_runs(live_stack, experiment: str, flow_run_id) -> tuple:
    """(the parent MLflow run of a flow run in `experiment`, its nested runs by name)."""
    mlflow = live_stack.mlflow()
    found = mlflow.get_experiment_by_name(experiment)
    assert found is not None, f"no MLflow experiment {experiment!r} on {live_stack.stack.mlflow_url}"
    runs = mlflow.search_runs([found.experiment_id])
    parents = [run for run in runs if run.data.tags.get("prefect.flow_run_id") == str(flow_run_id)]
    assert len(parents) == 1, f"{len(parents)} parent runs of flow run {flow_run_id} in {experiment!r}"
    children = {
        run.info.run_name: run for run in runs if run.data.tags.get("mlflow.parentRunId") == parents[0].info.run_id
    }
    return parents[0], children


def test_a_deployment_run_with_a_changed_parameter_runs_on_the_worker_and_tracks_in_mlflow(live_stack):
    from prefect.deployments import run_deployment

    started = time.monotonic()
    overrides = [*SMALL, "name=e2e-api", "model.registered_name=r1-e2e-api"]
    flow_run = run_deployment(TRAIN, parameters={"overrides": overrides}, timeout=0)
    finished = live_stack.wait_final(flow_run.id)

    assert finished.state.is_completed(), f"{finished.state.type}: {finished.state.message}\n{live_stack.worker_log()}"
    assert finished.parameters["overrides"] == overrides
    parent, children = pipeline_runs(live_stack, "e2e-api", flow_run.id)  # the changed name is the experiment
    assert parent.info.status == "FINISHED"
    assert set(children) == {"base_model", *PIPELINE}
    assert all(run.data.tags.get("stage") == name for name, run in children.items())
    assert "loss" in children["cold_start_sft"].data.metrics
    assert "eval/pass_at_1" in children["final_rl"].data.metrics
    candidate = live_stack.mlflow().get_model_version_by_alias("r1-e2e-api", "candidate")
    assert candidate.run_id == children["final_rl"].info.run_id
    print(f"train deployment run: {time.monotonic() - started:.0f} s (stack up: {live_stack.took_s:.0f} s)")


def test_a_bad_parameter_fails_the_run_at_once_with_the_cli_line(live_stack):
    from prefect.deployments import run_deployment

    flow_run = run_deployment(TRAIN, parameters={"overrides": ["reasoning_rl.trl.learnin_rate=1e-4"]}, timeout=0)
    finished = live_stack.wait_final(flow_run.id, timeout_s=300)

    assert finished.state.is_failed()
    assert finished.state.message == (
        "recipe error: reasoning_rl.trl.learnin_rate: TRL GRPOConfig has no field 'learnin_rate'; "
        "did you mean 'learning_rate'?"
    )
    assert (finished.end_time - finished.start_time).total_seconds() < 60


def scheduled_runs(client, deployment_id) -> list:
    from prefect.client.schemas.filters import (
        DeploymentFilter,
        DeploymentFilterId,
        FlowRunFilter,
        FlowRunFilterState,
        FlowRunFilterStateType,
    )
    from prefect.client.schemas.objects import StateType

    return client.read_flow_runs(
        deployment_filter=DeploymentFilter(id=DeploymentFilterId(any_=[deployment_id])),
        flow_run_filter=FlowRunFilter(
            state=FlowRunFilterState(type=FlowRunFilterStateType(any_=[StateType.SCHEDULED]))
        ),
    )


def test_a_short_schedule_fires_a_run_that_completes_and_pausing_stops_it(live_stack):
    from prefect.client.schemas.schedules import IntervalSchedule

    started = time.monotonic()
    parameters = {
        "recipe_path": None,
        "overrides": [*SMALL, "name=e2e-scheduled"],
    }  # on the schedule, not the deployment
    with live_stack.prefect() as client:
        deployment = client.read_deployment_by_name(SCHEDULED)
        assert not any(s.active for s in deployment.schedules), "the retrain schedule is off until a user turns it on"
        (schedule,) = client.create_deployment_schedules(
            deployment.id,
            [(IntervalSchedule(interval=timedelta(seconds=20)), True)],
            max_scheduled_runs=1,
            parameters=parameters,
            slug="e2e-every-20s",
        )
        client.resume_deployment(deployment.id)
    fired = wait_for_scheduled_run(live_stack, deployment.id)
    with live_stack.prefect() as client:  # paused once it fired: its next runs are removed, the started one goes on
        client.pause_deployment(deployment.id)
        client.delete_deployment_schedule(deployment.id, schedule.id)
        paused = client.read_deployment(deployment.id)
        left = scheduled_runs(client, deployment.id)
    finished = live_stack.wait_final(fired.id)

    assert finished.state.is_completed(), f"{finished.state.type}: {finished.state.message}\n{live_stack.worker_log()}"
    assert finished.auto_scheduled and finished.parameters["overrides"][-1] == "name=e2e-scheduled"
    pipeline_runs(live_stack, "e2e-scheduled", fired.id)
    assert paused.paused
    assert left == [], f"{len(left)} scheduled runs left after pausing"
    print(f"scheduled run fired and completed in {time.monotonic() - started:.0f} s")


def wait_for_scheduled_run(live_stack, deployment_id, timeout_s: float = 120):
    """The first flow run that the scheduler created for the deployment and the worker started."""
    from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterId

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        with live_stack.prefect() as client:
            runs = client.read_flow_runs(
                deployment_filter=DeploymentFilter(id=DeploymentFilterId(any_=[deployment_id]))
            )
        started = [run for run in runs if run.auto_scheduled and (run.state.is_running() or run.state.is_final())]
        if started:
            return started[0]
        time.sleep(1)
    pytest.fail(f"no scheduled run of {deployment_id} started within {timeout_s:.0f} s\n{live_stack.worker_log()}")
