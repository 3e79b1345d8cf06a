"""R1's evaluation protocol on the held-out split: k samples per prompt (temperature 0.6, top-p 0.95 by default),
pass@1 = mean correctness over the k samples, cons@k = correctness of the majority-voted answer.

Metric keys are the same for every stage: eval/pass_at_1, eval/cons_at_k, eval/pass_at_k, eval/format_rate,
eval/language_consistency, eval/mean_completion_chars.
"""

from __future__ import annotations

import json
from collections import Counter

from models.config import EvalConfig
from models.data import Problem
from models.generation import sample
from models.verifier_isolation import Verifier
from models.verifiers import language_consistency, parse


def pass_at_1(verdicts: list[list[bool]]) -> float:
    """Mean over prompts of the share of correct samples."""
    return sum(sum(v) / len(v) for v in verdicts) / len(verdicts)


def pass_at_k(verdicts: list[list[bool]]) -> float:
    """Share of prompts with at least one correct sample among k."""
    return sum(any(v) for v in verdicts) / len(verdicts)


def majority_answer(answers: list[str | None]) -> str | None:
    """Most frequent non-empty answer; ties go to the answer seen first."""
    counts = Counter(a for a in answers if a)
    if not counts:
        return None
    best = max(counts.values())
    return next(a for a in answers if a and counts[a] == best)


def cons_at_k(voted_correct: list[bool]) -> float:
    """Share of prompts whose majority-voted answer is correct."""
    return sum(voted_correct) / len(voted_correct)


def score_prompt(problem: Problem, completions: list[str], language: str, verifier: Verifier) -> dict:
    """Verdicts and statistics of one prompt's samples (one row of the per-prompt table)."""
    parsed = [parse(c) for c in completions]
    verdicts = verifier.completions_correct(completions, [problem] * len(completions))
    voted = majority_answer([p.answer for p in parsed])
    return {
        "prompt": problem.prompt if isinstance(problem.prompt, str) else json.dumps(problem.prompt),
        "answer": problem.answer,
        "samples": completions,
        "verdicts": verdicts,
        "voted": voted,
        "voted_correct": voted is not None and verifier.answers_correct([voted], [problem])[0],
        "well_formed": [p.well_formed for p in parsed],
        "language": [language_consistency(p.think, language) if p.think else 0.0 for p in parsed],
    }


def summarize(rows: list[dict]) -> dict[str, float]:
    verdicts = [r["verdicts"] for r in rows]
    flat = lambda key: [x for r in rows for x in r[key]]  # noqa: E731
    return {
        "eval/pass_at_1": pass_at_1(verdicts),
        "eval/cons_at_k": cons_at_k([r["voted_correct"] for r in rows]),
        "eval/pass_at_k": pass_at_k(verdicts),
        "eval/format_rate": sum(flat("well_formed")) / len(flat("well_formed")),
        "eval/language_consistency": sum(flat("language")) / len(flat("language")),
        "eval/mean_completion_chars": sum(len(s) for s in flat("samples")) / len(flat("samples")),
        "eval/num_prompts": float(len(rows)),
        "eval/k": float(len(verdicts[0])),
    }


def evaluate_model(model, tokenizer, problems: list[Problem], cfg: EvalConfig, seed: int, language: str):
    """(metrics, per-prompt rows) of `model` on `problems`."""
    problems = problems[: cfg.max_prompts] if cfg.max_prompts else problems
    completions = sample(model, tokenizer, [p.prompt for p in problems], cfg, seed)
    with Verifier(cfg.guards.verifier, "evaluation") as verifier:
        rows = [score_prompt(p, c, language, verifier) for p, c in zip(problems, completions, strict=True)]
    return summarize(rows) | verifier.metrics("eval"), rows
