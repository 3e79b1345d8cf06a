"""The checks that rewards, rejection sampling and evaluation all share.

A completion is in R1's format when it is exactly `<think>reasoning</think><answer>final</answer>` (whitespace
around the parts allowed, nothing else). It is correct only if it is in that format AND the reasoning-gym
scorer (or math-verify, for rows without a reasoning-gym entry) gives full marks: lenient checks get gamed.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass

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


def _math_verify(answer: str, gold: str) -> bool:
    """math-verify without its signal-based timeout (it raises outside the main thread)."""
    from math_verify import parse as mv_parse
    from math_verify import verify

    return bool(
        verify(mv_parse(gold, parsing_timeout=None), mv_parse(answer, parsing_timeout=None), timeout_seconds=None)
    )


def answer_is_correct(answer: str, entry: str | None, gold: str | None) -> bool:
    """Full marks from the reasoning-gym scorer of the entry's dataset, else math-verify against `gold`."""
    if entry:
        import reasoning_gym

        item = json.loads(entry)
        scorer = reasoning_gym.get_score_answer_fn(item["metadata"]["source_dataset"])
        return scorer(answer, item) >= 1.0
    if gold:
        return _math_verify(answer, gold)
    return False


def is_correct(completion: str | Parsed, entry: str | None, gold: str | None = None) -> bool:
    """Correct = in R1's format and the final answer verifies (a completion already parsed is not parsed again)."""
    parsed = completion if isinstance(completion, Parsed) else parse(completion)
    return parsed.well_formed and answer_is_correct(parsed.answer, entry, gold)


def longest_paragraph(text: str) -> int:
    """Characters in the longest blank-line-separated paragraph."""
    return max((len(p) for p in re.split(r"\n\s*\n", text)), default=0)
