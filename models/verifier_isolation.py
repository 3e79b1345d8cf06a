"""The answer verifier of evaluation and rejection sampling contained, as the RL stages' rewards are
(models/reward_isolation.py, whose worker it uses): a verdict that raises or takes longer than the timeout counts as
incorrect and as a verifier failure; a verifier that fails on every one of the first 32 samples (or on all, if
fewer) stops the stage with one line instead of reporting pass@1 0 or keeping nothing.

    with Verifier(cfg.guards.verifier, "evaluation") as verifier:   # the recipe section, named in its errors
        correct = verifier.completions_correct(completions, problems)   # one bool per completion
        voted = verifier.answers_correct(answers, problems)              # the same for bare answers (cons@k)
    verifier.metrics("eval")   # {"eval/verifier_failures": n, "eval/verifier_failures/timeout": ...}

The verifier is the one the rewards use (models/verifiers.py): a reasoning-gym entry's own scorer, or the verifier a
problem file names, else math-verify. A worker process is forked on first use and reused; a sample that overruns the
timeout has its worker killed and a new one forked for the rest of the batch.
"""

from __future__ import annotations

import logging
from collections import Counter

from models.data import Problem
from models.guard_config import IsolationConfig
from models.reward_isolation import InProcess, RewardWorker
from models.verifiers import answer_is_correct, is_correct

log = logging.getLogger(__name__)
KINDS = ("error", "timeout")
EARLY_STOP = 32  # samples that must all fail before the verifier is declared broken (all of them, if fewer)


class VerifierFailed(RuntimeError):
    """The verifier failed on every sample of a batch: the data or the verifier is broken, not the model."""


def _verdict(texts: list[str], whole: list[bool], entry: list, answer: list, **_) -> list[float]:
    """One sample's verdict (1.0 correct, 0.0 not), with the reward worker's signature: a whole completion is
    checked for R1's format and its answer, a bare answer only verified."""
    check = is_correct if whole[0] else answer_is_correct
    return [1.0 if check(texts[0], entry[0], answer[0]) else 0.0]


class Verifier:
    def __init__(self, cfg: IsolationConfig, stage: str):
        self.cfg, self.stage = cfg, stage
        self.scorer = RewardWorker(_verdict, cfg.timeout_s) if cfg.isolated else InProcess(_verdict)
        self.totals: Counter = Counter()
        self.samples = 0
        self.first_failure: str | None = None

    def __enter__(self) -> Verifier:
        return self

    def __exit__(self, exc_type, *exc) -> None:
        self.scorer.stop()
        if exc_type is None:
            self._stop_if_always_failing(at_end=True)

    def completions_correct(self, completions: list[str], problems: list[Problem]) -> list[bool]:
        return self._verdicts(completions, problems, whole=True)

    def answers_correct(self, answers: list[str], problems: list[Problem]) -> list[bool]:
        return self._verdicts(answers, problems, whole=False)

    def _verdicts(self, texts: list[str], problems: list[Problem], whole: bool) -> list[bool]:
        size = len(texts)
        if not size:
            return []
        kwargs = {
            "texts": texts,
            "whole": [whole] * size,
            "entry": [p.entry for p in problems],
            "answer": [p.answer for p in problems],
        }
        results = self.scorer.score(kwargs, size)
        self._account(results, size)
        self._stop_if_always_failing()
        return [kind == "ok" and value == 1.0 for kind, value in results]

    def _account(self, results: list, size: int) -> None:
        failures = Counter(kind for kind, _ in results if kind != "ok")
        for kind in KINDS:
            if failures[kind] and not self.totals[kind]:
                first = next(value for k, value in results if k == kind)
                self.first_failure = self.first_failure or first
                log.warning("%s: verifier: first %s (counted as incorrect): %s", self.stage, kind, first)
        self.totals.update(failures)
        self.samples += size

    def _stop_if_always_failing(self, at_end: bool = False) -> None:
        """Raise once the first EARLY_STOP samples (or all, if fewer) have all failed."""
        failed = sum(self.totals.values())
        if not self.samples or failed < self.samples or (self.samples < EARLY_STOP and not at_end):
            return
        self.scorer.stop()
        kinds = ", ".join(f"{self.totals[k]} {k}" for k in KINDS if self.totals[k])
        raise VerifierFailed(
            f"{self.stage}: the answer verifier failed on all of the first {self.samples} samples ({kinds}; first: "
            f"{self.first_failure}); stopped, nothing scored: check the problems' answers and verifier fields, or "
            f"raise {self.stage}.guards.verifier.timeout_s if it is only slow"
        )

    def metrics(self, prefix: str) -> dict[str, float]:
        """The failures as metrics: <prefix>/verifier_failures and one per kind."""
        out = {f"{prefix}/verifier_failures": float(sum(self.totals.values()))}
        return out | {f"{prefix}/verifier_failures/{kind}": float(self.totals[kind]) for kind in KINDS}
