"""models/verifiers.py: R1 format parsing, language consistency, answer verification, paragraph length."""

from __future__ import annotations

import json

import pytest

from models.verifiers import (
    answer_is_correct,
    is_correct,
    language_consistency,
    longest_paragraph,
    numeric_match,
    parse,
    verify_answer,
)


def chain_sum_entry(expression: str, answer: str) -> str:
    """A reasoning-gym chain_sum entry as JSON, the way models.data stores it."""
    return json.dumps(
        {
            "question": f"State the final answer to the following arithmetic problem: {expression} =",
            "answer": answer,
            "metadata": {
                "source_dataset": "chain_sum",
                "source_index": 0,
                "num_terms": len(expression.split()) // 2 + 1,
                "num_digits": 1,
                "expression": expression,
            },
        }
    )


ENTRY = chain_sum_entry("4 - 1 - 7", "-4")  # 4 - 1 - 7 = -4


@pytest.mark.parametrize(
    ("completion", "think", "answer"),
    [
        ("<think>4-1=3,3-7=-4</think><answer>-4</answer>", "4-1=3,3-7=-4", "-4"),
        ("  \n<think> a b </think>\n\n <answer> 7 </answer>\n  ", "a b", "7"),  # whitespace around parts
        ("<think>line1\n\nline2</think><answer>x\ny</answer>", "line1\n\nline2", "x\ny"),  # multi-line parts
        ("<think>a</think>\t<answer>1</answer>", "a", "1"),
    ],
)
def test_parse_well_formed(completion, think, answer):
    parsed = parse(completion)
    assert parsed.well_formed
    assert (parsed.think, parsed.answer) == (think, answer)


@pytest.mark.parametrize(
    "completion",
    [
        "",
        "-4",
        "<answer>-4</answer>",  # no think
        "<think>4-1=3</think>",  # no answer
        "<think>4-1=3</think>-4",  # answer without tags
        "<think></think><answer>-4</answer>",  # empty think
        "<think>x</think><answer></answer>",  # empty answer
        "<think>x</think><answer>-4</answer> and that is it",  # text after </answer>
        "So: <think>x</think><answer>-4</answer>",  # text before <think>
        "<answer>-4</answer><think>x</think>",  # parts swapped
        "<think>x</think>between<answer>-4</answer>",  # text between the parts
        "<think>x<answer>-4</answer>",  # unclosed think
        "<think>x</think><answer>-4",  # unclosed answer
        "<THINK>x</THINK><ANSWER>-4</ANSWER>",  # tags are case-sensitive
    ],
)
def test_parse_malformed(completion):
    parsed = parse(completion)
    assert not parsed.well_formed
    assert parsed.think is None and parsed.answer is None


DUPLICATED = [
    "<think>x</think><answer>1</answer><answer>7</answer>",
    "<think>x</think><answer>7</answer><answer>7</answer>",
    "<think>x</think><answer>1</answer></answer><answer>7</answer>",
    "<think>x</think><answer>7</answer>" + "</answer><answer>7</answer>" * 3,
    "<think>a</think><think>b</think><answer>7</answer>",
]


@pytest.mark.parametrize("completion", DUPLICATED)
def test_parse_rejects_duplicated_blocks(completion):
    assert not parse(completion).well_formed


def test_repeated_answer_blocks_are_not_correct():
    assert not is_correct("<think>x</think><answer>7</answer><answer>7</answer>", None, "7")


@pytest.mark.parametrize(
    ("text", "language", "expected"),
    [
        ("first add four and three", "en", 1.0),
        ("first add four and three", "zh", 0.0),
        ("我们 先 计算", "zh", 1.0),
        ("我们 先 计算", "en", 0.0),
        ("Hello 世界", "en", 0.5),
        ("Hello 世界", "zh", 0.5),
        ("we 先 add 然后 done", "en", 0.6),
        ("we 先 add 然后 done", "zh", 0.4),
        ("计算sum", "en", 0.0),  # one word mixing scripts counts for neither
        ("计算sum", "zh", 0.0),
        ("4+3=7, 7-2=5", "en", 1.0),  # digits and punctuation are not words
        ("4+3=7, 7-2=5", "zh", 1.0),
        ("", "en", 1.0),
        ("   \n ", "zh", 1.0),
        ("café au lait", "en", 2 / 3),  # non-ASCII Latin letters are not English script
    ],
)
def test_language_consistency(text, language, expected):
    assert language_consistency(text, language) == pytest.approx(expected)


def test_language_consistency_unknown_language_raises():
    with pytest.raises(KeyError):
        language_consistency("hello", "fr")


@pytest.mark.parametrize(
    ("answer", "expected"),
    [
        ("-4", True),
        ("-4.0", True),
        ("4", False),
        ("-5", False),
        ("minus four", False),
        ("", False),
    ],
)
def test_answer_is_correct_with_reasoning_gym_entry(answer, expected):
    assert answer_is_correct(answer, ENTRY, None) is expected


def test_entry_wins_over_gold():
    # the reasoning-gym entry decides even when a (contradicting) gold answer is given
    assert answer_is_correct("-4", ENTRY, "99") is True
    assert answer_is_correct("99", ENTRY, "99") is False


@pytest.mark.parametrize(
    ("answer", "gold", "expected"),
    [
        ("0.5", "1/2", True),
        ("1/2", "1/2", True),
        ("\\frac{1}{2}", "1/2", True),
        ("0.5", "\\frac{1}{2}", True),
        ("$\\frac{1}{2}$", "0.5", True),
        ("1/3", "1/2", False),
        ("0.25", "\\frac{1}{2}", False),
        ("21", "21", True),
        ("12", "21", False),
    ],
)
def test_answer_is_correct_with_math_verify_gold(answer, gold, expected):
    assert answer_is_correct(answer, None, gold) is expected


def file_entry(verifier: str, tolerance: float = 1e-6) -> str:
    """A problem file's entry as models.problems stores it."""
    return json.dumps({"verifier": verifier, "tolerance": tolerance})


# GSM8K-style final answers (numbers, as the text after `####`), MATH-style (LaTeX, as in \boxed{}), short text
@pytest.mark.parametrize(
    ("answer", "gold", "verifier", "expected"),
    [
        ("72", "72", "numeric", True),
        ("72.0", "72", "numeric", True),
        ("$72", "72", "numeric", True),
        ("6,000", "6000", "numeric", True),
        ("18.", "18", "numeric", True),
        ("45%", "45", "numeric", True),
        ("3/4", "0.75", "numeric", True),
        ("71", "72", "numeric", False),
        ("seventy-two", "72", "numeric", False),
        ("72 clips", "72", "numeric", False),
        ("\\frac{5}{6}", "\\frac{5}{6}", "math_verify", True),
        ("\\dfrac{5}{6}", "\\frac{5}{6}", "math_verify", True),
        ("\\boxed{\\frac{5}{6}}", "\\frac{5}{6}", "math_verify", True),
        ("10/12", "\\frac{5}{6}", "math_verify", True),
        ("0.8333", "\\frac{5}{6}", "math_verify", False),
        ("3\\sqrt{2}", "\\sqrt{18}", "math_verify", True),
        ("\\frac{\\pi}{2}", "\\pi/2", "math_verify", True),
        ("(x+1)^2", "x^2+2x+1", "math_verify", True),
        ("\\left( 3, \\frac{\\pi}{2} \\right)", "(3,\\frac{\\pi}{2})", "math_verify", True),
        ("x=2", "2", "math_verify", True),
        ("\\frac{6}{5}", "\\frac{5}{6}", "math_verify", False),
        ("blue", "blue", "exact", True),
        ("  blue\n", "blue", "exact", True),
        ("Blue", "blue", "exact", False),
        ("dark  blue", "dark blue", "exact", True),
    ],
)
def test_file_problem_verifiers(answer, gold, verifier, expected):
    assert answer_is_correct(answer, file_entry(verifier), gold) is expected
    assert verify_answer(answer, gold, verifier) is expected


@pytest.mark.parametrize(
    ("answer", "gold", "tolerance", "expected"),
    [("3.14", "3.14159", 1e-3, True), ("3.14", "3.14159", 1e-6, False), ("1000001", "1000000", 1e-6, True)],
)
def test_numeric_tolerance(answer, gold, tolerance, expected):
    assert numeric_match(answer, gold, tolerance) is expected
    assert answer_is_correct(answer, file_entry("numeric", tolerance), gold) is expected


def test_one_verifier_for_rewards_rejection_and_evaluation():
    from models.rewards import accuracy_reward

    completions = ["<think>48/2=24,48+24=72</think><answer>72</answer>", "<think>x</think><answer>70</answer>"]
    entry = file_entry("numeric")
    assert accuracy_reward(completions, entry=[entry, entry], answer=["72", "72"]) == [1.0, 0.0]
    assert [is_correct(c, entry, "72") for c in completions] == [True, False]


@pytest.mark.parametrize(("entry", "gold"), [(None, None), ("", None), (None, ""), ("", "")])
def test_answer_is_correct_without_reference_is_false(entry, gold):
    assert answer_is_correct("-4", entry, gold) is False


@pytest.mark.parametrize(
    ("completion", "entry", "gold", "expected"),
    [
        ("<think>4-1=3,3-7=-4</think><answer>-4</answer>", ENTRY, None, True),
        ("<think>4-1=3,3-7=-4</think><answer>-5</answer>", ENTRY, None, False),
        ("-4", ENTRY, None, False),  # right answer, wrong format
        ("<think>x</think><answer>-4</answer> trailing", ENTRY, None, False),
        ("<think>half</think><answer>0.5</answer>", None, "1/2", True),
        ("<think>half</think> <answer>\\frac{1}{2}</answer>", None, "0.5", True),
        ("0.5", None, "1/2", False),
        ("<think>x</think><answer>-4</answer>", None, None, False),
    ],
)
def test_is_correct(completion, entry, gold, expected):
    assert is_correct(completion, entry, gold) is expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("", 0),
        ("abc", 3),
        ("abc\ndefgh", 9),  # a single newline does not split paragraphs
        ("abc\n\ndefgh", 5),
        ("abcdef\n   \nxy", 6),  # a whitespace-only line separates paragraphs
        ("a\n\n\n\nbcd\n\nef", 3),
    ],
)
def test_longest_paragraph(text, expected):
    assert longest_paragraph(text) == expected
