"""Verifiable problems (reasoning-gym tasks, or your own question/answer rows: models/problems.py), split so that
evaluation never sees a training prompt.

Every problem gets a split key (its normalised question); a fixed hash bucket of keys (or a separate evaluation
split of a problem file) is reserved for the held-out evaluation set and never used for pre-training, cold start,
RL or rejection sampling, so the split is disjoint by construction (and checked: `overlap`,
models/data_checks.py). Prompts show the question text only, never metadata (countdown's `expression` is its
solution).

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
_EXPRESSION = re.compile(r"[-+]?\d+(?:\s*[-+*/]\s*[-+]?\d+)+")  # `4 - 1 - 7`, `18271 * 43432`, `2 - -1`


@dataclass(frozen=True)
class Problem:
    """One verifiable prompt: what the model sees, and the entry that scores its answer."""

    prompt: str | list[dict]
    answer: str
    task: str
    # what the scorer needs, as JSON: a reasoning-gym entry (question, answer, metadata), or for a problem file
    # {"verifier": exact|numeric|math_verify, "tolerance": ...}
    entry: str
    solution: str | None = None  # a worked solution from a problem file (cold-start rows), never shown in prompts

    def row(self) -> dict:
        return {"prompt": self.prompt, "answer": self.answer, "task": self.task, "entry": self.entry}


def question_key(text: str) -> str:
    """A question (or prompt) normalised for identity: whitespace removed, case folded."""
    return re.sub(r"\s+", "", text).casefold()


def compact_question(question: str) -> str:
    """A reasoning-gym question for tiny character models: the arithmetic expression it ends in, without spaces
    (`State the final answer ...: 4 - 1 - 7 =` -> `4-1-7`), else the question with whitespace collapsed."""
    expressions = _EXPRESSION.findall(question)
    return re.sub(r"\s+", "", expressions[-1]) if expressions else " ".join(question.split())


def split_key(entry: dict) -> str:
    """The identity of a reasoning-gym problem for disjointness: its compact question, normalised."""
    return question_key(compact_question(entry["question"]))


def is_heldout(key: str, heldout_permille: int) -> bool:
    """True if `key` falls in the hash bucket reserved for evaluation."""
    return int(hashlib.sha256(key.encode()).hexdigest()[:8], 16) % 1000 < heldout_permille


def render_prompt(question: str, style: str) -> str | list[dict]:
    """compact: `Q:4+3-2\\nA:` (tiny character models); chat: R1's system prompt + question as messages."""
    if style == "compact":
        return f"Q:{question}\nA:"
    return [{"role": "system", "content": R1_SYSTEM_PROMPT}, {"role": "user", "content": question}]


def prompt_question(prompt: str | list[dict]) -> str:
    """The question inside a prompt: the last user message, or a compact prompt without `Q:` and `\\nA:`."""
    if not isinstance(prompt, str):
        return next((m["content"] for m in reversed(prompt) if m.get("role") == "user"), "")
    return prompt.removeprefix("Q:").removesuffix("A:").removesuffix("\n")


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
    question = compact_question(entry["question"]) if cfg.prompt_style == "compact" else entry["question"]
    return Problem(render_prompt(question, cfg.prompt_style), str(entry["answer"]), cfg.task, json.dumps(stored))


def build_splits(cfg: DataConfig, seed: int) -> dict[str, list[Problem]]:
    """The fixed splits of a run: eval and validation (held out; validation feeds the periodic check during RL,
    never a gradient), cold_start and rl (the rest). All four are disjoint."""
    if cfg.problems is not None:
        from models.problems import file_splits

        return file_splits(cfg, seed)
    evaluation = _generate(cfg, seed, cfg.eval_size, heldout=True, exclude=set())
    validation = _generate(cfg, seed + 3, cfg.validation_size, heldout=True, exclude={split_key(e) for e in evaluation})
    cold = _generate(cfg, seed + 1, cfg.cold_start_size, heldout=False, exclude=set())
    rl = _generate(cfg, seed + 2, cfg.rl_pool_size, heldout=False, exclude={split_key(e) for e in cold})
    splits = {"eval": evaluation, "validation": validation, "cold_start": cold, "rl": rl}
    return {name: [_problem(e, cfg) for e in entries] for name, entries in splits.items()}


def overlap(heldout: list[Problem], *training: list[Problem]) -> int:
    """How many held-out prompts also occur in any training split, questions normalised (must be 0)."""
    seen = {question_key(prompt_question(p.prompt)) for split in training for p in split}
    return sum(question_key(prompt_question(p.prompt)) in seen for p in heldout)


def cold_start_rows(problems: list[Problem]) -> list[dict]:
    """Long-CoT SFT rows in R1's format: the worked solution (a problem file's, or the chain_sum expression worked
    step by step) as reasoning, the result as answer."""
    rows = []
    for p in problems:
        metadata = json.loads(p.entry).get("metadata") if p.entry else None
        if not p.solution and metadata is None:
            raise _no_solution(p)
        reasoning = p.solution or worked_chain(metadata.get("expression", ""))
        rows.append({"prompt": p.prompt, "completion": r1_completion(reasoning, p.answer)})
    return rows


def _no_solution(problem: Problem) -> ValueError:
    """The one-line DataError for a file problem without the worked solution cold-start SFT trains on."""
    from models.problems import DataError

    return DataError(
        f"data: '{problem.task}' has no worked solution for cold-start SFT (e.g. {prompt_question(problem.prompt)!r}); "
        "give answers with their reasoning, a solution column (data.problems.solution) or a cold-start file "
        "(data.cold_start)"
    )


def rows_file(source: str) -> Path | None:
    """The local file a rows source names (`builtin:<name>` is a shipped file), or None for a hub dataset id."""
    from models.problems import local_source

    return local_source(source)


def load_rows(source: str) -> list[dict]:
    """prompt/completion rows from `builtin:<name>` (shipped file), a local JSONL/Parquet/CSV file or folder, or a
    hub dataset id (split train), through `datasets`; DataError in one line if a row lacks `prompt`/`completion`
    (question/answer rows are problems: data.problems)."""
    from models.problems import DataError, read_rows

    rows = read_rows(source)
    missing = [column for column in ("prompt", "completion") if column not in rows[0]]
    if missing:
        hint = (
            "; question/answer rows are problems: give them as data.problems"
            if "question" in rows[0]
            else "; every row needs a prompt and a completion"
        )
        raise DataError(f"'{source}' has no column '{missing[0]}' (columns: {', '.join(rows[0])}){hint}")
    return [{"prompt": r["prompt"], "completion": r["completion"]} for r in rows]


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


def problem_source(cfg: DataConfig):
    """Where the problems come from, as an MLflow dataset source: a local file, a hub dataset (id, config,
    split), or the reasoning-gym generator with its task and options."""
    from mlflow.data.code_dataset_source import CodeDatasetSource
    from mlflow.data.huggingface_dataset_source import HuggingFaceDatasetSource

    from models.problems import local_source

    if cfg.problems is None:
        return CodeDatasetSource(
            tags={"generator": "reasoning-gym", "task": cfg.task, "task_config": json.dumps(cfg.task_config)}
        )
    path = local_source(cfg.problems.path)
    if path is None:
        return HuggingFaceDatasetSource(path=cfg.problems.path, config_name=cfg.problems.name, split=cfg.problems.split)
    return str(path.resolve())


def rows_source(source: str | None, cfg: DataConfig):
    """The MLflow dataset source of a rows source (a cold-start or non-reasoning file or hub id); None: the
    problems themselves (cold-start rows made from their worked solutions)."""
    if source is None:
        return problem_source(cfg)
    path = rows_file(source)
    return str(path.resolve()) if path is not None else source


def dataset_input(rows: list[dict], name: str, source):
    """Rows as an MLflow dataset named `name`, with its source and a digest of the rows themselves, for
    mlflow.log_input: a run names exactly what it trained on."""
    import mlflow
    import pandas as pd

    flat = [{k: v if isinstance(v, str | int | float | None) else json.dumps(v) for k, v in r.items()} for r in rows]
    return mlflow.data.from_pandas(pd.DataFrame(flat or [{"prompt": ""}]), source=source, name=name)
