"""Prefect's embedded API on one fresh PREFECT_HOME started by three processes at the same moment
(flows/embedded_api.py): every server starts at the first try (none dies in the database creation), every flow runs.

    .venv/bin/python -m pytest tests/flows/test_embedded_api.py -q -m slow
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time

import pytest

from models.config import PROJECT_ROOT

FIRST_USE = """
    import sys, time
    time.sleep(max(0.0, float(sys.argv[1]) - time.time()))  # all start together
    from flows.embedded_api import start_embedded_api
    start_embedded_api()
    from prefect import flow

    @flow
    def one() -> int:
        return 1

    print("flow result", one())
"""


@pytest.mark.slow
@pytest.mark.reliability("concurrent")
def test_three_processes_start_the_embedded_api_on_a_fresh_home(tmp_path):
    hidden = ("PREFECT_API_URL", "PREFECT_HOME", "PREFECT_PROFILES_PATH")
    env = {k: v for k, v in os.environ.items() if k not in hidden}
    env |= {"PREFECT_HOME": str(tmp_path / "prefect"), "PREFECT_SERVER_ANALYTICS_ENABLED": "false"}
    env |= {"PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "240", "PYTHONPATH": str(PROJECT_ROOT)}
    start = str(time.time() + 15)  # past every process's imports on two busy cores
    command = [sys.executable, "-c", textwrap.dedent(FIRST_USE), start]
    pipes = {"stdout": subprocess.PIPE, "stderr": subprocess.STDOUT, "text": True, "env": env}
    procs = [subprocess.Popen(command, **pipes) for _ in range(3)]
    outputs = [proc.communicate(timeout=600)[0] for proc in procs]
    assert [proc.returncode for proc in procs] == [0, 0, 0], outputs
    assert all("flow result 1" in out for out in outputs)
    assert not [out for out in outputs if "Application startup failed" in out or "already exists" in out]
