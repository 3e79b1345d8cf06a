"""The stack as users start it: `python -m infra.local_stack up` (a Prefect server, an MLflow server and a process
worker on pool r1-cpu, the deployments applied) on free loopback ports and a temporary state folder, for the whole
session; `down` at the end.

    python -m pytest -q tests/e2e            # slow: several minutes on 2 CPU cores
"""

from __future__ import annotations

import time

import pytest
from live_stack import LiveStack, free_port, stack_command

from infra.local_stack import Stack


@pytest.fixture(scope="session")
def live_stack(tmp_path_factory):
    from prefect.settings import PREFECT_API_URL, temporary_settings

    stack = Stack(state=tmp_path_factory.mktemp("stack") / "state", prefect_port=free_port(), mlflow_port=free_port())
    started = time.monotonic()
    up = stack_command(stack, "up")
    took_s = time.monotonic() - started
    try:
        assert up.returncode == 0, f"`local_stack up` failed: {up.stderr.strip()}"
        with temporary_settings({PREFECT_API_URL: stack.prefect_api_url}):
            yield LiveStack(stack=stack, took_s=took_s)
    finally:
        down = stack_command(stack, "down")
        assert down.returncode == 0, down.stderr
