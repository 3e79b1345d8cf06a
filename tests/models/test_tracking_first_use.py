"""Concurrent first use of the local MLflow database (models/tracking.py): processes that open a fresh SQLite
database and create the pipeline's experiment at the same moment all succeed and agree on the experiment.

    .venv/bin/python -m pytest tests/models/test_tracking_first_use.py -q
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time

import pytest

FIRST_USE = """
    import sys, time
    time.sleep(max(0.0, float(sys.argv[1]) - time.time()))  # all start together
    from models.tracking import ensure_experiment
    print(ensure_experiment("r1-concurrent"))
"""
# what MLflow does alone: the race the lock closes (used to show that the test can fail)
UNGUARDED = """
    import sys, time
    from mlflow import MlflowClient
    time.sleep(max(0.0, float(sys.argv[1]) - time.time()))
    MlflowClient(sys.argv[2]).search_experiments(max_results=1)
    print("ok")
"""


def _together(code: str, tmp_path, processes: int) -> list[subprocess.CompletedProcess]:
    database = tmp_path / "state" / "mlflow.db"
    uri = f"sqlite:///{database}"
    env = {**os.environ, "MLFLOW_TRACKING_URI": uri, "R1_STATE_DIR": str(tmp_path / "state")}
    start = str(time.time() + 12)  # past the imports of every process on two busy cores
    script = textwrap.dedent(code)
    pipes = {"stdout": subprocess.PIPE, "stderr": subprocess.PIPE, "text": True}
    procs = [subprocess.Popen([sys.executable, "-c", script, start, uri], env=env, **pipes) for _ in range(processes)]
    return [subprocess.CompletedProcess(p.args, p.wait(timeout=240), *p.communicate()) for p in procs]


@pytest.mark.reliability("concurrent")
def test_fresh_database_opened_by_three_processes_at_once(tmp_path):
    done = _together(FIRST_USE, tmp_path, processes=3)
    assert [p.returncode for p in done] == [0, 0, 0], [p.stderr[-2000:] for p in done if p.returncode]
    assert len({p.stdout.strip() for p in done}) == 1  # one experiment, found by all


@pytest.mark.reliability("concurrent")
def test_two_downloads_of_one_registered_version_never_share_a_folder(tmp_path):
    from models.tracking import _attempt_folder, _move_into_place

    final = tmp_path / "registry" / "m" / "1"
    ours, theirs = _attempt_folder(final), _attempt_folder(final)
    assert ours != theirs and ours.parent == final.parent
    (ours / "config.json").write_text("ours")
    (theirs / "config.json").write_text("theirs")
    _move_into_place(theirs, final)
    _move_into_place(ours, final)  # the other process got there first: theirs stays, ours goes
    assert (final / "config.json").read_text() == "theirs"
    assert sorted(p.name for p in final.parent.iterdir()) == ["1"]
