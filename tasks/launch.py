"""Launch a stage in its own process (a new process group), stream its output into the Prefect log, and kill
the whole group on timeout, cancel or error. Under several GPUs the same spec runs under `accelerate launch`."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

from models.records import Artifact
from models.run_stage import RECORD_PREFIX
from models.stage_io import StageSpec

PROJECT_ROOT = Path(__file__).resolve().parent.parent
QUIET_ENV = {"TQDM_DISABLE": "1", "TOKENIZERS_PARALLELISM": "false", "PYTHONUNBUFFERED": "1"}


class StageFailed(RuntimeError):
    """A stage process exited non-zero or ran past its timeout; the message carries its last output lines."""


def stage_command(spec_path: Path) -> list[str]:
    return [sys.executable, "-m", "models.run_stage", str(spec_path)]


def _kill_group(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def _env() -> dict[str, str]:
    path = os.pathsep.join(p for p in (str(PROJECT_ROOT), os.environ.get("PYTHONPATH")) if p)
    return {**os.environ, **QUIET_ENV, "PYTHONPATH": path}


def launch(spec: StageSpec, log_line, timeout_s: float) -> tuple[Artifact, list[str]]:
    """Run the stage process for `spec`; `log_line` receives each output line. Returns (record, output)."""
    with tempfile.TemporaryDirectory(prefix=f"r1-{spec.stage}-") as tmp:
        spec_path = Path(tmp) / "spec.json"
        spec_path.write_text(spec.model_dump_json())
        proc = subprocess.Popen(
            stage_command(spec_path),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,
            env=_env(),
        )
        watchdog = threading.Timer(timeout_s, _kill_group, [proc])
        watchdog.start()
        output: list[str] = []
        try:
            for line in proc.stdout:
                output.append(line.rstrip())
                log_line(line.rstrip())
            proc.wait()
        finally:
            watchdog.cancel()
            _kill_group(proc)
    if proc.returncode != 0:
        why = (
            f"ran past its timeout of {timeout_s:.0f} s"
            if proc.returncode == -signal.SIGKILL
            else f"exited with status {proc.returncode}"
        )
        raise StageFailed(f"{spec.stage} {why}; last output:\n" + "\n".join(output[-20:]))
    record_line = next(line for line in reversed(output) if line.startswith(RECORD_PREFIX))
    return Artifact.model_validate_json(record_line.removeprefix(RECORD_PREFIX)), output
