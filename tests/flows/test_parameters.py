"""flows/parameters.py: what a deployment run is given is checked like the CLI's arguments; a bad parameter ends
the flow run Failed at once with the CLI's one line; flow-run names say the recipe and what it changes."""

from __future__ import annotations

import pytest

from flows.cli import main
from flows.parameters import ParameterError, changed_from_default, checked_recipe
from models.config import Recipe

BAD_PARAMETERS = [
    ({"overrides": ["final_rl.trl.learning_rat=1"]}, "did you mean 'learning_rate'"),
    ({"overrides": ["evaluation.num_samples=0"]}, "evaluation.num_samples"),
    ({"overrides": ["no_equals_sign"]}, "write it as key.path=value"),
    ({"recipe_path": "no-such-recipe"}, "no recipe named 'no-such-recipe'"),
    ({"recipe": {"evaluation": {"k": 3}}}, "evaluation.k: unknown key"),
    ({"recipe": {}, "recipe_path": "tiny"}, "not both"),
    ({"overrides": ["launch.stage_deployment=nodeployment"]}, "<flow name>/<deployment name>"),
]


@pytest.mark.parametrize(("params", "message"), BAD_PARAMETERS)
def test_bad_parameters_fail_in_one_line(params, message):
    with pytest.raises(ParameterError) as err:
        checked_recipe(params.get("recipe"), params.get("recipe_path"), params.get("overrides"))
    assert message in str(err.value) and "\n" not in str(err.value)


def test_same_line_as_the_cli(capsys):
    assert main(["--check", "final_rl.trl.learning_rat=1"]) == 2
    cli_line = capsys.readouterr().err.strip()
    with pytest.raises(ParameterError) as err:
        checked_recipe(None, None, ["final_rl.trl.learning_rat=1"])
    assert str(err.value) == cli_line


def test_form_name_or_path_give_the_same_recipe():
    by_name = checked_recipe(None, "tiny", ["evaluation.num_samples=3"])
    assert by_name == checked_recipe(None, "flows/recipes/tiny.yaml", ["evaluation.num_samples=3"])
    by_form = checked_recipe(Recipe().model_dump(mode="json"), None, ["evaluation.num_samples=3"])
    assert by_form == checked_recipe(None, None, ["evaluation.num_samples=3"])
    assert by_name.evaluation.num_samples == by_form.evaluation.num_samples == 3


def test_changed_keys_of_a_form_recipe():
    tree = Recipe().model_dump(mode="json")
    tree["evaluation"]["num_samples"] = 3
    assert changed_from_default(tree) == ["evaluation.num_samples=3"]


@pytest.mark.slow
def test_deployment_style_call_fails_the_run_at_once(prefect_server):
    """What a deployment run does with a bad parameter: the flow ends Failed with the one line, nothing trained."""
    from flows.evaluate import r1_evaluate
    from flows.pipeline import r1_pipeline

    state = r1_pipeline(overrides=["final_rl.trl.learning_rat=1"], return_state=True)
    assert state.is_failed() and state.message.startswith("recipe error: final_rl.trl.learning_rat")
    state = r1_evaluate(model="", return_state=True)
    assert state.is_failed() and state.message.startswith("model error: no model given")


def test_a_stage_deployment_needs_a_server(monkeypatch):
    monkeypatch.delenv("PREFECT_API_URL", raising=False)
    with pytest.raises(ParameterError, match="^launch error: .*needs a Prefect server: export PREFECT_API_URL"):
        checked_recipe(None, None, ["launch.stage_deployment=r1-stage-spec/h800"])
