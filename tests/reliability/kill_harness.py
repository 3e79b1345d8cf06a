"""Kill harness: runs the tiny pipeline as its users do (`python -m flows.cli ...`, its own state folder, MLflow on
SQLite in it, a shared Prefect server), SIGKILLs the flow process or one of its stage processes at a point it picks
inside a stage's phase (a seeded random delay after the phase begins, seen in the state folder or the log), and runs
it again. Each kill is recorded (what was on disk at that moment, which processes it left behind) for
tests/reliability/test_kills.py.

    .venv/bin/python -m pytest -q -m reliability tests/reliability/test_kills.py
"""

from __future__ import annotations

import os
import random
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import psutil

from models.config import PROJECT_ROOT
from models.resume import COMPLETE, checkpoint_step

NAME = "kill"
CHECKPOINT_EVERY = 2
# As small as the pipeline goes: a few steps per stage, a checkpoint every CHECKPOINT_EVERY steps.
SMALL = [
    f"name={NAME}",
    "model.registered_name=r1-kill",
    "data.eval_size=10",
    "data.cold_start_size=32",
    "data.rl_pool_size=16",
    "data.validation_size=8",
    "evaluation.num_samples=1",
    "cold_start_sft.trl.max_steps=8",
    "cold_start_sft.trl.per_device_train_batch_size=4",
    "cold_start_sft.trl.logging_steps=1",
    f"cold_start_sft.checkpoint_every={CHECKPOINT_EVERY}",
    "reasoning_rl.trl.max_steps=4",
    "reasoning_rl.trl.num_generations=4",
    "reasoning_rl.trl.per_device_train_batch_size=4",
    "reasoning_rl.trl.logging_steps=1",
    f"reasoning_rl.checkpoint_every={CHECKPOINT_EVERY}",
    "rejection_sampling.num_prompts=8",
    "supervised_merge.trl.max_steps=4",
    "supervised_merge.trl.logging_steps=1",
    f"supervised_merge.checkpoint_every={CHECKPOINT_EVERY}",
    "final_rl.trl.max_steps=2",
    "final_rl.trl.num_generations=4",
    "final_rl.trl.per_device_train_batch_size=4",
    "final_rl.general_reward.last_steps=1",
]
POLL_S = 0.002
RUN_TIMEOUT_S = 420


class Watch:
    """What a running pipeline has left in its state folder and log, and its processes."""

    def __init__(self, state: Path, log: Path, proc: subprocess.Popen):
        self.state, self.log, self.proc = state, log, proc

    def outputs(self, stage: str) -> Path:
        return self.state / "artifacts" / NAME / stage

    def stamped(self, stage: str) -> list[Path]:
        """The stamped (published) output folders of `stage`."""
        return sorted(self.outputs(stage).glob("*/_fingerprint.json"))

    def checkpoints(self, stage: str) -> dict[int, bool]:
        """checkpoint step -> complete, in the stage's work areas."""
        found = {}
        for folder in self.outputs(stage).glob("*.trainer/checkpoint-*"):
            step = checkpoint_step(folder.name)
            if step is not None:
                found[step] = (folder / COMPLETE).is_file()
        return found

    def text(self) -> str:
        return self.log.read_text(errors="replace")

    def descendants(self) -> list[psutil.Process]:
        try:
            return psutil.Process(self.proc.pid).children(recursive=True)
        except psutil.NoSuchProcess:
            return []

    def stage_process(self, stage: str) -> psutil.Process | None:
        """The stage process of `stage` (tasks/launch.py writes its spec into a folder `r1-<stage>-...`)."""
        for child in self.descendants():
            try:
                command = " ".join(child.cmdline())
            except psutil.Error:
                continue
            if "models.run_stage" in command and f"/r1-{stage}-" in command:
                return child
        return None

    def model_logged(self) -> bool:
        """The registration has begun copying the final model into its MLflow run."""
        return any((self.state / "mlartifacts" / NAME).glob("*/artifacts/model"))


@dataclass(frozen=True)
class KillPoint:
    """Where to kill: once `begun(watch)` holds (the phase has started), after a random delay in `delay_s`, the flow
    process or the stage process of `stage`."""

    name: str
    stage: str
    target: str  # "flow" or "stage"
    begun: Callable[[Watch], bool]
    delay_s: tuple[float, float] = (0.0, 0.0)


def _stage_running(stage: str) -> Callable[[Watch], bool]:
    return lambda watch: watch.stage_process(stage) is not None


def _complete_checkpoint(stage: str) -> Callable[[Watch], bool]:
    return lambda watch: any(watch.checkpoints(stage).values())


def _checkpoint_being_saved(stage: str) -> Callable[[Watch], bool]:
    return lambda watch: any(not complete for complete in watch.checkpoints(stage).values())


def _stamped(stage: str) -> Callable[[Watch], bool]:
    return lambda watch: bool(watch.stamped(stage))


# In pipeline order: each re-run goes one kill further.
KILL_POINTS = (
    KillPoint("data build", "cold_start_sft", "stage", _stage_running("cold_start_sft"), (2.0, 5.0)),
    KillPoint("mid-training", "reasoning_rl", "flow", _complete_checkpoint("reasoning_rl"), (0.0, 0.4)),
    KillPoint("rejection sampling published", "rejection_sampling", "flow", _stamped("rejection_sampling")),
    KillPoint("saving a checkpoint", "supervised_merge", "stage", _checkpoint_being_saved("supervised_merge")),
    KillPoint("evaluation", "evaluate", "stage", _stage_running("evaluate"), (0.0, 1.5)),
    KillPoint("registration", "register_model", "flow", Watch.model_logged),
)


@dataclass
class Attempt:
    """One pipeline process: its log, exit status, and (if killed) what the kill hit."""

    log: Path
    returncode: int | None = None
    point: str | None = None
    delay_s: float = 0.0
    killed_pid: int | None = None
    checkpoints_at_kill: dict[int, bool] = field(default_factory=dict)
    stamped_at_kill: bool = False
    survivors: list[int] = field(default_factory=list)
    wall_s: float = 0.0

    def text(self) -> str:
        return self.log.read_text(errors="replace")


def resumed_from(text: str, stage: str) -> int | None:
    """The checkpoint step a stage resumed from, read from the attempt's log (models/resume.py's line)."""
    found = re.findall(rf"resuming from \S*/{stage}/\S+\.trainer/checkpoint-(\d+)", text)
    return int(found[-1]) if found else None


class Pipeline:
    """The tiny pipeline on one state folder, run (and killed) as a subprocess."""

    def __init__(self, state: Path, prefect_api: str, overrides: list[str] | None = None):
        self.state, self.prefect_api = state, prefect_api
        self.overrides = overrides or SMALL
        self.attempts: list[Attempt] = []

    def _start(self) -> tuple[subprocess.Popen, Attempt]:
        self.state.mkdir(parents=True, exist_ok=True)
        attempt = Attempt(self.state.parent / f"{self.state.name}-attempt{len(self.attempts)}.log")
        self.attempts.append(attempt)
        env = {
            **os.environ,
            "R1_STATE_DIR": str(self.state),
            "PREFECT_HOME": str(self.state / "prefect"),
            "PREFECT_API_URL": self.prefect_api,
            "MLFLOW_TRACKING_URI": f"sqlite:///{self.state / 'mlflow.db'}",
            "PYTHONPATH": str(PROJECT_ROOT),
            "OMP_NUM_THREADS": "1",
            "TQDM_DISABLE": "1",
        }
        command = [sys.executable, "-m", "flows.cli", *self.overrides]
        with attempt.log.open("w") as out:
            proc = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, env=env, cwd=PROJECT_ROOT)
        return proc, attempt

    def run(self) -> Attempt:
        """One attempt to the end."""
        started = time.monotonic()
        proc, attempt = self._start()
        attempt.returncode = proc.wait(timeout=RUN_TIMEOUT_S)
        attempt.wall_s = time.monotonic() - started
        return attempt

    def run_and_kill(self, point: KillPoint, rng: random.Random) -> Attempt:
        """One attempt, SIGKILLed at `point` (module docstring); waits for the flow to end."""
        started = time.monotonic()
        proc, attempt = self._start()
        watch = Watch(self.state, attempt.log, proc)
        attempt.point, attempt.delay_s = point.name, rng.uniform(*point.delay_s)
        while not point.begun(watch):
            if proc.poll() is not None or time.monotonic() - started > RUN_TIMEOUT_S:
                raise AssertionError(f"{point.name}: the phase never began\n{watch.text()[-3000:]}")
            time.sleep(POLL_S)
        time.sleep(attempt.delay_s)
        _kill(watch, point, attempt)
        attempt.returncode = proc.wait(timeout=RUN_TIMEOUT_S)
        attempt.survivors = _survivors(attempt.survivors)
        attempt.wall_s = time.monotonic() - started
        return attempt


def _kill(watch: Watch, point: KillPoint, attempt: Attempt) -> None:
    """SIGKILL the target; note every process below the flow (they must all die) and what was on disk."""
    below = watch.descendants()
    target = watch.stage_process(point.stage)
    victim = watch.proc.pid if point.target == "flow" or target is None else target.pid
    os.kill(victim, signal.SIGKILL)
    attempt.killed_pid = victim
    attempt.checkpoints_at_kill = watch.checkpoints(point.stage)
    attempt.stamped_at_kill = bool(watch.stamped(point.stage))
    attempt.survivors = [p.pid for p in below]  # checked once the flow has ended


def _survivors(pids: list[int], grace_s: float = 10.0) -> list[int]:
    """Those of `pids` still alive (not zombies) `grace_s` after the flow ended."""
    deadline = time.monotonic() + grace_s
    alive = pids
    while alive and time.monotonic() < deadline:
        alive = [pid for pid in alive if _alive(pid)]
        time.sleep(0.2)
    return alive


def _alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False
