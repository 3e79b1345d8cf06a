"""The five stages chained the way the flow chains them, for tests that run them in process (CPU and GPU)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

# (stage, {its input: the record it comes from}). final_rl starts from the cold-start policy here: a merge SFT on a
# dozen rows cannot yet write R1's format, and GRPO learns nothing (rightly) when every completion scores 0.
STAGE_CHAIN = [
    ("cold_start_sft", {"model": "base"}),
    ("reasoning_rl", {"model": "cold_start_sft"}),
    ("rejection_sampling", {"model": "reasoning_rl"}),
    ("supervised_merge", {"model": "base", "data": "rejection_sampling", "general": "general"}),
    ("final_rl", {"model": "cold_start_sft", "general": "general"}),
]
# (training stage, the model it starts from): the pairs whose weights must differ
TRAINED_FROM = [
    ("cold_start_sft", "base"),
    ("reasoning_rl", "cold_start_sft"),
    ("supervised_merge", "base"),
    ("final_rl", "cold_start_sft"),
]


# the flow's own chain (final_rl from the supervised merge), for runs at the recipe's full settings
FLOW_CHAIN = [*STAGE_CHAIN[:4], ("final_rl", {"model": "supervised_merge", "general": "general"})]


def run_chain(recipe, out: Path, run_one: Callable | None = None, chain: list = STAGE_CHAIN) -> dict:
    """Records of every stage in `chain` (and of the base), each run by `run_one(spec)` (default: in process)."""
    from models.factory import model_record
    from models.run_stage import run
    from models.sources import source_record
    from models.stage_io import stage_spec

    records = {"base": model_record(recipe.model.base, "base_model")}
    records["general"] = source_record("non_reasoning_data", recipe)
    for stage, inputs in chain:
        spec = stage_spec(stage, recipe, {k: records[v] for k, v in inputs.items()}, output=str(out / stage))
        records[stage] = (run_one or run)(spec)
    return records
