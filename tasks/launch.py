"""Launch a stage in its own process (a new process group), stream its output into the Prefect log, and kill
the whole group on timeout, cancel or error.

A training stage runs under `accelerate launch` when the recipe's `launch.num_processes` is above 1 (one process per
GPU; DDP, or DeepSpeed ZeRO-3 / FSDP through `launch.accelerate_config`, see infra/accelerate/); evaluation and
rejection sampling are not TRL trainers and always run as one process (the stage registry's `launch`, resolved into
the spec). The record is read from the published output's stamp, not from the process's output.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

from models.config import PROJECT_ROOT, LaunchConfig
from models.lifetime import die_with_parent
from models.records import Artifact
from models.stage_io import StageSpec
from models.storage import output_store

QUIET_ENV = {"TQDM_DISABLE": "1", "TOKENIZERS_PARALLELISM": "false", "PYTHONUNBUFFERED": "1"}
# NVLink multicast (NVLS) stays off in every launched process: NCCL, torch symmetric memory and NVSHMEM.
NO_NVLINK_MULTICAST_ENV = {
    "NCCL_NVLS_ENABLE": "0",
    "TORCH_SYMM_MEM_DISABLE_MULTICAST": "1",
    "NVSHMEM_DISABLE_NVLS": "1",
}


class StageFailed(RuntimeError):
    """A stage process exited non-zero or ran past its timeout; the message carries its last output lines."""


def stage_command(spec_path: Path, launch: LaunchConfig) -> list[str]:
    """`python -m models.run_stage spec.json`, under `accelerate launch` when there are several processes.

    Without an accelerate config it is plain DDP through accelerate's torchrun launcher (`--multi_gpu`). That is
    also the multi-process launch on a machine without CUDA: the ranks then train on the CPU over gloo (run_stage
    and TRL's `use_cpu` choose the CPU), whereas accelerate's `--cpu` would start a single process unless mpirun
    is used.
    """
    stage = ["-m", "models.run_stage", str(spec_path)]
    if launch.num_processes == 1:
        return [sys.executable, *stage]
    # the launcher dies with this process (as each rank dies with the launcher): no rank trains on after a kill -9
    command = [sys.executable, "-m", "models.run_stage", "--exec", "-m", "accelerate.commands.launch"]
    command += ["--num_processes", str(launch.num_processes)]
    if launch.accelerate_config:
        command += ["--config_file", str(LaunchConfig.resolve(launch.accelerate_config))]
    else:
        # precision comes from the recipe's TRL knobs, not from the launcher
        command += ["--multi_gpu", "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no"]
    return command + stage


def _kill_group(proc: subprocess.Popen) -> None:
    """Kill the stage's process group and every process below it: torchrun (under `accelerate launch`) starts
    each rank in a session of its own, which a kill of the group alone would leave running."""
    import psutil  # a dependency of accelerate

    if proc.poll() is None:
        try:
            below = psutil.Process(proc.pid).children(recursive=True)
        except psutil.NoSuchProcess:
            below = []
        os.killpg(proc.pid, signal.SIGKILL)
        for child in below:
            with contextlib.suppress(psutil.NoSuchProcess):
                child.kill()
        proc.wait()


def _env() -> dict[str, str]:
    path = os.pathsep.join(p for p in (str(PROJECT_ROOT), os.environ.get("PYTHONPATH")) if p)
    return {**os.environ, **QUIET_ENV, **NO_NVLINK_MULTICAST_ENV, "PYTHONPATH": path}


def launch(spec: StageSpec, log_line, timeout_s: float) -> tuple[Artifact, list[str]]:
    """Run the stage process for `spec`; `log_line` receives each output line. Returns (record, output)."""
    with tempfile.TemporaryDirectory(prefix=f"r1-{spec.stage}-") as tmp:
        spec_path = Path(tmp) / "spec.json"
        spec_path.write_text(spec.model_dump_json())
        proc = subprocess.Popen(
            stage_command(spec_path, spec.launch),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,
            preexec_fn=die_with_parent,
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
    record = output_store(spec.output, spec.storage)[0].read_record(spec.output)
    if record is None:
        raise StageFailed(f"{spec.stage} exited 0 but published no stamped output at {spec.output}")
    return record, output
