"""What a reviewer opens in MLflow, on a real SQLite store: the stage-comparison figure on the parent run, and
descriptions (the top of each run's Overview tab) that show it and each RL stage's reward curves inline."""

from __future__ import annotations

from pathlib import Path

import pytest

STAGES = ("base_model", "cold_start_sft", "reasoning_rl", "final_rl")


def _row(stage: str, run_id: str, pass_at_1: float) -> dict:
    interval = {"eval/pass_at_1_ci_low": pass_at_1 - 0.1, "eval/pass_at_1_ci_high": pass_at_1 + 0.1}
    gain = {"eval/pass_at_1_gain": 0.05, "eval/pass_at_1_gain_ci_low": -0.01, "eval/pass_at_1_gain_ci_high": 0.11}
    return {
        "stage": stage,
        "run_id": run_id,
        "eval/pass_at_1": pass_at_1,
        **interval,
        **(gain if stage != "base_model" else {}),
        "alarms": ["all_truncated"] if stage == "final_rl" else [],
        "cached": stage == "cold_start_sft",
    }


@pytest.fixture
def tree(tmp_path, monkeypatch):
    """A parent run with one child per stage; the RL stages hold reward series: (pipeline, rows, rl_runs)."""
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    monkeypatch.setenv("R1_STATE_DIR", str(tmp_path))
    from models.tracking import client, ensure_experiment, start_child_run
    from tasks.pipeline_run import PipelineRun

    experiment = ensure_experiment("review")
    parent = client().create_run(experiment, run_name="pipeline-x").info.run_id
    pipeline = PipelineRun(name="review", experiment_id=experiment, parent_run_id=parent, flow_run_name="x")
    runs = {stage: start_child_run(experiment, parent, stage, {"stage": stage}) for stage in STAGES}
    for stage in ("reasoning_rl", "final_rl"):
        for step in range(1, 5):
            client().log_metric(runs[stage], "reward", 0.1 * step, step=step)
            client().log_metric(runs[stage], "rewards/accuracy_reward/mean", 0.05 * step, step=step)
            client().log_metric(runs[stage], "kl", 0.01, step=step)
    rows = [_row(stage, runs[stage], 0.1 * i) for i, stage in enumerate(STAGES)]
    return pipeline, rows, {s: runs[s] for s in ("reasoning_rl", "final_rl")}


def test_reward_series_are_the_reward_curves_only(tree):
    from tasks.review import reward_series

    _, _, rl_runs = tree
    series = reward_series(rl_runs["final_rl"])
    assert set(series) == {"reward", "rewards/accuracy_reward/mean"}
    assert [step for step, _ in series["reward"]] == [1, 2, 3, 4]
    assert [value for _, value in series["reward"]] == pytest.approx([0.1, 0.2, 0.3, 0.4])


def test_parent_run_holds_the_comparison_figure_and_shows_it_first(tree):
    from models.tracking import DESCRIPTION_TAG, client
    from tasks.review import COMPARISON, describe_runs, log_figures

    pipeline, rows, rl_runs = tree
    log_figures(pipeline, rows, rl_runs)
    paths = {a.path for a in client().list_artifacts(pipeline.parent_run_id, "plots")}
    assert paths == {
        COMPARISON,
        "plots/pass_at_1_by_stage.png",
        "plots/reasoning_rl_reward_curve.png",
        "plots/final_rl_reward_curve.png",
    }
    png = Path(client().download_artifacts(pipeline.parent_run_id, COMPARISON))
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    describe_runs(pipeline, rows, rl_runs, "# the summary", "http://mlflow:5000")
    parent = client().get_run(pipeline.parent_run_id).data.tags[DESCRIPTION_TAG]
    image = f"(get-artifact?path=plots/stage_comparison.png&run_uuid={pipeline.parent_run_id})"
    assert parent.index(image) < parent.index("# the summary")
    run = f"http://mlflow:5000/#/experiments/{pipeline.experiment_id}/runs/{pipeline.parent_run_id}"
    figure = f"{run}/artifactPath/{COMPARISON}?workflowType=machine_learning"
    assert f"[stage-comparison figure]({figure})" in parent
    assert "#/compare-runs?runs=" in parent


def test_stage_runs_describe_their_evaluation_and_show_their_reward_curves(tree):
    from models.tracking import DESCRIPTION_TAG, client
    from tasks.review import describe_runs

    pipeline, rows, rl_runs = tree
    describe_runs(pipeline, rows, rl_runs, "# the summary", "http://mlflow:5000")
    text = {row["stage"]: client().get_run(row["run_id"]).data.tags[DESCRIPTION_TAG] for row in rows}
    assert "held-out pass@1 0.200 [0.100, 0.300], gain over its start +0.050 [-0.010, +0.110]" in text["reasoning_rl"]
    assert "gain over its start –" in text["base_model"]
    assert "alarms: all_truncated" in text["final_rl"] and "cached" in text["cold_start_sft"]
    for stage in ("reasoning_rl", "final_rl"):
        assert f"get-artifact?path=plots/{stage}_reward_curve.png&run_uuid={rl_runs[stage]})" in text[stage]
    assert "get-artifact" not in text["cold_start_sft"]
