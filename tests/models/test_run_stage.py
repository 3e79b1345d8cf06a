"""Each stage trains (or samples) through real TRL on the tiny model, in process, chained like the pipeline:
the weights of every training stage change, outputs are stamped, nothing half-written is left behind."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from models.factory import model_record
from models.recipe import load_recipe
from models.records import STAMP, Artifact, fingerprint_dir, local_path
from models.run_stage import run
from models.stage_io import StageSpec


def _run(stage: str, recipe, inputs: dict[str, Artifact], out: Path) -> Artifact:
    spec = StageSpec(stage=stage, recipe=recipe, inputs=inputs, output=str(out / stage))
    record = run(spec)
    assert (local_path(record.uri) / STAMP).is_file()
    assert not (out / f"{stage}.partial").exists()
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
    base = model_record(recipe.model.base, "base_model")
    records = {"base": base}
    records["cold_start_sft"] = _run("cold_start_sft", recipe, {"base": base}, out)
    records["reasoning_rl"] = _run("reasoning_rl", recipe, {"model": records["cold_start_sft"]}, out)
    records["rejection_sampling"] = _run("rejection_sampling", recipe, {"model": records["reasoning_rl"]}, out)
    records["supervised_merge"] = _run(
        "supervised_merge", recipe, {"start": base, "data": records["rejection_sampling"]}, out
    )
    # final_rl starts from the cold-start policy here: a merge SFT on a dozen rows cannot yet write R1's format,
    # and GRPO learns nothing (rightly) when every completion scores 0
    records["final_rl"] = _run("final_rl", recipe, {"model": records["cold_start_sft"]}, out)
    records["evaluate"] = _run("evaluate", recipe, {"model": records["final_rl"]}, out)
    yield records
    mlflow.set_tracking_uri(previous)


def test_stages_without_a_run_id_log_nothing(chain):
    from mlflow.tracking import MlflowClient

    out = Path(chain["cold_start_sft"].uri).parent
    mlflow_client = MlflowClient(tracking_uri=f"sqlite:///{out / 'mlflow.db'}")
    experiments = [e.experiment_id for e in mlflow_client.search_experiments()]
    assert mlflow_client.search_runs(experiments) == []


@pytest.mark.parametrize(
    ("stage", "start"),
    [
        ("cold_start_sft", "base"),
        ("reasoning_rl", "cold_start_sft"),
        ("supervised_merge", "base"),
        ("final_rl", "cold_start_sft"),
    ],
)
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
    spec = StageSpec(stage="reasoning_rl", recipe=recipe, inputs={"model": missing}, output=str(tmp_path / "rl"))
    with pytest.raises(Exception, match="nowhere"):
        run(spec)
    assert sorted(p.name for p in tmp_path.iterdir()) == []
