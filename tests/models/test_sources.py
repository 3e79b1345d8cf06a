"""models/sources.py: every source record a recipe names is keyed by content or revision, so new data under the same
path or hub id changes the keys of the stages that read it (and nothing else), and unchanged data changes nothing.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from models import fingerprints
from models.factory import resolve_source
from models.recipe import load_recipe
from models.sources import source_record
from models.stage_io import stage_spec

ASSETS = Path(resolve_source("builtin:chain_qa")).parent
QA = ["data.problems.answer_format=gsm8k", "data.problems.verifier=numeric"]


def _recipe(*overrides: str):
    return load_recipe(None, list(overrides))


def _keys(recipe) -> dict[str, str]:
    """The keys of the stages that start from the recipe's sources (and of the base model's evaluation)."""
    record = {name: source_record(name, recipe) for name in ("base_model", "non_reasoning_data", "problem_file")}
    problems = {"problems": record["problem_file"]} if record["problem_file"] else {}
    model = {"model": record["base_model"]}
    return {
        "cold_start_sft": stage_spec("cold_start_sft", recipe, {**model, **problems}).key(),
        "evaluate": stage_spec(
            "evaluate", recipe, {**model, "general": record["non_reasoning_data"], **problems}
        ).key(),
        "supervised_merge": stage_spec(
            "supervised_merge", recipe, {**model, "data": record["base_model"], "general": record["non_reasoning_data"]}
        ).key(),
    }


def test_new_rows_in_the_same_problem_file_change_the_keys(tmp_path):
    path = tmp_path / "qa.jsonl"
    shutil.copyfile(ASSETS / "chain_qa.jsonl", path)
    recipe = _recipe(f"data.problems.path={path}", *QA)
    before = _keys(recipe)
    assert _keys(recipe) == before  # unchanged content: the same keys
    rows = path.read_text().splitlines()
    path.write_text("\n".join([*rows, rows[0].replace('"4', '"9')]) + "\n")  # one new row, same path
    after = _keys(recipe)
    assert after["cold_start_sft"] != before["cold_start_sft"] and after["evaluate"] != before["evaluate"]
    assert after["supervised_merge"] == before["supervised_merge"]  # it reads no problems


def test_a_changed_base_model_folder_changes_the_keys(tmp_path):
    folder = shutil.copytree(resolve_source("builtin:tiny_base"), tmp_path / "base")
    recipe = _recipe(f"model.base={folder}")
    before = _keys(recipe)
    (folder / "generation_config.json").write_text('{"do_sample": true}')
    after = _keys(recipe)
    assert all(after[stage] != before[stage] for stage in before)


def test_new_non_reasoning_rows_change_the_keys_of_what_reads_them(tmp_path):
    path = tmp_path / "general.jsonl"
    shutil.copyfile(ASSETS / "non_reasoning.jsonl", path)
    recipe = _recipe(f"data.non_reasoning={path}")
    before = _keys(recipe)
    path.write_text(path.read_text() + '{"prompt": "Hi", "completion": "Hello."}\n')
    after = _keys(recipe)
    assert after["supervised_merge"] != before["supervised_merge"] and after["evaluate"] != before["evaluate"]
    assert after["cold_start_sft"] == before["cold_start_sft"]


def test_a_local_dataset_folder_is_keyed_by_its_files(tmp_path):
    folder = tmp_path / "general"
    folder.mkdir()
    shutil.copyfile(ASSETS / "non_reasoning.jsonl", folder / "train.jsonl")
    recipe = _recipe(f"data.non_reasoning={folder}")
    before = source_record("non_reasoning_data", recipe).fingerprint
    (folder / "train.jsonl").write_text((folder / "train.jsonl").read_text() + '{"prompt": "a", "completion": "b"}\n')
    assert source_record("non_reasoning_data", recipe).fingerprint != before


def test_a_second_eval_file_is_keyed_by_its_content(tmp_path):
    train, held = tmp_path / "train.jsonl", tmp_path / "held.jsonl"
    rows = (ASSETS / "chain_qa.jsonl").read_text().splitlines()
    train.write_text("\n".join(rows[:2000]) + "\n")
    held.write_text("\n".join(rows[2000:]) + "\n")
    recipe = _recipe(f"data.problems.path={train}", f"data.problems.eval_split={held}", *QA)
    before = source_record("problem_file", recipe).fingerprint
    held.write_text("\n".join(rows[2001:]) + "\n")
    assert source_record("problem_file", recipe).fingerprint != before


def test_a_hub_dataset_is_keyed_by_its_commit(monkeypatch):
    commits = {"main": "a" * 40, "v1": "a" * 40}
    monkeypatch.setattr(fingerprints, "_asked_sha", lambda repo_id, repo_type, revision: commits[revision or "main"])
    recipe = _recipe("data.problems.path=org/qa", *QA)
    before, first = _keys(recipe), source_record("problem_file", recipe).fingerprint
    assert _keys(recipe) == before
    commits["main"] = "b" * 40  # a scheduled run after new data was pushed
    assert _keys(recipe)["cold_start_sft"] != before["cold_start_sft"]
    pinned = _recipe("data.problems.path=org/qa", "data.problems.revision=v1", *QA)
    assert source_record("problem_file", pinned).fingerprint == first  # the pin still names the first commit


def test_a_revision_for_a_local_file_is_refused():
    from models.recipe import RecipeError

    with pytest.raises(RecipeError, match="a revision applies to a hub dataset id only"):
        _recipe("data.problems.path=builtin:chain_qa", "data.problems.revision=main", *QA)


def test_reasoning_gym_problems_are_keyed_by_their_generator_settings_and_seed():
    """Procedural problems have no source record; what generates them is in the spec of the stages that draw them."""
    base = _recipe()
    assert source_record("problem_file", base) is None
    before = _keys(base)["cold_start_sft"]
    assert _keys(_recipe())["cold_start_sft"] == before
    assert _keys(_recipe("data.task_config.max_digits=2"))["cold_start_sft"] != before
    assert _keys(_recipe("seed=1"))["cold_start_sft"] != before
