"""Resume checkpoints that survive their worker: every TRL/transformers `checkpoint-N` folder is pushed to the
artifact store's work area as soon as it is saved, and a stage that starts on an empty disk pulls the latest one
back before training.

    area = f"{output_relative}.trainer"                   # beside the stage output in the store
    resume = restore_latest(store, area, scratch)           # None on a first run
    trainer = GRPOTrainer(..., callbacks=[PushCheckpoints(store, area)])
    trainer.train(resume_from_checkpoint=resume)

The remote area mirrors the local rotation (save_total_limit): checkpoints deleted locally go remotely too.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path

from transformers import TrainerCallback

from models.stores import ArtifactStore

CHECKPOINT = re.compile(r"checkpoint-(\d+)")
log = logging.getLogger(__name__)


def _steps(names) -> list[str]:
    """checkpoint-N names in step order."""
    found = [name for name in names if CHECKPOINT.fullmatch(name)]
    return sorted(found, key=lambda name: int(CHECKPOINT.fullmatch(name).group(1)))


class PushCheckpoints(TrainerCallback):
    """After each save, the main process pushes the new checkpoint folder to `area` and drops remote ones the
    trainer has rotated away."""

    def __init__(self, store: ArtifactStore, area: str):
        self.store, self.area = store, area

    def on_save(self, args, state, control, **kwargs):
        if not state.is_world_process_zero:
            return
        output = Path(args.output_dir)
        folder = output / f"checkpoint-{state.global_step}"
        if folder.is_dir():
            self.store.push_dir(folder, f"{self.area}/{folder.name}")
        local = set(_steps(p.name for p in output.iterdir() if p.is_dir()))
        for name in set(self.store.list_dirs(self.area)) - local:
            self.store.remove(f"{self.area}/{name}")


def restore_latest(store: ArtifactStore, area: str, scratch: Path) -> str | None:
    """Pull the latest pushed checkpoint of `area` into `scratch/checkpoint-N`; its path, or None if none."""
    names = _steps(store.list_dirs(area))
    if not names:
        return None
    target = scratch / names[-1]
    store.pull_dir(f"{area}/{names[-1]}", target)
    log.info("resuming from %s (pulled from %s)", target, store.uri_for(f"{area}/{names[-1]}"))
    return str(target)
