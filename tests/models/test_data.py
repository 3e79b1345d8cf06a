"""models/data.py: split keys, the held-out bucket, disjoint splits, worked chains and cold-start rows."""

from __future__ import annotations

import json

import pytest

from models.config import DataConfig
from models.data import (
    R1_SYSTEM_PROMPT,
    Problem,
    build_splits,
    cold_start_rows,
    compact_question,
    is_heldout,
    overlap,
    prompt_question,
    split_key,
    worked_chain,
)
from models.verifiers import is_correct, parse

SMALL = DataConfig(eval_size=20, cold_start_size=30, rl_pool_size=50)


@pytest.fixture(scope="module")
def splits() -> dict[str, list[Problem]]:
    return build_splits(SMALL, seed=0)


def key_of(problem: Problem) -> str:
    return split_key(json.loads(problem.entry))


@pytest.mark.parametrize(
    ("entry", "expected"),
    [
        ({"question": "State the final answer to the following arithmetic problem: 4 - 1 - 7 ="}, "4-1-7"),
        ({"question": "Calculate 2 - -1.", "metadata": {"expression": "2 - -1"}}, "2--1"),
        ({"question": "What is 2 +\t3 ?", "metadata": {}}, "2+3"),
        ({"question": "Say Hello", "metadata": {"expression": "the solution"}}, "sayhello"),  # metadata never read
    ],
)
def test_split_key(entry, expected):
    assert split_key(entry) == expected


@pytest.mark.parametrize(
    ("question", "expected"),
    [
        ("State the final answer to the following arithmetic problem: 4 - 1 - 7 =", "4-1-7"),
        ("Calculate -1 + -8 - -9.", "-1+-8--9"),
        (
            "Solve the following multiplication: 18271 * 43432. Give only the result as your final answer.",
            "18271*43432",
        ),
        (
            "Calculate 309 using all of these numbers: 6, 61, 94, 4.\nEach number may be used at most once.",
            "Calculate 309 using all of these numbers: 6, 61, 94, 4. Each number may be used at most once.",
        ),
    ],
)
def test_compact_question_comes_from_the_question_text(question, expected):
    assert compact_question(question) == expected


@pytest.mark.parametrize(
    ("prompt", "expected"),
    [
        ("Q:4+3-2\nA:", "4+3-2"),
        ([{"role": "system", "content": "sys"}, {"role": "user", "content": "What is 2+2?"}], "What is 2+2?"),
        ("plain text", "plain text"),
    ],
)
def test_prompt_question(prompt, expected):
    assert prompt_question(prompt) == expected


def test_is_heldout_is_a_stable_bucket_of_the_requested_share():
    keys = [f"{a}+{b}-{c}" for a in range(30) for b in range(30) for c in range(10)]
    held = [k for k in keys if is_heldout(k, 100)]
    assert 0.08 < len(held) / len(keys) < 0.12
    assert held == [k for k in keys if is_heldout(k, 100)]  # deterministic
    # a larger share is a superset of a smaller one (same hash, wider bucket)
    assert set(held) <= {k for k in keys if is_heldout(k, 300)}


def test_build_splits_sizes(splits):
    assert {name: len(problems) for name, problems in splits.items()} == {
        "eval": 20,
        "validation": 64,
        "cold_start": 30,
        "rl": 50,
    }


def test_build_splits_problems(splits):
    for problem in (p for split in splits.values() for p in split):
        entry = json.loads(problem.entry)
        assert problem.task == "chain_sum"
        assert entry["metadata"]["source_dataset"] == "chain_sum"
        assert "difficulty" not in entry["metadata"]
        assert problem.answer == str(entry["answer"])
        assert problem.prompt == f"Q:{key_of(problem)}\nA:"
        assert 3 <= len(key_of(problem).replace("-", "+").split("+")) <= 4


def test_build_splits_disjoint(splits):
    assert overlap(splits["eval"], splits["cold_start"], splits["rl"]) == 0
    prompts = {name: [p.prompt for p in problems] for name, problems in splits.items()}
    for name, values in prompts.items():
        assert len(set(values)) == len(values), f"duplicate prompt in {name}"
    assert not set(prompts["cold_start"]) & set(prompts["rl"])
    assert not set(prompts["eval"]) & (set(prompts["cold_start"]) | set(prompts["rl"]))


def test_heldout_bucket(splits):
    assert all(is_heldout(key_of(p), SMALL.heldout_permille) for p in splits["eval"])
    for name in ("cold_start", "rl"):
        assert not any(is_heldout(key_of(p), SMALL.heldout_permille) for p in splits[name]), name


def test_build_splits_deterministic(splits):
    again = build_splits(SMALL, seed=0)
    assert again == splits
    other = build_splits(SMALL, seed=1)
    assert [p.prompt for p in other["eval"]] != [p.prompt for p in splits["eval"]]
    assert overlap(other["eval"], other["cold_start"], other["rl"]) == 0


def test_build_splits_chat_style():
    cfg = SMALL.model_copy(update={"prompt_style": "chat", "eval_size": 10, "cold_start_size": 1, "rl_pool_size": 1})
    problem = build_splits(cfg, seed=0)["eval"][0]
    system, user = problem.prompt
    assert system == {"role": "system", "content": R1_SYSTEM_PROMPT}
    assert user == {"role": "user", "content": json.loads(problem.entry)["question"]}


def test_build_splits_too_few_unique_problems():
    cfg = DataConfig(
        task_config={"min_terms": 2, "max_terms": 2, "min_digits": 1, "max_digits": 1},
        eval_size=200,
        cold_start_size=1,
        rl_pool_size=1,
    )
    with pytest.raises(ValueError, match="unique"):  # at most 10 * 10 * 2 = 200 expressions, 10% held out
        build_splits(cfg, seed=0)


def test_overlap_counts_planted_prompts(splits):
    planted = splits["rl"] + [splits["eval"][3]]
    assert overlap(splits["eval"], splits["cold_start"], planted) == 1
    spaced = Problem(
        splits["eval"][4].prompt.replace("+", " + ").replace("-", " - "), "", "", ""
    )  # same question, other spacing
    assert overlap(splits["eval"], [spaced]) == 1
    assert overlap(splits["eval"], splits["eval"][:5], splits["eval"][:2]) == 5
    assert overlap(splits["eval"]) == 0


@pytest.mark.parametrize(
    ("expression", "expected"),
    [
        ("4+3-2", "4+3=7,7-2=5"),
        ("4 + 3 - 2", "4+3=7,7-2=5"),
        ("1-5-2", "1-5=-4,-4-2=-6"),
        ("4 - 1 - 7", "4-1=3,3-7=-4"),
        ("-3+5", "-3+5=2"),
        ("12+30-50+8", "12+30=42,42-50=-8,-8+8=0"),
        ("7", ""),
    ],
)
def test_worked_chain(expression, expected):
    assert worked_chain(expression) == expected


@pytest.mark.parametrize(("expression", "answer"), [("-1 + -8 - -9", "0"), ("3 + -8 - -7 + 8", "10")])
def test_worked_chain_negated_terms(expression, answer):
    assert worked_chain(expression).rsplit("=", 1)[-1] == answer


def test_cold_start_rows(splits):
    rows = cold_start_rows(splits["cold_start"])
    assert len(rows) == len(splits["cold_start"])
    for row, problem in zip(rows, splits["cold_start"], strict=True):
        assert set(row) == {"prompt", "completion"}
        assert row["prompt"] == problem.prompt
        chain = worked_chain(json.loads(problem.entry)["metadata"]["expression"])
        assert row["completion"] == f"<think>{chain}</think><answer>{problem.answer}</answer>"
        assert parse(row["completion"]).think == chain
        assert chain.rsplit("=", 1)[-1] == problem.answer  # the worked chain ends at the answer
        assert is_correct(row["completion"], problem.entry)
