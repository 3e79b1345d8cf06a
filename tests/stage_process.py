"""A stage run as a real process (`python -m models.run_stage spec.json`, or launched by a flow-like process), killed
with SIGKILL on a condition and run again: for the resume tests (tests/models/test_resume.py, test_multiprocess.py)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from models.config import PROJECT_ROOT
from models.records import Artifact
from models.resume import COMPLETE
from models.stage_io import scratch_dir, stage_spec


class Stage:
    """One stage run as a process (killed and run again where asked), logging into its own MLflow run."""

    def __init__(self, root: Path, stage: str, recipe, inputs: dict[str, Artifact], attempt: str):
        from models.tracking import client, ensure_experiment

        self.client = client()
        self.run_id = self.client.create_run(ensure_experiment("resume"), run_name=stage).info.run_id
        self.output = root / stage / attempt
        self.spec = root / f"{stage}-{attempt}.json"
        spec = stage_spec(stage, recipe, inputs, output=str(self.output), mlflow_run_id=self.run_id)
        self.spec.write_text(spec.model_dump_json())
        self.logs: list[str] = []

    def start(self, launcher: tuple[str, ...] = ("-m", "models.run_stage"), **env: str) -> subprocess.Popen:
        """The stage process (or, with `launcher`, a process that launches it), its output into the next log."""
        log = self.spec.with_suffix(f".{len(self.logs)}.log")
        self.logs.append(str(log))
        env = {**os.environ, "PYTHONPATH": str(PROJECT_ROOT), "TQDM_DISABLE": "1", "OMP_NUM_THREADS": "1", **env}
        command = [sys.executable, *launcher, str(self.spec)]
        return subprocess.Popen(command, stdout=log.open("w"), stderr=subprocess.STDOUT, env=env, cwd=PROJECT_ROOT)

    def finish(self, proc: subprocess.Popen) -> Artifact:
        """The record of the finished stage, read from its output's stamp."""
        from models.storage import artifact_store

        assert proc.wait(timeout=300) == 0, Path(self.logs[-1]).read_text()[-3000:]
        return artifact_store().read_record(str(self.output))

    def kill_when(self, ready, proc: subprocess.Popen | None = None, timeout_s: float = 300) -> None:
        """SIGKILL the stage process (or `proc`) as soon as `ready()` holds (polled every millisecond)."""
        proc, started = proc or self.start(), time.monotonic()
        while not ready():
            assert proc.poll() is None, f"the stage ended before the kill: {Path(self.logs[-1]).read_text()[-2000:]}"
            assert time.monotonic() - started < timeout_s
            time.sleep(0.001)
        proc.send_signal(signal.SIGKILL)
        proc.wait()

    def complete(self, step: int) -> bool:
        return (scratch_dir(self.output) / f"checkpoint-{step}" / COMPLETE).is_file()

    def logged_past(self, key: str, step: int) -> bool:
        return any(m.step > step for m in self.client.get_metric_history(self.run_id, key))

    def series(self, key: str) -> list[tuple[int, float]]:
        return sorted((m.step, m.value) for m in self.client.get_metric_history(self.run_id, key))

    def started(self, step: int) -> bool:
        return (scratch_dir(self.output) / f"checkpoint-{step}").is_dir()


# a flow process: launches the stage as the Prefect task does (tasks/launch.py: its own session, output streamed)
FLOW = (
    "-c",
    "import sys; from pathlib import Path; from models.stage_io import StageSpec; from tasks.launch import "
    "launch; launch(StageSpec.model_validate_json(Path(sys.argv[1]).read_text()), print, 600)",
)


def marked(marker: str) -> list[int]:
    """Live processes that carry R1_TEST_MARKER=marker."""
    import psutil

    found = []
    for proc in psutil.process_iter():
        try:
            if proc.status() != psutil.STATUS_ZOMBIE and proc.environ().get("R1_TEST_MARKER") == marker:
                found.append(proc.pid)
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            pass
    return found


def resumed_from(run: Stage) -> str:
    text = Path(run.logs[-1]).read_text()
    return text.split("resuming from ", 1)[1].split()[0] if "resuming from " in text else ""
