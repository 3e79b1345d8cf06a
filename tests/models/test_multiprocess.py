"""The multi-GPU path, run on the CPU: cold_start_sft then reasoning_rl, each as 2 processes (gloo) under
`accelerate launch`, through the same launcher as the Prefect task (tasks/launch.launch with a StageSpec). Both
ranks train, only the main one publishes, prints the record and logs to MLflow."""

from __future__ import annotations

import time

import pytest
from stage_process import FLOW, Stage, marked, resumed_from

from models.factory import model_record
from models.recipe import load_recipe
from models.records import STAMP, fingerprint_dir, local_path
from models.stage_io import stage_spec
from tasks.launch import launch

pytestmark = pytest.mark.slow

TWO_PROCESSES = [
    "launch.num_processes=2",
    "data.eval_size=10",
    "data.validation_size=8",
    "data.cold_start_size=200",
    "data.rl_pool_size=32",
    "cold_start_sft.trl.per_device_train_batch_size=4",  # per process: 2 epochs x 200 rows / (2 x 4) = 50 steps
    "cold_start_sft.trl.logging_steps=1",
    "cold_start_sft.checkpoint_every=20",  # checkpoints written by both ranks (each its own RNG state)
    "reasoning_rl.trl.max_steps=2",
    "reasoning_rl.trl.num_generations=8",
    "reasoning_rl.trl.per_device_train_batch_size=8",  # per process: 2 x 8 = 16 completions = 2 prompts x 8
    "reasoning_rl.trl.logging_steps=1",
    "reasoning_rl.checkpoint_every=1",
    "reasoning_rl.alarms.check_every=0",
]


@pytest.fixture(scope="module")
def launched(tmp_path_factory):
    """{stage: (record, output lines, mlflow run id, start record)} for both stages, chained like the flow."""
    tmp = tmp_path_factory.mktemp("multiprocess")
    with pytest.MonkeyPatch.context() as env:
        env.setenv("R1_STATE_DIR", str(tmp / "state"))
        env.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp / 'mlflow.db'}")
        from models.tracking import client, ensure_experiment

        experiment = ensure_experiment("multiprocess")
        recipe = load_recipe(None, TWO_PROCESSES)
        start = model_record(recipe.model.base, "base_model")
        results = {}
        for stage in ("cold_start_sft", "reasoning_rl"):
            run_id = client().create_run(experiment, run_name=stage).info.run_id
            output = str(tmp / "out" / stage / "key")
            spec = stage_spec(stage, recipe, {"model": start}, output=output, mlflow_run_id=run_id)
            lines: list[str] = []
            record, output = launch(spec, lines.append, timeout_s=600)
            assert output == lines
            results[stage] = (record, lines, run_id, start)
            start = record
        yield results, client(), experiment


@pytest.mark.parametrize("stage", ["cold_start_sft", "reasoning_rl"])
def test_stage_trains_on_two_processes_and_publishes_once(launched, stage, weights_changed):
    results, _, _ = launched
    record, lines, _, start = results[stage]
    folder = local_path(record.uri)
    assert (folder / STAMP).is_file()
    assert (folder / "model.safetensors").is_file()
    assert record.fingerprint == fingerprint_dir(folder)
    assert sorted(p.name for p in folder.parent.iterdir()) == [folder.name]  # no .partial, no .trainer left
    assert sum(f"{stage}: published" in line for line in lines) == 1
    assert any(f"{stage}: world_size=2" in line for line in lines)
    assert weights_changed(start.uri, record.uri)


@pytest.mark.parametrize("stage", ["cold_start_sft", "reasoning_rl"])
def test_only_the_main_rank_logs_to_mlflow(launched, stage):
    results, mlflow_client, experiment = launched
    _, _, run_id, _ = results[stage]
    run = mlflow_client.get_run(run_id)
    assert any(key.startswith(f"config.{stage}.trl.") for key in run.data.params)
    steps = [m.step for m in mlflow_client.get_metric_history(run_id, "loss")]
    assert steps and len(steps) == len(set(steps))  # one series, not one per rank
    runs = mlflow_client.search_runs([experiment, "0"])
    assert sorted(r.info.run_name for r in runs) == ["cold_start_sft", "reasoning_rl"]  # no stray run of rank 1


def test_a_flow_killed_mid_stage_on_two_processes_resumes_to_the_same_weights(launched, tmp_path, weights_of):
    """The flow is killed with SIGKILL once checkpoint-20 is complete: no rank trains on, and the next run resumes on
    both ranks (each its own RNG state) to the weights and losses of the uninterrupted two-process run."""
    import torch

    results, mlflow_client, _ = launched
    record, _, run_id, start = results["cold_start_sft"]
    run = Stage(tmp_path, "cold_start_sft", load_recipe(None, TWO_PROCESSES), {"model": start}, "flow_killed")
    marker = f"r1-test-{tmp_path.name}"
    run.kill_when(lambda: run.complete(20), proc=run.start(FLOW, R1_TEST_MARKER=marker))
    deadline = time.monotonic() + 5
    while marked(marker) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert marked(marker) == []
    resumed = run.finish(run.start(FLOW))
    assert resumed_from(run).endswith("checkpoint-20")
    expected, got = weights_of(record.uri), weights_of(resumed.uri)
    assert all(torch.equal(expected[k], got[k]) for k in expected)
    assert run.series("loss") == sorted((m.step, m.value) for m in mlflow_client.get_metric_history(run_id, "loss"))


class _Cancel(Exception):
    pass


def test_a_cancelled_launch_kills_every_rank(tmp_path, monkeypatch):
    """torchrun starts each rank in a session of its own: cancelling (or a timeout) must still kill them all."""
    import psutil

    marker = f"r1-test-{tmp_path.name}"
    monkeypatch.setenv("R1_TEST_MARKER", marker)  # inherited by the launcher and every rank
    monkeypatch.setenv("R1_STATE_DIR", str(tmp_path / "state"))

    def cancel_once_both_ranks_run(line: str) -> None:
        if "cold_start_sft: world_size=2" in line:  # the process group is up: both ranks exist
            raise _Cancel

    recipe = load_recipe(None, TWO_PROCESSES)
    base = model_record(recipe.model.base, "base_model")
    output = tmp_path / "out" / "cold_start_sft"
    spec = stage_spec("cold_start_sft", recipe, {"model": base}, output=str(output))
    with pytest.raises(_Cancel):
        launch(spec, cancel_once_both_ranks_run, timeout_s=600)

    def alive_with_marker(proc: psutil.Process) -> bool:
        try:
            return proc.status() != psutil.STATUS_ZOMBIE and proc.environ().get("R1_TEST_MARKER") == marker
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            return False

    assert [p.pid for p in psutil.process_iter() if alive_with_marker(p)] == []
    assert not output.exists()
