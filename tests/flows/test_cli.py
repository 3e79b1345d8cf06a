"""The command line refuses a model it cannot evaluate before anything starts."""

from __future__ import annotations

import pytest

from flows.cli import main


@pytest.mark.parametrize(
    ("model", "message"),
    [("./no/such/folder", "no model folder"), ("models:/name", "models:/<name>@<alias>")],
)
def test_bad_model_fails_in_one_line(model, message, capsys, tmp_path, monkeypatch):
    monkeypatch.setenv("R1_STATE_DIR", str(tmp_path / "state"))
    assert main(["--evaluate", model]) == 2
    err = capsys.readouterr().err
    assert err.startswith("model error:") and message in err and err.count("\n") == 1
    assert not (tmp_path / "state").exists()


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["data.task=products", "data.task_config={}", "data.cold_start=builtin:non_reasoning"], "no token for '*'"),
        (
            ["data.task_config={min_terms: 2, max_terms: 2, min_digits: 1, max_digits: 1}", "data.eval_size=200"],
            "unique 'chain_sum' problems found for 200 requested",
        ),
    ],
)
def test_bad_data_fails_in_one_line_before_anything_starts(overrides, message, capsys, tmp_path, monkeypatch):
    monkeypatch.setenv("R1_STATE_DIR", str(tmp_path / "state"))
    small = ["data.cold_start_size=10", "data.rl_pool_size=10", "data.validation_size=4"]
    assert main(["--check", *small, *overrides]) == 2
    err = capsys.readouterr().err
    assert err.startswith("data error:") and message in err and err.count("\n") == 1
    assert not (tmp_path / "state").exists()
