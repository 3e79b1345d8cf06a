"""models/rejection.py: why samples are rejected, and what select() keeps and counts."""

from __future__ import annotations

import json

import pytest

from models.config import RejectionSamplingStage
from models.data import Problem
from models.rejection import rejection_reason, select
from models.verifiers import is_correct


def chain_sum_problem(expression: str, answer: str) -> Problem:
    entry = {
        "question": f"State the final answer to the following arithmetic problem: {expression} =",
        "answer": answer,
        "metadata": {
            "source_dataset": "chain_sum",
            "source_index": 0,
            "num_terms": 3,
            "num_digits": 1,
            "expression": expression,
        },
    }
    return Problem(f"Q:{expression.replace(' ', '')}\nA:", answer, "chain_sum", json.dumps(entry))


P1 = chain_sum_problem("4 - 1 - 7", "-4")
P2 = chain_sum_problem("3 - 7", "-4")  # same answer as P1, different prompt
P3 = chain_sum_problem("5 + 9 + 7", "21")
CFG = RejectionSamplingStage(max_paragraph_chars=40)

GOOD = "<think>4-1=3,3-7=-4</think><answer>-4</answer>"
GOOD_TWO_PARAGRAPHS = (
    "<think>first take four minus one gives 3\n\nthen three minus seven gives -4</think><answer>-4</answer>"
)
WRONG = "<think>4-1=3,3-7=-5</think><answer>-5</answer>"
UNFORMATTED = "-4"
MIXED = "<think>先 4-1=3, then 3-7=-4</think><answer>-4</answer>"
OVERLONG = "<think>" + "take four and subtract one then seven " * 2 + "</think><answer>-4</answer>"
CODE = "<think>```4-1-7```</think><answer>-4</answer>"


def _reason(completion: str, cfg: RejectionSamplingStage, language: str) -> str | None:
    return rejection_reason(completion, is_correct(completion, P1.entry, P1.answer), cfg, language)


@pytest.mark.parametrize(
    ("completion", "expected"),
    [
        (GOOD, None),
        (GOOD_TWO_PARAGRAPHS, None),  # each paragraph is under 40 characters
        (WRONG, "incorrect"),
        (UNFORMATTED, "incorrect"),
        ("<think>x</think><answer>-4</answer> extra", "incorrect"),
        (MIXED, "mixed_language"),
        (OVERLONG, "overlong_paragraph"),
        (CODE, "code_block"),
        # order of the checks: incorrectness is reported before readability problems
        ("<think>先 ```" + "a" * 50 + "```</think><answer>-5</answer>", "incorrect"),
        ("<think>先 ```" + "a" * 50 + "```</think><answer>-4</answer>", "mixed_language"),
        ("<think>```" + "a" * 50 + "```</think><answer>-4</answer>", "overlong_paragraph"),
    ],
)
def test_rejection_reason(completion, expected):
    assert _reason(completion, CFG, "en") == expected


def test_rejection_reason_thresholds():
    assert _reason(CODE, CFG.model_copy(update={"drop_code_blocks": False}), "en") is None
    assert _reason(OVERLONG, RejectionSamplingStage(max_paragraph_chars=2000), "en") is None
    # 1 of 3 words is Chinese: kept at threshold 0.5, dropped at the default 0.95
    mixed = "<think>先 compute then</think><answer>-4</answer>"
    assert _reason(mixed, CFG, "en") == "mixed_language"
    assert _reason(mixed, CFG.model_copy(update={"min_language_consistency": 0.5}), "en") is None
    # the target language decides which script counts
    chinese = "<think>先 算 4-1=3, 再 算 3-7=-4</think><answer>-4</answer>"
    assert _reason(chinese, CFG, "zh") is None
    assert _reason(chinese, CFG, "en") == "mixed_language"


def test_select_counts_and_kept_rows():
    samples = [
        [GOOD, "  " + GOOD + "\n", WRONG, UNFORMATTED, MIXED, OVERLONG, CODE, GOOD_TWO_PARAGRAPHS, GOOD],
        [GOOD, WRONG],  # the same completion for another prompt is not a duplicate
        [WRONG, GOOD, MIXED],  # nothing correct for 5 + 9 + 7 = 21
    ]
    kept, stats = select([P1, P2, P3], samples, CFG, "en")

    assert kept == [
        {"prompt": P1.prompt, "completion": GOOD, "answer": "-4"},
        {"prompt": P1.prompt, "completion": GOOD_TWO_PARAGRAPHS, "answer": "-4"},
        {"prompt": P2.prompt, "completion": GOOD, "answer": "-4"},
    ]
    assert stats == {
        "prompts": 3,
        "sampled": 14,
        "kept": 3,
        "kept_ratio": pytest.approx(3 / 14),
        "prompts_covered": 2,
        "dropped_incorrect": 2 + 1 + 3,
        "dropped_mixed_language": 1,
        "dropped_overlong_paragraph": 1,
        "dropped_code_block": 1,
        "dropped_duplicate": 2,
        "verifier_failures": 0,
        "verifier_failures/error": 0,
        "verifier_failures/timeout": 0,
    }
    assert stats["sampled"] == stats["kept"] + sum(v for k, v in stats.items() if k.startswith("dropped_"))


def test_select_keeps_code_blocks_when_allowed():
    kept, stats = select([P1], [[CODE, CODE]], CFG.model_copy(update={"drop_code_blocks": False}), "en")
    assert [row["completion"] for row in kept] == [CODE]
    assert stats["dropped_code_block"] == 0
    assert stats["dropped_duplicate"] == 1


def test_select_nothing_sampled():
    kept, stats = select([], [], CFG, "en")
    assert kept == []
    assert stats["sampled"] == 0 and stats["kept_ratio"] == 0.0 and stats["prompts_covered"] == 0


def test_select_requires_one_sample_list_per_problem():
    with pytest.raises(ValueError):
        select([P1, P2], [[GOOD]], CFG, "en")
