"""A training stage killed with SIGKILL resumes on the next run from its last complete checkpoint and ends where an
uninterrupted run of the same seed ends: the same weights (torch.equal: training on the CPU is deterministic), the
same losses, rewards and alarms step by step, in the same MLflow run, continued, FINISHED, no step logged twice.

Each stage runs as `python -m models.run_stage spec.json` in its own process: uninterrupted; killed right after a
checkpoint completed (for cold_start_sft the one at the end of epoch 1 of 2, for reasoning_rl the one at the end of
its first pass over the prompts); killed between two checkpoints, after it logged steps past the last one."""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
from stage_process import FLOW, Stage, marked, resumed_from

from models.factory import model_record
from models.recipe import load_recipe
from models.records import local_path
from models.resume import (
    COMPLETE,
    RUN_FILE,
    CheckpointCallback,
    continue_stage_run,
    continued_series,
    resume_point,
)
from models.stage_io import scratch_dir

SFT = [  # 64 rows, 8 a step: 8 steps an epoch, 2 epochs; a checkpoint every 4 steps
    "data.cold_start_size=64",
    "cold_start_sft.trl.per_device_train_batch_size=8",
    "cold_start_sft.trl.logging_steps=1",
    "cold_start_sft.checkpoint_every=4",
]
GRPO = [  # 8 prompts, 2 a step (16 completions, 8 per prompt): 4 steps a pass, 6 steps; a checkpoint every 2 steps
    "data.rl_pool_size=8",
    "data.validation_size=8",
    "reasoning_rl.trl.max_steps=6",
    "reasoning_rl.trl.num_generations=8",
    "reasoning_rl.trl.per_device_train_batch_size=16",
    "reasoning_rl.trl.logging_steps=1",
    "reasoning_rl.checkpoint_every=2",
    "reasoning_rl.alarms.check_every=2",
    "reasoning_rl.alarms.check_sampling.num_samples=1",
    "reasoning_rl.alarms.window=2",
    "reasoning_rl.alarms.max_zero_std_fraction=0.0",  # raised once two logs in a row have an all-equal group
    "reasoning_rl.trl.beta=0.01",
    "reasoning_rl.trl.sync_ref_model=true",  # the reference moves halfway to the policy at step 3 (before checkpoint 4)
    "reasoning_rl.trl.ref_model_sync_steps=3",
    "reasoning_rl.trl.ref_model_mixup_alpha=0.5",
]
ATTEMPTS = ("uninterrupted", "at_checkpoint", "between_checkpoints")


def _attempts(root: Path, stage: str, recipe, inputs, boundary: int, every: int, key: str) -> dict:
    """{attempt: (Stage, record)}: uninterrupted; killed once checkpoint `boundary` is complete; killed between
    checkpoints `boundary - every` and `boundary` (once `key` was logged past the first, or the save of the second
    began); the killed ones are run again."""
    done, before = {}, boundary - every
    for attempt in ATTEMPTS:
        run = Stage(root, stage, recipe, inputs, attempt)
        if attempt == "at_checkpoint":
            run.kill_when(lambda run=run: run.complete(boundary))
        elif attempt == "between_checkpoints":
            run.kill_when(
                lambda run=run: run.complete(before) and (run.started(boundary) or run.logged_past(key, before))
            )
            assert not run.complete(boundary)
        if attempt != "uninterrupted":
            assert run.client.get_run(run.run_id).info.status == "RUNNING"  # what a kill -9 leaves
        done[attempt] = (run, run.finish(run.start()))
    return done


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    root = tmp_path_factory.mktemp("resume")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("R1_STATE_DIR", str(root / "state"))
        patch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{root / 'mlflow.db'}")
        yield root


@pytest.fixture(scope="module")
def sft(env):
    recipe = load_recipe(None, SFT)
    base = model_record(recipe.model.base, "base_model")
    return _attempts(env, "cold_start_sft", recipe, {"model": base}, boundary=8, every=4, key="loss")


@pytest.fixture(scope="module")
def grpo(env, sft):
    recipe = load_recipe(None, GRPO)
    start = sft["uninterrupted"][1]  # a cold-started policy: rewards vary within groups
    return _attempts(env, "reasoning_rl", recipe, {"model": start}, boundary=4, every=2, key="reward")


@pytest.fixture(scope="module")
def sft_flow_killed(env, sft):
    """cold_start_sft launched by a flow process, the flow killed with SIGKILL once checkpoint-4 is complete; then
    the stage runs again. (Stage, processes of the killed flow still alive 5 s later, record)."""
    recipe = load_recipe(None, SFT)
    run = Stage(env, "cold_start_sft", recipe, {"model": model_record(recipe.model.base, "base_model")}, "flow_killed")
    marker = f"r1-test-{env.name}-flow"
    run.kill_when(lambda: run.complete(4), proc=run.start(FLOW, R1_TEST_MARKER=marker))
    deadline = time.monotonic() + 5
    while marked(marker) and time.monotonic() < deadline:
        time.sleep(0.1)
    orphans = marked(marker)
    for pid in orphans:
        os.kill(pid, signal.SIGKILL)
    return run, orphans, run.finish(run.start())


@pytest.mark.slow
def test_a_flow_killed_mid_stage_takes_the_stage_with_it_and_the_next_run_resumes(sft, sft_flow_killed, weights_of):
    """An orphaned stage would go on writing into the work area the next run resumes from."""
    import torch

    run, orphans, record = sft_flow_killed
    assert orphans == []
    assert resumed_from(run).endswith("checkpoint-4")
    expected, got = weights_of(sft["uninterrupted"][1].uri), weights_of(record.uri)
    assert all(torch.equal(expected[k], got[k]) for k in expected)
    assert run.series("loss") == sft["uninterrupted"][0].series("loss")
    assert run.client.get_run(run.run_id).info.status == "FINISHED"


@pytest.mark.slow
@pytest.mark.parametrize(("attempt", "checkpoint"), [("at_checkpoint", 8), ("between_checkpoints", 4)])
def test_sft_resumes_to_the_uninterrupted_weights(sft, attempt, checkpoint, weights_of):
    """checkpoint-8 ends epoch 1 of 2: the resumed run must still train epoch 2 (verl#7401 skipped it)."""
    import torch

    run, record = sft[attempt]
    assert resumed_from(run).endswith(f"checkpoint-{checkpoint}")
    expected, got = weights_of(sft["uninterrupted"][1].uri), weights_of(record.uri)
    assert all(torch.equal(expected[k], got[k]) for k in expected)


@pytest.mark.slow
@pytest.mark.parametrize(("attempt", "checkpoint"), [("at_checkpoint", 4), ("between_checkpoints", 2)])
def test_grpo_resumes_to_the_uninterrupted_weights(grpo, attempt, checkpoint, weights_of):
    """checkpoint-4 ends the first pass over the 8 prompts: the second pass must draw the same prompt order."""
    import torch

    run, record = grpo[attempt]
    assert resumed_from(run).endswith(f"checkpoint-{checkpoint}")
    expected, got = weights_of(grpo["uninterrupted"][1].uri), weights_of(record.uri)
    assert all(torch.equal(expected[k], got[k]) for k in expected)


SERIES = [
    ("sft", "loss", 16),
    ("sft", "mean_token_accuracy", 16),
    ("sft", "num_tokens", 16),
    ("sft", "learning_rate", 16),
    ("grpo", "loss", 6),
    ("grpo", "reward", 6),
    ("grpo", "rewards/accuracy_reward/mean", 6),
    ("grpo", "frac_reward_zero_std", 6),
    ("grpo", "kl", 6),
    ("grpo", "heldout_check/pass_at_1", 4),  # steps 0, 2, 4, 6
]


@pytest.mark.slow
@pytest.mark.parametrize(("stage", "key", "points"), SERIES)
@pytest.mark.parametrize("attempt", ["at_checkpoint", "between_checkpoints"])
def test_resumed_series_continue_the_same_run_step_by_step(request, stage, key, points, attempt):
    """One value per step, in the killed attempt's run, equal to the uninterrupted run's values."""
    runs = request.getfixturevalue(stage)
    expected = runs["uninterrupted"][0].series(key)
    got = runs[attempt][0].series(key)
    assert len(expected) == points
    assert len({step for step, _ in got}) == len(got)
    assert got == expected


@pytest.mark.slow
@pytest.mark.parametrize("stage", ["sft", "grpo"])
@pytest.mark.parametrize("attempt", ["at_checkpoint", "between_checkpoints"])
def test_the_killed_attempts_run_is_continued_and_finished(request, stage, attempt):
    runs = request.getfixturevalue(stage)
    run, record = runs[attempt]
    assert record.mlflow_run_id == run.run_id
    assert run.client.get_run(run.run_id).info.status == "FINISHED"
    assert not scratch_dir(run.output).exists()  # the work area goes once the stage succeeded


@pytest.mark.slow
def test_alarm_state_survives_the_kill(grpo):
    expected = json.loads((local_path(grpo["uninterrupted"][1].uri) / "alarms.json").read_text())
    assert expected  # the test's threshold makes zero_variance_groups fire
    for attempt in ("at_checkpoint", "between_checkpoints"):
        assert json.loads((local_path(grpo[attempt][1].uri) / "alarms.json").read_text()) == expected


# Units: what a kill during a save leaves, the hook, the metric filter and the task's MLflow run


def _checkpoint(work: Path, step: int, complete: bool) -> Path:
    folder = work / f"checkpoint-{step}"
    folder.mkdir(parents=True)
    (folder / "model.safetensors").write_text("x")
    if complete:
        (folder / COMPLETE).write_text("{}")
        (folder / "pipeline_state.json").write_text(json.dumps({"mlflow_run_id": "run-a", "state": {}}))
    return folder


def test_a_checkpoint_cut_short_by_a_kill_is_dropped(tmp_path):
    _checkpoint(tmp_path, 4, complete=True)
    _checkpoint(tmp_path, 8, complete=False)
    pulled = []
    assert resume_point(tmp_path, SimpleNamespace(pull=pulled.append)) == tmp_path / "checkpoint-4"
    assert pulled == [tmp_path]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint-4"]


def test_no_checkpoint_means_a_fresh_start(tmp_path):
    assert resume_point(tmp_path / "absent") is None


def test_a_checkpoint_is_marked_complete_with_the_pipeline_state_then_handed_to_the_hook(tmp_path):
    handed = []

    class Counter:
        def state_dict(self):
            return {"n": 3}

    def hook(folder: Path) -> None:
        handed.append((folder, (folder / COMPLETE).is_file()))

    (tmp_path / "checkpoint-6").mkdir()
    callback = CheckpointCallback({"counter": Counter()}, hook)
    callback.on_save(
        SimpleNamespace(output_dir=str(tmp_path)), SimpleNamespace(global_step=6, is_world_process_zero=True), None
    )
    assert handed == [(tmp_path / "checkpoint-6", True)]
    saved = json.loads((tmp_path / "checkpoint-6" / "pipeline_state.json").read_text())
    assert saved == {"mlflow_run_id": None, "state": {"counter": {"n": 3}}}


@pytest.mark.parametrize(("step", "saves"), [(4, True), (8, False)])
def test_no_checkpoint_at_the_last_step(step, saves):
    """transformers resumed from the last step would train one more (max_steps inside an epoch); the output follows."""
    control = SimpleNamespace(should_save=True)
    CheckpointCallback({}).on_step_end(None, SimpleNamespace(global_step=step, max_steps=8), control)
    assert control.should_save is saves


@pytest.fixture
def mlflow_run(env):
    """(client, experiment id, a new run id) in the module's MLflow database."""
    from models.tracking import client, ensure_experiment

    experiment = ensure_experiment("units")
    return client(), experiment, client().create_run(experiment, run_name="stage").info.run_id


def test_continued_series_logs_only_steps_the_run_does_not_hold(mlflow_run):
    import mlflow

    mlflow_client, _, run_id = mlflow_run
    for step in (1, 2, 3):
        mlflow_client.log_metric(run_id, "loss", 10.0 + step, step=step)
    mlflow_client.log_metric(run_id, "data/rows", 5.0)
    with mlflow.start_run(run_id=run_id), continued_series(run_id):
        mlflow.log_metrics({"loss": 0.0, "reward": 1.0}, step=3)
        mlflow.log_metric("loss", 14.0, step=4)
        mlflow.log_metric("data/rows", 5.0)
    assert [(m.step, m.value) for m in mlflow_client.get_metric_history(run_id, "loss")] == [
        (1, 11.0),
        (2, 12.0),
        (3, 13.0),
        (4, 14.0),
    ]
    assert [m.step for m in mlflow_client.get_metric_history(run_id, "reward")] == [3]
    assert len(mlflow_client.get_metric_history(run_id, "data/rows")) == 1


def test_the_task_continues_the_checkpoints_run_under_the_new_parent(mlflow_run, tmp_path):
    mlflow_client, experiment, run_id = mlflow_run
    parent = mlflow_client.create_run(experiment, run_name="pipeline-2").info.run_id
    folder = _checkpoint(tmp_path / "work", 4, complete=True)
    (folder / "pipeline_state.json").write_text(json.dumps({"mlflow_run_id": run_id, "state": {}}))
    assert continue_stage_run(tmp_path / "work", parent) == run_id
    assert mlflow_client.get_run(run_id).data.tags["mlflow.parentRunId"] == parent


def test_a_killed_attempt_without_a_checkpoint_is_closed_as_failed(mlflow_run, tmp_path):
    mlflow_client, experiment, run_id = mlflow_run
    work = tmp_path / "work"
    work.mkdir()
    (work / RUN_FILE).write_text(json.dumps({"mlflow_run_id": run_id}))
    assert continue_stage_run(work, "parent") is None
    assert mlflow_client.get_run(run_id).info.status == "FAILED"
