"""models/evaluate.py: pass@1, pass@k, majority vote, cons@k and per-prompt rows, on hand-computed cases."""

from __future__ import annotations

import json

import pytest

from models.data import Problem
from models.evaluate import cons_at_k, majority_answer, pass_at_1, pass_at_k, score_prompt, summarize
from models.guard_config import IsolationConfig
from models.verifier_isolation import Verifier

T, F = True, False


@pytest.mark.parametrize(
    ("verdicts", "p1", "pk"),
    [
        ([[T, F, F, F], [T, T, T, T]], 0.625, 1.0),
        ([[F, F], [T, F], [F, F]], 1 / 6, 1 / 3),
        ([[F, F, F, F]], 0.0, 0.0),
        ([[T]], 1.0, 1.0),
        ([[T, T], [F, F]], 0.5, 0.5),
        ([[F, T, F, F], [F, F, F, F], [T, T, F, F], [F, F, F, T]], (0.25 + 0 + 0.5 + 0.25) / 4, 0.75),
    ],
)
def test_pass_at_1_and_k(verdicts, p1, pk):
    assert pass_at_1(verdicts) == pytest.approx(p1)
    assert pass_at_k(verdicts) == pytest.approx(pk)


@pytest.mark.parametrize(
    ("answers", "expected"),
    [
        (["3", "4", "4"], "4"),
        (["3", "4", "4", "3"], "3"),  # tie: the answer seen first wins
        (["4", "3", "3", "4"], "4"),
        (["1", "2", "3"], "1"),
        ([None, "5", None, None], "5"),  # None is no vote, however frequent
        (["", "", "7"], "7"),  # empty answers are no vote either
        ([None, "", None], None),
        ([], None),
        (["-4", "-4.0", "-4.0"], "-4.0"),  # votes compare the answer strings
        ([None, "b", "a", "a", "b"], "b"),
    ],
)
def test_majority_answer(answers, expected):
    assert majority_answer(answers) == expected


@pytest.mark.parametrize(
    ("voted_correct", "expected"),
    [([T, F, T, T], 0.75), ([F], 0.0), ([T, T], 1.0), ([F, T, F], 1 / 3)],
)
def test_cons_at_k(voted_correct, expected):
    assert cons_at_k(voted_correct) == pytest.approx(expected)


PROBLEM = Problem(
    prompt="Q:4-1-7\nA:",
    answer="-4",
    task="chain_sum",
    entry=json.dumps(
        {
            "question": "State the final answer to the following arithmetic problem: 4 - 1 - 7 =",
            "answer": "-4",
            "metadata": {
                "source_dataset": "chain_sum",
                "source_index": 0,
                "num_terms": 3,
                "num_digits": 1,
                "expression": "4 - 1 - 7",
            },
        }
    ),
)


VERIFIER = Verifier(IsolationConfig(isolated=False), "evaluation")  # in this process: no worker to fork


def test_score_prompt():
    completions = [
        "<think>first 4-1=3, then 3-7=-4</think><answer>-4</answer>",  # correct
        "<think>4-1=3,3-7=-4</think><answer>-4</answer>",  # correct, no words
        "<think>add 四 and seven</think><answer>1</answer>",  # wrong, 3 of 4 words English
        "-4",  # right number, wrong format
    ]
    row = score_prompt(PROBLEM, completions, "en", VERIFIER)
    assert row["prompt"] == "Q:4-1-7\nA:"
    assert row["answer"] == "-4"
    assert row["samples"] == completions
    assert row["verdicts"] == [T, T, F, F]
    assert row["voted"] == "-4"
    assert row["voted_correct"] is True
    assert row["well_formed"] == [T, T, T, F]
    assert row["language"] == pytest.approx([1.0, 1.0, 0.75, 0.0])


def test_score_prompt_wrong_majority_and_chat_prompt():
    chat_problem = Problem([{"role": "user", "content": "4 - 1 - 7 ="}], PROBLEM.answer, "chain_sum", PROBLEM.entry)
    completions = [
        "<think>a</think><answer>1</answer>",
        "<think>b</think><answer>-4</answer>",
        "<think>c</think><answer>1</answer>",
        "garbage",
    ]
    row = score_prompt(chat_problem, completions, "en", VERIFIER)
    assert json.loads(row["prompt"]) == [{"role": "user", "content": "4 - 1 - 7 ="}]
    assert row["verdicts"] == [F, T, F, F]
    assert row["voted"] == "1"
    assert row["voted_correct"] is False


def test_score_prompt_no_well_formed_sample():
    row = score_prompt(PROBLEM, ["-4", "<think>x</think>"], "en", VERIFIER)
    assert row["voted"] is None
    assert row["voted_correct"] is False
    assert row["verdicts"] == [F, F]
    assert row["language"] == [0.0, 0.0]


def test_summarize_hand_built_rows():
    rows = [
        {
            "verdicts": [T, F],
            "voted_correct": True,
            "well_formed": [T, T],
            "language": [1.0, 0.5],
            "samples": ["ab", "abcd"],
        },
        {
            "verdicts": [F, F],
            "voted_correct": False,
            "well_formed": [T, F],
            "language": [1.0, 0.0],
            "samples": ["abcdef", "ab"],
        },
    ]
    assert summarize(rows) == pytest.approx(
        {
            "eval/pass_at_1": 0.25,
            "eval/cons_at_k": 0.5,
            "eval/pass_at_k": 0.5,
            "eval/format_rate": 0.75,
            "eval/language_consistency": 0.625,
            "eval/mean_completion_chars": 3.5,
            "eval/num_prompts": 2.0,
            "eval/k": 2.0,
        }
    )


def test_summarize_score_prompt_rows():
    good = "<think>4-1=3,3-7=-4</think><answer>-4</answer>"
    bad = "<think>4-1=3,3-7=-5</think><answer>-5</answer>"
    rows = [
        score_prompt(PROBLEM, [good, bad, bad], "en", VERIFIER),
        score_prompt(PROBLEM, [good, good, "-4"], "en", VERIFIER),
    ]
    metrics = summarize(rows)
    assert metrics["eval/pass_at_1"] == pytest.approx((1 / 3 + 2 / 3) / 2)
    assert metrics["eval/cons_at_k"] == 0.5  # first prompt votes -5, second -4
    assert metrics["eval/pass_at_k"] == 1.0
    assert metrics["eval/format_rate"] == pytest.approx(5 / 6)
    assert metrics["eval/k"] == 3.0
    assert metrics["eval/mean_completion_chars"] == pytest.approx((3 * len(good) + 2 * len(bad) + 2) / 6)
