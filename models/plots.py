"""Figures of a pipeline run (matplotlib, headless): pass@1 with intervals per stage, and reward curves."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def pass_at_1_figure(rows: list[dict]):
    """Bars of held-out pass@1 per stage with their 95% bootstrap intervals."""
    fig, ax = plt.subplots(figsize=(7, 4))
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
    fig.tight_layout()
    return fig


def curves_figure(series: dict[str, list[tuple[int, float]]], title: str):
    """One line per named step series."""
    fig, ax = plt.subplots(figsize=(7, 4))
    for name, points in series.items():
        if points:
            ax.plot(*zip(*points, strict=True), label=name, marker=".")
    ax.set(xlabel="step", title=title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    return fig


def close(fig) -> None:
    plt.close(fig)
