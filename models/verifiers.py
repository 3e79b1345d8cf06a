"""The checks that rewards, rejection sampling and evaluation all share.

A completion is in R1's format when it is exactly `<think>reasoning</think><answer>final</answer>` (whitespace
around the parts allowed, nothing else). It is correct only if it is in that format AND the reasoning-gym
scorer or the verifier its problem names (exact, numeric, math_verify; models/config.py's ProblemFile) gives full
marks: lenient checks get gamed. Rows with a gold answer and no entry are checked with math-verify.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from fractions import Fraction

_NO_TAG = r"(?:(?!</?(?:think|answer)>).)+"  # text that contains none of R1's tags
R1_FORMAT = re.compile(
    rf"^\s*<think>(?P<think>{_NO_TAG})</think>\s*<answer>(?P<answer>{_NO_TAG})</answer>\s*$", re.DOTALL
)
_WORD = re.compile(r"[^\W\d_]+", re.UNICODE)
_SCRIPTS = {
    "en": lambda ch: ch.isascii(),
    "zh": lambda ch: "\u4e00" <= ch <= "\u9fff" or "\u3400" <= ch <= "\u4dbf",
}
CODE_FENCE = "```"


@dataclass(frozen=True)
class Parsed:
    """A completion split into R1's two parts (None where the format does not hold)."""

    think: str | None
    answer: str | None

    @property
    def well_formed(self) -> bool:
        return self.think is not None


def parse(completion: str) -> Parsed:
    match = R1_FORMAT.match(completion)
    if not match:
        return Parsed(None, None)
    return Parsed(match["think"].strip(), match["answer"].strip())


def language_consistency(text: str, language: str = "en") -> float:
    """Share of words in `text` written in the target language's script (1.0 when there are no words)."""
    words = _WORD.findall(text)
    if not words:
        return 1.0
    in_script = _SCRIPTS[language]
    return sum(all(in_script(ch) for ch in word) for word in words) / len(words)


def _latex(text: str) -> str:
    """math-verify reads LaTeX only between delimiters: wrap bare text in $...$ (a \\boxed{} is found as is)."""
    return text if "$" in text or "\\boxed" in text else f"${text}$"


def math_verify_match(answer: str, gold: str) -> bool:
    """Symbolic equivalence through math-verify, without its signal-based timeout (it raises outside the main
    thread): `\\frac{1}{2}` = `0.5` = `1/2`, `\\boxed{x}` is read, `(x+1)^2` = `x^2+2x+1`."""
    from math_verify import parse as mv_parse
    from math_verify import verify

    gold_parsed = mv_parse(_latex(gold), parsing_timeout=None)
    return bool(verify(gold_parsed, mv_parse(_latex(answer), parsing_timeout=None), timeout_seconds=None))


def _number(text: str) -> Fraction | None:
    """`1,234`, `$12.50`, `45%`, `3/4`, `-2` as an exact number; None if the text is not one number."""
    cleaned = text.strip().removeprefix("$").removesuffix("%").removesuffix(".").replace(",", "").strip()
    try:
        return Fraction(cleaned)
    except (ValueError, ZeroDivisionError):
        return None


def numeric_match(answer: str, gold: str, tolerance: float = 1e-6) -> bool:
    """The same number within a relative tolerance: |answer - gold| <= tolerance * max(1, |gold|)."""
    got, want = _number(answer), _number(gold)
    if got is None or want is None:
        return False
    return abs(got - want) <= Fraction(str(tolerance)) * max(1, abs(want))


def exact_match(answer: str, gold: str) -> bool:
    """The same text once trimmed, with runs of whitespace collapsed to one space."""
    return " ".join(answer.split()) == " ".join(gold.split())


def verify_answer(answer: str, gold: str, verifier: str = "math_verify", tolerance: float = 1e-6) -> bool:
    """Check a final answer against the reference with one of VERIFIERS."""
    if verifier == "numeric":
        return numeric_match(answer, gold, tolerance)
    return VERIFIERS[verifier](answer, gold)


VERIFIERS = {"exact": exact_match, "numeric": numeric_match, "math_verify": math_verify_match}


def answer_is_correct(answer: str, entry: str | None, gold: str | None) -> bool:
    """Full marks from the reasoning-gym scorer of the entry's dataset, or from the verifier the entry names
    (problems from a file: {"verifier": ..., "tolerance": ...}), else math-verify against `gold`."""
    item = json.loads(entry) if entry else {}
    if "metadata" in item:
        import reasoning_gym

        scorer = reasoning_gym.get_score_answer_fn(item["metadata"]["source_dataset"])
        return scorer(answer, item) >= 1.0
    if gold:
        return verify_answer(answer, gold, item.get("verifier", "math_verify"), item.get("tolerance", 1e-6))
    return False


def is_correct(completion: str | Parsed, entry: str | None, gold: str | None = None) -> bool:
    """Correct = in R1's format and the final answer verifies (a completion already parsed is not parsed again)."""
    parsed = completion if isinstance(completion, Parsed) else parse(completion)
    return parsed.well_formed and answer_is_correct(parsed.answer, entry, gold)


def longest_paragraph(text: str) -> int:
    """Characters in the longest blank-line-separated paragraph."""
    return max((len(p) for p in re.split(r"\n\s*\n", text)), default=0)
