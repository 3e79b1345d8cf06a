"""Run one stage in its own process from a spec file written by the Prefect task (or by hand):

    python -m models.run_stage spec.json
    accelerate launch --multi_gpu --num_processes 8 -m models.run_stage spec.json   # one process per GPU

The output folder appears only when the stage succeeded (written as <output>.partial, stamped, renamed); its stamp
holds the Artifact record the task returns, and spec.json beside it the spec the stage ran with.

Under several processes every rank runs the stage (TRL trains on all of them), but only the main rank creates
the work folder, attaches to the stage's MLflow run, publishes the output and prints the record; the others wait
for it at barriers and exit 0.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import sys
import tempfile
import time
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from models.records import Artifact
    from models.stage_io import StageSpec

log = logging.getLogger(__name__)


def _entry(entry: str):
    """The stage's entry function (`module:function`), imported only now (TRL takes seconds to import)."""
    import importlib

    module, _, function = entry.partition(":")
    return getattr(importlib.import_module(module), function)


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


@contextlib.contextmanager
def _tracked(spec):
    """The stage's MLflow run as the active run (TRL's MLflow callback then logs its metrics into it, but no params:
    the stage's settings are logged once, by _log_spec), or nothing."""
    if not spec.mlflow_run_id:
        yield None
        return
    import mlflow

    from models.storage import tracking_uri
    from models.tracking import without_trainer_params

    mlflow.set_tracking_uri(tracking_uri())
    with without_trainer_params(), mlflow.start_run(run_id=spec.mlflow_run_id) as run:
        yield run


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


def _log_spec(spec: StageSpec, work: Path) -> None:
    """The spec beside the output (spec.json) and in the MLflow run (spec/<stage>.json), with the stage's settings
    as params (an evaluation logs into the run of the stage that made its model: no params of its own)."""
    from models.stage_io import SPEC_FILE

    (work / SPEC_FILE).write_text(spec.model_dump_json(indent=2))
    if not mlflow_active():
        return
    import mlflow

    from models.tracking import log_params, package_versions

    mlflow.log_dict(spec.model_dump(mode="json"), f"spec/{spec.stage}.json")
    if spec.stage != "evaluate":
        payload = spec.key_payload()
        shared = {k: payload[k] for k in ("data", "dtype", "seed") if payload[k] is not None}
        log_params({spec.stage: payload["settings"], **shared})
        mlflow.log_dict(package_versions(), "environment/package_versions.json")


def mlflow_active() -> bool:
    import mlflow

    return mlflow.active_run() is not None


def _log_cost(spec: StageSpec, started: float, state) -> None:
    import mlflow

    from models.cost import gpus_in_use, stage_cost

    world = state.num_processes if state is not None else 1
    wall = time.monotonic() - started
    mlflow.log_metrics(stage_cost(spec.stage, wall, gpus_in_use(world), spec.launch.gpu_hour_usd))


def _with_local_inputs(spec: StageSpec, store) -> StageSpec:
    """The spec whose input records point at local folders (downloaded and verified from the store when remote;
    hub ids as they are): stage code only ever opens local paths."""
    local = {
        name: record.model_copy(update={"uri": store.local_source(record)}) for name, record in spec.inputs.items()
    }
    data = spec.data
    if "problems" in local and data is not None and data.problems is not None:  # problems read through their record
        data = data.model_copy(update={"problems": data.problems.model_copy(update={"path": local["problems"].uri})})
    return spec.model_copy(update={"inputs": local, "data": data})


def run(spec: StageSpec) -> Artifact | None:
    """Run the stage and publish its output to the spec's store; returns the record on the main rank, None on the
    others."""
    from models.checkpoint_sync import record_attempt_in, store_hooks
    from models.factory import allow_remote_code
    from models.resume import continued_series, record_attempt
    from models.stage_io import scratch_dir
    from models.storage import mlflow_env, output_store

    store, relative = output_store(spec.output, spec.storage)
    os.environ.update(mlflow_env(spec.storage))
    state = _distributed(spec.timeout_s)
    main = state is None or state.is_main_process
    work = store.work_dir(relative) if main else store.work_path(relative)  # the main rank makes it
    local_area, area = scratch_dir(work), f"{relative}.trainer"  # the work area: local, and in the store
    training = spec.trainer is not None
    if main and training:
        record_attempt(local_area, spec.mlflow_run_id)
        record_attempt_in(store, area, spec.mlflow_run_id)
    if main and state is not None:
        log.info("%s: world_size=%d (%s backend)", spec.stage, state.num_processes, state.backend)
    _wait_for_everyone(state)  # the work folder exists for every rank
    try:
        tracked = _tracked(spec) if main else _untracked()
        with tracked as run_, continued_series(spec.mlflow_run_id if run_ and training else None):
            if main:
                _log_spec(spec, work)
            started = time.monotonic()
            hooks = {"hooks": store_hooks(store, area, local_area)} if training else {}
            allow_remote_code(spec.trust_remote_code)
            _entry(spec.entry)(_with_local_inputs(spec, store), work, **hooks)
            if run_:
                _log_cost(spec, started, state)
    except BaseException:
        if main:
            shutil.rmtree(work, ignore_errors=True)
        raise
    _wait_for_everyone(state)  # every rank has finished writing into the work folder
    record = None
    if main:
        meta = {"stage": spec.stage, "kind": spec.kind, "mlflow_run_id": spec.mlflow_run_id}
        record = store.publish(work, relative, meta)
        store.remove(f"{relative}.trainer")  # the resume checkpoints: not needed once published
        shutil.rmtree(scratch_dir(work), ignore_errors=True)
    _wait_for_everyone(state)  # the other ranks exit once the output is published
    if state is not None:
        state.destroy_process_group()
    return record


def main() -> None:
    """`python -m models.run_stage spec.json` runs the stage; `python -m models.run_stage --exec <python args>` runs
    python with those arguments (a launcher such as accelerate's), dying with its parent as the stage does."""
    from models.lifetime import die_with_parent
    from models.stage_io import StageSpec

    die_with_parent()  # a rank under torchrun, or the stage process itself: never outlive the launcher
    if sys.argv[1] == "--exec":
        os.execv(sys.executable, [sys.executable, *sys.argv[2:]])  # the death signal is kept across exec
    logging.basicConfig(level=logging.INFO, stream=sys.stdout, format="%(asctime)s %(name)s: %(message)s")
    spec = StageSpec.model_validate_json(Path(sys.argv[1]).read_text())
    record = run(spec)
    if record is not None:
        log.info("%s: published %s (fingerprint %s)", spec.stage, record.uri, record.fingerprint)


if __name__ == "__main__":
    main()
