"""Procedural, verifiable reasoning data from reasoning-gym, split so that evaluation never sees a training prompt.

Every problem gets a split key (its normalised question); a fixed hash bucket of keys is reserved for the
held-out evaluation set and never used for pre-training, cold start, RL or rejection sampling, so the split is
disjoint by construction (and checked: `overlap`).

    python -m models.data --recipe flows/recipes/tiny.yaml   # prints a few rendered examples
"""

from __future__ import annotations

import hashlib
import json
import random
import re
from dataclasses import dataclass
from pathlib import Path

from models.config import DataConfig

R1_SYSTEM_PROMPT = (
    "A conversation between User and Assistant. The Assistant first thinks about the reasoning process and "
    "then gives the answer, as <think> reasoning process here </think><answer> answer here </answer>."
)
ASSETS = Path(__file__).parent / "assets"
_TERM = re.compile(r"([+-]?)\s*(-?\d+)")  # operator, then a possibly negative number


@dataclass(frozen=True)
class Problem:
    """One verifiable prompt: what the model sees, and the reasoning-gym entry that scores its answer."""

    prompt: str | list[dict]
    answer: str
    task: str
    entry: str  # the reasoning-gym entry as JSON (question, answer, metadata): what the scorer needs

    def row(self) -> dict:
        return {"prompt": self.prompt, "answer": self.answer, "task": self.task, "entry": self.entry}


def split_key(entry: dict) -> str:
    """The identity of a problem for disjointness: its expression (or question) without spaces."""
    text = entry.get("metadata", {}).get("expression") or entry["question"]
    return re.sub(r"\s+", "", str(text))


def is_heldout(key: str, heldout_permille: int) -> bool:
    """True if `key` falls in the hash bucket reserved for evaluation."""
    return int(hashlib.sha256(key.encode()).hexdigest()[:8], 16) % 1000 < heldout_permille


def render_prompt(entry: dict, style: str) -> str | list[dict]:
    """compact: `Q:4+3-2\\nA:` (tiny character models); chat: R1's system prompt + question as messages."""
    if style == "compact":
        return f"Q:{split_key(entry)}\nA:"
    return [{"role": "system", "content": R1_SYSTEM_PROMPT}, {"role": "user", "content": entry["question"]}]


def worked_chain(expression: str) -> str:
    """`4+3-2` -> `4+3=7,7-2=5`: the step-by-step reasoning of a +/- chain."""
    terms = [(sign or "+", int(num)) for sign, num in _TERM.findall(expression)]
    total, steps = terms[0][1] if terms[0][0] == "+" else -terms[0][1], []
    for sign, num in terms[1:]:
        new = total + num if sign == "+" else total - num
        steps.append(f"{total}{sign}{num}={new}")
        total = new
    return ",".join(steps)


def r1_completion(reasoning: str, answer: str) -> str:
    """R1's output format: reasoning inside <think>, final answer inside <answer>."""
    return f"<think>{reasoning}</think><answer>{answer}</answer>"


def _generate(cfg: DataConfig, seed: int, count: int, heldout: bool, exclude: set[str]) -> list[dict]:
    """Draw unique reasoning-gym entries from the held-out bucket or from its complement."""
    import reasoning_gym

    entries: list[dict] = []
    seen = set(exclude)
    share = cfg.heldout_permille / 1000 if heldout else 1 - cfg.heldout_permille / 1000
    size = int(1.5 * count / share) + 100  # enough draws for the bucket in one go, most of the time
    for attempt in range(8):
        # reasoning-gym seeds item i with seed + i: space the draws so they never share item seeds
        batch = reasoning_gym.create_dataset(cfg.task, seed=(seed * 8 + attempt) * 10**7, size=size, **cfg.task_config)
        for entry in batch:
            key = split_key(entry)
            if key in seen or is_heldout(key, cfg.heldout_permille) != heldout:
                continue
            seen.add(key)
            entries.append(entry)
            if len(entries) == count:
                return entries
    raise ValueError(
        f"data: only {len(entries)} unique '{cfg.task}' problems found for {count} requested; "
        "enlarge data.task_config or lower the split sizes"
    )


def _problem(entry: dict, cfg: DataConfig) -> Problem:
    meta = {k: v for k, v in entry.get("metadata", {}).items() if k != "difficulty"}
    stored = {"question": entry["question"], "answer": entry["answer"], "metadata": meta}
    return Problem(render_prompt(entry, cfg.prompt_style), str(entry["answer"]), cfg.task, json.dumps(stored))


def build_splits(cfg: DataConfig, seed: int) -> dict[str, list[Problem]]:
    """The fixed splits of a run: eval and validation (the held-out bucket; validation feeds the periodic check
    during RL, never a gradient), cold_start and rl (the bucket's complement). All four are disjoint."""
    evaluation = _generate(cfg, seed, cfg.eval_size, heldout=True, exclude=set())
    validation = _generate(cfg, seed + 3, cfg.validation_size, heldout=True, exclude={split_key(e) for e in evaluation})
    cold = _generate(cfg, seed + 1, cfg.cold_start_size, heldout=False, exclude=set())
    rl = _generate(cfg, seed + 2, cfg.rl_pool_size, heldout=False, exclude={split_key(e) for e in cold})
    splits = {"eval": evaluation, "validation": validation, "cold_start": cold, "rl": rl}
    return {name: [_problem(e, cfg) for e in entries] for name, entries in splits.items()}


def overlap(heldout: list[Problem], *training: list[Problem]) -> int:
    """How many held-out prompts also occur in any training split (must be 0)."""
    seen = {json.dumps(p.prompt) for split in training for p in split}
    return sum(json.dumps(p.prompt) in seen for p in heldout)


def cold_start_rows(problems: list[Problem]) -> list[dict]:
    """Long-CoT SFT rows in R1's format: the worked chain as reasoning, the result as answer."""
    rows = []
    for p in problems:
        expression = json.loads(p.entry)["metadata"].get("expression", "")
        rows.append({"prompt": p.prompt, "completion": r1_completion(worked_chain(expression), p.answer)})
    return rows


def rows_file(source: str) -> Path | None:
    """The JSONL file a rows source names (`builtin:<name>` is a shipped file), or None for a hub dataset id."""
    if source.startswith("builtin:"):
        return ASSETS / f"{source.removeprefix('builtin:')}.jsonl"
    return Path(source) if Path(source).suffix == ".jsonl" else None


def load_rows(source: str) -> list[dict]:
    """prompt/completion rows from `builtin:<name>` (shipped file), a local JSONL file, or a hub dataset id."""
    path = rows_file(source)
    if path is not None:
        return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    import datasets

    return list(datasets.load_dataset(source, split="train"))


def pretraining_text(rng: random.Random, cfg: DataConfig) -> str:
    """One line of the base model's corpus: a tag-free worked chain (60%) or a two-number equation (40%).

    Only problems outside the held-out bucket are used, so the base never sees an evaluation prompt.
    """
    while True:
        n_terms = rng.randint(cfg.task_config.get("min_terms", 3), cfg.task_config.get("max_terms", 3))
        hi = 10 ** cfg.task_config.get("max_digits", 1) - 1
        nums = [rng.randint(0, hi) for _ in range(n_terms if rng.random() < 0.6 else 2)]
        expression = str(nums[0]) + "".join(rng.choice("+-") + str(n) for n in nums[1:])
        if not is_heldout(expression, cfg.heldout_permille):
            return f"Q:{expression}\nA:{worked_chain(expression)}\n"
