"""Resume checkpoints that survive their worker: the stage's work area (`<output>.trainer/`) lives in the artifact
store. Each complete `checkpoint-N` (models/resume.py marks it) is pushed there as soon as it is saved, the store
keeps the trainer's rotation (the newest KEEP), and a stage that starts on an empty disk pulls the newest intact one
back before training (every file checked against the manifest pushed after it; a damaged one is refused and the one
before it is used, or the stage starts fresh). With the local store the work area is the local folder itself: nothing
is copied, the files are checked all the same.

    hooks = store_hooks(store, f"{relative}.trainer", local_area)   # models.resume.CheckpointHooks
"""

from __future__ import annotations

import contextlib
import logging
import shutil
from pathlib import Path

from models.resume import RUN_FILE, CheckpointHooks, in_step_order
from models.storage import StorageError
from models.stores import ArtifactStore, CorruptObjectError

log = logging.getLogger(__name__)


def push_checkpoint(store: ArtifactStore, area: str, folder: Path) -> None:
    """Push one complete checkpoint folder, then drop the store's checkpoints the local rotation removed."""
    store.push_dir(folder, f"{area}/{folder.name}")
    local = set(in_step_order(p.name for p in folder.parent.iterdir() if p.is_dir()))
    for name in set(store.list_dirs(area)) - local:
        store.remove(f"{area}/{name}")


def pull_latest(store: ArtifactStore, area: str, local_area: Path) -> Path | None:
    """The newest intact checkpoint pushed to `area`, brought into `local_area` and checked file by file against
    its manifest (with the attempt's MLflow run file); its local folder, or None when nothing intact was pushed.
    A damaged checkpoint (a flipped byte, a truncated or missing file) is refused in one line, removed from the
    store and from `local_area`, and the one before it is tried: corrupt weights are never loaded."""
    local_area.mkdir(parents=True, exist_ok=True)
    run_file = store.uri_for(f"{area}/{RUN_FILE}")
    if not (local_area / RUN_FILE).is_file():
        with contextlib.suppress(StorageError):  # no attempt recorded yet: nothing to close or continue
            (local_area / RUN_FILE).write_text(store.get_text(run_file))
    for name in reversed(in_step_order(store.list_dirs(area))):
        target = local_area / name
        try:
            store.pull_dir(f"{area}/{name}", target)
        except CorruptObjectError as err:
            log.warning("refusing checkpoint %s/%s: %s", store.uri_for(area), name, err)
            shutil.rmtree(target, ignore_errors=True)
            store.remove(f"{area}/{name}")
            continue
        log.info("pulled %s from %s", target.name, store.uri_for(area))
        return target
    return None


def store_hooks(store: ArtifactStore, area: str, local_area: Path) -> CheckpointHooks:
    """CheckpointHooks that keep `local_area` (the trainer's checkpoints) and the store's `area` in step."""
    return CheckpointHooks(
        on_checkpoint=lambda folder: push_checkpoint(store, area, folder),
        pull=lambda _: pull_latest(store, area, local_area),
    )


def record_attempt_in(store: ArtifactStore, area: str, run_id: str | None) -> None:
    """The attempt's MLflow run in the store's work area too, so that a worker with an empty disk can close or
    continue it."""
    if run_id:
        store.put_text(f"{area}/{RUN_FILE}", f'{{"mlflow_run_id": "{run_id}"}}')
