"""The DeepSeek-R1 recipe as one Prefect flow: five cached stages, each evaluated on the same held-out split.

make demo                                   # the embedded tiny default
make run RECIPE=flows/recipes/tiny.yaml OVERRIDES="final_rl.trl.max_steps=80"
"""

from __future__ import annotations

from prefect import flow, get_run_logger
from prefect.runtime import flow_run
from prefect.states import State

from flows.parameters import ParameterError, checked_recipe, refused, run_name
from models.config import Recipe
from models.records import Artifact
from models.stage_io import stage_spec
from models.stages import SOURCES, stage
from tasks.inputs import source
from tasks.pipeline_run import (
    PipelineRun,
    is_live,
    link_if_cached,
    log_evaluation,
    open_pipeline_run,
    pipeline_run_open,
    record_output,
)
from tasks.promotion import promote
from tasks.publish import register_model, summarize
from tasks.results import with_result_storage
from tasks.stages import evaluate_in_tree, evaluation_inputs, evaluation_of, stage_task
from tasks.stale_runs import reconcile_stale_runs


class Tracker:
    """Runs stage tasks with the inputs the stage registry names (recomputing a cached result whose output has
    gone), evaluates every model, and remembers what the summary needs."""

    def __init__(self, recipe: Recipe, pipeline: PipelineRun):
        self.recipe, self.pipeline = recipe, pipeline
        self.records: dict[str, Artifact | None] = {}
        self.evaluations: dict[str, Artifact] = {}
        self.models: dict[str, Artifact] = {}
        self.runs: dict[str, str] = {}
        self.cached: dict[str, bool] = {}

    def source(self, name: str) -> Artifact | None:
        if name not in self.records:
            self.records[name] = source(name, self.recipe)
        return self.records[name]

    def inputs_of(self, name: str) -> dict[str, Artifact]:
        producers = stage(name).producers(self.recipe)
        found = {k: self.source(p) if p in SOURCES else self.records[p] for k, p in producers.items()}
        return {k: record for k, record in found.items() if record is not None}

    def _cached_or_run(self, task, spec) -> Artifact:
        task = with_result_storage(task, self.pipeline.storage)  # S3: the cache lives in the bucket too
        record = task(spec, self.pipeline)
        if not is_live(record, self.pipeline):
            why = "%s: cached output %s or its MLflow run is gone; recomputing"
            get_run_logger().warning(why, spec.stage, record.uri)
            record = task.with_options(refresh_cache=True)(spec, self.pipeline)
        return record

    def stage(self, name: str) -> Artifact:
        """Run (or reuse) stage `name` and evaluate its model against the checkpoint it started from."""
        record = self._cached_or_run(stage_task(name, self.recipe), stage_spec(name, self.recipe, self.inputs_of(name)))
        self.records[name] = record
        record_output(self.pipeline, name, record)
        self.runs[name] = link_if_cached(self.pipeline, name, record)
        self.cached[name] = self.runs[name] != record.mlflow_run_id
        if record.kind == "model":
            self.models[name] = record
            start = self.inputs_of(name)["model"]
            self.evaluate(name, record, baseline=self.evaluations[start.stage])
        return record

    def evaluate(self, name: str, model: Artifact, baseline: Artifact | None = None) -> None:
        """Evaluate `model` into the run that stands for `name` in this tree; with `baseline` (the evaluation of
        the checkpoint it started from) also the paired gain over it."""
        if name not in self.runs:  # a model no stage of this pipeline made (the base): its own run in the tree
            evaluation, self.runs[name] = evaluate_in_tree(name, self.recipe, model, self.pipeline)
        else:
            inputs = evaluation_inputs(self.recipe, model, baseline)
            spec = stage_spec("evaluate", self.recipe, inputs, mlflow_run_id=self.runs[name])
            evaluation = self._cached_or_run(evaluation_of(name), spec)
            log_evaluation(self.runs[name], evaluation, self.pipeline)
        self.cached.setdefault(name, evaluation.mlflow_run_id != self.runs[name])
        self.evaluations[name] = evaluation


@flow(name="r1-pipeline", log_prints=True, validate_parameters=False, flow_run_name=run_name)
def r1_pipeline(
    recipe: Recipe | None = None,
    recipe_path: str | None = None,
    overrides: list[str] | None = None,
    mlflow_ui: str = "http://127.0.0.1:5000",
) -> dict | State:
    """Cold-start SFT -> reasoning RL -> rejection sampling -> SFT of the base on the merged data -> final RL.

    Give the recipe as the typed form (`recipe`), or a shipped recipe's name or a YAML path (`recipe_path`,
    e.g. `tiny` or flows/recipes/tiny.yaml), or neither (the embedded tiny default); `overrides` are
    `key.path=value` lines applied on top (e.g. `final_rl.trl.max_steps=80`)."""
    try:
        recipe = checked_recipe(recipe, recipe_path, overrides)  # one line and a Failed run before anything runs
    except ParameterError as err:
        return refused(err)
    reconcile_stale_runs(recipe.name, get_run_logger())  # a killed earlier run's MLflow and Prefect runs: closed
    pipeline = open_pipeline_run(recipe, flow_run.get_name() or "local", flow_run.get_id() or "")
    with pipeline_run_open(pipeline):  # heartbeat while it runs; closed FINISHED or FAILED
        run = Tracker(recipe, pipeline)
        run.evaluate("base_model", run.source("base_model"))
        # 1. cold start: SFT of the base on a few long chain-of-thought examples in R1's format
        run.stage("cold_start_sft")
        # 2. reasoning-oriented RL: GRPO with accuracy, format and language-consistency rewards
        run.stage("reasoning_rl")
        # 3. rejection sampling: k samples per prompt from stage 2, keep the verified, readable ones
        verified = run.stage("rejection_sampling")
        # 4. SFT of the BASE model (supervised_merge.start_from) on the verified data merged with non-reasoning data
        run.stage("supervised_merge")
        # 5. RL for all scenarios: reasoning rewards + a general reward in the last steps
        final = run.stage("final_rl")
        # registry: the final model is the `candidate`; the gate makes it `champion` only if it beats the champion
        version = register_model(recipe, final)
        promotion = promote(
            recipe, version, run.evaluations["final_rl"], run.evaluations["base_model"], run.runs, pipeline
        )
        summary = summarize(
            recipe, pipeline, run.evaluations, run.models, run.runs, run.cached, verified, version, promotion, mlflow_ui
        )
    return {
        "parent_run_id": pipeline.parent_run_id,
        "experiment_id": pipeline.experiment_id,
        "model_version": version,
        "promotion": promotion,
        "summary": summary,
        "cached": run.cached,
    }
