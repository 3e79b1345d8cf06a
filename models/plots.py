"""Figures of a pipeline run (matplotlib, headless): pass@1 with intervals per stage, reward curves, and both on one
stage-comparison figure."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def _pass_at_1_bars(ax, rows: list[dict]) -> None:
    """Bars of held-out pass@1 per stage with their 95% bootstrap intervals."""
    stages = [r["stage"] for r in rows]
    values = [r["eval/pass_at_1"] for r in rows]
    errors = [
        [v - r["eval/pass_at_1_ci_low"] for v, r in zip(values, rows, strict=True)],
        [r["eval/pass_at_1_ci_high"] - v for v, r in zip(values, rows, strict=True)],
    ]
    ax.bar(stages, values, yerr=errors, capsize=4, color="#4c72b0")
    for x, v in enumerate(values):
        ax.text(x, v + 0.02, f"{v:.3f}", ha="center", fontsize=8)
    ax.set(ylabel="held-out pass@1 (95% CI)", ylim=(0, 1.05), title="pass@1 by stage")
    ax.tick_params(axis="x", labelrotation=20, labelsize=8)


def _curves(ax, series: dict[str, list[tuple[int, float]]], title: str) -> None:
    """One line per named step series."""
    for name, points in series.items():
        if points:
            ax.plot(*zip(*points, strict=True), label=name, marker=".")
    ax.set(xlabel="step", title=title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)


def pass_at_1_figure(rows: list[dict]):
    fig, ax = plt.subplots(figsize=(7, 4))
    _pass_at_1_bars(ax, rows)
    fig.tight_layout()
    return fig


def curves_figure(series: dict[str, list[tuple[int, float]]], title: str):
    fig, ax = plt.subplots(figsize=(7, 4))
    _curves(ax, series, title)
    fig.tight_layout()
    return fig


def stage_comparison_figure(rows: list[dict], rl_series: dict[str, dict[str, list[tuple[int, float]]]]):
    """pass@1 per stage with intervals on top, each RL stage's reward curves below (`rl_series`: stage -> series):
    one figure about 850 px wide, the width of a run description in MLflow's UI."""
    columns = max(1, len(rl_series))
    fig = plt.figure(figsize=(8.5, 7 if rl_series else 3.5))
    grid = fig.add_gridspec(2 if rl_series else 1, columns)
    _pass_at_1_bars(fig.add_subplot(grid[0, :]), rows)
    for column, (stage, series) in enumerate(rl_series.items()):
        _curves(fig.add_subplot(grid[1, column]), series, f"{stage}: rewards and held-out check")
    fig.tight_layout()
    return fig


def close(fig) -> None:
    plt.close(fig)
