"""Rule rewards with TRL's reward-function signature; their names become TRL's `rewards/<name>/mean` metrics.

Dataset columns reach them as keyword lists: `entry` (reasoning-gym entry JSON, or None for general prompts),
`answer` (gold answer), `language` (target language of the reasoning).
"""

from __future__ import annotations

from collections.abc import Callable

from models.verifiers import (
    CODE_FENCE,
    is_correct,
    language_consistency,
    parse,
)


def _text(completion) -> str:
    """A completion as text: TRL passes strings, or message lists for conversational data."""
    return completion if isinstance(completion, str) else completion[-1]["content"]


def accuracy_reward(completions, entry=None, answer=None, **_) -> list[float | None]:
    """1 if the completion is in R1's format and its answer verifies; None where nothing can be verified."""
    rewards: list[float | None] = []
    for i, completion in enumerate(completions):
        item, gold = (entry[i] if entry else None), (answer[i] if answer else None)
        if not item and not gold:
            rewards.append(None)
            continue
        rewards.append(float(is_correct(_text(completion), item, gold)))
    return rewards


def format_reward(completions, **_) -> list[float]:
    """1 if the completion is exactly <think>...</think><answer>...</answer>."""
    return [float(parse(_text(c)).well_formed) for c in completions]


def language_consistency_reward(completions, language=None, **_) -> list[float]:
    """Share of target-language words in the reasoning (R1's language-consistency reward); 0 if unformatted."""
    rewards = []
    for i, completion in enumerate(completions):
        parsed = parse(_text(completion))
        rewards.append(language_consistency(parsed.think, language[i] if language else "en") if parsed.think else 0.0)
    return rewards


def general_quality_reward(completions, **_) -> list[float]:
    """Rule-based proxy for a helpfulness reward model: a well-formed, concise answer with no code fence and no
    repeated lines scores 1; each defect costs a share. Used where the recipe names no reward model."""
    rewards = []
    for completion in completions:
        text = _text(completion)
        parsed = parse(text)
        if not parsed.well_formed:
            rewards.append(0.0)
            continue
        lines = [line for line in text.splitlines() if line.strip()]
        defects = [
            len(parsed.answer) > 120,
            CODE_FENCE in parsed.answer,
            len(set(lines)) < len(lines),
            len(parsed.think) > 20 * max(1, len(parsed.answer)) + 400,
        ]
        rewards.append(1.0 - sum(defects) / len(defects))
    return rewards


REWARDS: dict[str, Callable] = {
    "accuracy": accuracy_reward,
    "format": format_reward,
    "language_consistency": language_consistency_reward,
}
