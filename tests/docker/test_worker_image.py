"""The worker image, built for real (local Debian base, CPU torch wheel): what it installs matches pyproject.toml,
it runs as a non-root user with nothing secret or build-only left in it, the CLI validates a recipe in it, and a
container of it, started as a Prefect worker, takes a flow run of the project's r1-evaluate flow from a real
`prefect server` and brings it to COMPLETED.

    python -m pytest -q -m docker tests/docker/test_worker_image.py
"""

from __future__ import annotations

import json
import time
import tomllib
import urllib.request
import uuid

import pytest

from tests.conftest import free_port
from tests.docker.conftest import ROOT, docker, pip_list

pytestmark = [pytest.mark.docker, pytest.mark.slow]

# A small r1-evaluate run of the shipped tiny base model: the defaults of the recipe, fewer prompts and samples.
EVALUATE_RECIPE = {"name": "docker-smoke", "data": {"eval_size": 10}, "evaluation": {"num_samples": 2}}
FLOW_RUN_TIMEOUT_S = 900


def unmet_requirements(installed: dict[str, str]) -> list[str]:
    from packaging.requirements import Requirement
    from packaging.utils import canonicalize_name

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    declared = project["dependencies"] + project["optional-dependencies"]["kubernetes"]
    unmet = []
    for line in declared:
        requirement = Requirement(line)
        version = installed.get(canonicalize_name(requirement.name))
        if version is None or not requirement.specifier.contains(version, prereleases=True):
            unmet.append(f"{requirement} (installed: {version})")
    return unmet


def test_installed_packages_satisfy_pyproject(worker_image):
    installed = pip_list(worker_image)
    assert unmet_requirements(installed) == []
    assert installed["r1-pipeline"] == tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
    assert installed["torch"] == "2.13.0+cpu"


def test_a_wrong_version_counts_as_unmet():
    unmet = unmet_requirements({"trl": "0.1.0"})
    assert any(line.startswith("trl==") and "installed: 0.1.0" in line for line in unmet), unmet


def test_image_runs_as_non_root_without_build_ca_or_credentials(worker_image):
    assert docker("run", "--rm", worker_image, "id", "-u").stdout.strip() == "10001"
    leftover = docker("run", "--rm", worker_image, "ls", "/tmp", check=False).stdout
    assert "build-ca" not in leftover and "requirements.txt" not in leftover
    config = json.loads(docker("image", "inspect", worker_image).stdout)[0]["Config"]
    names = {entry.split("=", 1)[0] for entry in config["Env"]}
    assert not names & {"PREFECT_API_URL", "MLFLOW_TRACKING_URI", "R1_STORAGE_URI", "R1_S3_ENDPOINT_URL"}
    assert not {name for name in names if name.startswith("AWS_") or name == "PIP_CERT"}
    assert config["Healthcheck"]["Test"][0] == "CMD" and config["User"] == "10001"


def test_cli_checks_the_embedded_recipe_in_the_image(worker_image):
    checked = docker("run", "--rm", worker_image, "python", "-m", "flows.cli", "--check")
    assert checked.returncode == 0, checked.stderr
    refused = docker("run", "--rm", worker_image, "python", "-m", "flows.cli", "--check", "seeed=1", check=False)
    assert refused.returncode == 2 and "recipe error" in refused.stdout + refused.stderr


def test_worker_without_an_api_url_says_what_to_set(worker_image):
    refused = docker("run", "--rm", "-e", "R1_WORK_POOL=gpu", worker_image, check=False)
    assert refused.returncode == 2 and "set PREFECT_API_URL" in refused.stderr


def deployment_of_r1_evaluate(client, pool: str):
    from prefect.client.schemas.actions import WorkPoolCreate

    client.create_work_pool(WorkPoolCreate(name=pool, type="process"))
    flow_id = client.create_flow_from_name("r1-evaluate")
    return client.create_deployment(
        flow_id=flow_id,
        name="docker-worker-test",
        work_pool_name=pool,
        # as infra/prefect.yaml's GPU deployment: the entrypoint from the image's source tree
        entrypoint="flows/evaluate.py:r1_evaluate",
        pull_steps=[{"prefect.deployments.steps.set_working_directory": {"directory": "/opt/r1"}}],
    )


def final_state(client, flow_run_id, seconds: float):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        state = client.read_flow_run(flow_run_id).state
        if state is not None and state.is_final():
            return state
        time.sleep(3)
    return client.read_flow_run(flow_run_id).state


def container_health(container: str, seconds: float) -> str:
    deadline = time.monotonic() + seconds
    status = "unknown"
    while time.monotonic() < deadline:
        status = docker("inspect", "--format", "{{.State.Health.Status}}", container).stdout.strip()
        if status != "starting":
            return status
        time.sleep(2)
    return status


def test_worker_container_runs_a_flow_run_to_completed(worker_image, prefect_api):
    from prefect.client.orchestration import get_client
    from prefect.settings import PREFECT_API_URL, temporary_settings

    pool, health_port = f"docker-{uuid.uuid4().hex[:8]}", free_port()
    env = {"PREFECT_API_URL": prefect_api, "R1_WORK_POOL": pool, "PREFECT_WORKER_WEBSERVER_PORT": str(health_port)}
    flags = [arg for name, value in env.items() for arg in ("-e", f"{name}={value}")]
    with temporary_settings({PREFECT_API_URL: prefect_api}), get_client(sync_client=True) as client:
        assert str(client.api_url).startswith(prefect_api)  # the test's server, not an ephemeral one
        deployment_id = deployment_of_r1_evaluate(client, pool)
        container = docker("run", "-d", "--network", "host", *flags, worker_image).stdout.strip()
        try:
            flow_run = client.create_flow_run_from_deployment(
                deployment_id, parameters={"model": "builtin:tiny_base", "recipe": EVALUATE_RECIPE}
            )
            state = final_state(client, flow_run.id, FLOW_RUN_TIMEOUT_S)
            logs = docker("logs", "--tail", "60", container, check=False)
            assert state is not None and state.is_completed(), f"{state}\n{logs.stdout[-4000:]}{logs.stderr[-4000:]}"
            with urllib.request.urlopen(f"http://127.0.0.1:{health_port}/health", timeout=5) as reply:
                assert reply.status == 200
            assert container_health(container, 120) == "healthy"
        finally:
            docker("rm", "-f", container, check=False)
        task_states = {run.name: run.state.type.value for run in task_runs_of(client, flow_run.id)}
    assert task_states and set(task_states.values()) == {"COMPLETED"}, task_states


def task_runs_of(client, flow_run_id):
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    return client.read_task_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id])))
