"""models/verifier_isolation.py: in evaluation and rejection sampling, a verifier that raises or hangs on a sample makes
that sample incorrect and is counted by kind, the other samples keep their verdicts, and a verifier failing on every
sample stops the stage with one line."""

from __future__ import annotations

import json
import time

import pytest

from models.config import EvalConfig, RejectionSamplingStage
from models.data import Problem
from models.evaluate import score_prompt, summarize
from models.guard_config import IsolationConfig
from models.rejection import select
from models.verifier_isolation import EARLY_STOP, Verifier, VerifierFailed
from models.verifiers import VERIFIERS

ISOLATION = pytest.mark.reliability("reward")
FAST = IsolationConfig(timeout_s=0.5)


def misbehaving_match(answer: str, gold: str) -> bool:
    """The verifier a problem file names, planted: raises on "raise", hangs on "hang", else compares exactly."""
    if answer == "raise":
        raise RecursionError("planted")
    if answer == "hang":
        while True:
            time.sleep(0.01)
    return answer == gold


@pytest.fixture
def planted(monkeypatch):
    monkeypatch.setitem(VERIFIERS, "exact", misbehaving_match)  # the forked worker inherits the patched table


PROBLEM = Problem("Q:2+2\nA:", "4", "file", json.dumps({"verifier": "exact"}))


def completion(answer: str) -> str:
    return f"<think>2+2</think><answer>{answer}</answer>"


@ISOLATION
def test_a_raising_or_hanging_verdict_is_incorrect_and_counted_the_rest_scored(planted):
    answers = ["4", "raise", "hang", "5", "4"]
    with Verifier(FAST, "evaluation") as verifier:
        row = score_prompt(PROBLEM, [completion(a) for a in answers], "en", verifier)
    assert row["verdicts"] == [True, False, False, False, True]
    assert row["voted_correct"] is True  # "4" wins the vote and is verified in the (new) worker
    assert verifier.metrics("eval") == {
        "eval/verifier_failures": 2.0,
        "eval/verifier_failures/error": 1.0,
        "eval/verifier_failures/timeout": 1.0,
    }
    assert summarize([row])["eval/pass_at_1"] == pytest.approx(2 / 5)


@ISOLATION
def test_rejection_sampling_drops_failed_verdicts_as_incorrect_and_reports_them(planted):
    samples = [[completion("4"), completion("hang"), completion("raise"), completion("5")]]
    cfg = RejectionSamplingStage(guards={"verifier": {"timeout_s": 0.5}})
    kept, stats = select([PROBLEM], samples, cfg, "en")
    assert [row["completion"] for row in kept] == [completion("4")]
    assert stats["dropped_incorrect"] == 3  # "5" is wrong; the other two failed
    assert (stats["verifier_failures"], stats["verifier_failures/timeout"], stats["verifier_failures/error"]) == (
        2,
        1,
        1,
    )


@ISOLATION
@pytest.mark.parametrize(
    ("stage", "samples"),
    [("evaluation", EARLY_STOP), ("rejection_sampling", 3)],
    ids=["stops_after_the_first_32", "stops_at_the_end_when_fewer"],
)
def test_a_verifier_failing_on_every_sample_stops_with_one_line(planted, stage, samples):
    problems = [PROBLEM] * (samples + 8)
    with pytest.raises(VerifierFailed) as failed, Verifier(FAST, stage) as verifier:
        for problem in problems[: samples if stage == "rejection_sampling" else len(problems)]:
            verifier.completions_correct([completion("raise")], [problem])
    message = str(failed.value)
    assert "\n" not in message
    assert message.startswith(f"{stage}: the answer verifier failed on all of the first {samples} samples")
    assert "RecursionError: planted" in message and f"{stage}.guards.verifier.timeout_s" in message
    assert verifier.samples == samples


def test_the_recipe_sets_the_verifier_guard_and_rejects_unknown_keys():
    assert EvalConfig(guards={"verifier": {"timeout_s": 2}}).guards.verifier.timeout_s == 2
    with pytest.raises(ValueError, match="timeout"):
        EvalConfig(guards={"verifier": {"timeout": 2}})
