"""Where a benchmarked step spends its time: host syncs by call site (`--syncs`) and a kernel profile with the GPU's
busy share (`--profile`). `runner` is one of models.benchmarks.gpu's arm runners (run_sft, run_grpo)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import torch


def profile_step(runner: Callable, model_dir: Path, bench: str, arm: str, out: Path) -> str:
    """CUDA-time breakdown of two steps after warm-up (torch.profiler), top kernels: where the time goes."""
    from torch.profiler import ProfilerActivity, profile, schedule
    from transformers import TrainerCallback

    prof = profile(
        activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA], schedule=schedule(wait=2, warmup=1, active=2)
    )

    class Step(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            prof.step()

    with prof:
        runner(model_dir, arm, warmup=3, measured=2, callbacks=[Step()])
    averages = prof.key_averages()
    text = (
        _busy(prof)
        + "\n"
        + "\n".join(
            averages.table(sort_by=key, row_limit=rows, max_name_column_width=90)
            for key, rows in (("cuda_time_total", 20), ("self_cuda_time_total", 45))
        )
    )
    (out / f"profile_{bench}_{arm}.txt").write_text(text)
    return text


def _busy(prof) -> str:
    """How much of the profiled span the GPU ran kernels: the rest is idle, waiting for the host."""
    from torch.autograd import DeviceType

    kernels = [e for e in prof.events() if e.device_type == DeviceType.CUDA and not e.is_user_annotation]
    spans = sorted((e.time_range.start, e.time_range.end) for e in kernels)
    if not spans:
        return "no GPU kernels profiled"
    busy, reach = 0.0, spans[0][0]
    for start, end in spans:
        busy += max(0.0, end - max(start, reach))
        reach = max(reach, end)
    total = reach - spans[0][0]
    idle = (total - busy) / 1e3
    return f"GPU busy {busy / 1e3:.1f} ms of {total / 1e3:.1f} ms profiled ({busy / total:.1%}); idle {idle:.1f} ms"


def host_syncs(runner: Callable, model_dir: Path, bench: str, arm: str, out: Path) -> str:
    """Where the host waits for the GPU in steps 4 and 5, batch fetches included (torch.cuda sync debug mode): each
    wait drains the GPU's queue. Counts per call site, innermost frames outside torch, written to
    $OUT/syncs_<bench>_<arm>.txt."""
    import collections
    import traceback
    import warnings

    from transformers import TrainerCallback

    sites: collections.Counter = collections.Counter()

    def record(message, category, filename, lineno, file=None, line=None):
        if "synchronizing CUDA operation" not in str(message):
            return
        frames = [f for f in traceback.extract_stack()[:-1] if "/torch/" not in f.filename]
        if any(f.name == "_sync" for f in frames):  # the bench's own clock (models.benchmarks.gpu._sync)
            return
        sites[" <- ".join(f"{Path(f.filename).name}:{f.lineno} {f.name}" for f in frames[-1:-4:-1])] += 1

    class Watch(TrainerCallback):  # watches from the end of step 3 to the end of step 5: all of steps 4 and 5
        def on_step_end(self, args, state, control, **kwargs):
            if torch.cuda.is_available():
                torch.cuda.set_sync_debug_mode("warn" if 3 <= state.global_step < 5 else "default")

    with warnings.catch_warnings():
        warnings.simplefilter("always")
        warnings.showwarning = record
        runner(model_dir, arm, warmup=3, measured=2, callbacks=[Watch()])
    lines = [f"{bench}:{arm}: {sum(sites.values()) / 2:g} host syncs a step (steps 4-5)"]
    lines += [f"{n / 2:6g}  {site}" for site, n in sites.most_common(30)]
    (out / f"syncs_{bench}_{arm}.txt").write_text("\n".join(lines) + "\n")
    return "\n".join(lines)
