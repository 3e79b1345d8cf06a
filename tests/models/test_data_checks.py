"""models/data_checks.py: prompts that show their answer, evaluation prompts in training data, text the tokenizer
cannot represent and prompts past the context are each refused in one line before any stage runs."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from models.config import DataConfig, Recipe
from models.data import Problem, _problem, build_splits
from models.data_checks import answer_in_prompt, check_data, check_no_answer_in_prompts, representation_problem
from models.factory import ASSETS, load_tokenizer
from models.problems import DataError

SMALL = ["data.eval_size=20", "data.validation_size=8", "data.cold_start_size=30", "data.rl_pool_size=40"]


def small_recipe(*overrides: str) -> Recipe:
    from models.recipe import load_recipe

    return load_recipe(None, [*SMALL, *overrides])


@pytest.fixture(scope="module")
def tiny_tokenizer():
    return load_tokenizer("builtin:tiny_base")


@pytest.mark.parametrize(
    ("prompt", "answer", "expected"),
    [
        ("Q:55+97-15\nA:", "55 + 97 - 15", True),  # countdown's metadata.expression as the prompt: the solution
        ("Q:Calculate 137 using all of these numbers: 55, 97, 15.\nA:", "55 + 97 - 15", False),
        ("Q:4+3-2\nA:", "5", False),  # short answers occur by chance
        ("Q:5+3-3\nA:", "5", False),
        ("Q:what is 120 plus 0?\nA:", "120", True),
        ("Q:he has 120.\nA:", "120", True),
        ("Q:he has 120.5 kg\nA:", "120", False),
        ("Q:1200 eggs and 3 hens\nA:", "120", False),  # a part of a number is not the number
        ([{"role": "user", "content": "Name the colour: blue sky"}], "blue", True),
        ([{"role": "system", "content": "answer 42 always"}, {"role": "user", "content": "2+2?"}], "42", False),
    ],
)
def test_answer_in_prompt(prompt, answer, expected):
    assert answer_in_prompt(prompt, answer) is expected


def countdown_problems(count: int) -> tuple[list[Problem], list[Problem]]:
    """(as built now: the question text, as built before: metadata.expression) for countdown entries."""
    import reasoning_gym

    cfg = DataConfig(task="countdown", task_config={}, cold_start="builtin:non_reasoning")
    entries = list(reasoning_gym.create_dataset("countdown", seed=5, size=count))
    now = [_problem(entry, cfg) for entry in entries]
    before = [
        Problem(f"Q:{e['metadata']['expression'].replace(' ', '')}\nA:", e["answer"], "countdown", "") for e in entries
    ]
    return now, before


def test_countdown_prompts_show_the_target_and_numbers_not_the_solution():
    now, before = countdown_problems(6)
    for problem in now:
        entry_meta = json.loads(problem.entry)["metadata"]
        assert str(entry_meta["target"]) in problem.prompt
        assert all(str(n) in problem.prompt for n in entry_meta["numbers"])
        assert not answer_in_prompt(problem.prompt, problem.answer)
    check_no_answer_in_prompts({"rl": now}, max_share=0.0)
    with pytest.raises(DataError) as caught:
        check_no_answer_in_prompts({"rl": before}, max_share=0.05)
    assert "6 of 6 rl prompts contain their own reference answer" in str(caught.value)
    assert "\n" not in str(caught.value)


def test_leak_share_is_the_recipe_s_threshold():
    problems = [Problem(f"Q:what is {n}00 plus 0?\nA:", f"{n}00", "t", "") for n in range(1, 3)]
    problems += [Problem(f"Q:q{n}\nA:", "999", "t", "") for n in range(18)]
    check_no_answer_in_prompts({"eval": problems}, max_share=0.1)  # 2 of 20
    with pytest.raises(DataError, match="2 of 20 eval prompts"):
        check_no_answer_in_prompts({"eval": problems}, max_share=0.05)


def test_default_data_passes(tiny_tokenizer):
    splits = check_data(small_recipe(), tiny_tokenizer, context=256)
    assert len(splits["eval"]) == 20


def write_cold_start(path: Path, problems: list[Problem]) -> Path:
    rows = [{"prompt": p.prompt, "completion": f"<think>x</think><answer>{p.answer}</answer>"} for p in problems]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


@pytest.mark.parametrize("source", ["cold_start", "non_reasoning"])
def test_evaluation_prompts_in_a_training_file_stop_the_run(tmp_path, tiny_tokenizer, source):
    recipe = small_recipe()
    splits = build_splits(recipe.data, recipe.seed)
    leaked = [Problem(p.prompt.replace("+", " + "), p.answer, "", "") for p in splits["eval"][:7]]  # spacing differs
    path = write_cold_start(tmp_path / "rows.jsonl", splits["rl"][:5] + leaked)
    with pytest.raises(DataError) as caught:
        check_data(small_recipe(f"data.{source}={path}"), tiny_tokenizer, context=256)
    message = str(caught.value)
    assert "7 of 20 evaluation prompts also occur in the " in message and str(path) in message
    assert "\n" not in message


def test_question_answer_file_as_cold_start_is_refused_before_training(tmp_path, tiny_tokenizer):
    path = tmp_path / "qa.jsonl"
    path.write_text('{"question": "1+2", "answer": "3"}\n')
    with pytest.raises(DataError, match="has no column 'prompt'.*data.problems"):
        check_data(small_recipe(f"data.cold_start={path}"), tiny_tokenizer, context=256)


def test_split_larger_than_the_task_supplies_fails_at_load(tiny_tokenizer):
    recipe = small_recipe(
        "data.task_config={min_terms: 2, max_terms: 2, min_digits: 1, max_digits: 1}", "data.eval_size=200"
    )
    with pytest.raises(DataError, match="unique 'chain_sum' problems found for 200 requested"):
        check_data(recipe, tiny_tokenizer, context=256)


def test_unknown_token_is_refused(tiny_tokenizer):
    recipe = small_recipe("data.task=products", "data.task_config={}", "data.cold_start=builtin:non_reasoning")
    with pytest.raises(DataError) as caught:
        check_data(recipe, tiny_tokenizer, context=256)
    assert "the tokenizer of 'builtin:tiny_base' has no token for '*'" in str(caught.value)


def test_prompt_past_the_context_is_refused(tiny_tokenizer):
    with pytest.raises(DataError, match="exceeds the model's context of 50 tokens"):
        check_data(small_recipe(), tiny_tokenizer, context=50)  # 48 new tokens + a prompt of ~10


@pytest.fixture(scope="module")
def qwen2_shaped(tmp_path_factory) -> Path:
    """The tiny base with a Qwen2 config: AutoTokenizer swaps in Qwen2Tokenizer, which drops `\\n`."""
    folder = tmp_path_factory.mktemp("qwen2") / "tiny_qwen2"
    shutil.copytree(ASSETS / "tiny_base", folder)
    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(
        json.dumps(config | {"model_type": "qwen2", "architectures": ["Qwen2ForCausalLM"]})
    )
    return folder


def test_round_trip_that_loses_a_newline_is_refused(qwen2_shaped):
    from transformers import AutoTokenizer

    swapped = AutoTokenizer.from_pretrained(qwen2_shaped)
    assert representation_problem(swapped, "Q:4+3\nA:") == (
        "does not round-trip it: '\\n' at character 5 comes back as 'A'"
    )
    with pytest.raises(DataError, match="does not round-trip it: '\\\\n'"):
        check_data(small_recipe(f"model.base={qwen2_shaped}"), swapped, context=256)


def test_load_tokenizer_keeps_a_generic_tokenizer_exactly_as_saved(qwen2_shaped):
    tokenizer = load_tokenizer(str(qwen2_shaped))
    assert representation_problem(tokenizer, "Q:4+3\nA:<think>4+3=7</think><answer>7</answer>") is None
    assert tokenizer("Q:4\nA:")["input_ids"] == load_tokenizer("builtin:tiny_base")("Q:4\nA:")["input_ids"]


def test_heldout_overlap_metric_counts_every_training_source(tmp_path):
    from models.eval_stage import heldout_overlap
    from models.factory import model_record
    from models.stage_io import stage_spec
    from tasks.stages import evaluation_inputs

    def overlap_of(recipe) -> int:
        model = model_record(recipe.model.base, "base_model")
        spec = stage_spec("evaluate", recipe, evaluation_inputs(recipe, model))
        return heldout_overlap(spec, build_splits(spec.data, spec.seed))

    recipe = small_recipe()
    assert overlap_of(recipe) == 0
    path = write_cold_start(tmp_path / "general.jsonl", build_splits(recipe.data, recipe.seed)["eval"][:3])
    assert overlap_of(small_recipe(f"data.non_reasoning={path}")) == 3  # the rows come through their input record


@pytest.mark.parametrize("name", ["tiny.yaml", "tiny-qa-file.yaml"])
def test_shipped_tiny_recipes_pass_the_data_checks(name):
    from models.recipe import load_recipe

    recipe = load_recipe(Path(__file__).resolve().parents[2] / "flows" / "recipes" / name)
    splits = check_data(recipe)  # the base model's own tokenizer and context
    assert len(splits["eval"]) == recipe.data.eval_size
