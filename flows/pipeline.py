"""The DeepSeek-R1 recipe as one Prefect flow: five cached stages, each evaluated on the same held-out split.

make demo                                   # the embedded tiny default
make run RECIPE=flows/recipes/tiny.yaml OVERRIDES="final_rl.trl.max_steps=80"
"""

from __future__ import annotations

from prefect import flow, get_run_logger
from prefect.runtime import flow_run

from models.config import Recipe
from models.records import Artifact
from tasks.inputs import base_model, non_reasoning_data
from tasks.pipeline_run import PipelineRun, close_pipeline_run, is_live, link_if_cached, open_pipeline_run
from tasks.promotion import promote
from tasks.publish import register_model, summarize
from tasks.stages import STAGE_TASKS, evaluation_of


class Tracker:
    """Runs a stage task (recomputing a cached result whose output folder has gone), evaluates its model, and
    remembers what the summary needs."""

    def __init__(self, recipe: Recipe, pipeline: PipelineRun):
        self.recipe, self.pipeline = recipe, pipeline
        self.evaluations: dict[str, Artifact] = {}
        self.models: dict[str, Artifact] = {}
        self.runs: dict[str, str] = {}
        self.cached: dict[str, bool] = {}

    def stage(self, name: str, **inputs: Artifact) -> Artifact:
        task = STAGE_TASKS[name]
        record = task(name, self.recipe, inputs, self.pipeline)
        if not is_live(record):
            get_run_logger().warning("%s: cached output %s or its MLflow run is gone; recomputing", name, record.uri)
            record = task.with_options(refresh_cache=True)(name, self.recipe, inputs, self.pipeline)
        self.runs[name] = link_if_cached(self.pipeline, name, record)
        self.cached[name] = self.runs[name] != record.mlflow_run_id
        if record.kind == "model":
            self.models[name] = record
            start = inputs.get("model") or inputs.get("start") or inputs["base"]  # the checkpoint it started from
            self.evaluate(name, record, baseline=self.evaluations[start.stage])
        return record

    def evaluate(self, name: str, model: Artifact, baseline: Artifact | None = None) -> None:
        """Evaluate `model`; with `baseline` (the evaluation of the checkpoint it started from) also the paired
        gain over it."""
        task = evaluation_of(name)
        inputs = {"model": model} | ({"baseline": baseline} if baseline else {})
        evaluation = task("evaluate", self.recipe, inputs, self.pipeline)
        if not is_live(evaluation):
            evaluation = task.with_options(refresh_cache=True)("evaluate", self.recipe, inputs, self.pipeline)
        self.evaluations[name] = evaluation
        if name == "base_model":
            self.runs[name] = link_if_cached(self.pipeline, name, evaluation)
            self.cached[name] = self.runs[name] != evaluation.mlflow_run_id


@flow(name="r1-pipeline", log_prints=True)
def r1_pipeline(recipe: Recipe | None = None, mlflow_ui: str = "http://127.0.0.1:5000") -> dict:
    """Cold-start SFT -> reasoning RL -> rejection sampling -> SFT of the base on the merged data -> final RL."""
    recipe = recipe or Recipe()
    pipeline = open_pipeline_run(recipe, flow_run.get_name() or "local", flow_run.get_id() or "")
    try:
        run = Tracker(recipe, pipeline)
        base, general_data = base_model(recipe), non_reasoning_data(recipe)
        run.evaluate("base_model", base)
        # 1. cold start: SFT of the base on a few long chain-of-thought examples in R1's format
        cold = run.stage("cold_start_sft", base=base)
        # 2. reasoning-oriented RL: GRPO with accuracy, format and language-consistency rewards
        reasoner = run.stage("reasoning_rl", model=cold)
        # 3. rejection sampling: k samples per prompt from stage 2, keep the verified, readable ones
        verified = run.stage("rejection_sampling", model=reasoner)
        # 4. SFT of the BASE model on the verified data merged with non-reasoning data
        start = {"base": base, "cold_start_sft": cold, "reasoning_rl": reasoner}[recipe.supervised_merge.start_from]
        merged = run.stage("supervised_merge", start=start, data=verified, general=general_data)
        # 5. RL for all scenarios: reasoning rewards + a general reward in the last steps
        final = run.stage("final_rl", model=merged, general=general_data)
        # registry: the final model is the `candidate`; the gate makes it `champion` only if it beats the champion
        version = register_model(recipe, final)
        promotion = promote(recipe, version, run.evaluations["final_rl"], pipeline)
        summary = summarize(
            recipe, pipeline, run.evaluations, run.models, run.runs, run.cached, verified, version, promotion, mlflow_ui
        )
    except BaseException:
        close_pipeline_run(pipeline, "FAILED")
        raise
    close_pipeline_run(pipeline, "FINISHED")
    return {
        "parent_run_id": pipeline.parent_run_id,
        "experiment_id": pipeline.experiment_id,
        "model_version": version,
        "promotion": promotion,
        "summary": summary,
        "cached": run.cached,
    }
