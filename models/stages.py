"""Every stage of the pipeline, declared once. The flow, the Prefect tasks, the cache key, the launcher, the TRL knob
checks and the cost table (one phase per stage) all read this registry, and the stage process reads what it needs of
it from its spec; adding a stage (distillation, say) is one `Stage(...)` entry here, its recipe section in
models/config.py and its entry function.

    python -m models.stages          # prints the registry: each stage, its inputs and where they come from
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

# What the pipeline starts from, made from the recipe (not by a stage): tasks/inputs.py turns each into a record.
SOURCES = ("base_model", "non_reasoning_data", "cold_start_data", "problem_file")
# The shared recipe parts a stage may read besides its own section (all of them go into its cache key).
SHARED_PARTS = ("data", "dtype", "seed")

Producer = str | Callable[[Any], str]  # a stage or source name, or recipe -> name (a recipe chooses it)


@dataclass(frozen=True)
class Stage:
    """One unit of work: what runs, what it consumes, what it makes and how it is launched.

    Input names are roles, the same in every stage: `model` is always the checkpoint the stage starts from (its
    evaluation is the baseline of the stage's gain), `data` the dataset it trains on, `general` the non-reasoning
    rows, `cold_start` the cold-start file and `problems` the question/answer file when the recipe names one."""

    name: str
    entry: str  # "module:function" run in the stage process as function(spec, work_folder) -> metrics
    inputs: Mapping[str, Producer]
    output: Literal["model", "dataset"]
    section: str | None  # the recipe section with the stage's own settings (None: it has none)
    reads: tuple[str, ...] = ("seed",)  # of SHARED_PARTS
    trainer: Literal["sft", "grpo"] | None = None  # the TRL trainer whose knobs its `trl:` dict holds
    launch: Literal["accelerate", "single"] = "single"  # accelerate: recipe.launch.num_processes processes
    optional: frozenset[str] = field(default_factory=frozenset)  # inputs that may be absent (e.g. no file named)

    def producers(self, recipe) -> dict[str, str]:
        """Input name -> the stage or source whose record it is, for this recipe."""
        return {name: p(recipe) if callable(p) else p for name, p in self.inputs.items()}


def _merge_start(recipe) -> str:
    start = recipe.supervised_merge.start_from
    return "base_model" if start == "base" else start


STAGES: dict[str, Stage] = {}


def register(stage: Stage) -> Stage:
    """Add a stage to the registry (the five R1 stages below; a test adds a throwaway one)."""
    unknown = set(stage.reads) - set(SHARED_PARTS)
    if unknown:
        raise ValueError(f"stage {stage.name}: reads {sorted(unknown)}; choose from {', '.join(SHARED_PARTS)}")
    STAGES[stage.name] = stage
    return stage


for _stage in (
    Stage(
        name="cold_start_sft",
        entry="models.sft:run_cold_start",
        inputs={"model": "base_model", "cold_start": "cold_start_data", "problems": "problem_file"},
        optional=frozenset({"cold_start", "problems"}),
        output="model",
        section="cold_start_sft",
        reads=("data", "dtype", "seed"),
        trainer="sft",
        launch="accelerate",
    ),
    Stage(
        name="reasoning_rl",
        entry="models.grpo:run_reasoning_rl",
        inputs={"model": "cold_start_sft", "problems": "problem_file"},
        optional=frozenset({"problems"}),
        output="model",
        section="reasoning_rl",
        reads=("data", "dtype", "seed"),
        trainer="grpo",
        launch="accelerate",
    ),
    Stage(
        name="rejection_sampling",
        entry="models.rejection:run_rejection_sampling",
        inputs={"model": "reasoning_rl", "problems": "problem_file"},
        optional=frozenset({"problems"}),
        output="dataset",
        section="rejection_sampling",
        reads=("data", "dtype", "seed"),
    ),
    Stage(
        name="supervised_merge",
        entry="models.sft:run_supervised_merge",
        inputs={"model": _merge_start, "data": "rejection_sampling", "general": "non_reasoning_data"},
        output="model",
        section="supervised_merge",
        reads=("dtype", "seed"),
        trainer="sft",
        launch="accelerate",
    ),
    Stage(
        name="final_rl",
        entry="models.grpo:run_final_rl",
        inputs={"model": "supervised_merge", "general": "non_reasoning_data", "problems": "problem_file"},
        optional=frozenset({"problems"}),
        output="model",
        section="final_rl",
        reads=("data", "dtype", "seed"),
        trainer="grpo",
        launch="accelerate",
    ),
):
    register(_stage)
PIPELINE = tuple(STAGES)  # the five R1 stages, in order
# Evaluation is a stage too (its own process, cache key and record), run after every stage that makes a model. Its
# `model` is whichever model it scores; `baseline` the evaluation of the checkpoint that model started from.
EVALUATE = register(
    Stage(
        name="evaluate",
        entry="models.eval_stage:run_evaluate",
        inputs={
            "model": "model",
            "baseline": "evaluate",
            "cold_start": "cold_start_data",
            "general": "non_reasoning_data",
            "problems": "problem_file",
        },
        optional=frozenset({"baseline", "cold_start", "general", "problems"}),
        output="dataset",
        section="evaluation",
        reads=("data", "dtype", "seed"),
    )
)


def stage(name: str) -> Stage:
    """The registered stage called `name`; one line naming the known ones otherwise."""
    if name not in STAGES:
        raise ValueError(f"unknown stage '{name}'; choose from {', '.join(STAGES)}")
    return STAGES[name]


def trained_stages(trainer: str | None = None) -> list[Stage]:
    """The stages trained by a TRL trainer (of one kind, if given)."""
    return [s for s in STAGES.values() if s.trainer and (trainer is None or s.trainer == trainer)]


def main() -> None:
    for s in STAGES.values():
        inputs = ", ".join(f"{k}<-{v if isinstance(v, str) else 'recipe'}" for k, v in s.inputs.items())
        print(f"{s.name:20s} {s.output:8s} {s.trainer or '-':5s} {s.launch:11s} inputs: {inputs}")


if __name__ == "__main__":
    main()
