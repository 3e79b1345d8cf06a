"""Each stage trains (or samples) through real TRL on the tiny model, in process, chained like the pipeline:
the weights of every training stage change, outputs are stamped, nothing half-written is left behind."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from stage_chain import TRAINED_FROM, run_chain

from models.recipe import load_recipe
from models.records import STAMP, Artifact, fingerprint_dir, local_path
from models.run_stage import run
from models.stage_io import StageSpec, stage_spec


def _run(spec: StageSpec) -> Artifact:
    """The stage in process, checked: stamped, fingerprinted, no partial folder left."""
    record = run(spec)
    assert (local_path(record.uri) / STAMP).is_file()
    assert not Path(spec.output).with_name(f"{spec.stage}.partial").exists()
    assert record.fingerprint == fingerprint_dir(local_path(record.uri))
    return record


@pytest.fixture(scope="module")
def chain(tmp_path_factory, small_stages):
    """All five stages and an evaluation, each from an earlier one's record (as the flow chains them)."""
    out = tmp_path_factory.mktemp("stages")
    import mlflow

    previous = mlflow.get_tracking_uri()
    mlflow.set_tracking_uri(f"sqlite:///{out / 'mlflow.db'}")  # where a stray, unguarded log call would land
    recipe = load_recipe(None, small_stages)
    records = run_chain(recipe, out, _run)
    evaluate = stage_spec("evaluate", recipe, {"model": records["final_rl"]}, output=str(out / "evaluate"))
    records["evaluate"] = _run(evaluate)
    yield records
    mlflow.set_tracking_uri(previous)


def test_stages_without_a_run_id_log_nothing(chain):
    from mlflow.tracking import MlflowClient

    out = Path(chain["cold_start_sft"].uri).parent
    mlflow_client = MlflowClient(tracking_uri=f"sqlite:///{out / 'mlflow.db'}")
    experiments = [e.experiment_id for e in mlflow_client.search_experiments()]
    assert mlflow_client.search_runs(experiments) == []


@pytest.mark.parametrize(("stage", "start"), TRAINED_FROM)
def test_training_stage_changes_weights(chain, stage, start, weights_changed):
    assert weights_changed(chain[start].uri, chain[stage].uri)
    assert chain[stage].kind == "model"


def test_rejection_sampling_writes_verified_data_and_stats(chain):
    folder = local_path(chain["rejection_sampling"].uri)
    stats = json.loads((folder / "stats.json").read_text())
    rows = [json.loads(line) for line in (folder / "data.jsonl").read_text().splitlines()]
    assert stats["sampled"] == 12 * 4
    assert stats["kept"] == len(rows)
    dropped = sum(v for k, v in stats.items() if k.startswith("dropped_"))
    assert stats["kept"] + dropped == stats["sampled"]


def test_evaluation_reports_r1_metrics(chain):
    metrics = json.loads((local_path(chain["evaluate"].uri) / "metrics.json").read_text())
    assert metrics["eval/num_prompts"] == 12 and metrics["eval/k"] == 2
    assert 0.0 <= metrics["eval/pass_at_1"] <= metrics["eval/pass_at_k"] <= 1.0
    assert metrics["eval/heldout_overlap"] == 0.0


def test_failed_stage_leaves_no_output(tmp_path, small_stages):
    recipe = load_recipe(None, small_stages)
    missing = Artifact(uri=str(tmp_path / "nowhere"), fingerprint="x", stage="cold_start_sft", kind="model")
    spec = stage_spec("reasoning_rl", recipe, {"model": missing}, output=str(tmp_path / "rl"))
    with pytest.raises(Exception, match="nowhere"):
        run(spec)
    assert sorted(p.name for p in tmp_path.iterdir()) == []
