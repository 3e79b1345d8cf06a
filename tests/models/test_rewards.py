"""models/rewards.py: TRL-signature rule rewards over string and conversational completions."""

from __future__ import annotations

import json

import pytest

from models.config import REWARD_NAMES
from models.rewards import (
    REWARDS,
    accuracy_reward,
    format_reward,
    general_quality_reward,
    language_consistency_reward,
)

ENTRY = json.dumps(
    {
        "question": "State the final answer to the following arithmetic problem: 5 + 9 + 7 =",
        "answer": "21",
        "metadata": {
            "source_dataset": "chain_sum",
            "source_index": 2,
            "num_terms": 3,
            "num_digits": 1,
            "expression": "5 + 9 + 7",
        },
    }
)
GOOD = "<think>5+9=14,14+7=21</think><answer>21</answer>"
WRONG = "<think>5+9=14,14+7=22</think><answer>22</answer>"


def chat(text: str) -> list[dict]:
    """A conversational completion as TRL passes it."""
    return [{"role": "assistant", "content": text}]


def test_rewards_registry_matches_config():
    assert tuple(REWARDS) == REWARD_NAMES
    for key, func in REWARDS.items():
        assert func.__name__ == f"{key}_reward"
    assert general_quality_reward.__name__ == "general_quality_reward"


@pytest.mark.parametrize(
    ("completion", "entry", "answer", "expected"),
    [
        (GOOD, ENTRY, "21", 1.0),
        (WRONG, ENTRY, "21", 0.0),
        ("21", ENTRY, "21", 0.0),  # right answer, no R1 format
        ("<think>x</think><answer>21</answer> done", ENTRY, "21", 0.0),  # text after </answer>
        (GOOD, None, "21", 1.0),  # math-verify on the gold answer
        ("<think>half</think><answer>0.5</answer>", None, "1/2", 1.0),
        ("<think>half</think><answer>0.25</answer>", None, "1/2", 0.0),
        (GOOD, None, None, None),  # nothing to verify against
        (GOOD, "", "", None),
    ],
)
def test_accuracy_reward(completion, entry, answer, expected):
    assert accuracy_reward([completion], entry=[entry], answer=[answer]) == [expected]


def test_accuracy_reward_batch_and_missing_columns():
    completions = [GOOD, WRONG, "21", GOOD]
    entries = [ENTRY, ENTRY, ENTRY, None]
    answers = ["21", "21", "21", None]
    assert accuracy_reward(completions, entry=entries, answer=answers) == [1.0, 0.0, 0.0, None]
    # general prompts have neither column: nothing is verifiable
    assert accuracy_reward([GOOD, WRONG]) == [None, None]
    # extra dataset columns are ignored
    assert accuracy_reward([GOOD], entry=[ENTRY], answer=["21"], language=["en"], task=["x"]) == [1.0]


def test_accuracy_reward_conversational():
    assert accuracy_reward([chat(GOOD), chat(WRONG)], entry=[ENTRY, ENTRY], answer=["21", "21"]) == [1.0, 0.0]
    # only the last message counts
    messages = [{"role": "assistant", "content": GOOD}, {"role": "assistant", "content": "21"}]
    assert accuracy_reward([messages], entry=[ENTRY], answer=["21"]) == [0.0]


@pytest.mark.parametrize(
    ("completion", "expected"),
    [
        (GOOD, 1.0),
        (WRONG, 1.0),  # format only
        (" <think>a</think>\n<answer>b</answer>\n", 1.0),
        ("21", 0.0),
        ("<think>a</think>", 0.0),
        ("<think>a</think><answer>b</answer>!", 0.0),
        (chat(GOOD), 1.0),
        (chat("21"), 0.0),
    ],
)
def test_format_reward(completion, expected):
    assert format_reward([completion]) == [expected]
    assert format_reward(completions=[completion], prompts=["p"], entry=[None]) == [expected]


@pytest.mark.parametrize(
    ("completion", "language", "expected"),
    [
        ("<think>add five and nine</think><answer>14</answer>", "en", 1.0),
        ("<think>add five and nine</think><answer>14</answer>", "zh", 0.0),
        ("<think>先 加 五 和 九</think><answer>14</answer>", "zh", 1.0),
        ("<think>先 加 五 和 九</think><answer>14</answer>", "en", 0.0),
        ("<think>add 五 and 九</think><answer>14</answer>", "en", 0.5),
        ("<think>5+9=14</think><answer>14</answer>", "zh", 1.0),  # no words at all
        ("add five and nine, 14", "en", 0.0),  # unformatted
        (chat("<think>add 五 and nine</think><answer>14</answer>"), "en", 0.75),
    ],
)
def test_language_consistency_reward(completion, language, expected):
    assert language_consistency_reward([completion], language=[language]) == [pytest.approx(expected)]


def test_language_consistency_reward_per_row_language_and_default():
    completions = ["<think>add them</think><answer>1</answer>", "<think>加 起来</think><answer>1</answer>"]
    assert language_consistency_reward(completions, language=["en", "zh"]) == [1.0, 1.0]
    assert language_consistency_reward(completions, language=["zh", "en"]) == [0.0, 0.0]
    assert language_consistency_reward(completions) == [1.0, 0.0]  # default: English


LONG_ANSWER = "x" * 121


@pytest.mark.parametrize(
    ("completion", "expected"),
    [
        (GOOD, 1.0),
        ("<think>a</think><answer>" + "x" * 120 + "</answer>", 1.0),  # 120 characters is still concise
        ("<think>a</think><answer>" + LONG_ANSWER + "</answer>", 0.75),  # long answer
        ("<think>a</think><answer>```print(1)```</answer>", 0.75),  # code fence in the answer
        ("<think>\nstep\nstep\n</think><answer>1</answer>", 0.75),  # repeated line
        ("<think>" + "a" * 420 + "</think><answer>1</answer>", 1.0),  # 20 * 1 + 400 allowed
        ("<think>" + "a" * 421 + "</think><answer>1</answer>", 0.75),  # think too long for the answer
        ("<think>a</think><answer>```" + LONG_ANSWER + "</answer>", 0.5),  # two defects
        ("<think>\nsame\nsame\n</think><answer>```" + LONG_ANSWER + "</answer>", 0.25),  # three defects
        ("no format at all", 0.0),
        (chat("<think>a</think><answer>```1```</answer>"), 0.75),
    ],
)
def test_general_quality_reward(completion, expected):
    assert general_quality_reward([completion]) == [pytest.approx(expected)]


def test_rewards_return_one_value_per_completion():
    completions = [GOOD, WRONG, "x", chat(GOOD)]
    kwargs = {"entry": [ENTRY] * 4, "answer": ["21"] * 4, "language": ["en"] * 4}
    for func in [*REWARDS.values(), general_quality_reward]:
        assert len(func(completions=completions, **kwargs)) == len(completions), func.__name__
