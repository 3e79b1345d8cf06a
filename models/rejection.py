"""Stage 3: rejection sampling. k samples per prompt from the reasoning_rl model; keep the verified-correct ones
that pass R1's readability filters (no mixed language, no overlong paragraph, no code block), drop exact
duplicates. Writes data.jsonl (prompt, completion) and stats.json (kept / sampled, dropped per filter).
"""

from __future__ import annotations

import json
import logging
from collections import Counter
from pathlib import Path

import mlflow

from models.config import RejectionSamplingStage
from models.data import Problem, build_splits
from models.factory import load_model
from models.generation import sample
from models.stage_io import StageSpec
from models.verifier_isolation import Verifier
from models.verifiers import CODE_FENCE, language_consistency, longest_paragraph, parse

log = logging.getLogger(__name__)


def rejection_reason(completion: str, correct: bool, cfg: RejectionSamplingStage, language: str) -> str | None:
    """Why a sample the verifier judged `correct` or not is rejected (incorrect, mixed_language, overlong_paragraph,
    code_block), or None to keep."""
    if not correct:
        return "incorrect"
    parsed = parse(completion)
    if language_consistency(parsed.think, language) < cfg.min_language_consistency:
        return "mixed_language"
    if longest_paragraph(parsed.think) > cfg.max_paragraph_chars:
        return "overlong_paragraph"
    if cfg.drop_code_blocks and CODE_FENCE in parsed.think:
        return "code_block"
    return None


def select(problems: list[Problem], samples: list[list[str]], cfg: RejectionSamplingStage, language: str):
    """(kept rows, statistics) from the sampled completions; the verifier runs contained (models/verifier_isolation.py)
    and its failures count as incorrect and in the statistics."""
    kept, seen, dropped = [], set(), Counter()
    covered = 0
    with Verifier(cfg.guards.verifier, "rejection_sampling") as verifier:
        verdicts = [verifier.completions_correct(c, [p] * len(c)) for p, c in zip(problems, samples, strict=True)]
    for problem, completions, correct in zip(problems, samples, verdicts, strict=True):
        any_kept = False
        for completion, is_right in zip(completions, correct, strict=True):
            reason = rejection_reason(completion, is_right, cfg, language)
            key = (json.dumps(problem.prompt), completion.strip())
            if reason is None and key in seen:
                reason = "duplicate"
            if reason:
                dropped[reason] += 1
                continue
            seen.add(key)
            kept.append({"prompt": problem.prompt, "completion": completion.strip(), "answer": problem.answer})
            any_kept = True
        covered += any_kept
    sampled = sum(len(c) for c in samples)
    stats = {
        "prompts": len(problems),
        "sampled": sampled,
        "kept": len(kept),
        "kept_ratio": len(kept) / max(1, sampled),
        "prompts_covered": covered,
        **{
            f"dropped_{r}": dropped[r]
            for r in ("incorrect", "mixed_language", "overlong_paragraph", "code_block", "duplicate")
        },
        **{k.removeprefix("rejection/"): int(v) for k, v in verifier.metrics("rejection").items()},
    }
    return kept, stats


def run_rejection_sampling(spec: StageSpec, out: Path) -> dict:
    cfg = spec.config
    problems = build_splits(spec.data, spec.seed)["rl"]
    problems = problems[: cfg.num_prompts] if cfg.num_prompts else problems
    model, tokenizer = load_model(spec.inputs["model"].uri, spec.dtype)
    samples = sample(model, tokenizer, [p.prompt for p in problems], cfg, spec.seed)
    kept, stats = select(problems, samples, cfg, spec.data.language)
    with (out / "data.jsonl").open("w") as f:
        f.writelines(json.dumps(row) + "\n" for row in kept)
    (out / "stats.json").write_text(json.dumps(stats, indent=2))
    log.info("rejection_sampling: kept %d of %d samples (%s)", stats["kept"], stats["sampled"], stats)
    if mlflow.active_run():
        import pandas as pd

        mlflow.log_metrics({f"rejection/{k}": v for k, v in stats.items()})
        mlflow.log_dict(stats, "dataset/stats.json")
        frame = pd.DataFrame(kept or [{"prompt": "", "completion": "", "answer": ""}])
        mlflow.log_input(mlflow.data.from_pandas(frame, name="rejection_sampled"), context="output")
    return stats
