"""infra/workpools/setup.py against a real `prefect server start`: the pools and limits it makes, twice; the limits
queue work; a deployment's job variables render through the pool's template as the Kubernetes worker renders them.

    python -m pytest tests/infra/workpools/test_setup.py -q
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from infra.workpools.setup import CPU_POOL, GPU_POOL, GPU_TAG, SetupError, main, setup
from infra.workpools.templates import load_template

REPO = Path(__file__).resolve().parents[3]


def run_setup_cli(api_url: str, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PREFECT_API_URL": api_url}
    command = [sys.executable, "-m", "infra.workpools.setup", *args]
    return subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=120)


async def read_state(pool_names: list[str]):
    from prefect import get_client

    async with get_client() as client:
        pools = {name: await client.read_work_pool(name) for name in pool_names}
        tag_limit = await client.read_concurrency_limit_by_tag(GPU_TAG)
    return pools, tag_limit


def test_setup_creates_then_updates_pools_and_limits(on_prefect_api):
    first = run_setup_cli(on_prefect_api, "--gpu-nodes", "2")
    assert first.returncode == 0, first.stderr
    assert f"work pool {GPU_POOL} (kubernetes): created, concurrency limit 2" in first.stdout

    again = run_setup_cli(on_prefect_api, "--gpu-nodes", "3")
    assert again.returncode == 0, again.stderr
    assert f"work pool {CPU_POOL} (process): updated" in again.stdout

    pools, tag_limit = asyncio.run(read_state([CPU_POOL, GPU_POOL]))
    assert (pools[CPU_POOL].type, pools[CPU_POOL].concurrency_limit) == ("process", None)
    assert (pools[GPU_POOL].type, pools[GPU_POOL].concurrency_limit) == ("kubernetes", 3)
    assert pools[CPU_POOL].base_job_template == load_template("process.json")
    assert pools[GPU_POOL].base_job_template == load_template("kubernetes-gpu.json")
    assert tag_limit.concurrency_limit == 3


def test_setup_keeps_a_paused_pool_paused(on_prefect_api):
    from prefect import get_client
    from prefect.client.schemas.actions import WorkPoolUpdate

    setup(gpu_nodes=1)

    async def pause_then_setup():
        async with get_client() as client:
            await client.update_work_pool(GPU_POOL, WorkPoolUpdate(is_paused=True))
            setup_lines = await asyncio.to_thread(setup, 1)
            return setup_lines, await client.read_work_pool(GPU_POOL)

    lines, pool = asyncio.run(pause_then_setup())
    assert f"work pool {GPU_POOL} (kubernetes): updated, concurrency limit 1" in lines
    assert pool.is_paused


def test_setup_refuses_a_pool_of_another_type(on_prefect_api):
    from prefect import get_client
    from prefect.client.schemas.actions import WorkPoolCreate

    async def make_process_pool_named_gpu():
        async with get_client() as client:
            await client.delete_work_pool(GPU_POOL)
            await client.create_work_pool(WorkPoolCreate(name=GPU_POOL, type="process"))

    asyncio.run(make_process_pool_named_gpu())
    try:
        with pytest.raises(
            SetupError, match=f"exists with type 'process', not 'kubernetes'.*work-pool delete {GPU_POOL}"
        ):
            setup(gpu_nodes=1)
    finally:
        asyncio.run(_delete_pool(GPU_POOL))


async def _delete_pool(name: str) -> None:
    from prefect import get_client

    async with get_client() as client:
        await client.delete_work_pool(name)


@pytest.mark.parametrize(
    ("env", "argv", "message"),
    [
        ({"PREFECT_API_URL": ""}, [], "PREFECT_API_URL is not set"),
        ({"PREFECT_API_URL": "http://127.0.0.1:9/api"}, [], "cannot reach the Prefect API at http://127.0.0.1:9/api"),
    ],
)
def test_setup_errors_are_one_line(env, argv, message, capsys):
    from prefect.settings import PREFECT_API_URL, temporary_settings

    with temporary_settings(updates={PREFECT_API_URL: env["PREFECT_API_URL"] or None}):
        assert main(argv) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1


def test_gpu_nodes_must_be_positive(capsys):
    with pytest.raises(SystemExit):
        main(["--gpu-nodes", "0"])
    assert "'0' is not a whole number of nodes >= 1" in capsys.readouterr().err


def _intervals_of_two_training_tasks(tags: list[str]) -> list[tuple[float, float]]:
    """One flow submitting two 1.5 s tasks carrying `tags` at once; the (start, end) of each task's body, sorted.
    The limit is held by the server, so two task runs of one flow queue exactly as those of two pipelines do."""
    from prefect import flow, task

    @task(tags=tags)
    def train() -> tuple[float, float]:
        start = time.monotonic()
        time.sleep(1.5)
        return start, time.monotonic()

    @flow
    def two_stages() -> list[tuple[float, float]]:
        futures = [train.submit() for _ in range(2)]
        return [future.result() for future in futures]

    return sorted(two_stages())


def test_gpu_tag_limit_queues_the_second_training_task(on_prefect_api):
    setup(gpu_nodes=1, kubernetes=False)  # one GPU node: one training task at a time

    (_, first_end), (second_start, _) = _intervals_of_two_training_tasks([GPU_TAG])
    assert second_start >= first_end, "the second training task ran while the first held the only GPU slot"

    (_, first_end), (second_start, _) = _intervals_of_two_training_tasks(["cpu-only"])
    assert second_start < first_end, "untagged tasks should run side by side (else the check above proves nothing)"


async def _scheduled_runs_a_worker_gets(pool: str, limit: int) -> int:
    """Two flow runs of a deployment in `pool`, one of them already running; how many the pool hands a worker."""
    from prefect import get_client
    from prefect.client.schemas.actions import WorkPoolUpdate
    from prefect.states import Running

    async with get_client() as client:
        await client.update_work_pool(pool, WorkPoolUpdate(concurrency_limit=limit))
        flow_id = await client.create_flow_from_name(f"pool-limit-{limit}")
        deployment_id = await client.create_deployment(flow_id, name="d", work_pool_name=pool, entrypoint="x.py:f")
        runs = [await client.create_flow_run_from_deployment(deployment_id) for _ in range(2)]
        await client.set_flow_run_state(runs[0].id, Running(), force=True)
        handed_out = await client.get_scheduled_flow_runs_for_work_pool(pool)
        for run in runs:
            await client.delete_flow_run(run.id)
        return len(handed_out)


def test_pool_limit_holds_flow_runs_back(on_prefect_api):
    setup(gpu_nodes=1)
    assert asyncio.run(_scheduled_runs_a_worker_gets(GPU_POOL, limit=1)) == 0
    assert asyncio.run(_scheduled_runs_a_worker_gets(GPU_POOL, limit=2)) == 1
    setup(gpu_nodes=1)  # back to the limit setup sets
