"""Run one stage in its own process from a spec file written by the Prefect task (or by hand):

    python -m models.run_stage spec.json
    accelerate launch --multi_gpu --num_processes 8 -m models.run_stage spec.json   # one process per GPU

The output folder appears only when the stage succeeded (written as <output>.partial, stamped, renamed). The
last stdout line is `R1_RECORD <json>`: the Artifact record the task returns.

Under several processes every rank runs the stage (TRL trains on all of them), but only the main rank creates
the work folder, attaches to the stage's MLflow run, publishes the output and prints the record; the others wait
for it at barriers and exit 0.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import signal
import sys
import tempfile
import time
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from models.records import Artifact
    from models.resume import CheckpointHooks
    from models.stage_io import StageSpec

RECORD_PREFIX = "R1_RECORD "
log = logging.getLogger(__name__)


def _runner(stage: str):
    """The stage's entry function, imported lazily (TRL takes seconds to import)."""
    if stage in ("cold_start_sft", "supervised_merge"):
        from models import sft

        return {"cold_start_sft": sft.run_cold_start, "supervised_merge": sft.run_supervised_merge}[stage]
    if stage in ("reasoning_rl", "final_rl"):
        from models import grpo

        return {"reasoning_rl": grpo.run_reasoning_rl, "final_rl": grpo.run_final_rl}[stage]
    if stage == "rejection_sampling":
        from models.rejection import run_rejection_sampling

        return run_rejection_sampling
    if stage == "evaluate":
        from models.eval_stage import run_evaluate

        return run_evaluate
    raise ValueError(f"unknown stage '{stage}'")


def _distributed(timeout_s: int):
    """accelerate's PartialState when launched as several processes (WORLD_SIZE > 1), else None (accelerate is
    then not imported). It joins the process group before the trainer does, so that the ranks can wait for each
    other around the stage; on a machine without CUDA the group runs over gloo, as TRL's `use_cpu` will."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return None
    import torch
    from accelerate import PartialState

    return PartialState(cpu=not torch.cuda.is_available(), timeout=timedelta(seconds=timeout_s))


def _wait_for_everyone(state) -> None:
    if state is not None:
        state.wait_for_everyone()


def _tracked(spec):
    """The stage's MLflow run as the active run (TRL's MLflow callback then logs into it), or nothing."""
    if not spec.mlflow_run_id:
        return contextlib.nullcontext()
    import mlflow

    from models.storage import tracking_uri

    mlflow.set_tracking_uri(tracking_uri())
    return mlflow.start_run(run_id=spec.mlflow_run_id)


@contextlib.contextmanager
def _untracked():
    """A non-main rank logs nothing to MLflow: it has no active run, and a stray mlflow call that does not check
    for one goes to a throwaway store instead of starting a run in the pipeline's."""
    import mlflow

    with tempfile.TemporaryDirectory(prefix="r1-rank-mlflow-") as tmp:
        mlflow.set_tracking_uri(f"sqlite:///{Path(tmp) / 'mlflow.db'}")
        try:
            yield None
        finally:
            mlflow.end_run()


def run(spec: StageSpec, hooks: CheckpointHooks | None = None) -> Artifact | None:
    """Run the stage and publish its output; returns the record on the main rank, None on the others. A training
    stage resumes from the last complete checkpoint in its work area; `hooks` connect its checkpoints to a store."""
    from models.records import local_path, partial_dir, publish
    from models.resume import NO_HOOKS, continued_series, record_attempt
    from models.stage_io import OUTPUT_KIND, scratch_dir, stage_config
    from models.tracking import log_params, package_versions
    from models.trl_knobs import STAGE_TRAINER

    state = _distributed(spec.recipe.stage_timeout_s)
    main = state is None or state.is_main_process
    final = local_path(spec.output)
    training = spec.stage in STAGE_TRAINER
    if main:
        work = partial_dir(final)
        if training:
            record_attempt(scratch_dir(final), spec.mlflow_run_id)
        if state is not None:
            log.info("%s: world_size=%d (%s backend)", spec.stage, state.num_processes, state.backend)
    else:
        work = final.with_name(final.name + ".partial")  # partial_dir's folder, made by the main rank
    _wait_for_everyone(state)  # the work folder exists for every rank
    try:
        tracked = _tracked(spec) if main else _untracked()
        with tracked as run_, continued_series(spec.mlflow_run_id if run_ and training else None):
            if run_ and spec.stage != "evaluate":
                import mlflow

                log_params(stage_config(spec.recipe, spec.stage))
                mlflow.log_dict(spec.recipe.model_dump(), "recipe/resolved_recipe.json")
                mlflow.log_dict(package_versions(), "environment/package_versions.json")
            started = time.monotonic()
            _runner(spec.stage)(spec, work, **({"hooks": hooks or NO_HOOKS} if training else {}))
            if run_:
                import mlflow

                from models.cost import gpus_in_use, stage_cost

                world = state.num_processes if state is not None else 1
                mlflow.log_metrics(
                    stage_cost(
                        spec.stage, time.monotonic() - started, gpus_in_use(world), spec.recipe.launch.gpu_hour_usd
                    )
                )
    except BaseException:
        if main:
            shutil.rmtree(work, ignore_errors=True)
        raise
    _wait_for_everyone(state)  # every rank has finished writing into the work folder
    record = None
    if main:
        meta = {"stage": spec.stage, "kind": OUTPUT_KIND[spec.stage], "mlflow_run_id": spec.mlflow_run_id}
        record = publish(work, final, meta)
        shutil.rmtree(scratch_dir(final), ignore_errors=True)
    _wait_for_everyone(state)  # the other ranks exit once the output is published
    if state is not None:
        state.destroy_process_group()
    return record


def _exit_with_parent() -> None:
    """Be killed (SIGKILL) when the process that launched this one dies: a stage orphaned by a flow killed with
    kill -9 would go on writing into the work area that the next run resumes from (Linux; elsewhere nothing)."""
    if not sys.platform.startswith("linux"):
        return
    import ctypes

    parent = os.getppid()
    ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # 1: PR_SET_PDEATHSIG
    if os.getppid() != parent:  # the parent died before the call
        os._exit(1)


def main() -> None:
    """`python -m models.run_stage spec.json` runs the stage; `python -m models.run_stage --exec <python args>` runs
    python with those arguments (a launcher such as accelerate's), dying with its parent as the stage does."""
    from models.stage_io import StageSpec

    _exit_with_parent()
    if sys.argv[1] == "--exec":
        os.execv(sys.executable, [sys.executable, *sys.argv[2:]])  # the death signal is kept across exec
    logging.basicConfig(level=logging.INFO, stream=sys.stdout, format="%(asctime)s %(name)s: %(message)s")
    spec = StageSpec.model_validate_json(Path(sys.argv[1]).read_text())
    record = run(spec)
    if record is not None:
        print(RECORD_PREFIX + record.model_dump_json(), flush=True)


if __name__ == "__main__":
    main()
