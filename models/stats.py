"""Confidence intervals for evaluation scores: percentile bootstrap over prompts.

A gain between two checkpoints is measured on the same prompts, so the bootstrap resamples prompts and keeps
each prompt's pair of scores together (paired bootstrap).
"""

from __future__ import annotations

import numpy as np


def per_prompt_pass_rate(verdicts: list[list[bool]]) -> np.ndarray:
    """Share of correct samples for each prompt (its pass@1 estimate)."""
    return np.array([sum(v) / len(v) for v in verdicts], dtype=float)


def bootstrap_ci(scores: np.ndarray, resamples: int = 2000, seed: int = 0, level: float = 0.95) -> tuple[float, float]:
    """Percentile interval of the mean of `scores` under resampling of its entries."""
    rng = np.random.default_rng(seed)
    index = rng.integers(0, len(scores), size=(resamples, len(scores)))
    means = scores[index].mean(axis=1)
    tail = (1 - level) / 2
    return float(np.quantile(means, tail)), float(np.quantile(means, 1 - tail))


def paired_gain_ci(
    after: np.ndarray, before: np.ndarray, resamples: int = 2000, seed: int = 0, level: float = 0.95
) -> tuple[float, float, float]:
    """(mean gain, low, high) of `after - before` on the same prompts, resampling prompts as pairs."""
    if after.shape != before.shape:
        raise ValueError(f"paired scores need the same prompts: {after.shape} vs {before.shape}")
    gain = after - before
    low, high = bootstrap_ci(gain, resamples, seed, level)
    return float(gain.mean()), low, high
