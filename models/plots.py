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
    """pass@1 per stage with intervals, then each RL stage's reward curves (`rl_series`: stage -> series), side by
    side in one figure."""
    fig, axes = plt.subplots(1, 1 + len(rl_series), figsize=(6 * (1 + len(rl_series)), 4.2), squeeze=False)
    _pass_at_1_bars(axes[0][0], rows)
    for ax, (stage, series) in zip(axes[0][1:], rl_series.items(), strict=True):
        _curves(ax, series, f"{stage}: rewards and held-out check")
    fig.tight_layout()
    return fig


def close(fig) -> None:
    plt.close(fig)
