"""Resume a training stage from its last complete checkpoint after its process (or the whole flow) was killed.

Every `<stage>.checkpoint_every` optimizer steps the trainer writes `checkpoint-<step>/` (model, optimizer, scheduler,
RNG, trainer state) into the stage's work area, `scratch_dir(out)` = `<output>.trainer`, which outlives a failure and
is removed after success; the last KEEP are kept. `CheckpointCallback` then adds the pipeline's own state (alarms,
counters TRL does not save, the MLflow run id) and marks the folder complete (COMPLETE, written last: a kill during a
save leaves a folder without it), and calls `hooks.on_checkpoint(folder)` (upload it to the store).

The next run of the same recipe trains into the same work area: `resumed_train` calls `hooks.pull(work area)` (bring
the store's latest checkpoint there), drops incomplete folders, restores the pipeline's state from the last complete
one and lets the trainer resume from it. The stage's MLflow run is the killed attempt's run, continued
(`continue_stage_run`), and `continued_series` drops a metric at a step that run already holds, so no step gets a
second value.

    python -m models.run_stage spec.json   # killed, then run again: resumes from <output>.trainer/checkpoint-N
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from transformers import TrainerCallback

from models.progress import report_progress

log = logging.getLogger(__name__)

COMPLETE = "COMPLETE"  # written last into a checkpoint folder: everything else in it is on disk
PIPELINE_STATE = "pipeline_state.json"  # the pipeline's state beside the trainer's
RUN_FILE = "mlflow_run.json"  # in the work area: the MLflow run of the attempt that trains there
KEEP = 2  # checkpoints kept (the newest may be the one a kill interrupted)
# TRL knobs the checkpoint_every field sets (refused in `trl:`)
CHECKPOINT_KNOBS = ("save_strategy", "save_steps", "save_total_limit", "save_only_model", "resume_from_checkpoint")


def _nothing(folder: Path) -> None:
    return None


@dataclass(frozen=True)
class CheckpointHooks:
    """Where a store plugs in. on_checkpoint(folder): after each complete checkpoint (upload it). pull(work_area):
    before training (download the store's latest complete checkpoint folder into the work area, COMPLETE file
    included, so that it is found)."""

    on_checkpoint: Callable[[Path], None] = _nothing
    pull: Callable[[Path], None] = _nothing


NO_HOOKS = CheckpointHooks()


class Stateful(Protocol):
    def state_dict(self) -> dict[str, Any]: ...

    def load_state_dict(self, state: dict[str, Any]) -> None: ...


class TrainerAttributes:
    """Attributes of a trainer that its checkpoints do not hold (TRL's SFT token count, GRPO's micro-step counter),
    as a Stateful: numbers, read from tensors on save."""

    def __init__(self, trainer, *names: str):
        self.trainer, self.names = trainer, names

    def state_dict(self) -> dict[str, Any]:
        values = {name: getattr(self.trainer, name) for name in self.names}
        return {name: value.item() if hasattr(value, "item") else value for name, value in values.items()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        for name in self.names:
            setattr(self.trainer, name, state[name])


class ReferencePolicy:
    """GRPO's reference policy where TRL moves it toward the policy (sync_ref_model): TRL's checkpoints do not hold
    it, so it is saved beside them (one process or DDP; under DeepSpeed ZeRO-3 or FSDP its shards are not)."""

    FILE = "ref_model.safetensors"

    def __init__(self, trainer):
        self.trainer = trainer

    @staticmethod
    def of(trainer) -> list[ReferencePolicy]:
        """[ReferencePolicy(trainer)] where the reference policy changes during training and can be saved, else []."""
        if getattr(trainer, "ref_model", None) is None or not getattr(trainer.args, "sync_ref_model", False):
            return []
        if trainer.is_deepspeed_enabled or trainer.is_fsdp_enabled:
            log.warning("sync_ref_model under DeepSpeed/FSDP: a resumed run starts from the initial reference policy")
            return []
        return [ReferencePolicy(trainer)]

    def save(self, folder: Path) -> None:
        from safetensors.torch import save_model

        save_model(self.trainer.accelerator.unwrap_model(self.trainer.ref_model), str(folder / self.FILE))

    def load(self, folder: Path) -> None:
        from safetensors.torch import load_model

        load_model(self.trainer.accelerator.unwrap_model(self.trainer.ref_model), str(folder / self.FILE))


def trainer_args(every: int) -> dict[str, Any]:
    """The TRL/transformers arguments that `checkpoint_every` stands for."""
    if every == 0:
        return {"save_strategy": "no"}
    return {"save_strategy": "steps", "save_steps": every, "save_total_limit": KEEP}


def checkpoint_problem(every: int, knobs: dict[str, Any], stage: str = "") -> str | None:
    """Why a resume from a checkpoint every `every` steps would not continue the run exactly, or None: a checkpoint
    must fall on a logging step (the trainer averages metrics between logs and does not save what it has summed) and,
    in GRPO, on a generation boundary (the rollout buffer is not saved). `knobs`: TRL's, resolved."""
    if every == 0:
        return None
    where = f"{stage}." if stage else ""
    logging_steps = knobs.get("logging_steps", 500)
    if logging_steps < 1 or every % int(logging_steps):
        return f"{where}checkpoint_every: {every} is not a multiple of {where}trl.logging_steps ({logging_steps:g})"
    if "num_generations" not in knobs:
        return None
    accumulation = knobs.get("gradient_accumulation_steps", 1)
    generate_every = (knobs.get("steps_per_generation") or accumulation) * knobs.get("num_iterations", 1)
    if every * accumulation % generate_every:
        return (
            f"{where}checkpoint_every: {every} steps x {accumulation} accumulation is not a multiple of "
            f"steps_per_generation x num_iterations ({generate_every}); a checkpoint must end a generation"
        )
    return None


def checkpoint_step(name: str) -> int | None:
    """N of a `checkpoint-N` folder name; None for any other name."""
    number = name.removeprefix("checkpoint-")
    return int(number) if name.startswith("checkpoint-") and number.isdigit() else None


def in_step_order(names) -> list[str]:
    """The `checkpoint-N` names among `names`, oldest first."""
    return sorted((name for name in names if checkpoint_step(name) is not None), key=checkpoint_step)


def checkpoints(work_area: Path) -> list[Path]:
    """The checkpoint folders in a work area, oldest first."""
    return [work_area / name for name in in_step_order(p.name for p in work_area.glob("checkpoint-*") if p.is_dir())]


def last_complete(work_area: Path) -> Path | None:
    complete = [p for p in checkpoints(work_area) if (p / COMPLETE).is_file()]
    return complete[-1] if complete else None


def _write_json(path: Path, data: dict) -> None:
    """Written to a temporary name, flushed, then renamed: the file is whole or absent."""
    tmp = path.with_name(path.name + ".tmp")
    with tmp.open("w") as f:
        json.dump(data, f)
        f.flush()
        os.fsync(f.fileno())
    tmp.replace(path)


def prepare_work_area(work_area: Path, hooks: CheckpointHooks = NO_HOOKS) -> None:
    """`hooks.pull` (the store's latest checkpoint), then incomplete folders (a kill during a save) removed, so that
    neither a resume nor the trainer's rotation counts them."""
    work_area.mkdir(parents=True, exist_ok=True)
    hooks.pull(work_area)
    for folder in checkpoints(work_area):
        if not (folder / COMPLETE).is_file():
            log.warning("removing incomplete checkpoint %s (killed during its save)", folder)
            shutil.rmtree(folder)


def resume_point(work_area: Path, hooks: CheckpointHooks = NO_HOOKS) -> Path | None:
    """The last complete checkpoint in the prepared work area, or None (one process)."""
    prepare_work_area(work_area, hooks)
    return last_complete(work_area)


def _barrier() -> None:
    """Wait for every rank (several processes), or nothing."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.barrier()


class CheckpointCallback(TrainerCallback):
    """After the trainer saved a checkpoint: the pipeline's state into it, then the COMPLETE marker, then the hook.
    No checkpoint at the last step: the stage saves its output next, and transformers resumed from the last step
    trains one step too many (when max_steps ends inside an epoch); a kill before the output is published resumes
    from the checkpoint before."""

    def __init__(self, stateful: dict[str, Stateful], on_checkpoint: Callable[[Path], None] = _nothing, files=()):
        self.stateful, self.on_checkpoint, self.files = stateful, on_checkpoint, files

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step >= state.max_steps:
            control.should_save = False

    def on_save(self, args, state, control, **kwargs):
        _barrier()  # every rank has written its part (each its own RNG state)
        if not state.is_world_process_zero:
            return
        import mlflow

        folder = Path(args.output_dir) / f"checkpoint-{state.global_step}"
        run = mlflow.active_run()
        if run:  # every metric up to this step is stored before the checkpoint counts (TRL logs asynchronously)
            mlflow.flush_async_logging()
        for obj in self.files:
            obj.save(folder)
        pipeline_state = {name: obj.state_dict() for name, obj in self.stateful.items()}
        _write_json(folder / PIPELINE_STATE, {"mlflow_run_id": run and run.info.run_id, "state": pipeline_state})
        _write_json(folder / COMPLETE, {"step": state.global_step})
        self.on_checkpoint(folder)


def checkpoint_run_id(checkpoint: Path) -> str | None:
    """The MLflow run a checkpoint was logged into."""
    return json.loads((checkpoint / PIPELINE_STATE).read_text())["mlflow_run_id"]


def _repeat_sampler(obj, depth: int = 0):
    """TRL's RepeatSampler inside a (possibly accelerate-wrapped) data loader, or None."""
    from trl.trainer.utils import RepeatSampler

    if isinstance(obj, RepeatSampler):
        return obj
    if obj is None or depth > 4:
        return None
    for name in ("sampler", "batch_sampler", "base_dataloader"):
        found = _repeat_sampler(getattr(obj, name, None), depth + 1)
        if found is not None:
            return found
    return None


class RepeatSamplerFastForward(TrainerCallback):
    """GRPO's RepeatSampler draws each epoch's prompt order from one generator seeded once; a trainer resumed in epoch
    e starts that generator afresh and would replay epoch 0's order. This draws the e orders the killed attempt drew."""

    def on_train_begin(self, args, state, control, train_dataloader=None, **kwargs):
        sampler = _repeat_sampler(train_dataloader)
        if sampler is None or not sampler.shuffle or state.global_step == 0:
            return
        import torch

        steps_per_epoch = max(len(train_dataloader) // args.gradient_accumulation_steps, 1)
        for _ in range(state.global_step // steps_per_epoch):
            torch.randperm(sampler.num_samples, generator=sampler.generator)


def _check_resumable(args) -> None:
    """checkpoint_problem on the trainer's resolved arguments (steps_per_generation may come from
    generation_batch_size), as a ValueError."""
    names = (
        "logging_steps",
        "num_generations",
        "gradient_accumulation_steps",
        "steps_per_generation",
        "num_iterations",
    )
    problem = checkpoint_problem(int(args.save_steps), {k: getattr(args, k) for k in names if hasattr(args, k)})
    if problem:
        raise ValueError(problem)


def _checkpoint_to_resume(trainer, hooks: CheckpointHooks) -> Path | None:
    """The main process prepares the work area; then every process finds the same last complete checkpoint."""
    work_area = Path(trainer.args.output_dir)
    if trainer.accelerator.is_main_process:
        prepare_work_area(work_area, hooks)
    _barrier()
    return last_complete(work_area)


def resumed_train(trainer, hooks: CheckpointHooks = NO_HOOKS, files=(), **stateful: Stateful):
    """trainer.train(), from the last complete checkpoint in its output folder when there is one; `stateful` objects
    (JSON state) and `files` (objects that save(folder) / load(folder)) go into every checkpoint and are restored
    from the one resumed."""
    trainer.add_callback(CheckpointCallback(stateful, hooks.on_checkpoint, files))
    trainer.add_callback(RepeatSamplerFastForward())
    # the work area is <stage>/<key>.trainer beside the output (stage_io.scratch_dir): its folder names the stage
    report_progress(trainer, Path(trainer.args.output_dir).parent.name)
    if trainer.args.save_strategy == "no":
        return trainer.train()
    _check_resumable(trainer.args)
    checkpoint = _checkpoint_to_resume(trainer, hooks)
    if checkpoint is None:
        return trainer.train()
    log.info("resuming from %s", checkpoint)
    saved = json.loads((checkpoint / PIPELINE_STATE).read_text())["state"]
    for name, obj in stateful.items():
        obj.load_state_dict(saved[name])
    for obj in files:
        obj.load(checkpoint)
    return trainer.train(resume_from_checkpoint=str(checkpoint))


def record_attempt(work_area: Path, run_id: str | None) -> None:
    """Note in the work area which MLflow run the attempt training there logs into."""
    if run_id:
        work_area.mkdir(parents=True, exist_ok=True)
        _write_json(work_area / RUN_FILE, {"mlflow_run_id": run_id})


def continue_stage_run(work_area: Path, parent_run_id: str) -> str | None:
    """The MLflow run to continue for a stage whose earlier attempt was killed: the run of its last complete
    checkpoint, moved under `parent_run_id` (the new pipeline run); None when there is nothing to resume. An earlier
    attempt's run left RUNNING with no checkpoint (a kill before the first save) is closed as FAILED."""
    from mlflow.exceptions import MlflowException

    from models.stale_runs import RECONCILED
    from models.tracking import client

    mlflow_client = client()
    checkpoint = last_complete(work_area)
    run_id = checkpoint_run_id(checkpoint) if checkpoint is not None else None
    if run_id:
        try:
            mlflow_client.set_tag(run_id, "mlflow.parentRunId", parent_run_id)
            if RECONCILED in mlflow_client.get_run(run_id).data.tags:  # closed when its pipeline was found killed
                mlflow_client.delete_tag(run_id, RECONCILED)
            return run_id
        except MlflowException:
            log.warning("the MLflow run %s of %s is gone; the stage resumes into a new run", run_id, checkpoint)
    if (work_area / RUN_FILE).is_file():
        stale = json.loads((work_area / RUN_FILE).read_text())["mlflow_run_id"]
        with contextlib.suppress(MlflowException):
            if mlflow_client.get_run(stale).info.status == "RUNNING":
                mlflow_client.set_terminated(stale, "FAILED")
    return None


def logged_steps(run_id: str) -> dict[str, set[int]]:
    """Metric key -> the steps the run holds for it."""
    from models.tracking import client

    mlflow_client = client()
    keys = mlflow_client.get_run(run_id).data.metrics
    return {key: {m.step for m in mlflow_client.get_metric_history(run_id, key)} for key in keys}


@contextlib.contextmanager
def continued_series(run_id: str | None) -> Iterator[None]:
    """While active, mlflow.log_metric / log_metrics (TRL's MLflow callback and the pipeline's own calls) skip a
    metric at a step the run already holds (a metric without a step counts as step 0): a run continued after a kill
    keeps the killed attempt's values and gets the resumed attempt's at the steps it lacks (those after the
    checkpoint that the killed attempt did not reach, or whose asynchronous log the kill lost)."""
    import mlflow

    held = logged_steps(run_id) if run_id else {}
    if not held:
        yield
        return
    log.info("continuing MLflow run %s: %d series already logged", run_id, len(held))
    log_metric, log_metrics = mlflow.log_metric, mlflow.log_metrics

    def new(key: str, step) -> bool:
        return (step or 0) not in held.get(key, ())

    def one(key, value, step=None, **kwargs):
        return log_metric(key, value, step=step, **kwargs) if new(key, step) else None

    def many(metrics, step=None, **kwargs):
        kept = {k: v for k, v in metrics.items() if new(k, step)}
        return log_metrics(kept, step=step, **kwargs) if kept else None

    mlflow.log_metric, mlflow.log_metrics = one, many
    try:
        yield
    finally:
        mlflow.log_metric, mlflow.log_metrics = log_metric, log_metrics
