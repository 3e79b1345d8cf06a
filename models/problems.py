"""Problems from your own question/answer rows: a local JSONL/JSON/Parquet/CSV file, a local dataset folder or a
hub dataset id, all read through `datasets`, with the recipe's column mapping and answer extractor.

    python -m models.problems --make-example   # rewrites models/assets/chain_qa.jsonl (the shipped example)

Every problem in a file fails in one line that names the file and the line (DataError), never minutes later.
"""

from __future__ import annotations

import argparse
import json
import logging
import random
import re
from dataclasses import dataclass
from pathlib import Path

from models.config import DataConfig, ProblemFile
from models.data import Problem, is_heldout, question_key, render_prompt, worked_chain

log = logging.getLogger(__name__)
ASSETS = Path(__file__).parent / "assets"
FORMATS = {".jsonl": "json", ".json": "json", ".parquet": "parquet", ".csv": "csv"}
_CALCULATOR_NOTE = re.compile(r"<<[^<>]*>>")  # GSM8K's `<<48/2=24>>`


class DataError(ValueError):
    """Data that cannot be used; str() is one line naming the file (and line) and the fix."""


@dataclass(frozen=True)
class QaRow:
    """One question with its reference answer, the verifier that checks it and (optionally) a worked solution."""

    question: str
    answer: str
    verifier: str
    solution: str | None = None


def local_source(source: str) -> Path | None:
    """The local file or folder a rows source names (`builtin:<name>` is models/assets/<name>.jsonl), or None for a
    hub dataset id."""
    if source.startswith("builtin:"):
        return ASSETS / f"{source.removeprefix('builtin:')}.jsonl"
    path = Path(source).expanduser()
    if path.suffix in FORMATS or source.startswith(("/", "./", "../", "~")) or path.exists():
        return path
    return None


def _decoded(path: Path) -> str:
    """The file as text: DataError if it is missing, unreadable, empty or not UTF-8 (with the line)."""
    if not path.is_file():
        raise DataError(f"no file at '{path}'; give an existing .jsonl/.json/.parquet/.csv file")
    try:
        raw = path.read_bytes()
    except OSError as err:
        raise DataError(f"cannot read '{path}': {err.strerror}") from None
    if not raw.strip():
        raise DataError(f"'{path}' is empty; it needs at least one row")
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as err:
        line = raw[: err.start].count(b"\n") + 1
        raise DataError(
            f"'{path}' line {line} (byte offset {err.start}): byte 0x{raw[err.start]:02x} is not UTF-8; re-encode "
            "the file as UTF-8 (e.g. iconv -f latin1 -t utf-8)"
        ) from None


def _check_jsonl(path: Path) -> None:
    """Each non-blank line is one JSON object (DataError naming the line otherwise)."""
    for number, line in enumerate(_decoded(path).splitlines(), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as err:
            raise DataError(f"'{path}' line {number}: not valid JSON ({err.msg}); one object per line") from None
        if not isinstance(row, dict):
            raise DataError(f"'{path}' line {number}: a row must be a JSON object, not {type(row).__name__}")


def read_rows(source: str, split: str = "train", name: str | None = None, revision: str | None = None) -> list[dict]:
    """All rows of a split: a local file (its only split), a local dataset folder or a hub id (at `revision`, None:
    main), through `datasets`."""
    import datasets

    datasets.disable_progress_bars()
    path = local_source(source)
    if path is not None and path.suffix in FORMATS:
        if path.suffix == ".jsonl":
            _check_jsonl(path)
        elif path.suffix == ".csv" and len(_decoded(path).strip().splitlines()) < 2:
            raise DataError(f"'{path}' has a header but no rows; it needs at least one row under the header")
        elif path.suffix != ".parquet":
            _decoded(path)
        args, kwargs = (FORMATS[path.suffix],), {"data_files": str(path), "split": "train"}
    else:
        args, kwargs = (str(path or source), name), {"split": split, "revision": None if path else revision}
    try:
        rows = list(datasets.load_dataset(*args, **kwargs))
    except Exception as err:  # datasets, pyarrow and pandas raise many kinds; the first line says which
        first = (str(err).strip().splitlines() or [type(err).__name__])[0]
        raise DataError(f"cannot load '{source}' (split {split}): {type(err).__name__}: {first}") from None
    if not rows:
        raise DataError(f"'{source}' (split {split}) has no rows")
    return rows


def last_boxed(text: str) -> str | None:
    """The content of the last \\boxed{...} in `text` (nested braces matched), or None."""
    start = text.rfind("\\boxed{")
    if start < 0:
        return None
    depth, begin = 0, start + len("\\boxed{")
    for index in range(begin, len(text)):
        depth += {"{": 1, "}": -1}.get(text[index], 0)
        if depth < 0:
            return text[begin:index].strip()
    return None


def extract_answer(cell: str, answer_format: str) -> tuple[str, str | None]:
    """(reference answer, worked solution or None) of an answer cell.

    plain: the whole cell. gsm8k: `...reasoning...\\n#### 42` -> ("42", reasoning without <<...>> notes).
    boxed: a MATH solution -> (content of its last \\boxed{}, the whole solution). ValueError if absent.
    """
    if answer_format == "gsm8k":
        reasoning, sep, final = cell.rpartition("####")
        if not sep or not final.strip():
            raise ValueError("no '#### <answer>' line (answer_format gsm8k)")
        return final.strip().replace(",", ""), _CALCULATOR_NOTE.sub("", reasoning).strip() or None
    if answer_format == "boxed":
        boxed = last_boxed(cell)
        if not boxed:
            raise ValueError("no \\boxed{...} answer (answer_format boxed)")
        return boxed, cell.strip()
    return cell.strip(), None


def _cell(row: dict, column: str) -> str:
    value = row[column]
    if value is None or not str(value).strip():
        raise ValueError(f"empty '{column}'; every row needs a question and an answer")
    return str(value)


def _qa_row(row: dict, cfg: ProblemFile) -> QaRow:
    """One row mapped through the recipe's columns; ValueError says what is wrong with it."""
    from models.verifiers import VERIFIERS

    answer, solution = extract_answer(_cell(row, cfg.answer), cfg.answer_format)
    if cfg.solution:
        solution = _cell(row, cfg.solution).strip()
    verifier = str(row.get(cfg.verifier_column) or "").strip() if cfg.verifier_column else ""
    if verifier and verifier not in VERIFIERS:
        raise ValueError(f"unknown verifier '{verifier}'; choose from {', '.join(VERIFIERS)}")
    return QaRow(_cell(row, cfg.question).strip(), answer, verifier or cfg.verifier, solution)


def _require_columns(rows: list[dict], cfg: ProblemFile, source: str) -> None:
    wanted = {"question": cfg.question, "answer": cfg.answer, "solution": cfg.solution}
    wanted["verifier_column"] = cfg.verifier_column
    have = list(rows[0])
    for field, column in wanted.items():
        if column is not None and column not in have:
            raise DataError(
                f"'{source}' has no column '{column}' (columns: {', '.join(have)}); set data.problems.{field}"
            )


def _row_place(source: str, index: int) -> str:
    """Where row `index` is: its line in a JSONL file (blank lines skipped), else its row number."""
    path = local_source(source)
    if path is not None and path.suffix == ".jsonl":
        numbers = [n for n, line in enumerate(path.read_text().splitlines(), start=1) if line.strip()]
        return f"'{source}' line {numbers[index]}"
    return f"'{source}' row {index + 1}"


def _split_source(cfg: ProblemFile, evaluation: bool) -> tuple[str, str]:
    """(source, split) to read: a local file's eval_split is a second file; elsewhere eval_split names a split."""
    if not evaluation:
        return cfg.path, cfg.split
    path = local_source(cfg.path)
    if path is not None and path.suffix in FORMATS:
        return cfg.eval_split, "train"
    return cfg.path, cfg.eval_split


def load_problems(cfg: ProblemFile, evaluation: bool = False) -> list[QaRow]:
    """The question/answer rows of the training split (or of eval_split): columns mapped, answers extracted."""
    source, split = _split_source(cfg, evaluation)
    rows = read_rows(source, split, cfg.name, cfg.revision)
    _require_columns(rows, cfg, source)
    problems = []
    for index, row in enumerate(rows):
        try:
            problems.append(_qa_row(row, cfg))
        except ValueError as err:
            raise DataError(f"{_row_place(source, index)}: {err}") from None
    return problems


def _unique(rows: list[QaRow]) -> list[QaRow]:
    """The first row of each question (normalised); repeats would put one problem in two splits."""
    seen: dict[str, QaRow] = {}
    for row in rows:
        seen.setdefault(question_key(row.question), row)
    if len(seen) < len(rows):
        log.info("data: %d repeated questions dropped", len(rows) - len(seen))
    return list(seen.values())


def _held_out(cfg: DataConfig) -> tuple[list[QaRow], list[QaRow]]:
    """(held-out rows, training rows): eval_split's rows, or the hash bucket of the training split's questions."""
    train = _unique(load_problems(cfg.problems))
    if cfg.problems.eval_split:
        held = _unique(load_problems(cfg.problems, evaluation=True))
        keys = {question_key(r.question) for r in held}
        kept = [r for r in train if question_key(r.question) not in keys]
        if len(kept) < len(train):
            log.info("data: %d training rows share a question with eval_split and were dropped", len(train) - len(kept))
        return held, kept
    bucket = [is_heldout(question_key(r.question), cfg.heldout_permille) for r in train]
    return [r for r, b in zip(train, bucket, strict=True) if b], [
        r for r, b in zip(train, bucket, strict=True) if not b
    ]


def _take(rows: list[QaRow], start: int, count: int, field: str, what: str, source: str) -> list[QaRow]:
    if start + count > len(rows):
        raise DataError(
            f"data.{field}: '{source}' supplies {max(0, len(rows) - start)} {what} problems for {count} requested; "
            f"lower data.{field} or give more rows"
        )
    return rows[start : start + count]


def file_splits(cfg: DataConfig, seed: int) -> dict[str, list[Problem]]:
    """eval and validation from the held-out rows, cold_start (unless a cold-start file is given) and rl from the
    rest, each shuffled with `seed`; DataError in one line when a split asks for more than the source supplies."""
    held, train = _held_out(cfg)
    random.Random(seed).shuffle(held)
    random.Random(seed + 1).shuffle(train)
    source = cfg.problems.eval_split or cfg.problems.path
    cold_size = 0 if cfg.cold_start else cfg.cold_start_size
    splits = {
        "eval": _take(held, 0, cfg.eval_size, "eval_size", "held-out", source),
        "validation": _take(held, cfg.eval_size, cfg.validation_size, "validation_size", "more held-out", source),
        "cold_start": _take(train, 0, cold_size, "cold_start_size", "training", cfg.problems.path),
        "rl": _take(train, cold_size, cfg.rl_pool_size, "rl_pool_size", "more training", cfg.problems.path),
    }
    return {name: [_file_problem(r, cfg) for r in rows] for name, rows in splits.items()}


def _file_problem(row: QaRow, cfg: DataConfig) -> Problem:
    entry = json.dumps({"verifier": row.verifier, "tolerance": cfg.problems.tolerance})
    return Problem(render_prompt(row.question, cfg.prompt_style), row.answer, cfg.problems.path, entry, row.solution)


def make_example(path: Path, count: int, seed: int) -> int:
    """The shipped example: `count` unique +/- chains of 3-4 one-digit terms as GSM8K-style rows
    ({"question": "4+3-2", "answer": "4+3=7,7-2=5\\n#### 5"}), drawn with random.Random(seed)."""
    rng, seen, lines = random.Random(seed), set(), []
    while len(lines) < count:
        nums = [rng.randint(0, 9) for _ in range(rng.randint(3, 4))]
        question = str(nums[0]) + "".join(rng.choice("+-") + str(n) for n in nums[1:])
        if question in seen:
            continue
        seen.add(question)
        chain = worked_chain(question)
        lines.append(json.dumps({"question": question, "answer": f"{chain}\n#### {chain.rsplit('=', 1)[-1]}"}))
    path.write_text("\n".join(lines) + "\n")
    return len(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--make-example", action="store_true", help="write the shipped example file")
    parser.add_argument("--out", type=Path, default=ASSETS / "chain_qa.jsonl")
    parser.add_argument("--count", type=int, default=3000)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    if args.make_example:
        log.info("wrote %d rows to %s", make_example(args.out, args.count, args.seed), args.out)


if __name__ == "__main__":
    main()
