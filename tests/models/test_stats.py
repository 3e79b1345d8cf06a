"""Bootstrap intervals checked against cases that can be worked out by hand."""

from __future__ import annotations

import numpy as np
import pytest

from models.stats import bootstrap_ci, paired_gain_ci, per_prompt_pass_rate


def test_per_prompt_pass_rate():
    assert per_prompt_pass_rate([[True, False, False, False], [True, True, True, True]]).tolist() == [0.25, 1.0]


def test_interval_of_constant_scores_is_the_constant():
    assert bootstrap_ci(np.full(50, 0.4)) == pytest.approx((0.4, 0.4))


def test_interval_of_two_point_scores_matches_the_binomial_spread():
    # 100 prompts, half right: the mean's standard error is 0.05, so a 95% interval is about 0.5 +- 0.098
    scores = np.array([0.0, 1.0] * 50)
    low, high = bootstrap_ci(scores, resamples=4000, seed=1)
    assert low == pytest.approx(0.5 - 0.098, abs=0.02)
    assert high == pytest.approx(0.5 + 0.098, abs=0.02)


def test_paired_gain_of_a_uniform_improvement_is_exact():
    before = np.linspace(0, 0.8, 40)
    gain, low, high = paired_gain_ci(before + 0.1, before)
    assert (gain, low, high) == pytest.approx((0.1, 0.1, 0.1))


def test_paired_gain_interval_straddles_zero_for_a_wash():
    before = np.array([0.0, 1.0] * 30)
    after = np.array([1.0, 0.0] * 30)
    gain, low, high = paired_gain_ci(after, before)
    assert gain == 0.0 and low < 0 < high


def test_pairing_removes_between_prompt_variance():
    rng = np.random.default_rng(0)
    before = rng.uniform(0, 0.8, 200)  # prompts differ a lot in difficulty
    after = before + rng.choice([0.0, 0.25], 200)  # but every prompt improves or stays
    _, low, _ = paired_gain_ci(after, before)
    assert low > 0


def test_paired_gain_needs_the_same_prompts():
    with pytest.raises(ValueError, match="same prompts"):
        paired_gain_ci(np.zeros(3), np.zeros(4))
