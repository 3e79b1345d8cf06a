"""GPU-hour accounting: each stage process logs its wall time x GPUs and an estimated cost at the recipe's price
per GPU-hour (R1's supplementary Table 7 prices H800s at $2/GPU-hour); the pipeline totals them per stage."""

from __future__ import annotations

from models.stages import STAGES


def cost_phases() -> list[str]:
    """The rows of the cost table: every registered stage's phase, evaluation last."""
    return [name for name in STAGES if name != "evaluate"] + ["evaluate"]


def gpus_in_use(world_size: int) -> int:
    """GPUs a stage process group holds: one per process on a GPU machine, none on a CPU."""
    import torch

    return world_size if torch.cuda.is_available() else 0


def stage_cost(stage: str, wall_s: float, gpus: int, usd_per_gpu_hour: float) -> dict[str, float]:
    gpu_hours = wall_s * gpus / 3600
    return {
        f"cost/{stage}_wall_s": wall_s,
        f"cost/{stage}_gpus": float(gpus),
        f"cost/{stage}_gpu_hours": gpu_hours,
        f"cost/{stage}_usd": gpu_hours * usd_per_gpu_hour,
    }


def cost_table(metrics_by_stage: dict[str, dict[str, float]]) -> list[dict]:
    """Rows shaped like R1's Table 7: phase, GPU-hours, cost, wall time; evaluation summed over every model,
    then a total row. `metrics_by_stage` maps a stage to its run's metrics."""
    rows = []
    for phase in cost_phases():
        keys = ("wall_s", "gpu_hours", "usd")
        found = [m for m in metrics_by_stage.values() if f"cost/{phase}_wall_s" in m]
        if phase != "evaluate":
            found = [metrics_by_stage[phase]] if f"cost/{phase}_wall_s" in metrics_by_stage.get(phase, {}) else []
        rows.append({"phase": phase, **{k: sum(m[f"cost/{phase}_{k}"] for m in found) for k in keys}})
    rows.append({"phase": "total", **{k: sum(r[k] for r in rows) for k in ("wall_s", "gpu_hours", "usd")}})
    return rows
