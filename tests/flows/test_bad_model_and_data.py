"""Bad data files and bad model folders, as a user gives them to the command line: each is refused before any stage
with exit 2 and one stderr line that names the problem and its fix, in seconds, with nothing written to the state
folder (listed before and after). The rows run flows.cli's main() in-process (seconds each); one runs the real
`python -m flows.cli` in its own process.

    .venv/bin/python -m pytest tests/flows/test_bad_model_and_data.py -q
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from flows.cli import main
from models.factory import ASSETS

SMALL = ["data.eval_size=10", "data.validation_size=4", "data.cold_start_size=10", "data.rl_pool_size=10"]
QA_ROWS = [{"question": f"{a}+{b}", "answer": f"{a}+{b}={a + b}\n#### {a + b}"} for a in range(30) for b in range(30)]
BAD = pytest.mark.reliability("bad_input")


def jsonl(rows: list[dict]) -> bytes:
    return "".join(json.dumps(r) + "\n" for r in rows).encode()


def data_file(name: str, content: bytes, key: str = "data.problems.path") -> Callable[[Path], list[str]]:
    """A row whose recipe points `key` at a file holding `content`."""

    def build(inputs: Path) -> list[str]:
        (inputs / name).write_bytes(content)
        extra = ["data.problems.answer_format=gsm8k"] if key == "data.problems.path" else []
        return [f"{key}={inputs / name}", *extra]

    return build


def model_folder(change: Callable[[Path], None], key: str = "model.base") -> Callable[[Path], list[str]]:
    """A row whose recipe (or --evaluate, key None) names a copy of the tiny base model spoilt by `change`."""

    def build(inputs: Path) -> list[str]:
        folder = inputs / "model"
        shutil.copytree(ASSETS / "tiny_base", folder)
        change(folder)
        return ["--evaluate", str(folder)] if key == "--evaluate" else [f"{key}={folder}"]

    return build


def emptied(folder: Path) -> None:
    shutil.rmtree(folder)
    folder.mkdir()


def pickle_only(folder: Path) -> None:
    (folder / "model.safetensors").rename(folder / "pytorch_model.bin")


def config_edit(edit: Callable[[dict], dict]) -> Callable[[Path], None]:
    def change(folder: Path) -> None:
        path = folder / "config.json"
        path.write_text(json.dumps(edit(json.loads(path.read_text()))))

    return change


def garbage_config(folder: Path) -> None:
    (folder / "config.json").write_text('{"model_type": "llama", "hidden_size": 128,\n  oops\n')


def truncated_weights(folder: Path) -> None:
    weights = folder / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-1000])


def no_tokenizer(folder: Path) -> None:
    for name in ("tokenizer.json", "tokenizer_config.json"):
        (folder / name).unlink()


def long_prompts(inputs: Path) -> list[str]:
    """Questions of ~300 characters for a character model of 256 positions."""
    rows = [{"question": "+".join(["1"] * 150) + f"+{i}", "answer": f"adding\n#### {150 + i}"} for i in range(400)]
    (inputs / "long.jsonl").write_bytes(jsonl(rows))
    return [f"data.problems.path={inputs / 'long.jsonl'}", "data.problems.answer_format=gsm8k"]


def no_solutions(inputs: Path) -> list[str]:
    """Answers with the final number only: nothing to teach the cold start."""
    rows = [{"question": r["question"], "answer": r["answer"].rpartition("\n")[2]} for r in QA_ROWS]
    (inputs / "bare.jsonl").write_bytes(jsonl(rows))
    return [f"data.problems.path={inputs / 'bare.jsonl'}", "data.problems.answer_format=gsm8k"]


def missing_file(inputs: Path) -> list[str]:
    return [f"data.problems.path={inputs / 'nowhere.jsonl'}"]


def missing_folder(inputs: Path) -> list[str]:
    return [f"model.base={inputs / 'no-such-model'}"]


GOOD_LINES = jsonl(QA_ROWS[:2])
ROWS = [
    (
        "malformed JSONL line",
        data_file("qa.jsonl", GOOD_LINES + b'{"question": "2+2", "answer": \n'),
        "line 3: not valid JSON.*one object per line",
    ),
    (
        "a row that is not an object",
        data_file("qa.jsonl", GOOD_LINES + b'["1+1", "2"]\n'),
        "line 3: a row must be a JSON object",
    ),
    (
        "missing column",
        data_file("qa.jsonl", jsonl([{"prompt": "1+1", "answer": "2"}])),
        r"no column 'question' \(columns: prompt, answer\); set data.problems.question",
    ),
    ("empty file", data_file("qa.jsonl", b""), "is empty; it needs at least one row"),
    ("blank lines only", data_file("qa.jsonl", b"\n \n\n"), "is empty; it needs at least one row"),
    (
        "CSV with a header only",
        data_file("qa.csv", b"question,answer\n"),
        "has a header but no rows; it needs at least one row",
    ),
    (
        "non-UTF-8 bytes",
        data_file("qa.jsonl", GOOD_LINES + b'{"question": "2+\xff", "answer": "3"}\n'),
        r"line 3 \(byte offset 1\d\d\): byte 0xff is not UTF-8; re-encode",
    ),
    ("missing data file", missing_file, "no file at .*nowhere.jsonl"),
    (
        "non-reasoning rows without completion",
        data_file("nr.jsonl", jsonl([{"prompt": "hi"}]), "data.non_reasoning"),
        "no column 'completion' .*columns: prompt.*needs a prompt and a completion",
    ),
    (
        "cold-start rows not UTF-8",
        data_file("cs.jsonl", b'{"prompt": "\xfe", "completion": "x"}\n', "data.cold_start"),
        r"line 1 \(byte offset 12\): byte 0xfe",
    ),
    (
        "prompts longer than the context",
        long_prompts,
        r"longest prompt \(.*, 30\d tokens.*\) \+ .* exceeds the model's context of 256 tokens.*shorten the prompts",
    ),
    (
        "problems without worked solutions",
        no_solutions,
        "has no worked solution for cold-start SFT.*data.problems.solution.*data.cold_start",
    ),
    ("missing model folder", missing_folder, "no model folder at .*no-such-model.*give a Hugging Face model folder"),
    ("empty model folder", model_folder(emptied), "model folder .* is empty; save it with model.save_pretrained"),
    (
        "pickle-only weights",
        model_folder(pickle_only),
        r"only pickle weights \(pytorch_model.bin\); models load from safetensors only.*save_pretrained",
    ),
    ("no config.json", model_folder(lambda f: (f / "config.json").unlink()), "has no config.json; save it with"),
    (
        "config.json not JSON",
        model_folder(garbage_config),
        r"config.json' is not valid JSON at line 2 column 3; restore it",
    ),
    (
        "config.json without model_type",
        model_folder(config_edit(lambda c: {k: v for k, v in c.items() if k != "model_type"})),
        "has no model_type; restore the config.json",
    ),
    (
        "unknown model_type",
        model_folder(config_edit(lambda c: {**c, "model_type": "llamaa"})),
        "model_type 'llamaa' is unknown to transformers",
    ),
    (
        "not a causal LM",
        model_folder(config_edit(lambda c: {**c, "model_type": "vit"})),
        "a 'vit' model is not a causal language model; give a causal language model",
    ),
    (
        "own modelling code",
        model_folder(config_edit(lambda c: {**c, "auto_map": {"AutoModelForCausalLM": "m.M"}})),
        r"needs its own modelling code \(auto_map.*\).*trust_remote_code",
    ),
    ("truncated safetensors", model_folder(truncated_weights), r"model.safetensors' is truncated .*re-download"),
    ("no tokenizer", model_folder(no_tokenizer), "has no tokenizer .*tokenizer.save_pretrained"),
    (
        "chat prompts, no chat template",
        lambda inputs: ["data.prompt_style=chat"],
        "has no chat template but data.prompt_style is chat.*prompt_style=compact",
    ),
    (
        "reward model pickle-only",
        model_folder(pickle_only, "final_rl.general_reward.model"),
        "final_rl.general_reward.model: .*only pickle weights",
    ),
    (
        "reward model not a classifier",
        model_folder(config_edit(lambda c: {**c, "model_type": "vit"}), "final_rl.general_reward.model"),
        "final_rl.general_reward.model: .*not a sequence-classification",
    ),
    ("evaluate an empty folder", model_folder(emptied, "--evaluate"), "^model error: the model folder .* is empty"),
    ("evaluate pickle-only weights", model_folder(pickle_only, "--evaluate"), "^model error: .*only pickle weights"),
    ("evaluate a garbage config", model_folder(garbage_config, "--evaluate"), "^model error: .*is not valid JSON"),
]


DIGEST_CACHE = ("cache", "cache/file_sha256.sqlite")  # models/fingerprints.py: file digests, one transaction each


def listing(folder: Path) -> list[str]:
    """Every path under `folder` but the digest cache (a check may read data files before it finds the problem)."""
    paths = (str(p.relative_to(folder)) for p in folder.rglob("*")) if folder.exists() else ()
    return sorted(p for p in paths if p not in DIGEST_CACHE)


@pytest.fixture
def places(tmp_path, monkeypatch) -> tuple[Path, Path]:
    """(inputs folder, state folder with a finished run's files) for one row; the environment points at the state."""
    inputs, state = tmp_path / "inputs", tmp_path / "state"
    inputs.mkdir()
    (state / "outputs").mkdir(parents=True)
    (state / "outputs" / "kept.txt").write_text("from an earlier run")
    monkeypatch.setenv("R1_STATE_DIR", str(state))
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{state / 'mlflow.db'}")
    return inputs, state


@pytest.mark.parametrize(("build", "pattern"), [pytest.param(b, p, id=i, marks=BAD) for i, b, p in ROWS])
def test_bad_model_or_data_is_refused_in_one_line(build, pattern, places, capsys):
    import re

    inputs, state = places
    argv = [*SMALL, *build(inputs)]
    before, inputs_before = listing(state), listing(inputs)
    started = time.monotonic()
    assert main(argv) == 2
    elapsed = time.monotonic() - started
    captured = capsys.readouterr()
    lines = captured.err.splitlines()
    assert len(lines) == 1, captured.err
    assert re.search(pattern, lines[0]), lines[0]
    assert re.match(r"(recipe|data|model) error: ", lines[0]) and "Traceback" not in captured.out + captured.err
    assert elapsed < 20, f"refused after {elapsed:.1f} s"
    assert listing(state) == before and listing(inputs) == inputs_before


@BAD
def test_the_real_command_refuses_a_pickle_only_model_in_one_line(places):
    """`python -m flows.cli --evaluate <folder>` in its own process: exit 2, one line, no traceback, nothing written."""
    inputs, state = places
    folder = inputs / "model"
    shutil.copytree(ASSETS / "tiny_base", folder)
    pickle_only(folder)
    before = listing(state)
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parents[2])}
    done = subprocess.run(
        [sys.executable, "-m", "flows.cli", "--evaluate", str(folder)],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert done.returncode == 2, done.stderr
    assert done.stderr.splitlines() == [done.stderr.strip()] and "Traceback" not in done.stderr + done.stdout
    assert done.stderr.startswith("model error: ") and "only pickle weights" in done.stderr
    assert listing(state) == before
