"""What a reviewer opens in MLflow after a pipeline run, written by the summary task: the parent run's plots (pass@1
per stage with 95% intervals, the reward curves of both RL stages, and all of them on one stage-comparison figure)
and a description on the parent and on every stage run. A run's description is the markdown at the top of its
Overview tab, the tab MLflow opens a run on: the parent run shows the comparison figure and the stage table there,
a stage run its evaluation and, for an RL stage, its reward curves (MLflow 3.17 orders the metric charts tab by
metric name, with a layout kept only in the browser: the description is the place a pipeline can set)."""

from __future__ import annotations

from models.tracking import artifact_image, client, compare_url, run_url, set_description
from tasks.pipeline_run import PipelineRun

COMPARISON = "plots/stage_comparison.png"


def _origin(run_id: str) -> str:
    """The run that trained a stage (a cached stage's link run names it)."""
    return client().get_run(run_id).data.tags.get("origin_run_id", run_id)


def reward_series(run_id: str) -> dict[str, list[tuple[int, float]]]:
    """reward, rewards/<fn>/mean and the held-out check of an RL stage's training run, as (step, value) series."""
    mlflow_client, origin = client(), _origin(run_id)
    keys = [
        k
        for k in mlflow_client.get_run(origin).data.metrics
        if k == "reward" or (k.startswith("rewards/") and k.endswith("/mean")) or k == "heldout_check/pass_at_1"
    ]
    return {k: sorted((m.step, m.value) for m in mlflow_client.get_metric_history(origin, k)) for k in keys}


def log_figures(pipeline: PipelineRun, rows: list[dict], rl_runs: dict[str, str]) -> None:
    """pass@1 with intervals per stage, the reward curves of each RL stage, and both on one figure, into the parent
    run (plots/)."""
    from models.plots import close, curves_figure, pass_at_1_figure, stage_comparison_figure

    mlflow_client, series = client(), {stage: reward_series(run_id) for stage, run_id in rl_runs.items()}
    figures = {
        "plots/pass_at_1_by_stage.png": pass_at_1_figure(rows),
        COMPARISON: stage_comparison_figure(rows, series),
    }
    for stage, curves in series.items():
        figures[f"plots/{stage}_reward_curve.png"] = curves_figure(curves, f"{stage}: rewards and held-out check")
    for path, fig in figures.items():
        mlflow_client.log_figure(pipeline.parent_run_id, fig, path)
        close(fig)


def comparison_links(pipeline: PipelineRun, stage_runs: dict[str, str], ui_base: str) -> str:
    """Markdown links to the stage-comparison figure and to MLflow's compare-runs page of the stage runs."""
    figure = run_url(ui_base, pipeline.experiment_id, pipeline.parent_run_id, COMPARISON)
    compare = compare_url(ui_base, pipeline.experiment_id, list(stage_runs.values()))
    return f"[stage-comparison figure]({figure}) · [the stage runs side by side]({compare})"


def describe_runs(pipeline: PipelineRun, rows: list[dict], rl_runs: dict[str, str], summary: str, ui_base: str):
    """The parent run's description (comparison figure, then the summary) and each stage run's (its evaluation,
    alarms and, for an RL stage, its reward curves)."""
    links = comparison_links(pipeline, {r["stage"]: r["run_id"] for r in rows}, ui_base)
    figure = artifact_image(pipeline.parent_run_id, COMPARISON, "pass@1 per stage and the RL reward curves")
    set_description(pipeline.parent_run_id, f"**Stage comparison**: {links}\n\n{figure}\n\n{summary}")
    parent = run_url(ui_base, pipeline.experiment_id, pipeline.parent_run_id)
    for row in rows:
        set_description(row["run_id"], stage_description(row, parent, rl_runs))


def interval(row: dict, key: str) -> str:
    """`value [low, high]` of a metric with its 95% interval in `row` (signed for a gain), or a dash."""
    if f"{key}_ci_low" not in row:
        return "–"
    return (
        f"{row[key]:+.3f} [{row[f'{key}_ci_low']:+.3f}, {row[f'{key}_ci_high']:+.3f}]"
        if "gain" in key
        else f"{row[key]:.3f} [{row[f'{key}_ci_low']:.3f}, {row[f'{key}_ci_high']:.3f}]"
    )


def stage_description(row: dict, parent_url: str, rl_runs: dict[str, str]) -> str:
    """`row` (a summary table row) as a stage run's description; an RL stage's reward curves shown inline."""
    stage = row["stage"]
    text = (
        f"**{stage}** of [its pipeline run]({parent_url}): held-out pass@1 {interval(row, 'eval/pass_at_1')}, "
        f"gain over its start {interval(row, 'eval/pass_at_1_gain')}; alarms: {', '.join(row['alarms']) or 'none'}"
        f"{'; cached (trained by an earlier pipeline run)' if row['cached'] else ''}."
    )
    if stage in rl_runs:
        curve = artifact_image(_origin(rl_runs[stage]), f"plots/{stage}_reward_curve.png", f"{stage} reward curves")
        text += f"\n\n{curve}"
    return text
