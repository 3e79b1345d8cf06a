"""The whole R1 flow through Prefect (a real temporary API server) with MLflow on SQLite: the run tree, TRL's
metric series, artifacts, the registered model, the summary artifact, and the cache on a second run."""

from __future__ import annotations

import pytest

from models.recipe import load_recipe
from models.stages import PIPELINE as STAGES

pytestmark = pytest.mark.slow

SMALL = [
    "name=e2e",
    "model.registered_name=r1-e2e",
    "data.eval_size=16",
    "data.cold_start_size=200",
    "data.rl_pool_size=32",
    "evaluation.num_samples=2",
    "reasoning_rl.trl.max_steps=4",
    "reasoning_rl.trl.num_generations=8",
    "reasoning_rl.trl.per_device_train_batch_size=16",
    "reasoning_rl.trl.logging_steps=1",
    "reasoning_rl.trl.beta=0.001",
    "rejection_sampling.num_prompts=16",
    "final_rl.trl.max_steps=4",
    "final_rl.trl.num_generations=8",
    "final_rl.trl.per_device_train_batch_size=16",
    "final_rl.trl.logging_steps=1",
    "final_rl.general_reward.last_steps=2",
    "reasoning_rl.alarms.check_every=2",
    "final_rl.alarms.check_every=2",
    "data.validation_size=8",
]


@pytest.fixture(scope="module")
def state(tmp_path_factory, prefect_server):
    """Environment of the runs: a state folder, MLflow on SQLite in it, Prefect results persisted in it."""
    from prefect.settings import PREFECT_LOCAL_STORAGE_PATH, temporary_settings

    folder = tmp_path_factory.mktemp("state")
    with (
        pytest.MonkeyPatch.context() as patch,
        temporary_settings({PREFECT_LOCAL_STORAGE_PATH: folder / "results"}),
    ):
        patch.setenv("R1_STATE_DIR", str(folder))
        patch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{folder / 'mlflow.db'}")
        yield folder


@pytest.fixture(scope="module")
def first(state):
    from flows.pipeline import r1_pipeline

    return r1_pipeline(load_recipe(None, SMALL))


@pytest.fixture(scope="module")
def second(first):
    from flows.pipeline import r1_pipeline

    return r1_pipeline(load_recipe(None, SMALL))


@pytest.fixture(scope="module")
def third(second):
    from flows.pipeline import r1_pipeline

    return r1_pipeline(load_recipe(None, [*SMALL, "final_rl.trl.learning_rate=5e-5"]))


@pytest.fixture(scope="module")
def reevaluated(third):
    """A fourth run that changes only the evaluation settings."""
    from flows.pipeline import r1_pipeline

    return r1_pipeline(load_recipe(None, [*SMALL, "final_rl.trl.learning_rate=5e-5", "evaluation.num_samples=3"]))


def _children(parent_run_id: str, experiment_id: str) -> dict:
    from models.tracking import client

    runs = client().search_runs([experiment_id], f"tags.mlflow.parentRunId = '{parent_run_id}'")
    return {run.data.tags["stage"]: run for run in runs}


def test_run_tree_has_one_nested_run_per_stage(first):
    from models.tracking import client

    parent = client().get_run(first["parent_run_id"])
    assert parent.info.status == "FINISHED"
    children = _children(first["parent_run_id"], first["experiment_id"])
    assert set(children) == {*STAGES, "base_model"}
    assert {run.info.run_name for run in children.values()} == {*STAGES, "base_model"}
    assert all(run.info.status == "FINISHED" for run in children.values())


@pytest.mark.parametrize("stage", ["base_model", "cold_start_sft", "reasoning_rl", "supervised_merge", "final_rl"])
def test_every_model_is_evaluated_in_its_stage_run(first, stage):
    metrics = _children(first["parent_run_id"], first["experiment_id"])[stage].data.metrics
    assert 0.0 <= metrics["eval/pass_at_1"] <= 1.0
    assert 0.0 <= metrics["eval/cons_at_k"] <= 1.0
    assert metrics["eval/heldout_overlap"] == 0.0


@pytest.mark.parametrize("stage", ["reasoning_rl", "final_rl"])
def test_rl_stages_log_trl_series_and_artifacts(first, stage):
    from models.tracking import client

    run = _children(first["parent_run_id"], first["experiment_id"])[stage]
    mlflow_client = client()
    for key in (
        "loss",
        "reward",
        "rewards/accuracy_reward/mean",
        "rewards/format_reward/mean",
        "rewards/language_consistency_reward/mean",
        "entropy",
        "completions/mean_length",
        "clip_ratio/region_mean",
    ):
        assert len(mlflow_client.get_metric_history(run.info.run_id, key)) >= 2, key
    artifacts = {a.path for a in mlflow_client.list_artifacts(run.info.run_id)}
    assert {"plots", "samples", "spec", "environment", "logs"} <= artifacts
    assert run.data.params[f"config.{stage}.trl.num_generations"] == "8"


def test_reasoning_rl_logs_kl_when_beta_is_set(first):
    from models.tracking import client

    run = _children(first["parent_run_id"], first["experiment_id"])["reasoning_rl"]
    assert len(client().get_metric_history(run.info.run_id, "kl")) >= 2


def test_datasets_are_logged_as_inputs(first):
    children = _children(first["parent_run_id"], first["experiment_id"])
    for stage in ("cold_start_sft", "supervised_merge", "rejection_sampling"):
        assert children[stage].inputs.dataset_inputs, stage


def test_final_model_is_registered_as_candidate(first):
    from models.tracking import client

    version = client().get_model_version_by_alias("r1-e2e", "candidate")
    assert version.version == first["model_version"]
    assert version.source.endswith("/model")


def test_summary_artifact_and_parent_table(first):
    from prefect.artifacts import Artifact

    from models.tracking import client

    artifact = Artifact.get("r1-pipeline-summary")
    for stage in ("base_model", "cold_start_sft", "reasoning_rl", "supervised_merge", "final_rl"):
        assert f"| {stage} |" in artifact.data
    paths = {a.path for a in client().list_artifacts(first["parent_run_id"], "summary")}
    assert {"summary/stages.json", "summary/summary.md"} <= paths


def test_second_run_reuses_every_stage(first, second):
    assert all(second["cached"][stage] for stage in STAGES)
    assert second["model_version"] == first["model_version"]
    children = _children(second["parent_run_id"], second["experiment_id"])
    assert set(children) == {*STAGES, "base_model"}
    assert all(children[stage].data.tags.get("cached") == "true" for stage in STAGES)
    evaluated = ("base_model", "cold_start_sft", "reasoning_rl", "supervised_merge", "final_rl")
    assert all(children[stage].data.tags.get("evaluation_cached") == "true" for stage in evaluated)
    assert (
        children["final_rl"].data.metrics["eval/pass_at_1"]
        == _children(first["parent_run_id"], first["experiment_id"])["final_rl"].data.metrics["eval/pass_at_1"]
    )


def test_changing_final_rl_reruns_only_final_rl(third):
    assert {stage: third["cached"][stage] for stage in STAGES} == {stage: stage != "final_rl" for stage in STAGES}
    assert third["cached"]["base_model"]


def test_changing_only_evaluation_reevaluates_and_retrains_nothing(third, reevaluated):
    assert all(reevaluated["cached"][stage] for stage in STAGES)
    assert not reevaluated["cached"]["base_model"]  # its evaluation ran again
    new = _children(reevaluated["parent_run_id"], reevaluated["experiment_id"])
    old = _children(third["parent_run_id"], third["experiment_id"])
    for stage in ("base_model", "cold_start_sft", "reasoning_rl", "supervised_merge", "final_rl"):
        assert new[stage].data.metrics["eval/k"] == 3.0, stage  # this tree shows the new figures
        assert old[stage].data.metrics["eval/k"] == 2.0, stage  # and the earlier tree keeps its own
        assert new[stage].info.status == "FINISHED"


def _gate_facts(run: dict) -> tuple[float, float, list[str]]:
    """(base pass@1, final pass@1, alarms raised) of a pipeline run, read from its run tree."""
    from tasks.promotion import raised_alarms

    children = _children(run["parent_run_id"], run["experiment_id"])
    alarms = raised_alarms({stage: child.info.run_id for stage, child in children.items()})
    scores = [children[stage].data.metrics["eval/pass_at_1"] for stage in ("base_model", "final_rl")]
    return scores[0], scores[1], alarms


def test_promotion_gate_decides_every_run(first, second, third, reevaluated):
    from models.tracking import client

    champion = None
    for run in (first, second, third, reevaluated):
        base, final, alarms = _gate_facts(run)
        decision = run["promotion"]
        if alarms or final <= base:  # the gate's own rules: never champion, whatever the registry holds
            assert decision.startswith("stays candidate: "), decision
            assert all(alarm in decision for alarm in alarms)
            assert (final <= base) == ("does not beat the base model" in decision)
        elif champion is None:
            assert decision.startswith("promoted to champion: first champion"), decision
        elif champion == run["model_version"]:
            assert decision.startswith("promoted to champion: already champion"), decision
        else:
            assert "on the same held-out set" in decision and "champion v" in decision, decision
        champion = run["model_version"] if decision.startswith("promoted") else champion
    assert client().get_registered_model("r1-e2e").aliases.get("champion") == champion
    assert client().get_run(third["parent_run_id"]).data.tags["promotion"] == third["promotion"]


@pytest.mark.parametrize("stage", ["cold_start_sft", "reasoning_rl", "supervised_merge", "final_rl"])
def test_stage_runs_hold_intervals_and_paired_gain(first, stage):
    metrics = _children(first["parent_run_id"], first["experiment_id"])[stage].data.metrics
    assert metrics["eval/pass_at_1_ci_low"] <= metrics["eval/pass_at_1"] <= metrics["eval/pass_at_1_ci_high"]
    assert (
        metrics["eval/pass_at_1_gain_ci_low"]
        <= metrics["eval/pass_at_1_gain"]
        <= metrics["eval/pass_at_1_gain_ci_high"]
    )


@pytest.mark.parametrize("stage", ["reasoning_rl", "final_rl"])
def test_rl_stages_log_alarms_and_heldout_checks(first, stage):
    from models.alarms import ALARMS
    from models.tracking import client

    run = _children(first["parent_run_id"], first["experiment_id"])[stage]
    assert {f"alarm/{name}" for name in ALARMS} <= set(run.data.metrics)
    assert len(client().get_metric_history(run.info.run_id, "heldout_check/pass_at_1")) == 3  # steps 0, 2, 4


def test_parent_run_holds_comparison_plots_and_overall_gain(first):
    from models.tracking import client

    paths = {a.path for a in client().list_artifacts(first["parent_run_id"], "plots")}
    assert paths == {
        "plots/pass_at_1_by_stage.png",
        "plots/reasoning_rl_reward_curve.png",
        "plots/final_rl_reward_curve.png",
    }
    metrics = client().get_run(first["parent_run_id"]).data.metrics
    assert "eval/final_vs_cold_start_pass_at_1_gain" in metrics
    assert metrics["cost/total_wall_s"] > 0 and metrics["cost/total_gpu_hours"] == 0.0  # a CPU run holds no GPU
    assert "summary/cost.json" in {a.path for a in client().list_artifacts(first["parent_run_id"], "summary")}


def test_registered_model_evaluates_on_its_own(first):
    from flows.evaluate import r1_evaluate

    result = r1_evaluate("models:/r1-e2e@candidate", load_recipe(None, SMALL))
    final = _children(first["parent_run_id"], first["experiment_id"])["final_rl"].data.metrics
    # the same model on the same held-out set with the same seed scores the same
    assert result["metrics"]["eval/pass_at_1"] == final["eval/pass_at_1"]
    children = _children(result["parent_run_id"], result["experiment_id"])
    assert set(children) == {"evaluated_model"}
    from models.tracking import client

    artifacts = client().list_artifacts(children["evaluated_model"].info.run_id, "eval")
    assert "eval/per_prompt.json" in {a.path for a in artifacts}


def test_one_stage_runs_alone_from_an_earlier_pipeline_run(reevaluated, capsys, monkeypatch, state):
    monkeypatch.setenv("PREFECT_HOME", str(state / "prefect"))  # what main() would set for good
    import json
    from pathlib import Path

    from flows.cli import main
    from models.storage import artifact_store
    from models.tracking import client

    parent = reevaluated["parent_run_id"]
    args = ["stage", "final_rl", "--from-run", parent, *SMALL, "final_rl.trl.max_steps=2"]
    assert main(args) == 0
    mlflow_client = client()
    runs = mlflow_client.search_runs(
        [reevaluated["experiment_id"]], f"tags.mlflow.parentRunId = '{parent}' and tags.started_by = 'r1-run stage'"
    )
    assert [(r.info.run_name, r.info.status) for r in runs] == [("final_rl", "FINISHED")]
    record = artifact_store().read_record(mlflow_client.get_run(parent).data.tags["record.final_rl"])
    assert record.mlflow_run_id == runs[0].info.run_id
    spec = json.loads((Path(record.uri) / "spec.json").read_text())
    assert spec["settings"]["trl"]["max_steps"] == 2
    merged = _children(parent, reevaluated["experiment_id"])["supervised_merge"]
    assert spec["inputs"]["model"]["uri"] == mlflow_client.get_run(parent).data.tags["record.supervised_merge"]
    assert merged.data.tags["cached"] == "true"
    assert "spec/final_rl.json" in {a.path for a in mlflow_client.list_artifacts(record.mlflow_run_id, "spec")}
    # the same spec again: its output is there already
    assert main(args) == 0
    assert "already published" in capsys.readouterr().out


def test_one_stage_from_an_unknown_run_says_so_in_one_line(state, capsys, monkeypatch):
    from flows.cli import main

    monkeypatch.setenv("PREFECT_HOME", str(state / "prefect"))
    assert main(["stage", "final_rl", "--from-run", "0123456789abcdef"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("stage error:") and len(err.splitlines()) == 1
