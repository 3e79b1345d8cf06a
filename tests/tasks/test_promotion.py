"""The promotion gate, both ways: `champion` moves only to a model that beats it on the same held-out set, and a
champion measured on another set is re-evaluated (for real, on the tiny model) before the comparison."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from models.factory import resolve_source
from models.recipe import load_recipe
from models.records import Artifact

RECIPE = ["name=gate", "model.registered_name=gate-model", "data.eval_size=10", "evaluation.num_samples=1"]


@pytest.fixture
def env(tmp_path, prefect_server, monkeypatch):
    from prefect.settings import PREFECT_LOCAL_STORAGE_PATH, temporary_settings

    monkeypatch.setenv("R1_STATE_DIR", str(tmp_path))
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    with temporary_settings({PREFECT_LOCAL_STORAGE_PATH: tmp_path / "results"}):
        yield tmp_path


def _evaluation(folder: Path, eval_set: str, pass_at_1: float) -> Artifact:
    folder.mkdir(parents=True)
    (folder / "metrics.json").write_text(json.dumps({"eval/pass_at_1": pass_at_1}))
    (folder / "eval_set.json").write_text(json.dumps({"id": eval_set, "prompts": 10}))
    return Artifact(uri=str(folder), fingerprint=eval_set, stage="evaluate", kind="dataset")


def _register(recipe, pipeline, fingerprint: str) -> str:
    """A new registered version holding the tiny model (distinct fingerprints make distinct versions)."""
    from models.tracking import start_child_run
    from tasks.publish import register_model

    run_id = start_child_run(pipeline.experiment_id, pipeline.parent_run_id, "final_rl", {"stage": "final_rl"})
    final = Artifact(
        uri=resolve_source("builtin:tiny_base"),
        fingerprint=fingerprint,
        stage="final_rl",
        kind="model",
        mlflow_run_id=run_id,
    )
    return register_model(recipe, final)


def _champion(recipe) -> str:
    from models.tracking import client

    return client().get_model_version_by_alias(recipe.model.registered_name, "champion").version


def test_champion_moves_only_to_a_better_model(env):
    from tasks.pipeline_run import open_pipeline_run
    from tasks.promotion import promote

    recipe = load_recipe(None, RECIPE)
    pipeline = open_pipeline_run(recipe, "gate-test", "")
    first = _register(recipe, pipeline, "a")
    assert promote(recipe, first, _evaluation(env / "e1", "set", 0.5), pipeline).startswith("promoted")
    worse = _register(recipe, pipeline, "b")
    decision = promote(recipe, worse, _evaluation(env / "e2", "set", 0.4), pipeline)
    assert decision.startswith("stays candidate") and "0.400 <= champion" in decision
    assert _champion(recipe) == first
    better = _register(recipe, pipeline, "c")
    assert promote(recipe, better, _evaluation(env / "e3", "set", 0.6), pipeline).startswith("promoted")
    assert _champion(recipe) == better


@pytest.mark.parametrize(("candidate_score", "promoted"), [(0.0, False), (0.05, True)])
def test_champion_from_another_eval_set_is_reevaluated(env, candidate_score, promoted):
    from models.tracking import client
    from tasks.pipeline_run import open_pipeline_run
    from tasks.promotion import promote

    recipe = load_recipe(None, RECIPE)
    pipeline = open_pipeline_run(recipe, "gate-test", "")
    champion = _register(recipe, pipeline, "old")
    promote(recipe, champion, _evaluation(env / "old", "an-older-set", 0.99), pipeline)
    candidate = _register(recipe, pipeline, "new")
    decision = promote(recipe, candidate, _evaluation(env / "new", "this-set", candidate_score), pipeline)
    # the tiny base never writes R1's format: re-evaluated on this set it scores 0, not its recorded 0.99
    assert "champion v1's 0.000" in decision
    assert decision.startswith("promoted") == promoted
    assert _champion(recipe) == (candidate if promoted else champion)
    runs = client().search_runs([pipeline.experiment_id], "tags.stage = 'champion'")
    assert len(runs) == 1 and runs[0].data.metrics["eval/pass_at_1"] == 0.0
