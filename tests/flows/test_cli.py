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
