"""models/problems.py: question/answer rows from files and dataset folders through `datasets`, answer extractors,
one-line errors for every data problem, the splits of a problem file, and the shipped example and GSM8K recipes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from models.config import DataConfig, ProblemFile
from models.data import build_splits, cold_start_rows, overlap
from models.problems import DataError, extract_answer, last_boxed, load_problems, make_example, read_rows
from models.recipe import load_recipe
from models.verifiers import is_correct

REPO = Path(__file__).resolve().parents[2]
# GSM8K- and MATH-style rows written for these tests (the shapes of openai/gsm8k and hendrycks MATH)
GSM8K_ROWS = [
    {
        "question": "Natalia sold clips to 48 of her friends in April, and then she sold half as many clips in May. "
        "How many clips did Natalia sell altogether in April and May?",
        "answer": "Natalia sold 48/2 = <<48/2=24>>24 clips in May.\nNatalia sold 48+24 = <<48+24=72>>72 clips "
        "altogether in April and May.\n#### 72",
    },
    {
        "question": "A shop sells pens at $3 each. Tom buys 4 pens and pays with a $20 bill. How much change does "
        "he get?",
        "answer": "The pens cost 4*3 = <<4*3=12>>12 dollars.\nHis change is 20-12 = <<20-12=8>>8 dollars.\n#### 8",
    },
    {
        "question": "A farm has 1,200 hens; each lays 5 eggs a week. How many eggs in a week?",
        "answer": "1200*5 = <<1200*5=6000>>6000 eggs.\n#### 6,000",
    },
]
MATH_ROW = {
    "problem": "What is the value of $\\frac{1}{2} + \\frac{1}{3}$?",
    "solution": "The common denominator is 6, so $\\frac{3}{6} + \\frac{2}{6} = \\boxed{\\frac{5}{6}}$.",
}


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


@pytest.mark.parametrize(
    ("cell", "answer_format", "answer", "solution"),
    [
        (
            GSM8K_ROWS[0]["answer"],
            "gsm8k",
            "72",
            "Natalia sold 48/2 = 24 clips in May.\nNatalia sold 48+24 = 72 clips altogether in April and May.",
        ),
        (GSM8K_ROWS[2]["answer"], "gsm8k", "6000", "1200*5 = 6000 eggs."),
        (MATH_ROW["solution"], "boxed", "\\frac{5}{6}", MATH_ROW["solution"]),
        ("  42 \n", "plain", "42", None),
    ],
)
def test_extract_answer(cell, answer_format, answer, solution):
    assert extract_answer(cell, answer_format) == (answer, solution)


@pytest.mark.parametrize(
    ("cell", "answer_format", "message"),
    [("72", "gsm8k", "####"), ("#### ", "gsm8k", "####"), ("so it is 5/6", "boxed", "boxed")],
)
def test_extract_answer_refuses_a_cell_without_the_answer(cell, answer_format, message):
    with pytest.raises(ValueError, match=message):
        extract_answer(cell, answer_format)


@pytest.mark.parametrize(
    ("text", "expected"),
    [("\\boxed{\\frac{a}{b}}", "\\frac{a}{b}"), ("\\boxed{1} then \\boxed{ {2} }", "{2}"), ("none", None)],
)
def test_last_boxed(text, expected):
    assert last_boxed(text) == expected


@pytest.mark.parametrize("suffix", [".jsonl", ".json", ".csv", ".parquet"])
def test_read_rows_every_file_format(tmp_path, suffix):
    import pandas as pd

    frame = pd.DataFrame([{"question": "1+1", "answer": "2"}, {"question": "2+3", "answer": "5"}])
    path = tmp_path / f"qa{suffix}"
    {
        ".jsonl": lambda: frame.to_json(path, orient="records", lines=True),
        ".json": lambda: frame.to_json(path),
        ".csv": lambda: frame.to_csv(path, index=False),
        ".parquet": lambda: frame.to_parquet(path),
    }[suffix]()
    if suffix == ".json":
        path.write_text(json.dumps(frame.to_dict(orient="records")))
    rows = read_rows(str(path))
    assert [(r["question"], str(r["answer"])) for r in rows] == [("1+1", "2"), ("2+3", "5")]


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        (b"", "is empty"),
        (b"\n  \n", "is empty"),
        (
            b'{"question": "1+1", "answer": "2"}\n{"question": "2+\xff", "answer": "3"}\n',
            "line 2 (byte offset 51): byte 0xff is not UTF-8",
        ),
        (b'{"question": "1+1", "answer": "2"}\n\n{"question": "2+2", "answer": \n', "line 3: not valid JSON"),
        (b'["1+1", "2"]\n', "line 1: a row must be a JSON object"),
        (b'{"question": "1+1", "answer": "2"}\n{"question": "2+2", "answer": ""}\n', "line 2: empty 'answer'"),
        (b'{"question": "1+1", "answer": "2"}\n\n{"question": "2+2", "answer": "4"}\n', None),
        (
            b'{"prompt": "1+1", "answer": "2"}\n',
            "has no column 'question' (columns: prompt, answer); set data.problems.question",
        ),
    ],
)
def test_file_problems_fail_in_one_line(tmp_path, content, expected):
    path = tmp_path / "qa.jsonl"
    path.write_bytes(content)
    if expected is None:
        assert len(load_problems(ProblemFile(path=str(path)))) == 2
        return
    with pytest.raises(DataError) as caught:
        load_problems(ProblemFile(path=str(path)))
    assert "\n" not in str(caught.value)
    assert expected in str(caught.value)
    assert str(path) in str(caught.value)


def test_missing_gsm8k_answer_line_names_the_line(tmp_path):
    path = write_jsonl(tmp_path / "gsm.jsonl", [*GSM8K_ROWS, {"question": "q", "answer": "no marker"}])
    with pytest.raises(DataError, match=r"gsm\.jsonl' line 4: no '#### <answer>' line"):
        load_problems(ProblemFile(path=str(path), answer_format="gsm8k"))


def test_unreadable_csv_fails_in_one_line(tmp_path):
    path = tmp_path / "qa.csv"
    path.write_bytes(b'question,answer\n"1+1,2\n')
    with pytest.raises(DataError) as caught:
        load_problems(ProblemFile(path=str(path)))
    assert "\n" not in str(caught.value) and "cannot load" in str(caught.value)


def test_column_mapping_and_per_row_verifier(tmp_path):
    rows = [
        {"problem": MATH_ROW["problem"], "solution": MATH_ROW["solution"], "kind": "math_verify"},
        {"problem": "Name the colour of the sky.", "solution": "It is \\boxed{blue}", "kind": "exact"},
        {"problem": "What is 7*6?", "solution": "\\boxed{42}", "kind": ""},
    ]
    cfg = ProblemFile(
        path=str(write_jsonl(tmp_path / "math.jsonl", rows)),
        question="problem",
        answer="solution",
        answer_format="boxed",
        verifier="numeric",
        verifier_column="kind",
    )
    loaded = load_problems(cfg)
    assert [(r.answer, r.verifier) for r in loaded] == [
        ("\\frac{5}{6}", "math_verify"),
        ("blue", "exact"),
        ("42", "numeric"),
    ]
    rows[2]["kind"] = "fuzzy"
    write_jsonl(tmp_path / "math.jsonl", rows)
    with pytest.raises(DataError, match="line 3: unknown verifier 'fuzzy'"):
        load_problems(cfg)


def qa_config(path: Path, **update) -> DataConfig:
    fields = {"eval_size": 10, "validation_size": 5, "cold_start_size": 20, "rl_pool_size": 30} | update
    return DataConfig(problems=ProblemFile(path=str(path), answer_format="gsm8k", verifier="numeric"), **fields)


@pytest.fixture(scope="module")
def qa_file(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("qa") / "chains.jsonl"
    make_example(path, count=400, seed=3)
    return path


def test_file_splits_are_disjoint_held_out_and_verifiable(qa_file):
    splits = build_splits(qa_config(qa_file, heldout_permille=200), seed=0)
    assert {k: len(v) for k, v in splits.items()} == {"eval": 10, "validation": 5, "cold_start": 20, "rl": 30}
    assert overlap(splits["eval"] + splits["validation"], splits["cold_start"], splits["rl"]) == 0
    assert overlap(splits["cold_start"], splits["rl"]) == 0
    for row, problem in zip(cold_start_rows(splits["cold_start"]), splits["cold_start"], strict=True):
        assert row["prompt"] == problem.prompt and problem.answer not in problem.prompt.split("A:")[1]
        assert is_correct(row["completion"], problem.entry, problem.answer)
    assert build_splits(qa_config(qa_file, heldout_permille=200), seed=0) == splits  # deterministic


@pytest.mark.parametrize(
    ("update", "expected"),
    [
        ({"eval_size": 300}, "data.eval_size: '{path}' supplies"),
        ({"validation_size": 200}, "data.validation_size:"),
        ({"rl_pool_size": 400}, "data.rl_pool_size: '{path}' supplies"),
    ],
)
def test_a_split_larger_than_the_file_fails_in_one_line(qa_file, update, expected):
    with pytest.raises(DataError) as caught:
        build_splits(qa_config(qa_file, **update), seed=0)
    assert expected.format(path=qa_file) in str(caught.value)
    assert "\n" not in str(caught.value)


def test_question_answer_rows_as_cold_start_are_refused(qa_file):
    from models.data import load_rows

    with pytest.raises(DataError, match="has no column 'prompt'.*give them as data.problems"):
        load_rows(str(qa_file))


def gsm8k_copy(folder: Path) -> Path:
    """A local copy of openai/gsm8k's layout and columns (question, answer with `#### n`), train and test."""
    folder.mkdir()
    write_jsonl(
        folder / "train.jsonl",
        GSM8K_ROWS[:2] * 1
        + [
            {
                "question": f"Sam has {n} apples and buys {n + 3} more. How many apples now?",
                "answer": f"{n}+{n + 3} = <<{n}+{n + 3}={2 * n + 3}>>{2 * n + 3}\n#### {2 * n + 3}",
            }
            for n in range(40)
        ],
    )
    write_jsonl(
        folder / "test.jsonl",
        [GSM8K_ROWS[2], GSM8K_ROWS[0]]
        + [
            {
                "question": f"A box holds {n} pens. How many pens do {n + 1} boxes hold?",
                "answer": f"{n}*{n + 1} = <<{n}*{n + 1}={n * (n + 1)}>>{n * (n + 1)}\n#### {n * (n + 1)}",
            }
            for n in range(12)
        ],
    )
    return folder


def test_gsm8k_recipe_against_a_local_copy(tmp_path):
    folder = gsm8k_copy(tmp_path / "gsm8k")
    sizes = ["data.eval_size=10", "data.validation_size=3", "data.cold_start_size=10", "data.rl_pool_size=20"]
    # 20 prompts fill a generation batch of 16 distinct prompts (256 completions / 16 each)
    sizes += [f"{stage}.trl.gradient_accumulation_steps=2" for stage in ("reasoning_rl", "final_rl")]
    recipe = load_recipe(
        REPO / "flows" / "recipes" / "qwen2.5-math-1.5b-gsm8k-h800x8.yaml",
        [f"data.problems.path={folder}", "data.problems.name=null", *sizes],
    )
    splits = build_splits(recipe.data, recipe.seed)
    assert {k: len(v) for k, v in splits.items()} == {"eval": 10, "validation": 3, "cold_start": 10, "rl": 20}
    training = splits["cold_start"] + splits["rl"]
    assert overlap(splits["eval"] + splits["validation"], training) == 0  # Natalia's row is in both: dropped
    natalia = next(p for p in splits["eval"] + splits["validation"] if "Natalia" in p.prompt[-1]["content"])
    assert natalia.answer == "72"
    assert is_correct("<think>48+24</think><answer>72</answer>", natalia.entry, natalia.answer)
    rows = cold_start_rows(splits["cold_start"])
    assert all("<<" not in r["completion"] and "####" not in r["completion"] for r in rows)


def test_shipped_example_file_is_what_make_example_writes(tmp_path):
    remade = tmp_path / "chain_qa.jsonl"
    make_example(remade, count=3000, seed=0)
    assert remade.read_bytes() == (REPO / "models" / "assets" / "chain_qa.jsonl").read_bytes()


def test_shipped_example_recipe_builds_its_splits():
    recipe = load_recipe(REPO / "flows" / "recipes" / "tiny-qa-file.yaml")
    splits = build_splits(recipe.data, recipe.seed)
    assert {k: len(v) for k, v in splits.items()} == {"eval": 200, "validation": 48, "cold_start": 1000, "rl": 1600}
    assert splits["eval"][0].prompt.startswith("Q:") and splits["eval"][0].prompt.endswith("\nA:")


@pytest.mark.parametrize(
    ("problems", "expected"),
    [
        (None, {"tags": {"generator": "reasoning-gym", "task": "chain_sum"}}),
        (
            {"path": "openai/gsm8k", "name": "main", "answer_format": "gsm8k"},
            {"path": "openai/gsm8k", "split": "train"},
        ),
        ({"path": "builtin:chain_qa", "answer_format": "gsm8k"}, {"uri": str(REPO / "models/assets/chain_qa.jsonl")}),
    ],
)
def test_training_data_is_logged_with_its_source_and_digest(problems, expected):
    from models.data import dataset_input, problem_source

    cfg = DataConfig(problems=problems)
    rows = [{"prompt": "Q:1+2\nA:", "answer": "3"}, {"prompt": [{"role": "user", "content": "1+2"}], "answer": "3"}]
    dataset = dataset_input(rows, "reasoning_rl_prompts", problem_source(cfg))
    source = json.loads(dataset.source.to_json())
    for key, value in expected.items():
        assert value.items() <= source[key].items() if key == "tags" else source[key] == value
    assert dataset.digest == dataset_input(rows, "other name", problem_source(cfg)).digest
    assert dataset.digest != dataset_input(rows[:1], "reasoning_rl_prompts", problem_source(cfg)).digest
