"""A training stage's progress as people read it: one line every R1_PROGRESS_EVERY_S seconds (default 30) and at the
end, instead of TRL's raw metric dicts after every logging step (those still go to MLflow):

    progress reasoning_rl step 40/200 (20%) 1.31 s/step ETA 3m29s reward 0.412 loss 0.0031

The line's start is fixed (`progress <stage> step <n>/<total>`): the Prefect task that launched the stage reads it
into a progress artifact (tasks/progress.py).
"""

from __future__ import annotations

import logging
import os
import re
import time

from transformers import PrinterCallback, ProgressCallback, TrainerCallback

log = logging.getLogger("r1.progress")
PROGRESS_LINE = re.compile(r"progress (?P<stage>\S+) step (?P<step>\d+)/(?P<total>\d+)")
SHOWN_METRICS = ("reward", "loss", "kl")


def every_s() -> float:
    return float(os.environ.get("R1_PROGRESS_EVERY_S", "30"))


def duration(seconds: float) -> str:
    """`3m29s`, `1h02m`, `45s`."""
    seconds = max(0, int(seconds))
    hours, rest = divmod(seconds, 3600)
    return f"{hours}h{rest // 60:02d}m" if hours else f"{rest // 60}m{rest % 60:02d}s" if rest >= 60 else f"{rest}s"


def progress_line(stage: str, step: int, total: int, s_per_step: float, metrics: dict[str, float]) -> str:
    percent = 100 * step / max(1, total)
    shown = " ".join(f"{k} {metrics[k]:.4g}" for k in SHOWN_METRICS if k in metrics)
    eta = duration((total - step) * s_per_step)
    return f"progress {stage} step {step}/{total} ({percent:.0f}%) {s_per_step:.2f} s/step ETA {eta} {shown}".rstrip()


class ProgressReport(TrainerCallback):
    """Logs the step, the time per step (over the steps this process ran, so a resumed run's ETA is right), the ETA
    and the latest reward / loss / KL, at most every `every_s()` seconds and once at the end."""

    def __init__(self, stage: str):
        self.stage, self.metrics = stage, {}
        self.started = self.last = 0.0
        self.first_step = 0

    def on_train_begin(self, args, state, control, **kwargs):
        self.started = self.last = time.monotonic()
        self.first_step = state.global_step

    def on_log(self, args, state, control, logs=None, **kwargs):
        self.metrics.update({k: v for k, v in (logs or {}).items() if isinstance(v, (int, float))})

    def on_step_end(self, args, state, control, **kwargs):
        now = time.monotonic()
        if state.is_world_process_zero and (now - self.last >= every_s() or state.global_step >= state.max_steps):
            self.last = now
            steps = max(1, state.global_step - self.first_step)
            per_step = (now - self.started) / steps
            log.info(progress_line(self.stage, state.global_step, state.max_steps, per_step, self.metrics))


def report_progress(trainer, stage: str) -> None:
    """Replace the trainer's per-log metric printing with ProgressReport lines."""
    trainer.remove_callback(PrinterCallback)
    trainer.remove_callback(ProgressCallback)
    trainer.add_callback(ProgressReport(stage))
