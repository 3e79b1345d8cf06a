"""The stage-comparison figure: pass@1 bars with their intervals, then one panel of reward curves per RL stage."""

from __future__ import annotations


def test_stage_comparison_figure_has_the_bars_and_one_panel_per_rl_stage():
    from models.plots import close, stage_comparison_figure

    rows = [
        {"stage": s, "eval/pass_at_1": v, "eval/pass_at_1_ci_low": v - 0.1, "eval/pass_at_1_ci_high": v + 0.1}
        for s, v in (("cold_start_sft", 0.2), ("reasoning_rl", 0.4), ("final_rl", 0.5))
    ]
    series = {s: {"reward": [(1, 0.1), (2, 0.3)]} for s in ("reasoning_rl", "final_rl")}
    fig = stage_comparison_figure(rows, series)
    bars, *curves = fig.axes
    assert [p.get_height() for p in bars.patches] == [0.2, 0.4, 0.5]
    assert len(bars.lines) + len(bars.collections) > 0  # the interval whiskers
    assert [ax.get_title() for ax in curves] == [f"{s}: rewards and held-out check" for s in series]
    assert all(list(ax.lines[0].get_ydata()) == [0.1, 0.3] for ax in curves)
    close(fig)
