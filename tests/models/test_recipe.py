"""models/recipe.py: shipped recipes validate; each kind of mistake fails in one line that names the field."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from models.config import Recipe
from models.recipe import RecipeError, apply_override, load_recipe

REPO = Path(__file__).resolve().parents[2]
SHIPPED = sorted((REPO / "flows" / "recipes").glob("*.yaml"))
INVALID = sorted((Path(__file__).parent / "invalid_recipes").glob("*.yaml"))


def expected_substring(path: Path) -> str:
    first = path.read_text().splitlines()[0]
    assert first.startswith("# expect: "), f"{path.name}: first line must be '# expect: <substring>'"
    return first.removeprefix("# expect: ")


def test_recipe_folders_are_not_empty():
    assert len(SHIPPED) >= 2
    assert len(INVALID) >= 10
    assert len({expected_substring(p) for p in INVALID}) == len(INVALID)  # each file is a distinct mistake


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: p.name)
def test_shipped_recipes_validate(path):
    recipe = load_recipe(path)
    assert isinstance(recipe, Recipe)
    assert recipe.name
    assert recipe.data.task == "chain_sum" or recipe.data.problems is not None


def test_shipped_recipe_values():
    tiny = load_recipe(REPO / "flows" / "recipes" / "tiny.yaml")
    assert tiny.model.base == "builtin:tiny_base"
    assert tiny.reasoning_rl.trl["num_generations"] == 16
    assert tiny.final_rl.trl["max_steps"] == 600
    big = load_recipe(REPO / "flows" / "recipes" / "qwen2.5-math-1.5b-h800x8.yaml")
    assert big.seed == 42
    assert big.final_rl.general_reward.last_steps == 400
    assert big.reasoning_rl.trl["learning_rate"] == pytest.approx(3e-6)
    gsm8k = load_recipe(REPO / "flows" / "recipes" / "qwen2.5-math-1.5b-gsm8k-h800x8.yaml").data.problems
    assert (gsm8k.path, gsm8k.name, gsm8k.split, gsm8k.eval_split) == ("openai/gsm8k", "main", "train", "test")
    assert (gsm8k.answer_format, gsm8k.verifier) == ("gsm8k", "numeric")
    example = load_recipe(REPO / "flows" / "recipes" / "tiny-qa-file.yaml").data.problems
    assert (example.path, example.answer_format) == ("builtin:chain_qa", "gsm8k")


def test_tiny_recipe_is_the_embedded_default_written_out():
    """`make demo` and `make run RECIPE=flows/recipes/tiny.yaml` share every cache key."""
    from models.records import Artifact
    from models.stage_io import stage_spec
    from models.stages import STAGES

    tiny, default = load_recipe(REPO / "flows" / "recipes" / "tiny.yaml"), load_recipe(None)
    record = Artifact(uri="/m", fingerprint="f", stage="base_model", kind="model")
    for name, declared in STAGES.items():
        inputs = {k: record for k in set(declared.inputs) - declared.optional}
        assert stage_spec(name, tiny, inputs).key() == stage_spec(name, default, inputs).key(), name


def test_defaults_validate():
    recipe = load_recipe(None)
    assert recipe == Recipe()
    assert recipe.model.base == "builtin:tiny_base"


@pytest.mark.parametrize("path", INVALID, ids=lambda p: p.stem)
def test_invalid_recipe_fails_in_one_line(path):
    with pytest.raises(RecipeError) as caught:
        load_recipe(path)
    message = str(caught.value)
    assert "\n" not in message
    assert message.strip() == message and message
    assert expected_substring(path) in message


def test_missing_recipe_file(tmp_path):
    with pytest.raises(RecipeError, match="not found") as caught:
        load_recipe(tmp_path / "nope.yaml")
    assert "\n" not in str(caught.value)


@pytest.mark.parametrize("text", ["", "\n  \n", "# nothing but a comment\n"])
def test_empty_recipe_file_is_refused(tmp_path, text):
    """An empty file is a mistake (a wrong path, a failed save), not a request for the embedded default."""
    path = tmp_path / "empty.yaml"
    path.write_text(text)
    with pytest.raises(RecipeError, match="is empty; write at least one section") as caught:
        load_recipe(path)
    assert "\n" not in str(caught.value)


@pytest.mark.parametrize(
    ("assignment", "expected"),
    [
        ("seed=3", {"seed": 3}),
        ("final_rl.trl.max_steps=7", {"final_rl": {"trl": {"max_steps": 7}}}),
        ("a.b.c=[1, 2]", {"a": {"b": {"c": [1, 2]}}}),
        ("flag=true", {"flag": True}),
        ("x=null", {"x": None}),
        ("lr=3.0e-6", {"lr": 3e-6}),
        ("name=my run", {"name": "my run"}),
        ("name='007'", {"name": "007"}),
        ("rewards={accuracy: 2.0}", {"rewards": {"accuracy": 2.0}}),
        ("expr=a=b", {"expr": "a=b"}),  # only the first '=' separates key and value
        (" seed =5", {"seed": 5}),
    ],
)
def test_apply_override_sets_yaml_values(assignment, expected):
    tree: dict = {}
    apply_override(tree, assignment)
    assert tree == expected


def test_apply_override_keeps_siblings():
    tree = {"final_rl": {"trl": {"max_steps": 150, "temperature": 0.7}, "general_prompt_ratio": 0.1}}
    apply_override(tree, "final_rl.trl.max_steps=80")
    assert tree == {"final_rl": {"trl": {"max_steps": 80, "temperature": 0.7}, "general_prompt_ratio": 0.1}}


@pytest.mark.parametrize("assignment", ["seed", "=5", "", "seed.x=1"])
def test_apply_override_bad_syntax(assignment):
    tree = {"seed": 0}
    with pytest.raises(RecipeError) as caught:
        apply_override(tree, assignment)
    assert "\n" not in str(caught.value)
    assert f"'{assignment}'" in str(caught.value)


@pytest.mark.parametrize("assignment", ["seed=[1", "data.task_config={min_terms: 3"])
def test_apply_override_bad_yaml_value(assignment):
    with pytest.raises(RecipeError):
        apply_override({}, assignment)


def test_load_recipe_overrides():
    recipe = load_recipe(None, ["final_rl.trl.max_steps=7", "seed=5", "data.language=zh"])
    assert recipe.final_rl.trl == {"max_steps": 7}
    assert recipe.seed == 5
    assert recipe.data.language == "zh"
    # overrides apply on top of the file
    tiny = load_recipe(REPO / "flows" / "recipes" / "tiny.yaml", ["final_rl.trl.max_steps=80"])
    assert tiny.final_rl.trl["max_steps"] == 80
    assert tiny.final_rl.trl["temperature"] == 0.7


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        (["seed=abc"], "seed:"),
        (["reasoning_rl.trl.learnin_rate=1.0e-4"], "reasoning_rl.trl.learnin_rate"),
        (["evaluation.num_samples=0"], "evaluation.num_samples:"),
        (["seed.x=1"], "'seed' is not a section"),
    ],
)
def test_load_recipe_bad_overrides(overrides, expected):
    with pytest.raises(RecipeError) as caught:
        load_recipe(None, ["seed=0", *overrides])
    assert "\n" not in str(caught.value)
    assert expected in str(caught.value)


def test_trl_knob_checked_value_is_the_one_kept():
    try:
        recipe = load_recipe(None, ["reasoning_rl.trl.learning_rate=1e-4"])
    except RecipeError:
        return  # refusing the string is a fix too
    assert isinstance(recipe.reasoning_rl.trl["learning_rate"], float)


def _cli(args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    env = {
        **os.environ,
        "PYTHONPATH": str(REPO),
        "R1_STATE_DIR": str(cwd / "state"),
        "PYTHONDONTWRITEBYTECODE": "1",
    }
    for name in ("PREFECT_HOME", "PREFECT_API_URL", "MLFLOW_TRACKING_URI"):
        env.pop(name, None)
    return subprocess.run(
        [sys.executable, "-m", "flows.cli", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.mark.parametrize("name", ["trl_knob_typo.yaml", "invalid_yaml_syntax.yaml"])
def test_cli_check_bad_recipe_exits_2_and_writes_nothing(tmp_path, name):
    source = Path(__file__).parent / "invalid_recipes" / name
    recipe = tmp_path / name
    recipe.write_text(source.read_text())

    result = _cli(["--check", "--recipe", name], tmp_path)

    assert result.returncode == 2, result.stderr
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("recipe error:")
    assert expected_substring(source) in lines[0]
    assert result.stdout == ""
    assert sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*")) == [Path(name)]


@pytest.mark.parametrize("mode", ["colocate", "server"])
def test_vllm_generation_is_expressible(mode):
    recipe = load_recipe(None, ["reasoning_rl.trl.use_vllm=true", f"reasoning_rl.trl.vllm_mode={mode}"])
    assert recipe.reasoning_rl.trl["vllm_mode"] == mode


def test_unknown_vllm_mode_is_refused():
    with pytest.raises(RecipeError, match="reasoning_rl.trl.vllm_mode"):
        load_recipe(None, ["reasoning_rl.trl.use_vllm=true", "reasoning_rl.trl.vllm_mode=remote"])
